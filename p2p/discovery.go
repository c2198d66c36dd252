package p2p

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
)

const (
	// dialTimeout bounds one dial of a peer found on the DHT; each dial has
	// its own.
	dialTimeout = 10 * time.Second
	// redialTimeout bounds one dial of a kept-connected peer (bootstrap,
	// mDNS), and redialMaxBackoff caps the wait between two: a dial that
	// hangs through a partition (packets dropped, not refused) ends within
	// redialTimeout, and TCP retransmits its SYN 1 s and 3 s after the
	// first, so a partition that heals is noticed within about
	// redialTimeout + redialMaxBackoff in the worst case, and within
	// redialMaxBackoff when dials fail at once.
	redialTimeout    = 4 * time.Second
	redialMinBackoff = 250 * time.Millisecond
	redialMaxBackoff = time.Second
	// mdnsGiveUp is how long a peer found by mDNS is redialled after it
	// disconnects before it counts as gone from the local network; mDNS
	// reports it again if it comes back after that.
	mdnsGiveUp        = 10 * time.Minute
	findPeersInterval = 10 * time.Second
	advertiseRetry    = 2 * time.Second
)

// parseBootstrap parses bootstrap multiaddrs into one entry per peer:
// several addresses of one peer (say its TCP and QUIC ones) make one
// entry, dialled by one goroutine with all its addresses.
func parseBootstrap(addrs []string) ([]peer.AddrInfo, error) {
	var boot []peer.AddrInfo
	index := map[peer.ID]int{}
	for _, a := range addrs {
		ai, err := peer.AddrInfoFromString(a)
		if err != nil {
			return nil, fmt.Errorf("bootstrap address %q: %w (want a multiaddr ending in /p2p/<peer id>)", a, err)
		}
		if i, ok := index[ai.ID]; ok {
			boot[i].Addrs = append(boot[i].Addrs, ai.Addrs...)
			continue
		}
		index[ai.ID] = len(boot)
		boot = append(boot, *ai)
	}
	return boot, nil
}

// startDiscovery starts the bootstrap dialers, mDNS and the DHT, as
// configured.
func (p *Peer) startDiscovery(ctx context.Context) error {
	boot := slices.DeleteFunc(slices.Clone(p.boot), func(ai peer.AddrInfo) bool { return ai.ID == p.h.ID() })
	for _, ai := range boot {
		p.goRun(func() { p.keepConnected(ai, "bootstrap peer", 0) })
	}
	if p.cfg.MDNS {
		svc := mdns.NewMdnsService(p.h, p.cfg.rendezvous(), mdnsNotifee{p})
		if err := svc.Start(); err != nil {
			return fmt.Errorf("mdns: %w", err)
		}
		p.closers = append(p.closers, svc)
	}
	if p.cfg.DHT {
		// Mode: see Config.DHTMode. The protocol prefix keeps the catalog
		// off the public IPFS DHT, and no public bootstrap peers are added.
		mode := map[string]dht.ModeOpt{"auto": dht.ModeAuto, "client": dht.ModeClient, "server": dht.ModeServer}[p.cfg.DHTMode]
		opts := []dht.Option{
			dht.Mode(mode),
			dht.ProtocolPrefix(protocol.ID("/crdt-catalog")),
			dht.BootstrapPeers(boot...),
		}
		if p.cfg.Profile == ProfileWAN {
			opts = append(opts, dht.AddressFilter(dhtFilter))
		}
		kdht, err := dht.New(p.h, opts...)
		if err != nil {
			return fmt.Errorf("dht: %w", err)
		}
		p.dht = kdht
		p.closers = append(p.closers, kdht)
		if err := kdht.Bootstrap(ctx); err != nil {
			return fmt.Errorf("dht bootstrap: %w", err)
		}
		rd := drouting.NewRoutingDiscovery(kdht)
		p.goRun(func() { p.advertiseLoop(rd) })
		p.goRun(func() { p.findPeersLoop(rd) })
	}
	return nil
}

