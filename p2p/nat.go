package p2p

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	ma "github.com/multiformats/go-multiaddr"
)

// The kinds of connection PeerStatus.Connection reports.
const (
	ConnDirect      = "direct"       // a direct connection, dialled or accepted
	ConnRelayed     = "relayed"      // through a circuit relay
	ConnHolePunched = "hole-punched" // direct, made by DCUtR out of a relayed one
)

// relayCandidates is AutoRelay's peer source: the bootstrap peers first
// (they are the public nodes, and kubo's static relays are the model),
// then connected peers that offer the relay v2 hop protocol. It never
// blocks: the channel is filled and closed before it is returned.
func (p *Peer) relayCandidates(_ context.Context, num int) <-chan peer.AddrInfo {
	ch := make(chan peer.AddrInfo, max(num, 0))
	defer close(ch)
	seen := map[peer.ID]bool{}
	add := func(ai peer.AddrInfo) {
		if len(ch) < num && !seen[ai.ID] {
			seen[ai.ID] = true
			ch <- ai
		}
	}
	ready := p.hostReady.Load()
	for _, ai := range p.boot {
		if !ready || ai.ID != p.h.ID() {
			add(ai)
		}
	}
	if !ready {
		return ch
	}
	for _, id := range p.h.Network().Peers() {
		if ok, _ := p.h.Peerstore().SupportsProtocols(id, proto.ProtoIDv2Hop); len(ok) > 0 {
			add(peer.AddrInfo{ID: id, Addrs: p.h.Peerstore().Addrs(id)})
		}
	}
	return ch
}

// punchTracer records the peers to which DCUtR made a direct connection,
// and when, so that PeerStatus can tell a hole-punched connection from a
// dialled one. It is safe for concurrent use.
type punchTracer struct {
	log     *slog.Logger // set before the host starts
	mu      sync.Mutex
	failed  func(peer.ID)         // told of each failed punch, once the peer runs; guarded by mu
	punched map[peer.ID]time.Time // guarded by mu
	fails   map[peer.ID]int       // failed punches since the last success; guarded by mu
	total   uint64                // successful hole punches; guarded by mu
	retried uint64                // relayed connections closed to retry a punch; guarded by mu
}

// Trace implements holepunch.EventTracer.
func (t *punchTracer) Trace(evt *holepunch.Event) {
	var end *holepunch.EndHolePunchEvt
	switch e := evt.Evt.(type) {
	case *holepunch.EndHolePunchEvt:
		end = e
	case *holepunch.ProtocolErrorEvt:
		// The coordination failed before any punch: when two peers
		// dial each other through relays at once, each initiates DCUtR
		// on the connection it accepted, and each resets the other's
		// stream (it arrives on a connection the receiver accepted).
		// DCUtR tries no more on these connections: a failed punch.
		t.log.Info("hole punch failed: staying relayed", "peer", evt.Remote, "err", e.Error)
		t.fail(evt.Remote)
		return
	default:
		t.log.Debug("hole punching", "peer", evt.Remote, "event", evt.Type, "detail", fmt.Sprintf("%+v", evt.Evt))
		return
	}
	if !end.Success {
		t.log.Info("hole punch failed: staying relayed", "peer", evt.Remote, "err", end.Error, "took", end.EllapsedTime)
		t.fail(evt.Remote)
		return
	}
	t.log.Info("hole punch succeeded: direct connection", "peer", evt.Remote, "took", end.EllapsedTime)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.punched == nil {
		t.punched = map[peer.ID]time.Time{}
	}
	delete(t.fails, evt.Remote)
	// The connection opened while the punch ran: date it from its start.
	t.punched[evt.Remote] = time.Now().Add(-end.EllapsedTime - time.Second)
	t.total++
}

// fail tells the failed callback of a failed punch to id.
func (t *punchTracer) fail(id peer.ID) {
	t.mu.Lock()
	failed := t.failed
	t.mu.Unlock()
	if failed != nil {
		failed(id)
	}
}

// punchedSince returns when the last successful hole punch to id began,
// and whether there was one.
func (t *punchTracer) punchedSince(id peer.ID) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	at, ok := t.punched[id]
	return at, ok
}

// failure counts a failed punch to id and returns how many failed in a
// row.
func (t *punchTracer) failure(id peer.ID) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fails == nil {
		t.fails = map[peer.ID]int{}
	}
	t.fails[id]++
	return t.fails[id]
}

// punchRetries bounds the retries of failed hole punches in a row to one
// peer; then the peers stay relayed: their NATs likely do not allow it.
const punchRetries = 5

