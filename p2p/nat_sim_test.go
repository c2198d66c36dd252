package p2p

import (
	"context"
	"fmt"
	"net"
	"sort"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	flow "github.com/libp2p/go-flow-metrics"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/p2p/transport/quicreuse"
	"github.com/marcopolo/simnet"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/quic-go/quic-go"
	"go.uber.org/fx"
)

// These tests run the NAT traversal paths in process, on go-libp2p's
// simulated network (github.com/marcopolo/simnet, as go-libp2p's own
// holepunch_test.go does) and in simulated time (simTest): the nodes' QUIC
// sockets are simulated, so no packet leaves the process, and the addresses may be "public" ones, which
// go-libp2p needs before it advertises relay addresses or punches holes
// (it treats every reserved range, and so any network namespace, as
// private). simnet's SimpleFirewallRouter lets a node that is not publicly
// reachable receive packets only from addresses it has sent to, as a
// port-preserving NAT does; blockingRouter additionally drops every packet
// between two homes, as two port-randomising NATs do to a hole punch.
//
// The topology: B, public, the bootstrap peer and relay (and C, another,
// where a test needs two); P1 and P2 at home, each started with -bootstrap
// B and the WAN profile, and told they are private (-reachability
// private) so that AutoRelay starts at once instead of after AutoNAT's
// probes. Their addresses (2.x.x.x) stand for private addresses behind a
// NAT, so they are not advertised (-no-announce 2.0.0.0/8): others reach
// them only through relay addresses, and hole punching uses the address
// B observes, as behind a real NAT.

// blockingRouter is a SimpleFirewallRouter that also drops the packets for
// which drop says so.
type blockingRouter struct {
	simnet.SimpleFirewallRouter
	drop atomic.Pointer[func(from, to net.Addr) bool]
}

func (r *blockingRouter) RecvPacket(p *simnet.Packet) {
	if f := r.drop.Load(); f != nil && (*f)(p.From, p.To) {
		return
	}
	r.SimpleFirewallRouter.RecvPacket(p)
}

type sourceIP struct{ ip atomic.Pointer[net.IP] }

func (s *sourceIP) PreferredSourceIPForDestination(*net.UDPAddr) (net.IP, error) {
	return *s.ip.Load(), nil
}

// simQUIC makes a host's QUIC sockets simulated ones on router.
func simQUIC(router *blockingRouter, public bool) libp2p.Option {
	src := &sourceIP{}
	// libp2p closes a connection manager it made itself, not one from a
	// constructor passed in: stop it with the host, as go-libp2p's
	// x/simlibp2p does, or its goroutines outlive the test's bubble.
	newCM := func(l fx.Lifecycle, reset quic.StatelessResetKey, token quic.TokenGeneratorKey, opts ...quicreuse.Option) (*quicreuse.ConnManager, error) {
		cm, err := quicreuse.NewConnManager(reset, token, opts...)
		if err == nil {
			l.Append(fx.StopHook(cm.Close))
		}
		return cm, err
	}
	return libp2p.QUICReuse(newCM,
		quicreuse.OverrideSourceIPSelector(func() (quicreuse.SourceIPSelector, error) { return src, nil }),
		quicreuse.OverrideListenUDP(func(_ string, addr *net.UDPAddr) (net.PacketConn, error) {
			src.ip.Store(&addr.IP)
			if public {
				router.SetAddrPubliclyReachable(addr)
			}
			c := simnet.NewSimConn(addr)
			c.SetUpPacketReceiver(router)
			router.AddNode(addr, c)
			return c, nil
		}))
}

// simTest runs f in a synctest bubble: time in it is simulated, and moves
// on whenever every goroutine of the bubble waits, so the peers' timers
// (AutoRelay's backoffs, hole punch retries, anti-entropy rounds) and the
// test's own waits cost no real time, and a loaded machine cannot make a
// deadline pass early. Nothing in the bubble may use a real socket: the
// peers' QUIC runs on simnet and the DHT on top of it. Every goroutine
// started in the bubble must end by the test's end: one left with a
// ticker keeps the bubble running until go test's -timeout.
func simTest(t *testing.T, f func(t *testing.T)) {
	// go-flow-metrics (the peers' bandwidth counters) starts one sweeper
	// goroutine per process, at first use; started in the bubble, it would
	// outlive it.
	flow.NewMeter().Mark(1)
	synctest.Test(t, func(t *testing.T) {
		// Runs last, once every peer and node has closed: goleveldb's
		// Close leaves a goroutine waiting up to a second for its memory
		// pool, and the bubble's clock stops once the test returns.
		t.Cleanup(func() {
			time.Sleep(time.Second)
			synctest.Wait()
		})
		f(t)
	})
}

