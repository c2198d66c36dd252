package p2p

import (
	"errors"
	"time"

	"github.com/crdt-catalog/crdt-catalog/node"
	"github.com/libp2p/go-libp2p/core/peer"
)

// errSlowState marks a full state that kept arriving but was not complete
// within Config.FullStateTimeout.
var errSlowState = errors.New("full state not complete in time")

// isBad reports whether err shows a peer abusing a sync stream without
// sending garbage: a stream it stalled (ErrStalled), or a full state over
// this node's MaxStateBytes (node.ErrStateTooLarge) or past
// FullStateTimeout (errSlowState). Such a peer costs this node a pull
// slot, spooled bytes or both on every pull, so it is disconnected and
// backed off like a garbage sender.
func isBad(err error) bool {
	return errors.Is(err, ErrStalled) || errors.Is(err, node.ErrStateTooLarge) || errors.Is(err, errSlowState)
}

// backoff is a bad peer's penalty: no scheduled pull from it before until;
// its next offence costs next.
type backoff struct {
	until time.Time
	next  time.Duration
}

// badPeer disconnects id and stops scheduled pulls from it for a while:
// Config.BadPeerBackoff, doubling with each offence after the previous
// backoff ended, up to Config.MaxBadPeerBackoff. It logs the event once.
func (p *Peer) badPeer(id peer.ID, msg string, err error) {
	d, again := p.backOff(id)
	p.stats.badPeers.Add(1)
	args := []any{"peer", id, "backoff", d.Round(time.Second), "err", err}
	if errors.Is(err, node.ErrStateTooLarge) {
		// The state may be honest: the limit is this node's.
		args = append(args, "hint", "raise the node's MaxStateBytes if this peer's catalog is that large")
	}
	if again {
		p.log.Debug(msg+"; disconnecting (already backed off)", args...)
	} else {
		p.log.Warn(msg+"; disconnecting, and not pulling from it for a while", args...)
	}
	_ = p.h.Network().ClosePeer(id)
}

// backOff records an offence of id and returns how long its backoff runs
// from now, and whether it was backed off already (an offence during a
// backoff, on a stream it opened, does not lengthen it).
func (p *Peer) backOff(id peer.ID) (time.Duration, bool) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.backoffs[id]
	if b != nil && now.Before(b.until) {
		return b.until.Sub(now), true
	}
	// Forget the peers that have behaved for MaxBadPeerBackoff since
	// their backoff ended, id included: they start again from the bottom.
	for other, ob := range p.backoffs {
		if now.Sub(ob.until) > p.cfg.MaxBadPeerBackoff {
			delete(p.backoffs, other)
		}
	}
	b = p.backoffs[id]
	if b == nil {
		b = &backoff{next: p.cfg.BadPeerBackoff}
		p.backoffs[id] = b
	}
	d := b.next
	b.until = now.Add(d)
	b.next = min(2*d, p.cfg.MaxBadPeerBackoff)
	return d, false
}

// backedOff reports whether scheduled pulls from id are suspended.
func (p *Peer) backedOff(id peer.ID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.backoffs[id]
	return b != nil && time.Now().Before(b.until)
}

// backedOffPeers counts the peers whose backoff runs now.
func (p *Peer) backedOffPeers() int {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, b := range p.backoffs {
		if now.Before(b.until) {
			n++
		}
	}
	return n
}

// admitSync reserves one of the inbound sync stream slots for id, and
// reports false if id or all peers together are at their limit.
func (p *Peer) admitSync(id peer.ID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.syncIn[id] >= p.cfg.MaxSyncStreamsPerPeer || p.syncInTotal >= p.cfg.MaxSyncStreams {
		return false
	}
	p.syncIn[id]++
	p.syncInTotal++
	return true
}

// releaseSync frees a slot admitSync reserved.
func (p *Peer) releaseSync(id peer.ID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.syncIn[id]--; p.syncIn[id] <= 0 {
		delete(p.syncIn, id)
	}
	p.syncInTotal--
}

// syncStreams returns how many inbound sync streams are being answered.
func (p *Peer) syncStreams() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.syncInTotal
}
