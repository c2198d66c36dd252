package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/httpapi"
	"github.com/crdt-catalog/crdt-catalog/node"
	"github.com/crdt-catalog/crdt-catalog/p2p"
	leveldb "github.com/ipfs/go-ds-leveldb"
)

// cliNode is a real node (in-memory store, signed) behind the real HTTP
// API on a loopback httptest server, for the client to talk to.
type cliNode struct {
	n   *node.Node
	api *httpapi.Server
	url string
}

// newCLINode starts a node and its API; mod, if not nil, adjusts the
// API's config. Its /status has the fields serve adds, with one peer.
func newCLINode(t testing.TB, mod func(*httpapi.Config)) *cliNode {
	t.Helper()
	store, err := leveldb.NewDatastore("", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	if _, cfg.Key, err = ed25519.GenerateKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	n, err := node.Open(context.Background(), store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	acfg := httpapi.DefaultConfig()
	acfg.Logger = cfg.Logger
	acfg.Status = func() map[string]any {
		peers := []p2p.PeerStatus{{ID: "12D3KooWpeer", Addrs: []string{"/ip4/127.0.0.1/tcp/4102"}, Connection: "direct",
			Addr: "/ip4/127.0.0.1/tcp/4102", RTTMillis: 1.25, Known: true, Ahead: 2}}
		return map[string]any{"peer_id": "12D3KooWself", "peers": peers, "p2p": p2p.Status{Peers: peers}, "writers": "any",
			"build": map[string]string{"version": "v9.9.9", "revision": "abc123"}}
	}
	if mod != nil {
		mod(&acfg)
	}
	api, err := httpapi.New(n, acfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return &cliNode{n: n, api: api, url: srv.URL}
}

// cli runs the command line args as main would, with the endpoint
// (CRDT_CATALOG_ENDPOINT) set to the node's, and returns its stdout,
// stderr and exit status, the node's replica ID written as R.
func (cn *cliNode) cli(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	env := map[string]string{"CRDT_CATALOG_ENDPOINT": cn.url}
	args = slices.Clone(args)
	for i, a := range args {
		if strings.HasPrefix(a, "R:") { // a token of the node's replica
			args[i] = string(cn.n.ReplicaID()) + a[1:]
		}
	}
	code := runCLI(t, env, stdin, &stdout, &stderr, args...)
	r := strings.NewReplacer(string(cn.n.ReplicaID()), "R", cn.url, "URL")
	return r.Replace(stdout.String()), r.Replace(stderr.String()), code
}

// runCLI runs a client command line as main does.
func runCLI(t *testing.T, env map[string]string, stdin string, stdout, stderr io.Writer, args ...string) int {
	t.Helper()
	cmd := findClientCommand(args[0])
	var err error
	if cmd == nil {
		err = run(context.Background(), args, stdout, stderr, func(k string) string { return env[k] })
	} else {
		err = runClient(context.Background(), cmd, args[1:], strings.NewReader(stdin), stdout, stderr, func(k string) string { return env[k] })
	}
	return exitWith(err, stderr)
}

// cliCase is one command line and what it must print and return.
type cliCase struct {
	name           string
	args           []string
	stdin          string
	stdout, stderr string
	code           int
}

func (c cliCase) check(t *testing.T, cn *cliNode) {
	t.Helper()
	out, errOut, code := cn.cli(t, c.stdin, c.args...)
	if out != c.stdout || errOut != c.stderr || code != c.code {
		t.Errorf("%s: crdt-catalog %q\n got exit %d, stdout:\n%s\nstderr:\n%s\nwant exit %d, stdout:\n%s\nstderr:\n%s",
			c.name, c.args, code, out, errOut, c.code, c.stdout, c.stderr)
	}
}

// TestClient_Golden: each command against a real node, in order, with
// its exact output and exit status, for success and each error class.
func TestClient_Golden(t *testing.T) {
	cn := newCLINode(t, nil)
	meta := filepath.Join(t.TempDir(), "patch.json")
	if err := os.WriteFile(meta, []byte(`{"size": null, "tags": ["a", "b"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []cliCase{
		{name: "add", args: []string{"add", "snapshots", "s1", `{"size": 1024, "cluster": "a"}`},
			stdout: "ID  COLLECTION  METADATA\ns1  snapshots   {\"cluster\":\"a\",\"size\":1024}\n",
			stderr: "causal token: R:1\n"},
		{name: "add json, flags after the arguments", args: []string{"add", "snapshots", "s2", `{"size":5}`, "-o", "json"},
			stdout: `{"id":"s2","collection":"snapshots","metadata":{"size":5},"causal_token":"R:2"}` + "\n"},
		{name: "add --create of a present item", args: []string{"add", "--create", "snapshots", "s2", `{}`},
			stderr: `crdt-catalog: add: create snapshots:s2: item exists: snapshots "s2" is present on this node, and If-None-Match: * adds only an absent item (HTTP 412 Precondition Failed)` + "\n",
			code:   exitConflict},
		{name: "add --create of an absent item, no metadata", args: []string{"add", "--create", "images", "i1"},
			stdout: "ID  COLLECTION  METADATA\ni1  images      {}\n", stderr: "causal token: R:3\n"},
		{name: "set from stdin", args: []string{"set", "snapshots", "s2", "-"}, stdin: `{"size": 7, "owner": "x"}`,
			stdout: "ID  COLLECTION  METADATA\ns2  snapshots   {\"owner\":\"x\",\"size\":7}\n", stderr: "causal token: R:4\n"},
		{name: "patch from a file, ndjson", args: []string{"patch", "-o", "ndjson", "-f", meta, "snapshots", "s2"},
			stdout: `{"id":"s2","collection":"snapshots","metadata":{"owner":"x","tags":["a","b"]},"causal_token":"R:5"}` + "\n"},
		{name: "set of an absent item", args: []string{"set", "snapshots", "nope", `{"a":1}`},
			stderr: `crdt-catalog: set: replace metadata of snapshots:nope: not found (HTTP 404 Not Found)` + "\n", code: exitNotFound},
		{name: "set without metadata", args: []string{"set", "snapshots", "s2"},
			stderr: "crdt-catalog: set: no metadata: give a JSON object as an argument, -f FILE, or - for stdin\n", code: exitUsage},
		{name: "metadata not an object", args: []string{"add", "snapshots", "s3", `[1]`},
			stderr: "crdt-catalog: add: metadata from the argument: invalid: metadata must be a JSON object\n", code: exitUsage},
		{name: "metadata twice", args: []string{"add", "-f", meta, "snapshots", "s3", `{}`},
			stderr: "crdt-catalog: add: metadata given twice: as an argument and with -f\n", code: exitUsage},
		{name: "bad id", args: []string{"get", "snapshots", "a b"},
			stderr: `crdt-catalog: get: id: invalid: id "a b": byte 1 is not one of [A-Za-z0-9._:-]` + "\n", code: exitUsage},
		{name: "get", args: []string{"get", "snapshots", "s2"},
			stdout: "ID  COLLECTION  METADATA\ns2  snapshots   {\"owner\":\"x\",\"tags\":[\"a\",\"b\"]}\n"},
		{name: "get json after a token", args: []string{"get", "snapshots", "s1", "-o", "json", "--after", "R:5", "--timeout", "2s"},
			stdout: `{"id":"s1","collection":"snapshots","metadata":{"cluster":"a","size":1024}}` + "\n"},
		{name: "get of an absent item", args: []string{"get", "snapshots", "nope"},
			stderr: "crdt-catalog: get: get snapshots:nope: not found (HTTP 404 Not Found)\n", code: exitNotFound},
		{name: "get after a token not applied", args: []string{"get", "snapshots", "s1", "--after", "R:99", "--timeout", "50ms"},
			stderr: "crdt-catalog: get: waited 50ms for writes this node has not applied yet: [R:99]; it has asked a peer for them: retry, or read from the node that took the write (HTTP 504 Gateway Timeout)\n",
			code:   exitNotApplied},
		{name: "get after a bad token", args: []string{"get", "snapshots", "s1", "--after", "nocounter"},
			stderr: `crdt-catalog: get: --after: invalid: token entry "nocounter" is not replica:counter` + "\n", code: exitUsage},
		{name: "query", args: []string{"query", "snapshots"},
			stdout: "ID  COLLECTION  METADATA\ns1  snapshots   {\"cluster\":\"a\",\"size\":1024}\ns2  snapshots   {\"owner\":\"x\",\"tags\":[\"a\",\"b\"]}\n"},
		{name: "query with a filter", args: []string{"query", "snapshots", "cluster=a", "-o", "ndjson"},
			stdout: `{"id":"s1","collection":"snapshots","metadata":{"cluster":"a","size":1024}}` + "\n"},
		{name: "query one page", args: []string{"query", "--limit", "1", "snapshots"},
			stdout: "ID  COLLECTION  METADATA\ns1  snapshots   {\"cluster\":\"a\",\"size\":1024}\n",
			stderr: "more items: --cursor s1 (or --all)\n"},
		{name: "query one page json", args: []string{"query", "--limit", "1", "snapshots", "-o", "json"},
			stdout: `{"items":[{"id":"s1","collection":"snapshots","metadata":{"cluster":"a","size":1024}}],"next_cursor":"s1","scanned":true,"read":2}` + "\n"},
		{name: "query from a cursor", args: []string{"query", "--cursor", "s1", "snapshots", "-o", "ndjson"},
			stdout: `{"id":"s2","collection":"snapshots","metadata":{"owner":"x","tags":["a","b"]}}` + "\n"},
		{name: "query all pages json", args: []string{"query", "--limit", "1", "--all", "snapshots", "-o", "json", "--after", "R:1"},
			stdout: `{"items":[{"id":"s1","collection":"snapshots","metadata":{"cluster":"a","size":1024}},{"id":"s2","collection":"snapshots","metadata":{"owner":"x","tags":["a","b"]}}]}` + "\n"},
		{name: "query all pages ndjson", args: []string{"query", "--limit", "1", "--all", "snapshots", "-o", "ndjson"},
			stdout: `{"id":"s1","collection":"snapshots","metadata":{"cluster":"a","size":1024}}` + "\n" +
				`{"id":"s2","collection":"snapshots","metadata":{"owner":"x","tags":["a","b"]}}` + "\n"},
		{name: "query all pages table", args: []string{"query", "--limit", "1", "--all", "snapshots"},
			stdout: "ID  COLLECTION  METADATA\ns1  snapshots   {\"cluster\":\"a\",\"size\":1024}\ns2  snapshots   {\"owner\":\"x\",\"tags\":[\"a\",\"b\"]}\n"},
		{name: "query that does not parse", args: []string{"query", "snapshots", `size>`},
			stderr: "crdt-catalog: query: query: position 5: empty value after \">\" (HTTP 400 Bad Request)\n", code: exitUsage},
		{name: "query of an unknown collection", args: []string{"query", "nothing"},
			stderr: "crdt-catalog: query: unknown collection: \"nothing\" (HTTP 404 Not Found)\n", code: exitNotFound},
		{name: "query --limit 0 is the default", args: []string{"query", "snapshots", "--limit", "0"},
			stdout: "ID  COLLECTION  METADATA\ns1  snapshots   {\"cluster\":\"a\",\"size\":1024}\ns2  snapshots   {\"owner\":\"x\",\"tags\":[\"a\",\"b\"]}\n"},
		{name: "query limit too large", args: []string{"query", "snapshots", "--limit", "1001"},
			stderr: "crdt-catalog: query: --limit must be from 1 to 1000, got 1001\n", code: exitUsage},
		{name: "query count", args: []string{"query", "snapshots", "--count"}, stdout: "2\n"},
		{name: "query count filtered json", args: []string{"query", "snapshots", "cluster=a", "--count", "-o", "json"},
			stdout: `{"count":1,"scanned":true}` + "\n"},
		{name: "query count with paging", args: []string{"query", "snapshots", "--count", "--limit", "5"},
			stderr: "crdt-catalog: query: --count counts every match: it takes no --limit, --all, --cursor or --conflicts\n", code: exitUsage},
		{name: "rm", args: []string{"rm", "snapshots", "s1"},
			stdout: "removed snapshots/s1\n", stderr: "causal token: R:6\n"},
		{name: "rm json", args: []string{"rm", "images", "i1", "-o", "json"},
			stdout: `{"removed":"i1","causal_token":"R:7"}` + "\n"},
		{name: "rm of an absent item", args: []string{"rm", "snapshots", "s1"},
			stderr: "crdt-catalog: rm: remove snapshots:s1: not found (HTTP 404 Not Found)\n", code: exitNotFound},
		{name: "peers", args: []string{"peers"},
			stdout: "ID            CONNECTION  ADDR                     RTT    AHEAD  BEHIND\n12D3KooWpeer  direct      /ip4/127.0.0.1/tcp/4102  1.2ms  2      0\n"},
		{name: "peers ndjson", args: []string{"peers", "-o", "ndjson"},
			stdout: `{"id":"12D3KooWpeer","addrs":["/ip4/127.0.0.1/tcp/4102"],"connection":"direct","addr":"/ip4/127.0.0.1/tcp/4102","rtt_ms":1.25,"known":true,"ahead":2,"behind":0}` + "\n"},
		{name: "too few arguments", args: []string{"get", "snapshots"},
			stderr: "crdt-catalog: usage: crdt-catalog get [flags] COLLECTION ID (got 1 arguments; -help lists the flags)\n", code: exitUsage},
		{name: "too many arguments", args: []string{"status", "x"},
			stderr: "crdt-catalog: usage: crdt-catalog status [flags] (got 1 arguments; -help lists the flags)\n", code: exitUsage},
		{name: "bad output", args: []string{"status", "-o", "yaml"},
			stderr: "crdt-catalog: -o must be table, json or ndjson, got \"yaml\"\n", code: exitUsage},
		{name: "-- ends the flags", args: []string{"get", "snapshots", "--", "-o"},
			stderr: "crdt-catalog: get: get snapshots:-o: not found (HTTP 404 Not Found)\n", code: exitNotFound},
	} {
		c.check(t, cn)
	}
}

// TestClient_Status: status prints the main fields of GET /status, and
// -o json all of it.
func TestClient_Status(t *testing.T) {
	cn := newCLINode(t, nil)
	cn.cli(t, "", "add", "snapshots", "s1", "{}")
	out, errOut, code := cn.cli(t, "", "status")
	if code != 0 || errOut != "" {
		t.Fatalf("status: exit %d, stderr %q", code, errOut)
	}
	for _, want := range []string{"replica    R\n", "peer_id    12D3KooWself\n", "version    v9.9.9 abc123\n",
		"writable   true\n", "items      {\"images\":0,\"snapshots\":1}\n", "counter    1\n", "peers      1 connected\n", "writers    any\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	out, _, code = cn.cli(t, "", "status", "-o", "json")
	if code != 0 || !strings.HasPrefix(out, "{") || !strings.Contains(out, `"applied_version_vector":{"R":1}`) {
		t.Fatalf("status -o json: exit %d:\n%s", code, out)
	}
}

// TestClient_Reachability: a node that refuses connections, one that is
// closing (503), and one that wants a token (401) give their exit
// statuses; --token-file and CRDT_CATALOG_TOKEN_FILE send the token.
func TestClient_Reachability(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	var stdout, stderr bytes.Buffer
	if code := runCLI(t, nil, "", &stdout, &stderr, "get", "--endpoint", closed, "snapshots", "s1"); code != exitUnreachable ||
		!strings.Contains(stderr.String(), "unreachable") || !strings.Contains(stderr.String(), "connection refused") {
		t.Errorf("closed port: exit %d, stderr %q", code, stderr.String())
	}

	// A node that accepts the connection but never answers.
	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-hang }))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(hang) })
	stderr.Reset()
	if code := runCLI(t, nil, "", &stdout, &stderr, "status", "--endpoint", slow.URL, "--request-timeout", "100ms"); code != exitUnreachable ||
		!strings.Contains(stderr.String(), "timeout awaiting response headers") {
		t.Errorf("silent node: exit %d, stderr %q", code, stderr.String())
	}

	token := "0123456789abcdef-token"
	cn := newCLINode(t, func(c *httpapi.Config) { c.Token = token })
	if _, errOut, code := cn.cli(t, "", "add", "snapshots", "s1"); code != exitError ||
		errOut != "crdt-catalog: add: missing bearer token; give the node's API token with --token-file (or CRDT_CATALOG_TOKEN_FILE) (HTTP 401 Unauthorized)\n" {
		t.Errorf("no token: exit %d, stderr %q", code, errOut)
	}
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := cn.cli(t, "", "add", "snapshots", "s1", "--token-file", file); code != 0 {
		t.Errorf("--token-file: exit %d, stderr %q", code, errOut)
	}
	stderr.Reset()
	env := map[string]string{"CRDT_CATALOG_ENDPOINT": cn.url, "CRDT_CATALOG_TOKEN_FILE": file}
	if code := runCLI(t, env, "", io.Discard, &stderr, "rm", "snapshots", "s1"); code != 0 {
		t.Errorf("CRDT_CATALOG_TOKEN_FILE: exit %d, stderr %q", code, stderr.String())
	}
	if _, errOut, code := cn.cli(t, "", "status", "--token-file", filepath.Join(t.TempDir(), "none")); code != exitUsage ||
		!strings.Contains(errOut, "--token-file") {
		t.Errorf("missing token file: exit %d, stderr %q", code, errOut)
	}

	cn.api.SetClosing(true)
	if _, errOut, code := cn.cli(t, "", "status"); code != exitUnreachable || !strings.Contains(errOut, "server is shutting down (HTTP 503") {
		t.Errorf("closing node: exit %d, stderr %q", code, errOut)
	}
}

// TestExitFor: every status the API documents maps to its exit status.
func TestExitFor(t *testing.T) {
	for status, want := range map[int]int{
		400: exitUsage, 401: exitError, 404: exitNotFound, 405: exitError, 408: exitError, 409: exitConflict,
		410: exitError, 412: exitConflict, 413: exitUsage, 415: exitUsage, 500: exitError, 503: exitUnreachable,
		504: exitNotApplied, 507: exitError,
	} {
		if got := exitFor(status); got != want {
			t.Errorf("HTTP %d: exit %d, want %d", status, got, want)
		}
	}
	if exitCode(nil) != 0 || exitCode(flag.ErrHelp) != 0 || exitCode(errors.New("x")) != 1 ||
		exitCode(fmt.Errorf("wrapped: %w", usageErr("bad"))) != exitUsage {
		t.Error("exitCode")
	}
}
