package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/internal/testbin"
)

// buildBinary returns the crdt-catalog binary shared by every test
// process of this go test run (testnet's too), building it on first use
// with a deadline; TESTNET_BIN names a prebuilt one instead.
func buildBinary(t *testing.T) string {
	t.Helper()
	return testbin.Path(t)
}

// process is a running crdt-catalog with its HTTP base URL and libp2p
// addresses.
type process struct {
	cmd   *exec.Cmd
	base  string
	addrs []string
}

var (
	listenRE = regexp.MustCompile(`http api listening.*http=(http://[0-9.:]+)`)
	p2pRE    = regexp.MustCompile(`libp2p listening.*addr=(\S+)`)
)

// start runs the binary on dir and waits until it logs its HTTP address.
func start(t *testing.T, bin, dir string, extra ...string) *process {
	t.Helper()
	args := append([]string{"-data", dir, "-http", "127.0.0.1:0", "-listen", "/ip4/127.0.0.1/tcp/0"}, extra...)
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	found := make(chan string, 1)
	addrs := make(chan string, 16)
	var (
		mu    sync.Mutex
		lines []string
	)
	t.Cleanup(func() { // runs before the kill above: cleanups run last first
		if t.Failed() {
			mu.Lock()
			t.Logf("log of %s:\n%s", dir, strings.Join(lines, "\n"))
			mu.Unlock()
		}
	})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			mu.Lock()
			lines = append(lines, line)
			mu.Unlock()
			if m := listenRE.FindStringSubmatch(line); m != nil {
				found <- m[1]
			}
			if m := p2pRE.FindStringSubmatch(line); m != nil {
				addrs <- m[1]
			}
		}
	}()
	select {
	case p.base = <-found:
	case <-time.After(30 * time.Second):
		t.Fatal("the node did not log its HTTP address within 30s")
	}
	// The libp2p addresses are logged right after the HTTP address.
	for len(p.addrs) == 0 || len(addrs) > 0 {
		select {
		case a := <-addrs:
			p.addrs = append(p.addrs, a)
		case <-time.After(10 * time.Second):
			t.Fatal("the node did not log its libp2p address")
		}
	}
	return p
}

// stop sends SIGTERM and waits for a clean exit.
func (p *process) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit within 10s of SIGTERM")
	}
}