type simNet struct {
	t          *testing.T
	router     *blockingRouter
	punchRetry time.Duration // the peers' Config.HolePunchRetry
}

// peer starts a catalog peer on the simulated network at ip, QUIC only.
func (s *simNet) peer(ip string, public bool, bootstrap ...*testPeer) *testPeer {
	s.t.Helper()
	cfg := testConfig(s.t)
	cfg.HolePunchRetry = s.punchRetry
	cfg.Listen = []string{"/ip4/" + ip + "/udp/4101/quic-v1"}
	cfg.Profile = ProfileWAN
	cfg.DHT = true
	cfg.Reachability = "private"
	if public {
		cfg.Reachability = "public"
	} else {
		// The homes' addresses stand for private ones behind a NAT,
		// which the WAN profile would not advertise.
		cfg.NoAnnounce = []string{"2.0.0.0/8"}
	}
	for _, b := range bootstrap {
		cfg.Bootstrap = append(cfg.Bootstrap, b.p.Addrs()...)
	}
	cfg.HostOptions = []libp2p.Option{simQUIC(s.router, public)}
	return startPeer(s.t, cfg, nil)
}

// connKindTo returns the Connection that a's status shows for b, or "".
func connKindTo(a, b *testPeer) string {
	for _, st := range a.p.Peers() {
		if st.ID == b.p.ID().String() {
			return st.Connection
		}
	}
	return ""
}