// keepConnected dials a peer and redials it whenever it is disconnected,
// with a backoff from redialMinBackoff doubling to redialMaxBackoff. Each
// failed dial is logged at debug with its error (which names each address
// tried); the peer's becoming unreachable is logged at info once, and its
// coming back again. With giveUp > 0 it returns once the peer has been
// unreachable for that long.
func (p *Peer) keepConnected(ai peer.AddrInfo, what string, giveUp time.Duration) {
	backoff := redialMinBackoff
	var down time.Time // when the current run of failed dials began
	for {
		if p.h.Network().Connectedness(ai.ID) != network.Connected {
			// The swarm backs off from addresses that failed (5 s,
			// growing to minutes), which would keep a healed partition
			// apart far longer than our cap: clear it first.
			if sw, ok := p.h.Network().(*swarm.Swarm); ok {
				sw.Backoff().Clear(ai.ID)
			}
			ctx, cancel := context.WithTimeout(p.ctx, redialTimeout)
			err := p.h.Connect(ctx, ai)
			cancel()
			if err != nil {
				if p.ctx.Err() != nil {
					return
				}
				if down.IsZero() {
					down = time.Now()
					p.log.Info(what+" unreachable", "peer", ai.ID, "addrs", ai.Addrs, "err", err)
				}
				if giveUp > 0 && time.Since(down) >= giveUp {
					p.log.Info("giving up on "+what+": unreachable", "peer", ai.ID, "for", giveUp)
					return
				}
				p.log.Debug("dial failed", "what", what, "peer", ai.ID, "err", err, "retry_in", backoff)
				if !p.sleep(backoff) {
					return
				}
				backoff = min(2*backoff, redialMaxBackoff)
				continue
			}
			if !down.IsZero() {
				p.log.Info(what+" reachable again", "peer", ai.ID, "after", time.Since(down).Round(time.Millisecond))
			}
			p.log.Info("connected to "+what, "peer", ai.ID)
			backoff, down = redialMinBackoff, time.Time{}
		}
		if !p.sleep(250 * time.Millisecond) {
			return
		}
	}
}

// sleep waits d or until the peer closes; it reports whether to go on.
func (p *Peer) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// advertiseLoop keeps this peer advertised on the network's rendezvous.
// discovery/util.Advertise waits two minutes after a failure, which at
// start-up (before the routing table fills) is most of them; this retries
// quickly until it succeeds, then re-advertises before the TTL runs out.
func (p *Peer) advertiseLoop(rd *drouting.RoutingDiscovery) {
	for {
		ctx, cancel := context.WithTimeout(p.ctx, dialTimeout)
		ttl, err := rd.Advertise(ctx, p.cfg.rendezvous())
		cancel()
		wait := advertiseRetry
		if err == nil {
			wait = min(max(ttl/2, advertiseRetry), 10*time.Minute)
		} else if p.ctx.Err() == nil {
			p.log.Debug("dht advertise", "err", err)
		}
		if !p.sleep(wait) {
			return
		}
	}
}

// findPeersLoop looks up the rendezvous and connects to the peers found.
// The dials of one round run concurrently, each with its own deadline, so
// that an unreachable peer delays no other; the round ends when all have.
// Two peers often find each other in the same round: see dialFirst.
func (p *Peer) findPeersLoop(rd *drouting.RoutingDiscovery) {
	wait := advertiseRetry
	for {
		ctx, cancel := context.WithTimeout(p.ctx, dialTimeout)
		found, err := rd.FindPeers(ctx, p.cfg.rendezvous())
		var dials sync.WaitGroup
		if err == nil {
			for ai := range found {
				if ai.ID == p.h.ID() || len(ai.Addrs) == 0 || p.h.Network().Connectedness(ai.ID) == network.Connected {
					continue
				}
				dials.Go(func() {
					if !p.dialFirst(ai.ID) {
						return
					}
					dctx, dcancel := context.WithTimeout(p.ctx, dialTimeout)
					defer dcancel()
					if err := p.h.Connect(dctx, ai); err != nil {
						p.log.Debug("dial failed", "what", "peer found on the DHT", "peer", ai.ID, "addrs", ai.Addrs, "err", err)
						return
					}
					p.log.Debug("connected to a peer found on the DHT", "peer", ai.ID)
				})
			}
		} else if p.ctx.Err() == nil {
			p.log.Debug("dht find peers", "err", err)
		}
		dials.Wait()
		cancel()
		if p.ctx.Err() != nil || !p.sleep(wait) {
			return
		}
		if len(p.h.Network().Peers()) > 0 {
			wait = findPeersInterval
		}
	}
}

