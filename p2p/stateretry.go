package p2p

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// stateFailed records that a full state pulled from id failed to import
// for a reason that is not an offence (see Config.FullStateRetry): no
// scheduled pull from id for a while, doubling with each failure in a
// row. It logs the failure with the wait, at warning level: a node that
// cannot join a peer's state stays behind until it can.
func (p *Peer) stateFailed(id peer.ID, bytes int, err error) {
	p.mu.Lock()
	b := p.retries[id]
	if b == nil {
		b = &backoff{next: p.cfg.FullStateRetry}
		p.retries[id] = b
	}
	d := b.next
	b.until = time.Now().Add(d)
	b.next = min(2*d, p.cfg.MaxFullStateRetry)
	p.mu.Unlock()
	p.log.Warn("anti-entropy: full state not imported; not pulling from this peer again for a while", "peer", id,
		"bytes", bytes, "retry_in", d, "err", err)
}

// stateSucceeded forgets id's full-state failures: a pull from it
// succeeded.
func (p *Peer) stateSucceeded(id peer.ID) {
	p.mu.Lock()
	delete(p.retries, id)
	p.mu.Unlock()
}

// stateRetryWait returns how long scheduled pulls from id still wait
// after a failed full state; 0 if they do not.
func (p *Peer) stateRetryWait(id peer.ID) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b := p.retries[id]; b != nil {
		return max(0, time.Until(b.until))
	}
	return 0
}