// retryPunch gives DCUtR another attempt at a direct connection to id
// after a failed one (it tries once per relayed connection, and a punch
// that failed on a busy machine or a lossy path would otherwise leave two
// peers relayed for as long as that connection lives): after
// Config.HolePunchRetry, doubling with each failure in a row, if the peers
// are still only relayed, it closes the relayed connections, and the
// redial of a lost catalog peer makes a new one, on which DCUtR runs
// again. After punchRetries failures it gives up.
func (p *Peer) retryPunch(id peer.ID) {
	n := p.punches.failure(id)
	if n > punchRetries || p.cfg.HolePunchRetry < 0 {
		return
	}
	p.goRun(func() {
		if !p.sleep(p.cfg.HolePunchRetry << (n - 1)) {
			return
		}
		conns := p.h.Network().ConnsToPeer(id)
		if len(conns) == 0 || slices.ContainsFunc(conns, func(c network.Conn) bool { return !isCircuit(c.RemoteMultiaddr()) }) {
			return // gone, or direct by now
		}
		p.log.Info("retrying a hole punch: reconnecting through a relay", "peer", id, "attempt", n+1)
		p.punches.mu.Lock()
		p.punches.retried++
		p.punches.mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
}

func (t *punchTracer) count() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total
}

// connKind classifies a connection: relayed, hole-punched or direct.
func (p *Peer) connKind(c network.Conn) string {
	if isCircuit(c.RemoteMultiaddr()) {
		return ConnRelayed
	}
	if at, ok := p.punches.punchedSince(c.RemotePeer()); ok && !c.Stat().Opened.Before(at) {
		return ConnHolePunched
	}
	return ConnDirect
}

// natState is what the host's event bus says about reachability and relay
// reservations. Guarded by mu.
type natState struct {
	mu           sync.Mutex
	reachability network.Reachability
	relayAddrs   []ma.Multiaddr
}

// watchNAT follows the host's reachability and AutoRelay's relay addresses,
// logging changes at info, until the peer closes.
func (p *Peer) watchNAT() error {
	sub, err := p.h.EventBus().Subscribe([]any{new(event.EvtLocalReachabilityChanged), new(event.EvtAutoRelayAddrsUpdated)})
	if err != nil {
		return err
	}
	p.goRun(func() {
		defer sub.Close()
		for {
			select {
			case <-p.ctx.Done():
				return
			case e, ok := <-sub.Out():
				if !ok {
					return
				}
				p.nat.mu.Lock()
				switch e := e.(type) {
				case event.EvtLocalReachabilityChanged:
					p.nat.reachability = e.Reachability
					p.log.Info("reachability changed", "reachability", reachabilityName(e.Reachability))
				case event.EvtAutoRelayAddrsUpdated:
					p.nat.relayAddrs = slices.Clone(e.RelayAddrs)
					p.log.Info("relay reservations changed", "relays", relayPeers(e.RelayAddrs))
				}
				p.nat.mu.Unlock()
			}
		}
	})
	return nil
}

// reachabilityName is "public", "private" or "unknown".
func reachabilityName(r network.Reachability) string {
	switch r {
	case network.ReachabilityPublic:
		return "public"
	case network.ReachabilityPrivate:
		return "private"
	}
	return "unknown"
}

// relayPeers returns the distinct relay peer IDs in relay addresses
// (…/p2p/<relay>/p2p-circuit), in order; never nil.
func relayPeers(addrs []ma.Multiaddr) []string {
	out := []string{}
	for _, a := range addrs {
		var relay string
		ma.ForEach(a, func(c ma.Component) bool {
			switch c.Protocol().Code {
			case ma.P_P2P:
				relay = c.Value()
			case ma.P_CIRCUIT:
				return false
			}
			return true
		})
		if relay != "" && !slices.Contains(out, relay) {
			out = append(out, relay)
		}
	}
	return out
}

// preferDirect closes the relayed connections to c's peer once c, a
// direct connection, exists: a stream (GossipSub's, say) opened on the
// relayed one would otherwise keep using the relay for as long as it
// lives. The short wait lets DCUtR finish on the relayed connection.
func (p *Peer) preferDirect(c network.Conn) {
	if isCircuit(c.RemoteMultiaddr()) {
		return
	}
	id := c.RemotePeer()
	relayed := false
	for _, o := range p.h.Network().ConnsToPeer(id) {
		relayed = relayed || isCircuit(o.RemoteMultiaddr())
	}
	if !relayed {
		return
	}
	p.goRun(func() {
		if !p.sleep(2 * time.Second) {
			return
		}
		conns := p.h.Network().ConnsToPeer(id)
		if !slices.ContainsFunc(conns, func(o network.Conn) bool { return !isCircuit(o.RemoteMultiaddr()) && !o.IsClosed() }) {
			return
		}
		for _, o := range conns {
			if isCircuit(o.RemoteMultiaddr()) {
				p.log.Debug("closing a relayed connection: a direct one exists", "peer", id)
				_ = o.Close()
			}
		}
	})
}

// Status is the "p2p" object of GET /status: the running totals, this
// peer's reachability and addresses, and every connected catalog peer.
// Every key is snake_case and no list is null.
type Status struct {
	Stats
	NATStatus
	Peers []PeerStatus `json:"peers"`
}

// Status returns the peer's status. Safe for concurrent use; the caller
// owns the result.
func (p *Peer) Status() Status {
	return Status{Stats: p.Stats(), NATStatus: p.NAT(), Peers: p.Peers()}
}