// lostPeerGiveUp is how long a catalog peer that disconnected is redialled
// before it counts as gone.
const lostPeerGiveUp = 10 * time.Minute

// redialLost redials a catalog peer whose last connection, a relayed one,
// closed: a relayed connection dies with its relay, and the peer is likely
// still reachable through another. It dials the addresses the peerstore
// holds for the peer (identify keeps them current: a peer behind a NAT has
// there the relay addresses of all its reservations) until the peer is
// back or lostPeerGiveUp passes; otherwise the two would wait for the next
// DHT lookup. Direct connections that close are not redialled: the
// connection manager trims them on purpose, and bootstrap and mDNS peers
// have redialers of their own. A peer being backed off as bad is left
// alone. Both ends see the connection die: see dialFirst for which dials.
func (p *Peer) redialLost(id peer.ID) {
	if p.h.Network().Connectedness(id) == network.Connected || p.ctx.Err() != nil {
		return
	}
	if protos, err := p.h.Peerstore().GetProtocols(id); err != nil || !slices.Contains(protos, p.proto) {
		return
	}
	if slices.ContainsFunc(p.boot, func(ai peer.AddrInfo) bool { return ai.ID == id }) {
		return
	}
	p.mu.Lock()
	_, bad := p.backoffs[id]
	if bad || p.mdnsPeers[id] || p.redialing[id] {
		p.mu.Unlock()
		return
	}
	p.redialing[id] = true
	p.mu.Unlock()
	p.goRun(func() {
		if p.dialFirst(id) {
			p.keepConnected(peer.AddrInfo{ID: id}, "catalog peer", lostPeerGiveUp)
		}
		p.mu.Lock()
		delete(p.redialing, id)
		p.mu.Unlock()
	})
}

// dialFirst reports whether to dial id now. Two peers often learn of each
// other at the same moment (both lose their connection, both look up the
// rendezvous in step), and two relayed connections made at once defeat
// hole punching (see punchTracer.Trace): so the peer with the larger ID
// waits redialMaxBackoff first, and dials only if the other did not. It
// reports false if the peer closes meanwhile.
func (p *Peer) dialFirst(id peer.ID) bool {
	if p.h.ID() < id {
		return true
	}
	return p.sleep(redialMaxBackoff) && p.h.Network().Connectedness(id) != network.Connected
}

// mdnsNotifee connects to peers found on the local network and keeps them
// connected like bootstrap peers, until one has been unreachable for
// mdnsGiveUp: mDNS reports a peer once, not again while it stays on the
// network, so a dial that fails or a connection that drops would otherwise
// not be retried. When two peers find each other at once and both dial over
// TCP, the simultaneous open fails the handshake; so only the peer with the
// smaller ID dials.
type mdnsNotifee struct{ p *Peer }

func (n mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	p := n.p
	if ai.ID == p.h.ID() || p.h.ID() > ai.ID {
		return
	}
	p.mu.Lock()
	if p.mdnsPeers[ai.ID] {
		p.mu.Unlock()
		return // already kept connected
	}
	p.mdnsPeers[ai.ID] = true
	p.mu.Unlock()
	p.goRun(func() {
		p.keepConnected(ai, "a peer found by mDNS", mdnsGiveUp)
		p.mu.Lock()
		delete(p.mdnsPeers, ai.ID)
		p.mu.Unlock()
	})
}
