package p2p

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
	ma "github.com/multiformats/go-multiaddr"
)

// TestPeer_DHTDiscovery: A, B and C run the DHT; B and C know only A. C
// finds B, connects to it, and B's writes reach C. Every address any of
// them listened on, learned, dialled or advertised is on loopback.
//
// On three nodes the DHT's own lookups connect C to B within tens of
// milliseconds (A answers C's routing-table refresh with B), before the
// rendezvous plays any part. So the second subtest hides B and C from
// every routing table (they stop serving the DHT protocol but still use it
// as clients, through A): there they can only learn of each other from
// their records on the network's rendezvous, and nothing but the
// rendezvous loop dials between them.
func TestPeer_DHTDiscovery(t *testing.T) {
	t.Run("routing", func(t *testing.T) { testDHTDiscovery(t, false) })
	t.Run("rendezvous-only", func(t *testing.T) { testDHTDiscovery(t, true) })
}

func testDHTDiscovery(t *testing.T, rendezvousOnly bool) {
	ctx := context.Background()
	dhtConfig := func(boot []string) Config {
		cfg := testConfig(t)
		cfg.DHT = true
		cfg.Bootstrap = boot
		return cfg
	}
	a := startPeer(t, dhtConfig(nil), nil)
	b := startPeer(t, dhtConfig(a.p.Addrs()), nil)
	for _, p := range []*testPeer{a, b} {
		if p.p.dht == nil {
			t.Fatal("DHT not started although cfg.DHT is set")
		}
	}
	if rendezvousOnly {
		hideFromRouting(t, a, b)
	}
	c := startPeer(t, dhtConfig(a.p.Addrs()), nil)
	if rendezvousOnly {
		hideFromRouting(t, a, c)
		// C may have reached B through a lookup while it still served the
		// DHT; from now on only the rendezvous can bring them together.
		// Either may have dialled, and the dialler holds a connection
		// before the other end does: close from both ends until neither
		// holds one.
		waitFor(t, 10*time.Second, "B and C disconnected", func() bool {
			_ = c.p.h.Network().ClosePeer(b.p.ID())
			_ = b.p.h.Network().ClosePeer(c.p.ID())
			return c.p.h.Network().Connectedness(b.p.ID()) != network.Connected &&
				b.p.h.Network().Connectedness(c.p.ID()) != network.Connected
		})
	}
	all := []*testPeer{a, b, c}

	start := time.Now()
	waitFor(t, 30*time.Second, "C connected to B", func() bool {
		return c.p.h.Network().Connectedness(b.p.ID()) == network.Connected
	})
	t.Logf("C connected to B after %v", time.Since(start).Round(time.Millisecond))
	if rendezvousOnly && (c.p.dht.RoutingTable().Find(b.p.ID()) != "" || b.p.dht.RoutingTable().Find(c.p.ID()) != "") {
		t.Fatal("B and C are in each other's routing table although neither serves the DHT")
	}

	// B is on the rendezvous, as C sees it, with loopback addresses only.
	rd := drouting.NewRoutingDiscovery(c.p.dht)
	waitFor(t, 20*time.Second, "B advertised on the rendezvous, as seen from C", func() bool {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		found, err := rd.FindPeers(ctx, c.p.cfg.rendezvous())
		if err != nil {
			return false
		}
		ok := false
		for ai := range found {
			if ai.ID == b.p.ID() && len(ai.Addrs) > 0 {
				ok = true
				for _, a := range ai.Addrs {
					if !isLoopbackAddr(a) {
						t.Errorf("B advertised with a non-loopback address %s", a)
					}
				}
			}
		}
		return ok
	})

	if _, err := b.n.Add(ctx, key("from-b"), doc(t, `{"via":"dht"}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "B's write on C", func() bool {
		_, err := c.n.Get(ctx, key("from-b"))
		return err == nil
	})
	waitFor(t, 10*time.Second, "all three converge", func() bool { return converged(t, all...) })

	for _, p := range all {
		assertLoopbackOnly(t, p.p.h)
	}
}

// hideFromRouting makes p stop serving the DHT protocol (it keeps using
// the DHT as a client) and waits until boot, p's only DHT server, has
// dropped p from its routing table, so its answers to lookups never name p.
func hideFromRouting(t *testing.T, boot, p *testPeer) {
	t.Helper()
	kad := dhtProtocols(p.p.h)
	if len(kad) == 0 {
		t.Fatalf("peer serves no DHT protocol: %v", p.p.h.Mux().Protocols())
	}
	for _, id := range kad {
		p.p.h.RemoveStreamHandler(id)
	}
	// Identify pushes the change to the connected peers.
	waitFor(t, 10*time.Second, "the bootstrap peer knows the peer no longer serves the DHT", func() bool {
		ok, _ := boot.p.h.Peerstore().SupportsProtocols(p.p.ID(), kad...)
		return boot.p.h.Network().Connectedness(p.p.ID()) == network.Connected && len(ok) == 0 &&
			boot.p.dht.RoutingTable().Find(p.p.ID()) == ""
	})
}

// dhtProtocols lists the Kademlia protocols h serves.
func dhtProtocols(h host.Host) []protocol.ID {
	var out []protocol.ID
	for _, id := range h.Mux().Protocols() {
		if strings.HasPrefix(string(id), "/crdt-catalog/kad/") {
			out = append(out, id)
		}
	}
	return out
}

// assertLoopbackOnly fails unless every address h listens on, every address
// in its peerstore (everything it was told of, and so everything it could
// have dialled, including by the DHT) and every connection's remote
// address is on loopback.
func assertLoopbackOnly(t *testing.T, h host.Host) {
	t.Helper()
	for _, a := range h.Addrs() {
		if !isLoopbackAddr(a) {
			t.Errorf("%s listens on %s", h.ID().ShortString(), a)
		}
	}
	for _, id := range h.Peerstore().PeersWithAddrs() {
		for _, a := range h.Peerstore().Addrs(id) {
			if !isLoopbackAddr(a) {
				t.Errorf("%s knows a non-loopback address of %s: %s", h.ID().ShortString(), id.ShortString(), a)
			}
		}
	}
	for _, c := range h.Network().Conns() {
		if !isLoopbackAddr(c.RemoteMultiaddr()) || !isLoopbackAddr(c.LocalMultiaddr()) {
			t.Errorf("%s has a connection %s -> %s", h.ID().ShortString(), c.LocalMultiaddr(), c.RemoteMultiaddr())
		}
	}
}

// isLoopbackAddr reports whether a starts with /ip4/127.x.x.x or /ip6/::1.
func isLoopbackAddr(a ma.Multiaddr) bool {
	if len(a) == 0 {
		return false
	}
	switch c := a[0]; c.Protocol().Code {
	case ma.P_IP4, ma.P_IP6:
		ip := net.IP(c.RawValue())
		return ip.IsLoopback()
	}
	return false
}

// TestPeer_BootstrapPeerWithSeveralAddrs: a bootstrap list naming one peer
// by several addresses (its TCP and its QUIC one) makes one entry: the
// peer is dialled, and reported connected, once.
func TestPeer_BootstrapPeerWithSeveralAddrs(t *testing.T) {
	a := startPeer(t, testConfig(t), nil)
	log := &countingHandler{msg: "connected to bootstrap peer"}
	cfg := testConfig(t)
	cfg.Bootstrap = a.p.Addrs()
	if len(cfg.Bootstrap) < 2 {
		t.Fatalf("want several addresses of a, got %v", cfg.Bootstrap)
	}
	cfg.Logger = slog.New(log)
	b := startPeer(t, cfg, nil)
	waitFor(t, 10*time.Second, "b connected to a", func() bool {
		return b.p.h.Network().Connectedness(a.p.ID()) == network.Connected && log.count.Load() > 0
	})
	// Every bootstrap goroutine dials at once; give them time to report.
	waitRounds(t, 2, b)
	if n := log.count.Load(); n != 1 {
		t.Fatalf("connected to the bootstrap peer %d times", n)
	}
}

// countingHandler is a slog.Handler that counts the records with message
// msg.
type countingHandler struct {
	msg   string
	count atomic.Int32
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countingHandler) WithGroup(string) slog.Handler            { return h }

func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.count.Add(1)
	}
	return nil
}

// TestPeer_MDNSPeerIsRedialled: mDNS reports a peer once, so a peer found
// by it is kept connected like a bootstrap peer: after the connection
// drops, the peer with the smaller ID dials again. (The notifee is called
// directly: loopback has no multicast; TestPeer_MDNSInNetworkNamespaces
// runs real mDNS.)
func TestPeer_MDNSPeerIsRedialled(t *testing.T) {
	a := startPeer(t, testConfig(t), nil)
	b := startPeer(t, testConfig(t), nil)
	if a.p.ID() > b.p.ID() {
		a, b = b, a // a has the smaller ID: it dials
	}
	found := peer.AddrInfo{ID: b.p.ID(), Addrs: b.p.h.Addrs()}
	mdnsNotifee{a.p}.HandlePeerFound(found)
	mdnsNotifee{a.p}.HandlePeerFound(found) // reported again: still one dialer
	// a's Connect returns, and a counts as connected, as soon as a's swarm
	// holds the new connection; b adds its end of it a little later.
	// Closing from b before then closes nothing, and a, still connected,
	// never redials: so every wait for a connection waits until both ends
	// hold it.
	var conns []network.Conn
	bothHold := func() bool {
		conns = heldByBoth(a.p.h, b.p.h)
		return len(conns) > 0
	}
	waitFor(t, 10*time.Second, "a dials the peer mDNS found (both ends hold the connection)", bothHold)
	for range 2 {
		// b, the end that did not dial, drops the connection.
		if err := b.p.h.Network().ClosePeer(a.p.ID()); err != nil {
			t.Fatal(err)
		}
		// The redial may come before a poll would see a gap in a's
		// connectedness: wait instead for a's end of every closed
		// connection to close; bothHold then finds only new ones.
		waitFor(t, 10*time.Second, "a sees the connection closed", func() bool {
			for _, c := range conns {
				if !c.IsClosed() {
					return false
				}
			}
			return true
		})
		waitFor(t, 10*time.Second, "a redials (both ends hold the new connection)", bothHold)
	}
	// The larger ID never dials: b's notifee ignores a.
	mdnsNotifee{b.p}.HandlePeerFound(peer.AddrInfo{ID: a.p.ID(), Addrs: a.p.h.Addrs()})
	a.p.mu.Lock()
	na := len(a.p.mdnsPeers)
	a.p.mu.Unlock()
	b.p.mu.Lock()
	nb := len(b.p.mdnsPeers)
	b.p.mu.Unlock()
	if na != 1 || nb != 0 {
		t.Fatalf("peers kept connected: a %d, b %d; want 1 and 0", na, nb)
	}
}

// heldByBoth returns x's end of each open connection between x and y that
// y has registered too (the two ends match by address). The dialling end
// registers a connection before the other end does, so one end's view
// alone does not tell that closing from the other end will close it.
func heldByBoth(x, y host.Host) []network.Conn {
	var out []network.Conn
	for _, cx := range x.Network().ConnsToPeer(y.ID()) {
		if cx.IsClosed() {
			continue
		}
		for _, cy := range y.Network().ConnsToPeer(x.ID()) {
			if !cy.IsClosed() && cx.LocalMultiaddr().Equal(cy.RemoteMultiaddr()) &&
				cx.RemoteMultiaddr().Equal(cy.LocalMultiaddr()) {
				out = append(out, cx)
				break
			}
		}
	}
	return out
}

// TestPeer_KeepConnectedGivesUp: a peer kept connected with a give-up
// time stops redialling once it has been unreachable that long.
func TestPeer_KeepConnectedGivesUp(t *testing.T) {
	gaveUp := &countingHandler{msg: "giving up on a test peer: unreachable"}
	cfg := testConfig(t)
	cfg.Logger = slog.New(gaveUp)
	a := startPeer(t, cfg, nil)
	gone := startPeer(t, testConfig(t), nil)
	// Its TCP address only: a dial to a closed TCP port is refused at
	// once, while a QUIC dial to a closed UDP port waits out
	// redialTimeout, and each failed dial would cost that long.
	tcp, err := ma.NewMultiaddr(tcpAddr(t, gone))
	if err != nil {
		t.Fatal(err)
	}
	ai, err := peer.AddrInfoFromP2pAddr(tcp)
	if err != nil {
		t.Fatal(err)
	}
	gone.close()
	const giveUp = 300 * time.Millisecond
	done := make(chan struct{})
	start := time.Now()
	go func() {
		a.p.keepConnected(*ai, "a test peer", giveUp)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("keepConnected still redialling a peer gone for 20s")
	}
	if took := time.Since(start); took < giveUp || gaveUp.count.Load() != 1 {
		t.Fatalf("keepConnected returned after %v, having logged giving up %d times: want after %v, once",
			took, gaveUp.count.Load(), giveUp)
	}
}
