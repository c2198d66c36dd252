package p2p

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Environment of the mDNS helper process.
const (
	mdnsHelperEnv = "P2P_MDNS_HELPER" // set: run as the helper
	mdnsListenEnv = "P2P_MDNS_LISTEN" // the multiaddr to listen on
	mdnsItemEnv   = "P2P_MDNS_ITEM"   // the id of the item to write
)

// TestPeer_MDNSInNetworkNamespaces: two peers, each in a network namespace
// of its own joined by a veth pair, with mDNS on and no bootstrap peers or
// DHT, find each other and replicate. mDNS runs only inside the namespaces
// this test creates (and removes): each peer is a child process, this test
// binary re-executed under `ip netns exec`, since a namespace applies to
// one OS thread and libp2p opens sockets from many goroutines.
func TestPeer_MDNSInNetworkNamespaces(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mDNS test needs network namespaces: not running as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("mDNS test needs network namespaces: %v", err)
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	suffix := hex.EncodeToString(rnd[:3])
	subnet := fmt.Sprintf("10.251.%d", rnd[3])
	type side struct {
		ns, veth, addr, item string
	}
	sides := []side{
		{ns: "p2pmdns-" + suffix + "-a", veth: "mda" + suffix, addr: subnet + ".1", item: "in-a"},
		{ns: "p2pmdns-" + suffix + "-b", veth: "mdb" + suffix, addr: subnet + ".2", item: "in-b"},
	}
	ip := func(args ...string) error {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
		return nil
	}

	// Registered first, so it runs last: after the children are gone.
	t.Cleanup(func() {
		for _, s := range sides {
			// Deleting a namespace deletes the veth end inside it, and
			// with it the pair. The link is deleted by name too, in case
			// it was left in this namespace by a half-done setup.
			_ = ip("netns", "del", s.ns)
			if _, err := os.Stat("/sys/class/net/" + s.veth); err == nil {
				_ = ip("link", "del", s.veth)
			}
		}
		out, err := exec.Command("ip", "netns", "list").CombinedOutput()
		if err != nil {
			t.Errorf("ip netns list: %v", err)
			return
		}
		for _, s := range sides {
			if strings.Contains(string(out), s.ns) {
				t.Errorf("namespace %s still exists after clean-up:\n%s", s.ns, out)
			}
		}
	})
	if err := ip("netns", "add", sides[0].ns); err != nil {
		t.Skipf("mDNS test needs network namespaces: %v", err)
	}
	setup := [][]string{
		{"netns", "add", sides[1].ns},
		{"link", "add", sides[0].veth, "netns", sides[0].ns, "type", "veth", "peer", "name", sides[1].veth, "netns", sides[1].ns},
	}
	for _, s := range sides {
		setup = append(setup,
			[]string{"-n", s.ns, "addr", "add", s.addr + "/24", "dev", s.veth},
			[]string{"-n", s.ns, "link", "set", s.veth, "multicast", "on", "up"},
			[]string{"-n", s.ns, "link", "set", "lo", "up"},
		)
	}
	for _, args := range setup {
		if err := ip(args...); err != nil {
			t.Fatal(err)
		}
	}

	children := make([]*mdnsChild, len(sides))
	for i, s := range sides {
		children[i] = startMDNSChild(t, s.ns, "/ip4/"+s.addr+"/tcp/0", s.item)
	}
	start := time.Now()
	waitFor(t, 60*time.Second, "each peer sees the other's item", func() bool {
		return children[0].sees(sides[1].item) && children[1].sees(sides[0].item)
	})
	t.Logf("found each other by mDNS and replicated in %v", time.Since(start).Round(time.Millisecond))
	// Nothing else could have connected them, but check it was mDNS: the
	// peer with the smaller ID dialled the other once it found it.
	dialled := 0
	for _, c := range children {
		c.mu.Lock()
		if strings.Contains(c.stderr.String(), "connected to a peer found by mDNS") {
			dialled++
		}
		c.mu.Unlock()
	}
	if dialled != 1 {
		t.Errorf("%d peers report dialling a peer found by mDNS, want 1", dialled)
	}
	for _, c := range children {
		c.stop(t)
	}
}

