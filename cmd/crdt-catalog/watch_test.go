package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/httpapi"
	"github.com/crdt-catalog/crdt-catalog/node"
	leveldb "github.com/ipfs/go-ds-leveldb"
)

// newWatchNode starts a keyed node and its API; mod, if not nil, adjusts
// the node's config.
func newWatchNode(t *testing.T, mod func(*node.Config)) *cliNode {
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
	if mod != nil {
		mod(&cfg)
	}
	n, err := node.Open(context.Background(), store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	acfg := httpapi.DefaultConfig()
	acfg.Logger = cfg.Logger
	api, err := httpapi.New(n, acfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return &cliNode{n: n, api: api, url: srv.URL}
}

func (cn *cliNode) add(t *testing.T, id, doc string) {
	t.Helper()
	d, err := crdt.ParseDocument([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cn.n.Add(context.Background(), crdt.Key{Collection: "snapshots", ID: id}, d); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer is a buffer that a running command writes while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// waitFor waits until b holds s, failing the test after a deadline.
func (b *syncBuffer) waitFor(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(b.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("waited for %q; have:\n%s", s, b.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// background runs a command line while the test goes on; the returned
// function waits for its exit status.
func (cn *cliNode) background(t *testing.T, stdout, stderr *syncBuffer, args ...string) func() int {
	t.Helper()
	done := make(chan int, 1)
	go func() {
		done <- runCLI(t, map[string]string{"CRDT_CATALOG_ENDPOINT": cn.url}, "", stdout, stderr, args...)
	}()
	return func() int {
		select {
		case code := <-done:
			return code
		case <-time.After(20 * time.Second):
			t.Fatalf("crdt-catalog %q still runs; stdout:\n%s\nstderr:\n%s", args, stdout, stderr)
			return -1
		}
	}
}

// TestWatch_Golden: watch's output in each format, resuming from --since,
// and its refusals.
func TestWatch_Golden(t *testing.T) {
	cn := newWatchNode(t, func(c *node.Config) { c.ChangeHistory = 4 })
	cn.add(t, "s1", `{"size":1}`)
	cn.add(t, "s2", `{"size":2}`)
	if err := cn.n.Remove(context.Background(), crdt.Key{Collection: "snapshots", ID: "s1"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []cliCase{
		{name: "table", args: []string{"watch", "snapshots", "--since", "0", "-n", "3"},
			stdout: "SEQ      KIND     ID                   METADATA                                 ORIGIN\n" +
				"1        added    s1                   {\"size\":1}                               local R:1\n" +
				"2        added    s2                   {\"size\":2}                               local R:2\n" +
				"3        removed  s1                   -                                        local R:3\n"},
		{name: "ndjson with a filter", args: []string{"watch", "snapshots", "size>1", "--since", "0", "-n", "1", "-o", "ndjson"},
			stdout: `{"type":"change","seq":2,"kind":"added","collection":"snapshots","id":"s2","item":{"id":"s2","collection":"snapshots","metadata":{"size":2}},"origin":{"via":"local","replica":"R","counter":2}}` + "\n"},
		{name: "initial and since", args: []string{"watch", "snapshots", "--initial", "--since", "1"},
			stderr: "crdt-catalog: watch: --initial and --since exclude each other: --initial starts from the items that match now, --since resumes\n", code: exitUsage},
		{name: "bad query", args: []string{"watch", "snapshots", "size>"},
			stderr: "crdt-catalog: watch: query: position 5: empty value after \">\" (HTTP 400 Bad Request)\n", code: exitUsage},
		{name: "unknown collection", args: []string{"watch", "nothing"},
			stderr: "crdt-catalog: watch: unknown collection: \"nothing\" (HTTP 404 Not Found)\n", code: exitNotFound},
	} {
		c.check(t, cn)
	}
	for i := range 3 {
		cn.add(t, fmt.Sprint("t", i), `{}`)
	}
	cliCase{name: "since before the history", args: []string{"watch", "snapshots", "--since", "1"},
		stderr: "crdt-catalog: watch: the node no longer holds the changes to resume from: change history trimmed: changes after 1 are no longer held (oldest: 3); " +
			"resynchronise with initial=true (the matching items, then the changes after them); start again with --initial (or pass --resync to do so by itself)\n",
		code: exitResync}.check(t, cn)
}

// TestWatch_ResumesAfterDrop: when the node ends the stream (here: it
// starts shutting down, and refuses new requests for a while), watch
// reconnects by itself from the last change it printed: every change is
// printed once, in order.
func TestWatch_ResumesAfterDrop(t *testing.T) {
	cn := newWatchNode(t, nil)
	var stdout, stderr syncBuffer
	wait := cn.background(t, &stdout, &stderr, "watch", "snapshots", "--since", "0", "-n", "4", "-o", "ndjson")
	cn.add(t, "a", `{}`)
	cn.add(t, "b", `{}`)
	stdout.waitFor(t, `"seq":2`)
	cn.api.SetClosing(true)
	stderr.waitFor(t, "reconnecting")
	cn.api.SetClosing(false)
	cn.add(t, "c", `{}`)
	cn.add(t, "d", `{}`)
	if code := wait(); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("printed:\n%s", stdout.String())
	}
	for i, l := range lines {
		if !strings.Contains(l, fmt.Sprintf(`"seq":%d,`, i+1)) {
			t.Fatalf("line %d is %s", i, l)
		}
	}
	if !strings.Contains(stderr.String(), "the node ended the stream: server is shutting down; reconnecting in 100ms, from after change 2") {
		t.Fatalf("stderr:\n%s", stderr.String())
	}
}

// TestWatch_InitialAndResync: --initial prints the matching items, then
// the changes; --resync starts again from the items when the node no
// longer holds the changes to resume from.
func TestWatch_InitialAndResync(t *testing.T) {
	cn := newWatchNode(t, func(c *node.Config) { c.ChangeHistory = 2 })
	for i := range 5 {
		cn.add(t, fmt.Sprint("s", i), fmt.Sprintf(`{"n":%d}`, i))
	}
	var stdout, stderr syncBuffer
	wait := cn.background(t, &stdout, &stderr, "watch", "snapshots", "n>=3", "--since", "1", "--resync", "-n", "1")
	stderr.waitFor(t, "initial items complete at change 5")
	cn.add(t, "s0", `{"n":9}`)
	if code := wait(); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
	}
	r := strings.NewReplacer(string(cn.n.ReplicaID()), "R")
	want := "SEQ      KIND     ID                   METADATA                                 ORIGIN\n" +
		"-        initial  s3                   {\"n\":3}                                  -\n" +
		"-        initial  s4                   {\"n\":4}                                  -\n" +
		"6        added    s0                   {\"n\":9}                                  local R:6\n"
	if got := r.Replace(stdout.String()); got != want {
		t.Fatalf("stdout:\n%s\nwant:\n%s", got, want)
	}
	if !strings.Contains(stderr.String(), "starting again from the items that match now (--resync)") {
		t.Fatalf("stderr:\n%s", stderr.String())
	}
}
