package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"os/exec"
	"strings"
	"testing"
)

// runBinary runs the crdt-catalog binary with args and returns its
// stdout, stderr and exit status.
func runBinary(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		return stdout.String(), stderr.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), 0
}

// TestBinary_Client: the client, as the binary users run, against two
// real peers: a write on a, read on b with its causal token, returns
// the write; peers lists the other peer; exit statuses reach the shell.
func TestBinary_Client(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	a := start(t, bin, t.TempDir(), "-dht=false")
	b := start(t, bin, t.TempDir(), "-dht=false", "-bootstrap", a.addrs[0])

	out, errOut, code := runBinary(t, bin, "add", "--endpoint", a.base, "snapshots", "s1", `{"size": 1}`, "-o", "json")
	var written struct {
		Token string `json:"causal_token"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &written) != nil || written.Token == "" {
		t.Fatalf("add on a: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// The token makes b wait for the write, however gossip goes.
	out, errOut, code = runBinary(t, bin, "get", "--endpoint", b.base, "snapshots", "s1", "--after", written.Token, "--timeout", "30s", "-o", "json")
	if code != 0 || out != `{"id":"s1","collection":"snapshots","metadata":{"size":1}}`+"\n" {
		t.Fatalf("get on b after a's token: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	bID := b.addrs[0][strings.LastIndex(b.addrs[0], "/")+1:]
	waitUntil(t, "a's peers to list b", func() bool {
		out, _, code := runBinary(t, bin, "peers", "--endpoint", a.base, "-o", "ndjson")
		return code == 0 && strings.Contains(out, `"id":"`+bID+`"`)
	})
	out, errOut, code = runBinary(t, bin, "peers", "--endpoint", a.base)
	if code != 0 || !strings.HasPrefix(out, "ID ") || !strings.Contains(out, bID+"  direct  ") {
		t.Errorf("peers: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	if _, errOut, code := runBinary(t, bin, "get", "--endpoint", a.base, "snapshots", "nope"); code != exitNotFound ||
		errOut != "crdt-catalog: get: get snapshots:nope: not found (HTTP 404 Not Found)\n" {
		t.Errorf("get of an absent item: exit %d, stderr %q", code, errOut)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	if _, errOut, code := runBinary(t, bin, "status", "--endpoint", closed); code != exitUnreachable {
		t.Errorf("status of a closed port: exit %d, stderr %q", code, errOut)
	}
	if _, _, code := runBinary(t, bin, "get", "-help"); code != 0 {
		t.Errorf("get -help: exit %d", code)
	}
	b.stop(t)
	a.stop(t)
}
