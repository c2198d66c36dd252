package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"testing"
)

// TestBinary_RestoredCopyIsAFork (issue 9, row 8): a node's data
// directory is copied; the copy runs for a while and writes under the same
// replica and key, then stops. When the original comes back, it receives
// those writes from a peer, signed with its own key, proves the fork and
// refuses writes (409, /status fork_suspected.writes_refused) until
// `crdt-catalog reincarnate`; after that it writes under a new replica,
// and the copy's writes stay as any peer's.
func TestBinary_RestoredCopyIsAFork(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	const js = "application/json"
	hub := start(t, bin, t.TempDir(), "-dht=false")
	dir := t.TempDir()
	a := start(t, bin, dir, "-dht=false", "-bootstrap", hub.addrs[0])
	if code, body := a.do(t, "POST", "/snapshots/add/before", js, `{"n":1}`); code != 201 {
		t.Fatalf("add on a: %d %s", code, body)
	}
	waitUntil(t, "the hub to hold a's write", func() bool {
		code, _ := hub.do(t, "GET", "/snapshots/before", "", "")
		return code == 200
	})
	a.stop(t)

	copyDir := t.TempDir()
	if err := os.CopyFS(copyDir, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	twin := start(t, bin, copyDir, "-dht=false", "-bootstrap", hub.addrs[0])
	for _, id := range []string{"twin-1", "twin-2"} {
		if code, body := twin.do(t, "POST", "/snapshots/add/"+id, js, `{"n":2}`); code != 201 {
			t.Fatalf("add on the copy: %d %s", code, body)
		}
	}
	waitUntil(t, "the hub to hold the copy's writes", func() bool {
		code, _ := hub.do(t, "GET", "/snapshots/twin-2", "", "")
		return code == 200
	})
	twin.stop(t)

	a = start(t, bin, dir, "-dht=false", "-bootstrap", hub.addrs[0])
	forked := func() bool {
		_, body := a.do(t, "GET", "/status", "", "")
		var st struct {
			Fork *struct {
				WritesRefused bool `json:"writes_refused"`
			} `json:"fork_suspected"`
		}
		return json.Unmarshal([]byte(body), &st) == nil && st.Fork != nil && st.Fork.WritesRefused
	}
	waitUntil(t, "the original to prove the fork", forked)
	if code, body := a.do(t, "POST", "/snapshots/add/after", js, `{"n":3}`); code != 409 {
		t.Fatalf("a write on the forked original: %d %s, want 409", code, body)
	}
	a.stop(t)

	if out, err := exec.Command(bin, "reincarnate", "-data", dir).CombinedOutput(); err != nil {
		t.Fatalf("reincarnate: %v\n%s", err, out)
	}
	a = start(t, bin, dir, "-dht=false", "-bootstrap", hub.addrs[0])
	if code, body := a.do(t, "POST", "/snapshots/add/after", js, `{"n":3}`); code != 201 {
		t.Fatalf("a write after reincarnate: %d %s", code, body)
	}
	waitUntil(t, "the hub to take the reincarnated node's write, and the node the copy's", func() bool {
		c1, _ := hub.do(t, "GET", "/snapshots/after", "", "")
		c2, _ := a.do(t, "GET", "/snapshots/twin-2", "", "")
		return c1 == 200 && c2 == 200
	})
	a.stop(t)
	hub.stop(t)
}
