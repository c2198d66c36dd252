package node

import (
	"errors"
	"sync"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// ErrLagged closes a subscription whose reader fell behind its buffer. The
// reader has missed changes; it can catch up from the log with DeltasSince
// (from the Seq of the last change it saw) or by anti-entropy.
var ErrLagged = errors.New("subscriber lagged")

// Change is one delta that became durable on this node.
type Change struct {
	Seq     uint64      // its sequence number in the delta log
	Delta   *crdt.Delta // shared between subscribers: do not modify
	Encoded []byte      // the delta's binary encoding; do not modify
	Local   bool        // made by a local operation rather than received
}

// Subscription delivers changes in commit order.
type Subscription struct {
	// C receives the changes. It is closed when the subscription ends;
	// Err then says why.
	C <-chan Change

	c    chan Change
	n    *Node
	once sync.Once
	err  error // set before c is closed
}

// Subscribe returns a subscription to every change made durable from now
// on. Delivery never blocks the node: a subscriber whose buffer of
// `buffer` changes is full is closed with ErrLagged.
func (n *Node) Subscribe(buffer int) *Subscription {
	c := make(chan Change, max(buffer, 1))
	s := &Subscription{C: c, c: c, n: n}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		s.close(ErrClosed)
		return s
	}
	n.subs[s] = struct{}{}
	return s
}

// Close ends the subscription. Safe to call more than once.
func (s *Subscription) Close() {
	s.n.mu.Lock()
	defer s.n.mu.Unlock()
	s.close(nil)
}

// Err returns why C was closed: nil after Close, ErrLagged, or ErrClosed.
// Read it only after C is closed.
func (s *Subscription) Err() error { return s.err }

// close ends s with err. Caller holds n.mu.
func (s *Subscription) close(err error) {
	s.once.Do(func() {
		delete(s.n.subs, s)
		s.err = err
		close(s.c)
	})
}

// publish hands committed changes to subscribers. Caller holds mu.
func (n *Node) publish(changes []Change) {
	for s := range n.subs {
		for _, c := range changes {
			select {
			case s.c <- c:
			default:
				s.close(ErrLagged)
			}
			if s.err != nil {
				break
			}
		}
	}
}
