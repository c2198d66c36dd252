package main

import (
	"context"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// TestParseInterleaved: flags may come before, between and after the
// positional arguments; "--" makes the rest positional; "-" is an
// argument (stdin).
func TestParseInterleaved(t *testing.T) {
	for _, c := range []struct {
		args    []string
		pos     []string
		out     string
		all     bool
		wantErr bool
	}{
		{args: []string{"snapshots", "s1"}, pos: []string{"snapshots", "s1"}, out: "table"},
		{args: []string{"-o", "json", "snapshots", "--all", "s1"}, pos: []string{"snapshots", "s1"}, out: "json", all: true},
		{args: []string{"snapshots", "s1", "--o=ndjson"}, pos: []string{"snapshots", "s1"}, out: "ndjson"},
		{args: []string{"snapshots", "-", "-o", "json"}, pos: []string{"snapshots", "-"}, out: "json"},
		{args: []string{"snapshots", "--", "-o", "json"}, pos: []string{"snapshots", "-o", "json"}, out: "table"},
		{args: []string{"snapshots", "-o"}, wantErr: true},
		{args: []string{"snapshots", "--nope"}, wantErr: true},
		{args: []string{"--all=maybe"}, wantErr: true},
	} {
		o := &clientOpts{}
		fs := findClientCommand("query").newFlagSet(o, io.Discard, func(string) string { return "" })
		pos, err := parseInterleaved(fs, c.args)
		if c.wantErr {
			if err == nil {
				t.Errorf("%q: no error", c.args)
			}
			continue
		}
		if err != nil || !slices.Equal(pos, c.pos) || o.output != c.out || o.all != c.all {
			t.Errorf("%q: positional %q, -o %q, --all %v, err %v; want %q, %q, %v", c.args, pos, o.output, o.all, err, c.pos, c.out, c.all)
		}
	}
}

// TestClient_Usage: what the client decodes from its arguments (ids,
// metadata, tokens, durations, limits, the endpoint) is checked before
// any request: a bad one exits 2 and the node sees nothing.
func TestClient_Usage(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the node got %s %s", r.Method, r.URL)
	}))
	t.Cleanup(srv.Close)
	for _, args := range [][]string{
		{"add", "snapshots", "bad/id"},
		{"add", "Bad Collection", "s1"},
		{"add", "snapshots", "s1", "not json"},
		{"add", "snapshots", "s1", `{"a":1} trailing`},
		{"add", "snapshots", "s1", "-f", "/nonexistent/metadata.json"},
		{"patch", "snapshots", "s1", "null"},
		{"set", "snapshots", "s1", `"string"`},
		{"get", "snapshots", "s1", "--after", "r:notanumber"},
		{"get", "snapshots", "s1", "--after", "r:1", "--timeout", "-1s"},
		{"get", "snapshots", "s1", "--timeout", "soon"},
		{"query", "snapshots", "--limit", "-3"},
		{"query", "snapshots", "--limit", "x"},
		{"status", "--endpoint", "ftp://host"},
		{"status", "--endpoint", "http://"},
		{"status", "--token-file", "/nonexistent/token"},
		{"status", "--bogus"},
		{"rm", "snapshots"},
		{"backup"},
	} {
		var stderr strings.Builder
		code := runCLI(t, map[string]string{"CRDT_CATALOG_ENDPOINT": srv.URL}, "", io.Discard, &stderr, args...)
		if code != exitUsage || stderr.Len() == 0 {
			t.Errorf("%q: exit %d, stderr %q; want 2 and a message", args, code, stderr.String())
		}
	}
}

// FuzzClientArgs: no command line makes the client panic or exit with a
// status outside the documented ones, whatever the node answers.
func FuzzClientArgs(f *testing.F) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/status":
			w.Write([]byte(`{"p2p":{"peers":[{"id":"x"},3]}}`))
		case "/catalog/query":
			w.Write([]byte(`{"items":[{"id":"a"},{}],"next_cursor":"a"}`))
		default:
			w.WriteHeader(http.StatusBadRequest)
			w.Write([]byte(`{"error":"no"}`))
		}
	}))
	f.Cleanup(srv.Close)
	for _, s := range []string{
		"get snapshots s1 -o json", "add snapshots s1 {\"a\":1} --create", "query snapshots size>1 --limit 5 --all",
		"query snapshots --all -o json", "get --after x:1 snapshots s1 --timeout 1s", "set -f - snapshots s1",
		"status -o ndjson", "peers", "peers -o json", "rm -- snapshots -x", "patch snapshots s1 {\"a\":null} -o ndjson",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		args := strings.Fields(line)
		if len(args) == 0 || len(args) > 32 {
			return
		}
		cmd := findClientCommand(args[0])
		if cmd == nil || cmd.name == "backup" || cmd.name == "restore" { // they read and write files
			return
		}
		for _, a := range args {
			if strings.Contains(a, "token-file") || a == "-f" || strings.HasPrefix(a, "-f=") || strings.HasPrefix(a, "--f") {
				return // files named by the fuzzer: not here
			}
		}
		env := func(k string) string {
			if k == "CRDT_CATALOG_ENDPOINT" {
				return srv.URL
			}
			return ""
		}
		err := runClient(context.Background(), cmd, args[1:], strings.NewReader(`{"a":1}`), io.Discard, io.Discard, env)
		if code := exitCode(err); code < exitOK || code > exitNotApplied || (err != nil && code == exitOK && err != flag.ErrHelp) {
			t.Fatalf("%q: exit %d for %v", args, code, err)
		}
	})
}