func (p *process) do(t *testing.T, method, path, ctype, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, p.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestBinary_EndToEnd drives the real binary: the seed's curl examples,
// every error class, SIGTERM, a restart on the same directory that finds
// every acknowledged item, and a second process refused on a locked
// directory.
func TestBinary_EndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	p := start(t, bin, dir)

	const js = "application/json"
	steps := []struct {
		method, path, ctype, body string
		want                      int
		contains                  string
	}{
		{"POST", "/snapshots/add/snap1", js, `{"size": 1024, "created": "2023-01-01T00:00:00Z", "cluster": "cluster-a"}`, 201, `"id":"snap1"`},
		{"GET", "/catalog/query?type=snapshots", "", "", 200, `"cluster":"cluster-a"`},
		{"PUT", "/snapshots/metadata/snap1", js, `{"size": 1024, "status": "completed"}`, 200, `"status":"completed"`},
		{"PATCH", "/snapshots/metadata/snap1", "application/merge-patch+json", `{"status": null, "tier": "gold"}`, 200, `"tier":"gold"`},
		{"POST", "/images/add/img-1", js, `{"os": "linux"}`, 201, `"collection":"images"`},
		{"POST", "/snapshots/add/gone", js, `{}`, 201, ""},
		{"DELETE", "/snapshots/remove/gone", "", "", 200, `"removed":"gone"`},
		{"GET", "/crdt/delta", "", "", 200, `"deltas"`},
		{"GET", "/status", "", "", 200, `"peer_id"`},
		{"GET", "/status", "", "", 200, `"peers":[]`},
		{"GET", "/status", "", "", 200, `"applied_version_vector":{"`},
		{"GET", "/status", "", "", 200, `"go_version":"go1.`},
		{"GET", "/healthz", "", "", 200, ""},
		{"GET", "/metrics", "", "", 200, "# HELP"},
		// Error classes.
		{"POST", "/snapshots/add/bad%2Fid", js, `{}`, 400, `"error"`},
		{"POST", "/snapshots/add/x", js, `{not json`, 400, `"error"`},
		{"POST", "/snapshots/add/x", js, `[1,2]`, 400, `"error"`},
		{"GET", "/catalog/query?type=snapshots&q=size%3E", "", "", 400, `"error"`},
		{"GET", "/snapshots/nope", "", "", 404, `"error"`},
		{"DELETE", "/snapshots/remove/nope", "", "", 404, `"error"`},
		{"POST", "/volumes/add/x", js, `{}`, 404, `"error"`},
		{"GET", "/snapshots/add/x", "", "", 405, `"error"`},
		{"POST", "/snapshots/add/x", "text/plain", `{}`, 415, `"error"`},
		{"POST", "/snapshots/add/big", js, `{"pad":"` + strings.Repeat("x", 2<<20) + `"}`, 413, `"error"`},
	}
	for _, s := range steps {
		code, body := p.do(t, s.method, s.path, s.ctype, s.body)
		if code != s.want || !strings.Contains(body, s.contains) {
			t.Errorf("%s %s: %d %.200s; want %d containing %q", s.method, s.path, code, body, s.want, s.contains)
		}
	}
	// A second process on the same directory fails at once.
	out, err := exec.Command(bin, "-data", dir, "-http", "127.0.0.1:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another crdt-catalog") {
		t.Errorf("second process on a locked directory: %v\n%s", err, out)
	}
	p.stop(t)

	p = start(t, bin, dir)
	defer p.stop(t)
	code, body := p.do(t, "GET", "/catalog/query?type=snapshots", "", "")
	var page struct {
		Items []struct {
			ID       string                     `json:"id"`
			Metadata map[string]json.RawMessage `json:"metadata"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(body), &page); code != 200 || err != nil {
		t.Fatalf("query after restart: %d %v %s", code, err, body)
	}
	if len(page.Items) != 1 || page.Items[0].ID != "snap1" || string(page.Items[0].Metadata["tier"]) != `"gold"` {
		t.Fatalf("after restart: %s", body)
	}
	if code, body := p.do(t, "GET", "/images/img-1", "", ""); code != 200 {
		t.Fatalf("image after restart: %d %s", code, body)
	}
}

// TestBinary_TwoPeersConverge: two processes joined by a bootstrap address
// replicate each other's writes over libp2p, and a peer with another swarm
// key is refused.
func TestBinary_TwoPeersConverge(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	keyFile := filepath.Join(t.TempDir(), "swarm.key")
	if out, err := exec.Command(bin, "keygen", "-swarm-key", keyFile).CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "keygen", "-swarm-key", keyFile).CombinedOutput(); err == nil {
		t.Fatalf("keygen overwrote an existing key:\n%s", out)
	}
	a := start(t, bin, t.TempDir(), "-swarm-key", keyFile, "-dht=false")
	b := start(t, bin, t.TempDir(), "-swarm-key", keyFile, "-dht=false", "-bootstrap", a.addrs[0])
	const js = "application/json"
	if code, body := a.do(t, "POST", "/snapshots/add/from-a", js, `{"n":1}`); code != 201 {
		t.Fatalf("add on a: %d %s", code, body)
	}
	if code, body := b.do(t, "POST", "/images/add/from-b", js, `{"n":2}`); code != 201 {
		t.Fatalf("add on b: %d %s", code, body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ca, _ := a.do(t, "GET", "/images/from-b", "", "")
		cb, _ := b.do(t, "GET", "/snapshots/from-a", "", "")
		if ca == 200 && cb == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no convergence within 30s: a sees from-b %d, b sees from-a %d", ca, cb)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A peer with another key cannot join. c (another key) and then d
	// (a's key) start with the same bootstrap address and pull a's items
	// on connecting: once d holds from-a, c has had longer than d to get
	// it, so c still lacking it, with no peer on either side, is a refusal
	// and not a dial still under way.
	other := filepath.Join(t.TempDir(), "other.key")
	if out, err := exec.Command(bin, "keygen", "-swarm-key", other).CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	c := start(t, bin, t.TempDir(), "-swarm-key", other, "-dht=false", "-bootstrap", a.addrs[0])
	d := start(t, bin, t.TempDir(), "-swarm-key", keyFile, "-dht=false", "-bootstrap", a.addrs[0])
	waitUntil(t, "d, started after c with a's key, to pull from-a", func() bool {
		code, _ := d.do(t, "GET", "/snapshots/from-a", "", "")
		return code == 200
	})
	if code, body := c.do(t, "GET", "/snapshots/from-a", "", ""); code != 404 {
		t.Errorf("a peer with another swarm key got a's item: %d %s", code, body)
	}
	if ids := peerIDs(t, c); len(ids) != 0 {
		t.Errorf("a peer with another swarm key connected to %v", ids)
	}
	cID := c.addrs[0][strings.LastIndex(c.addrs[0], "/")+1:]
	dID := d.addrs[0][strings.LastIndex(d.addrs[0], "/")+1:]
	ids := peerIDs(t, a)
	if slices.Contains(ids, cID) || !slices.Contains(ids, dID) {
		t.Errorf("a's peers %v: want d %s and not c %s", ids, dID, cID)
	}
	d.stop(t)
	c.stop(t)
	b.stop(t)
	a.stop(t)
}

// peerIDs returns the IDs of the peers p's GET /status lists.
func peerIDs(t *testing.T, p *process) []string {
	t.Helper()
	code, body := p.do(t, "GET", "/status", "", "")
	var st struct {
		Peers []struct {
			ID string `json:"id"`
		} `json:"peers"`
	}
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil {
		t.Fatalf("status: %d %v %s", code, err, body)
	}
	ids := make([]string, len(st.Peers))
	for i, p := range st.Peers {
		ids[i] = p.ID
	}
	return ids
}

// TestBinary_WritersFileReloadedOnSIGHUP: a's writers file names some
// other peer, so a answers b's pulls but neither pulls from b nor takes
// its gossip; once the file also names b and a gets SIGHUP, b's write
// arrives. GET /status shows the size of the list, or "any".
func TestBinary_WritersFileReloadedOnSIGHUP(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	file := filepath.Join(t.TempDir(), "writers")
	const someone = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
	if err := os.WriteFile(file, []byte("# writers\n"+someone+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := start(t, bin, t.TempDir(), "-dht=false", "-writers-file", file)
	b := start(t, bin, t.TempDir(), "-dht=false", "-bootstrap", a.addrs[0])
	type status struct {
		Writers any `json:"writers"`
		P2P     struct {
			PullsSkipped uint64 `json:"pulls_skipped"`
		} `json:"p2p"`
	}
	statusOf := func(p *process) status {
		t.Helper()
		_, body := p.do(t, "GET", "/status", "", "")
		var s status
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("status: %v %s", err, body)
		}
		return s
	}
	if w := statusOf(a).Writers; w != float64(1) {
		t.Fatalf("a's status: writers %v, want 1", w)
	}
	if w := statusOf(b).Writers; w != "any" {
		t.Fatalf("b's status: writers %v, want any", w)
	}
	const js = "application/json"
	for _, w := range []struct {
		p    *process
		path string
	}{{a, "/snapshots/add/from-a"}, {b, "/snapshots/add/from-b"}} {
		if code, body := w.p.do(t, "POST", w.path, js, `{}`); code != 201 {
			t.Fatalf("add: %d %s", code, body)
		}
	}
	waitUntil(t, "b pulls from-a, a skips its pulls from b", func() bool {
		code, _ := b.do(t, "GET", "/snapshots/from-a", "", "")
		return code == 200 && statusOf(a).P2P.PullsSkipped > 0
	})
	if code, _ := a.do(t, "GET", "/snapshots/from-b", "", ""); code != 404 {
		t.Fatalf("b's write reached a: %d", code)
	}

	bID := b.addrs[0][strings.LastIndex(b.addrs[0], "/")+1:]
	if err := os.WriteFile(file, []byte(someone+"\n"+bID+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "b's write on a after the reload", func() bool {
		code, _ := a.do(t, "GET", "/snapshots/from-b", "", "")
		return code == 200 && statusOf(a).Writers == float64(2)
	})
	b.stop(t)
	a.stop(t)
}
