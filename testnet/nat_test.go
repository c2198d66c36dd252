package testnet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// natProc is one crdt-catalog process of the NAT topology.
type natProc struct {
	cmd    *exec.Cmd
	done   chan struct{}
	base   string // http://mgmt-ip:8080
	peerID string
	log    string
}

const natToken = "nat-test-token-0123456789"

// startNAT starts the binary in node i's namespace: libp2p on its data
// address only, the HTTP API on its management address, the WAN profile.
func startNAT(t *testing.T, bin string, nn *NATNet, dir string, i int, extra ...string) *natProc {
	t.Helper()
	ip := NATDataIP[i]
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(natToken), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{
		"-data", filepath.Join(dir, fmt.Sprint(i)),
		"-http", net.JoinHostPort(nn.MgmtIP(i), "8080"),
		"-listen", "/ip4/" + ip + "/tcp/4101", "-listen", "/ip4/" + ip + "/udp/4101/quic-v1",
		"-api-token-file", tokenFile,
		"-network", "nat", "-profile", "wan", "-mdns=false", "-nat=false",
		"-log-format", "json", "-log-level", "debug",
	}
	args = append(args, extra...)
	p := &natProc{done: make(chan struct{}), log: filepath.Join(dir, fmt.Sprintf("node%d.log", i))}
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", nn.NS(i), bin}, args...)...)
	p.cmd.Env = peerEnv()
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logf.Close()
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.stop(t) })
	deadline := time.Now().Add(60 * time.Second)
	for p.base == "" || p.peerID == "" {
		lines, _ := readLogFrom(p.log, 0)
		for _, l := range lines {
			switch l.Msg {
			case "http api listening":
				p.base = l.HTTP
			case "peer":
				p.peerID = l.PeerID
			}
		}
		select {
		case <-p.done:
			t.Fatalf("node %d exited during start-up:\n%s", i, tailFrom(p.log, 0, 20))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d did not start:\n%s", i, tailFrom(p.log, 0, 20))
		}
	}
	return p
}

// addrs returns the node's bootstrap multiaddrs on its data address.
func (p *natProc) addrs(ip string) []string {
	return []string{"/ip4/" + ip + "/tcp/4101/p2p/" + p.peerID, "/ip4/" + ip + "/udp/4101/quic-v1/p2p/" + p.peerID}
}

func (p *natProc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		t.Errorf("node did not stop within 15s after SIGTERM")
	}
}

var natHTTP = &http.Client{Timeout: 5 * time.Second}