// writeSeen adds an item on from and returns how long it took to be
// visible on to.
func writeSeen(t *testing.T, from, to *testPeer, id string) time.Duration {
	t.Helper()
	start := time.Now()
	if _, err := from.n.Add(context.Background(), key(id), doc(t, `{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "write "+id+" replicated", func() bool {
		_, err := to.n.Get(context.Background(), key(id))
		return err == nil
	})
	return time.Since(start)
}

// latencies writes n items on from and returns the p50 and p99 of their
// visibility on to.
func latencies(t *testing.T, from, to *testPeer, prefix string, n int) (p50, p99 time.Duration) {
	t.Helper()
	var ds []time.Duration
	for i := range n {
		ds = append(ds, writeSeen(t, from, to, fmt.Sprintf("%s-%d", prefix, i)))
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[n/2], ds[(n*99+99)/100-1]
}

// TestNAT_HolePunchedAndReplicatingWithoutBootstrap: behind port-preserving
// NATs, P1 and P2 find each other through B's DHT, connect through B's
// relay, and DCUtR upgrades that to a direct connection, which GET
// /status reports as hole-punched; once B stops, they still replicate.
func TestNAT_HolePunchedAndReplicatingWithoutBootstrap(t *testing.T) {
	simTest(t, testHolePunched)
}

func testHolePunched(t *testing.T) {
	// A punch may fail (two peers that find each other at the same
	// moment dial each other at once, and DCUtR fails on both
	// connections); it is then retried after punchRetry.
	s := &simNet{t: t, router: &blockingRouter{}, punchRetry: time.Second}
	b := s.peer("1.2.0.1", true)
	p1 := s.peer("2.2.0.1", false, b)
	p2 := s.peer("2.3.0.1", false, b)
	start := time.Now()
	waitFor(t, 60*time.Second, "P1 and P2 hole-punched", func() bool {
		return connKindTo(p1, p2) == ConnHolePunched || connKindTo(p2, p1) == ConnHolePunched
	})
	t.Logf("hole-punched connection %v after start", time.Since(start).Round(time.Millisecond))
	for _, p := range []*testPeer{p1, p2} {
		if nat := p.p.NAT(); len(nat.Relays) == 0 || nat.Relays[0] != b.p.ID().String() || nat.Reachability != "private" {
			t.Errorf("NAT status %+v: want a reservation on B and reachability private", nat)
		}
	}
	// The relayed connection gives way to the direct one.
	waitFor(t, 20*time.Second, "only direct connections between P1 and P2", func() bool {
		return !hasRelayed(p1, p2) && !hasRelayed(p2, p1)
	})
	bID := b.p.ID()
	b.close()
	waitFor(t, 20*time.Second, "B gone", func() bool { return len(p1.p.h.Network().ConnsToPeer(bID)) == 0 })
	p50, p99 := latencies(t, p1, p2, "punched", 50)
	t.Logf("without B, write on P1 visible on P2: p50 %v, p99 %v (50 writes)", p50, p99)
	if connKindTo(p1, p2) == "" {
		t.Fatal("P1 and P2 disconnected")
	}
}

// TestNAT_FailedHolePunchIsRetried: a hole punch that fails (no packet
// passes between the homes at first) is tried again on a new relayed
// connection, and succeeds once the path is open.
func TestNAT_FailedHolePunchIsRetried(t *testing.T) {
	simTest(t, testFailedPunchRetried)
}

func testFailedPunchRetried(t *testing.T) {
	s := &simNet{t: t, router: &blockingRouter{}, punchRetry: time.Second}
	homes := func(from, to net.Addr) bool {
		f, g := from.(*net.UDPAddr), to.(*net.UDPAddr)
		return f.IP.To4()[0] == 2 && g.IP.To4()[0] == 2
	}
	s.router.drop.Store(&homes)
	b := s.peer("1.2.0.1", true)
	p1 := s.peer("2.2.0.1", false, b)
	p2 := s.peer("2.3.0.1", false, b)
	retried := func() uint64 {
		var n uint64
		for _, p := range []*testPeer{p1, p2} {
			p.p.punches.mu.Lock()
			n += p.p.punches.retried
			p.p.punches.mu.Unlock()
		}
		return n
	}
	waitFor(t, 60*time.Second, "a failed punch retried on a new relayed connection", func() bool {
		return retried() > 0 && connKindTo(p1, p2) == ConnRelayed
	})
	s.router.drop.Store(nil)
	waitFor(t, 60*time.Second, "P1 and P2 hole-punched on a retry", func() bool {
		return connKindTo(p1, p2) == ConnHolePunched || connKindTo(p2, p1) == ConnHolePunched
	})
	writeSeen(t, p1, p2, "after-retry")
}

func hasRelayed(a, b *testPeer) bool {
	for _, c := range a.p.h.Network().ConnsToPeer(b.p.ID()) {
		if isCircuit(c.RemoteMultiaddr()) {
			return true
		}
	}
	return false
}

// TestNAT_RelayedWhenNoHolePunch: when no packet can pass directly between
// the two homes (port-randomising NATs), P1 and P2 stay connected through
// a relay, GossipSub and anti-entropy run over it, and when one of the two
// public relays stops they reconnect through the other.
func TestNAT_RelayedWhenNoHolePunch(t *testing.T) {
	simTest(t, testRelayedWithoutPunch)
}

func testRelayedWithoutPunch(t *testing.T) {
	// No retries of the failed punch: they would close the relayed
	// connection this test follows.
	s := &simNet{t: t, router: &blockingRouter{}, punchRetry: -1}
	homes := func(from, to net.Addr) bool {
		f, g := from.(*net.UDPAddr), to.(*net.UDPAddr)
		return f.IP.To4()[0] == 2 && g.IP.To4()[0] == 2 // 2.x.x.x are the homes
	}
	s.router.drop.Store(&homes)
	b := s.peer("1.2.0.1", true)
	c := s.peer("1.3.0.1", true, b)
	p1 := s.peer("2.2.0.1", false, b, c)
	p2 := s.peer("2.3.0.1", false, b, c)
	start := time.Now()
	waitFor(t, 60*time.Second, "P1 and P2 connected through a relay", func() bool {
		return connKindTo(p1, p2) == ConnRelayed && connKindTo(p2, p1) == ConnRelayed
	})
	t.Logf("relayed connection %v after start", time.Since(start).Round(time.Millisecond))
	p50, p99 := latencies(t, p1, p2, "relayed", 50)
	t.Logf("relayed, write on P1 visible on P2: p50 %v, p99 %v (50 writes)", p50, p99)
	if st := p1.p.NAT(); st.HolePunches != 0 || connKindTo(p1, p2) != ConnRelayed {
		t.Fatalf("P1 %+v, connection to P2 %q: want relayed, no hole punch", st, connKindTo(p1, p2))
	}
	// Stop whichever relay carries the connection; they reconnect
	// through the other.
	via, other := relayOf(p1, p2), b
	switch via {
	case b.p.ID().String():
		other = c
		b.close()
	case c.p.ID().String():
		c.close()
	default:
		t.Fatalf("no relayed connection from P1 to P2 through B or C (got %q)", via)
	}
	writeSeen(t, p1, p2, "after-relay-stopped")
	otherID := other.p.ID().String()
	waitFor(t, 60*time.Second, "P1 and P2 relayed through the other relay", func() bool {
		return relayOf(p1, p2) == otherID
	})
	writeSeen(t, p2, p1, "through-other-relay")
}

// relayOf returns the peer ID of the relay that a's relayed connection to
// b runs through, or "".
func relayOf(a, b *testPeer) string {
	for _, c := range a.p.h.Network().ConnsToPeer(b.p.ID()) {
		if !c.IsClosed() && isCircuit(c.RemoteMultiaddr()) {
			if r := relayPeers([]ma.Multiaddr{c.RemoteMultiaddr()}); len(r) > 0 {
				return r[0]
			}
		}
	}
	return ""
}
