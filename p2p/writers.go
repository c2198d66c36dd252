package p2p

import (
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// ErrNotWriter means a pull was asked of a peer that is not on this peer's
// writers list.
var ErrNotWriter = errors.New("peer is not on the writers list")

// writerSet is an immutable set of peer IDs. A nil *writerSet means that
// every peer may write.
type writerSet map[peer.ID]struct{}

// newWriterSet returns the set of ids, or nil if ids is empty.
func newWriterSet(ids []peer.ID) *writerSet {
	if len(ids) == 0 {
		return nil
	}
	s := make(writerSet, len(ids))
	for _, id := range ids {
		s[id] = struct{}{}
	}
	return &s
}

// SetWriters replaces the writers list: the peers whose deltas this peer
// accepts from the network. An empty or nil ids means every peer may
// write (every peer that can connect at all: with a swarm key, every peer
// holding it). This peer always counts as a writer, listed or not.
//
// With a list, a gossip message whose origin (the author GossipSub's
// strict signing authenticates, not the peer that forwarded it) is not a
// writer is rejected, and this peer pulls only from writers, since a pull
// answer carries deltas or a full state that the answering peer vouches
// for. It still answers every peer's pulls.
//
// The change applies to messages validated and pulls started after it
// returns; a pull already under way finishes. Peers that become writers
// and are connected are pulled from at once: they may hold deltas this
// peer refused. ids is copied. Safe for concurrent use.
func (p *Peer) SetWriters(ids []peer.ID) {
	next := newWriterSet(ids)
	prev := p.writers.Swap(next)
	for _, id := range p.catalogPeers() {
		if inSet(next, id) && !inSet(prev, id) {
			p.requestPull(id)
		}
	}
}

// Writers returns the writers list, sorted, or nil if every peer may
// write. The caller owns the slice. Safe for concurrent use.
func (p *Peer) Writers() []peer.ID {
	s := p.writers.Load()
	if s == nil {
		return nil
	}
	ids := make([]peer.ID, 0, len(*s))
	for id := range *s {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// writerCount returns the length of the writers list, 0 if there is none.
func (p *Peer) writerCount() int {
	if s := p.writers.Load(); s != nil {
		return len(*s)
	}
	return 0
}

// isWriter reports whether this peer accepts deltas that id authored or
// vouches for.
func (p *Peer) isWriter(id peer.ID) bool {
	return id == p.h.ID() || inSet(p.writers.Load(), id)
}

// inSet reports whether id is in s; a nil s holds every peer.
func inSet(s *writerSet, id peer.ID) bool {
	if s == nil {
		return true
	}
	_, ok := (*s)[id]
	return ok
}

// writerLogEvery is how often, at most, a rejected origin is logged at
// info level; every rejection is logged at debug level.
const writerLogEvery = time.Minute

// maxWriterLogPeers bounds the origins whose last info log is remembered.
// Past it, rejections of new origins are logged at debug level only: peer
// IDs cost nothing to make, so the map must not grow with them.
const maxWriterLogPeers = 1024

// notWriterLog limits the info logs of rejected gossip origins to one per
// origin per writerLogEvery.
type notWriterLog struct {
	mu   sync.Mutex
	last map[peer.ID]time.Time // guarded by mu
}

// due reports whether a rejection of origin should be logged at info
// level now, and records it if so.
func (l *notWriterLog) due(origin peer.ID, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.last[origin]; ok && now.Sub(t) < writerLogEvery {
		return false
	}
	if l.last == nil {
		l.last = map[peer.ID]time.Time{}
	}
	if len(l.last) >= maxWriterLogPeers {
		for id, t := range l.last {
			if now.Sub(t) >= writerLogEvery {
				delete(l.last, id)
			}
		}
		if len(l.last) >= maxWriterLogPeers {
			return false
		}
	}
	l.last[origin] = now
	return true
}

// rejectNotWriter counts and logs a gossip message whose origin is not a
// writer. The forwarder is not disconnected: an honest peer with another
// list, or one that has not yet reloaded its list, relays such messages.
func (p *Peer) rejectNotWriter(origin, forwarder peer.ID) {
	p.stats.notWriter.Add(1)
	const msg = "rejected a gossip message: its origin is not on the writers list"
	if p.notWriterLog.due(origin, time.Now()) {
		p.log.Info(msg+" (logged once a minute per origin)", "origin", origin, "forwarder", forwarder)
		return
	}
	p.log.Debug(msg, "origin", origin, "forwarder", forwarder)
}