func (p *natProc) status(t *testing.T) *Status {
	t.Helper()
	resp, err := natHTTP.Get(p.base + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s Status
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return &s
}

func (p *natProc) add(t *testing.T, id string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, p.base+"/snapshots/add/"+id, strings.NewReader(`{"n":1}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+natToken)
	resp, err := natHTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("add %s: %d %s", id, resp.StatusCode, bytes.TrimSpace(b))
	}
}

func (p *natProc) has(id string) bool {
	resp, err := natHTTP.Get(p.base + "/snapshots/" + id)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func natWait(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// peerIn returns the status entry for id in s, if connected.
func peerIn(s *Status, id string) (PeerStatus, bool) {
	for _, p := range s.P2P.Peers {
		if p.ID == id {
			return p, true
		}
	}
	return PeerStatus{}, false
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// grepLog returns the last 40 lines of a log that contain any of the
// strings.
func grepLog(path string, any ...string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, s := range any {
			if strings.Contains(l, s) {
				out = append(out, l)
				break
			}
		}
	}
	if len(out) > 40 {
		out = out[len(out)-40:]
	}
	return strings.Join(out, "\n")
}

// natPartition is how long a home is cut off: 60 s as issue 11 asks with
// -long, 10 s otherwise (the reconnection logic is the same; the UDP
// mappings of the NAT outlive both).
func natPartition() time.Duration {
	if long() {
		return 60 * time.Second
	}
	return 10 * time.Second
}

// TestNAT_HomesBehindNATs runs the issue 11 topology in network
// namespaces: public nodes B and C, P1 and P2 each behind its own
// masquerading router (port-preserving, then port-randomising), started
// with -bootstrap B,C and -profile wan. Namespaces use reserved ranges,
// which go-libp2p never treats as public, so here no relay address is
// advertised and no hole is punched (p2p's TestNAT_* tests cover those on
// a simulated network); P1 and P2 replicate through B and C. It checks:
// the NATs translate as configured (B sees P1 at its router's address, on
// P1's own port only with the port-preserving NAT); no loopback or private
// address is announced by P1 or P2, and B and C announce only their
// -announce addresses; the latency from a write on P1 to P2; a partition of
// home 1 healed and every write of both sides on both peers; replication
// after B stops.
func TestNAT_HomesBehindNATs(t *testing.T) {
	skipShort(t)
	if err := NetnsAvailable(); err != nil {
		t.Skip("network namespaces cannot be made here: ", err)
	}
	bin := Build(t)
	for _, kind := range []string{NATPreserving, NATRandomising} {
		t.Run(kind, func(t *testing.T) { runNATTopology(t, bin, kind) })
	}
}

func runNATTopology(t *testing.T, bin, kind string) {
	nn, err := NewNATNet(kind, kind)
	if err != nil {
		t.Skip("NAT topology cannot be built here: ", err)
	}
	t.Cleanup(func() {
		if err := nn.Close(); err != nil {
			t.Error(err)
		}
	})
	// The nodes' data and logs; kept, and their tails printed, if the
	// test fails.
	dir, err := os.MkdirTemp("", "natnet-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(dir)
			return
		}
		t.Logf("node logs kept in %s", dir)
		for i := range natNodes {
			if f := filepath.Join(dir, fmt.Sprintf("node%d.log", i)); fileExists(f) {
				t.Logf("node %d, connection events:\n%s", i, grepLog(f, "peer connected", "peer disconnected", "unreachable", "reachable again", "full state"))
			}
		}
	})
	announce := func(ip string) []string {
		return []string{"-announce", "/ip4/" + ip + "/tcp/4101", "-announce", "/ip4/" + ip + "/udp/4101/quic-v1", "-reachability", "public"}
	}
	b := startNAT(t, bin, nn, dir, NATNodeB, announce(NATDataIP[NATNodeB])...)
	c := startNAT(t, bin, nn, dir, NATNodeC, append(announce(NATDataIP[NATNodeC]), "-bootstrap", b.addrs(NATDataIP[NATNodeB])[0])...)
	var boot []string
	for _, a := range append(b.addrs(NATDataIP[NATNodeB]), c.addrs(NATDataIP[NATNodeC])...) {
		boot = append(boot, "-bootstrap", a)
	}
	p1 := startNAT(t, bin, nn, dir, NATNodeP1, boot...)
	p2 := startNAT(t, bin, nn, dir, NATNodeP2, boot...)
	natWait(t, 30*time.Second, "P1 and P2 connected to B and C", func() bool {
		for _, p := range []*natProc{p1, p2} {
			s := p.status(t)
			_, okB := peerIn(s, b.peerID)
			_, okC := peerIn(s, c.peerID)
			if !okB || !okC {
				return false
			}
		}
		return true
	})

	// The NAT: B sees P1 at router 1's wan address; on P1's own port
	// only when the NAT preserves ports.
	var seen PeerStatus
	natWait(t, 10*time.Second, "B lists P1", func() bool {
		var ok bool
		seen, ok = peerIn(b.status(t), p1.peerID)
		return ok && seen.Addr != ""
	})
	m, err := ma.NewMultiaddr(seen.Addr)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := m.ValueForProtocol(ma.P_IP4)
	port, err := m.ValueForProtocol(ma.P_TCP)
	if err != nil {
		port, _ = m.ValueForProtocol(ma.P_UDP)
	}
	t.Logf("%s NAT: B sees P1 at %s (%s connection)", kind, seen.Addr, seen.Connection)
	if host != "10.253.0.101" {
		t.Errorf("B sees P1 at %s, want router 1's wan address 10.253.0.101", host)
	}
	if kind == NATPreserving && port != "4101" {
		t.Errorf("port-preserving NAT: B sees P1's port %s, want 4101", port)
	}

	// Addresses: nothing private or loopback announced by the homes; the
	// public nodes announce what -announce says and nothing else.
	for name, p := range map[string]*natProc{"P1": p1, "P2": p2} {
		for _, a := range p.status(t).P2P.AnnouncedAddrs {
			if m, err := ma.NewMultiaddr(a); err != nil || manet.IsPrivateAddr(m) || manet.IsIPLoopback(m) {
				t.Errorf("%s announces %s", name, a)
			}
		}
	}
	for name, p := range map[string]*natProc{"B": b, "C": c} {
		for _, a := range p.status(t).P2P.AnnouncedAddrs {
			if !strings.HasPrefix(a, "/ip4/10.253.0.1") {
				t.Errorf("%s announces %s beyond its -announce addresses", name, a)
			}
		}
	}

	// Latency of a write on P1 seen on P2, once both have a gossip mesh
	// (before it forms, a write reaches the other side by anti-entropy).
	natWait(t, 30*time.Second, "P1's and P2's gossip meshes", func() bool {
		return p1.status(t).P2P.MeshPeers > 0 && p2.status(t).P2P.MeshPeers > 0
	})
	var lat []time.Duration
	for i := range 50 {
		id := fmt.Sprintf("lat-%d", i)
		start := time.Now()
		p1.add(t, id)
		natWait(t, 30*time.Second, id+" on P2", func() bool { return p2.has(id) })
		lat = append(lat, time.Since(start))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("%s NAT: write on P1 visible on P2 (through B and C): p50 %v, p99 (the largest of 50) %v (polled every 10 ms)",
		kind, lat[25].Round(time.Millisecond), lat[49].Round(time.Millisecond))

	// Partition home 1, write on both sides, heal.
	part := natPartition()
	if err := nn.Partition(1); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for i := range 5 {
		for name, p := range map[string]*natProc{"p1": p1, "p2": p2} {
			id := fmt.Sprintf("part-%s-%d", name, i)
			p.add(t, id)
			ids = append(ids, id)
		}
	}
	time.Sleep(part) // the partition itself: what the test simulates, not a wait for a condition
	if err := nn.Heal(); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	missing := func() (out []string) {
		for _, id := range ids {
			for name, p := range map[string]*natProc{"P1": p1, "P2": p2} {
				if !p.has(id) {
					out = append(out, name+":"+id)
				}
			}
		}
		return out
	}
	for deadline := time.Now().Add(60 * time.Second); len(missing()) > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			for name, p := range map[string]*natProc{"P1": p1, "P2": p2} {
				st, _ := json.Marshal(p.status(t))
				t.Logf("%s status: %s", name, st)
			}
			t.Fatalf("60s after the heal, still missing %v", missing())
		}
	}
	t.Logf("%s NAT: %v partition of home 1 healed: every write of both sides on both peers %v after the heal",
		kind, part, time.Since(healed).Round(time.Millisecond))

	// B stops: P1 and P2 go on through C.
	b.stop(t)
	p1.add(t, "after-b")
	natWait(t, 30*time.Second, "a write on P1 on P2 after B stopped", func() bool { return p2.has("after-b") })
}
