package p2p

import (
	"context"
	"fmt"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
)

const (
	dialTimeout = 10 * time.Second
	maxBackoff  = 30 * time.Second
	// mdnsGiveUp is how long a peer found by mDNS is redialled after it
	// disconnects before it counts as gone from the local network; mDNS
	// reports it again if it comes back after that.
	mdnsGiveUp        = 10 * time.Minute
	findPeersInterval = 10 * time.Second
	advertiseRetry    = 2 * time.Second
)

// startDiscovery starts the bootstrap dialers, mDNS and the DHT, as
// configured.
func (p *Peer) startDiscovery(ctx context.Context) error {
	// Several addresses of one peer (say its TCP and QUIC ones) make one
	// bootstrap entry, dialled by one goroutine with all its addresses.
	var boot []peer.AddrInfo
	index := map[peer.ID]int{}
	for _, a := range p.cfg.Bootstrap {
		ai, err := peer.AddrInfoFromString(a)
		if err != nil {
			return fmt.Errorf("bootstrap address %q: %w (want a multiaddr ending in /p2p/<peer id>)", a, err)
		}
		if ai.ID == p.h.ID() {
			continue
		}
		if i, ok := index[ai.ID]; ok {
			boot[i].Addrs = append(boot[i].Addrs, ai.Addrs...)
			continue
		}
		index[ai.ID] = len(boot)
		boot = append(boot, *ai)
	}
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
		// Server mode: on a private network no node would otherwise ever
		// consider itself reachable, and routing tables would stay empty.
		// The protocol prefix keeps the catalog off the public IPFS DHT,
		// and no public bootstrap peers are added.
		kdht, err := dht.New(p.h,
			dht.Mode(dht.ModeServer),
			dht.ProtocolPrefix(protocol.ID("/crdt-catalog")),
			dht.BootstrapPeers(boot...),
		)
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

// keepConnected dials a peer and redials it with exponential backoff
// whenever it is disconnected. With giveUp > 0 it returns once the peer has
// been unreachable for that long.
func (p *Peer) keepConnected(ai peer.AddrInfo, what string, giveUp time.Duration) {
	backoff := time.Second
	var down time.Time // when the current run of failed dials began
	for {
		if p.h.Network().Connectedness(ai.ID) != network.Connected {
			ctx, cancel := context.WithTimeout(p.ctx, dialTimeout)
			err := p.h.Connect(ctx, ai)
			cancel()
			if err != nil {
				if p.ctx.Err() != nil {
					return
				}
				if down.IsZero() {
					down = time.Now()
				}
				if giveUp > 0 && time.Since(down) >= giveUp {
					p.log.Info("giving up on "+what+": unreachable", "peer", ai.ID, "for", giveUp)
					return
				}
				p.log.Debug("dial to "+what+" failed", "peer", ai.ID, "err", err, "retry_in", backoff)
				if !p.sleep(backoff) {
					return
				}
				backoff = min(2*backoff, maxBackoff)
				continue
			}
			p.log.Info("connected to "+what, "peer", ai.ID)
			backoff, down = time.Second, time.Time{}
		}
		if !p.sleep(time.Second) {
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
func (p *Peer) findPeersLoop(rd *drouting.RoutingDiscovery) {
	wait := advertiseRetry
	for {
		ctx, cancel := context.WithTimeout(p.ctx, dialTimeout)
		found, err := rd.FindPeers(ctx, p.cfg.rendezvous())
		if err == nil {
			for ai := range found {
				if ai.ID == p.h.ID() || len(ai.Addrs) == 0 || p.h.Network().Connectedness(ai.ID) == network.Connected {
					continue
				}
				if err := p.h.Connect(ctx, ai); err == nil {
					p.log.Info("connected to a peer found on the DHT", "peer", ai.ID)
					wait = findPeersInterval
				}
			}
		}
		cancel()
		if p.ctx.Err() != nil || !p.sleep(wait) {
			return
		}
		if len(p.h.Network().Peers()) > 0 {
			wait = findPeersInterval
		}
	}
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