// mdnsChild is a helper process running one peer in a namespace.
type mdnsChild struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr bytes.Buffer // the child's log, shown on failure
	done   chan error

	mu    sync.Mutex
	items []string // the items it last reported
	lines []string
}

func startMDNSChild(t *testing.T, ns, listen, item string) *mdnsChild {
	t.Helper()
	c := &mdnsChild{done: make(chan error, 1)}
	c.cmd = exec.Command("ip", "netns", "exec", ns, os.Args[0],
		"-test.run=^TestPeer_MDNSHelperProcess$", "-test.count=1", "-test.timeout=3m")
	c.cmd.Env = append(os.Environ(), mdnsHelperEnv+"=1", mdnsListenEnv+"="+listen, mdnsItemEnv+"="+item, "P2P_TEST_LOG=1")
	c.cmd.Stderr = &lockedWriter{w: &c.stderr, mu: &c.mu}
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var err error
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Killed, not asked, if still running (stop asks first). The
		// process group is the child's own (Setpgid).
		select {
		case <-c.done:
		default:
			_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
			<-c.done
		}
		if t.Failed() {
			c.mu.Lock()
			t.Logf("child in %s: stdout:\n%s\nstderr (tail):\n%s", ns, strings.Join(c.lines, "\n"), tail(c.stderr.String(), 4000))
			c.mu.Unlock()
		}
	})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			c.mu.Lock()
			c.lines = append(c.lines, line)
			if rest, ok := strings.CutPrefix(line, "ITEMS "); ok {
				c.items = strings.Split(rest, ",")
			}
			c.mu.Unlock()
		}
		c.done <- c.cmd.Wait()
		close(c.done)
	}()
	return c
}

// sees reports whether the child reported holding item.
func (c *mdnsChild) sees(item string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Contains(c.items, item)
}

// stop closes the child's stdin, which makes it shut down, and checks
// that it exits cleanly (a data race in the child fails it too).
func (c *mdnsChild) stop(t *testing.T) {
	t.Helper()
	_ = c.stdin.Close()
	select {
	case err, ok := <-c.done:
		if ok && err != nil {
			t.Errorf("helper process: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("helper process did not exit")
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// TestPeer_MDNSHelperProcess is not a test: it is the peer that
// TestPeer_MDNSInNetworkNamespaces runs in a namespace. It writes one
// item, then prints "ITEMS a,b,..." each time the items it holds change,
// until its stdin closes.
func TestPeer_MDNSHelperProcess(t *testing.T) {
	if os.Getenv(mdnsHelperEnv) == "" {
		t.Skip("helper process of TestPeer_MDNSInNetworkNamespaces")
	}
	cfg := testConfig(t)
	cfg.Listen = []string{os.Getenv(mdnsListenEnv)}
	cfg.MDNS = true
	cfg.DHT = false
	cfg.Bootstrap = nil
	p := startPeer(t, cfg, nil)
	fmt.Printf("PEER %s %v\n", p.p.ID(), p.p.Addrs())
	if _, err := p.n.Add(context.Background(), key(os.Getenv(mdnsItemEnv)), doc(t, `{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	stdinClosed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	last, lastPeers := "", -1
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stdinClosed:
			return
		case <-tick.C:
		}
		page, err := p.n.Query(context.Background(), "snapshots", "", 100, "")
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, it := range page.Items {
			ids = append(ids, it.ID)
		}
		if s := strings.Join(ids, ","); s != last {
			last = s
			fmt.Printf("ITEMS %s\n", s)
		}
		if n := len(p.p.h.Network().Peers()); n != lastPeers {
			lastPeers = n
			fmt.Printf("PEERS %d\n", n)
		}
	}
}
