package node

import (
	"context"
	"fmt"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// NotAppliedError is WaitApplied's error when its context ends before
// the node has applied everything its token names.
type NotAppliedError struct {
	Missing []crdt.Dot // the token's dots not applied here, sorted
	Err     error      // the context's error
}

// Error names the missing dots and why the wait ended.
func (e *NotAppliedError) Error() string {
	return fmt.Sprintf("not applied on this node yet: %v (%v)", e.Missing, e.Err)
}

// Unwrap returns the context's error.
func (e *NotAppliedError) Unwrap() error { return e.Err }

// WaitApplied returns once this node has durably applied every dot t
// names (and so, since a replica's deltas are applied in order, every
// delta of those replicas before them): a read after it sees those writes.
// If ctx ends first it returns a *NotAppliedError naming what is missing.
// While it waits, Wants signals that a peer should be asked for deltas.
func (n *Node) WaitApplied(ctx context.Context, t crdt.Token) error {
	asked := false
	for {
		n.mu.Lock()
		if n.closed {
			n.mu.Unlock()
			return ErrClosed
		}
		// While a failed commit stops writes, nothing is staged and
		// applied is what the store holds: the answer stands without a
		// commit to wait for, and reads go on.
		missing := t.Missing(n.applied)
		if len(missing) == 0 {
			g := n.settled()
			n.mu.Unlock()
			if g == nil {
				return nil
			}
			return n.wait(ctx, g, true)
		}
		if n.advanced == nil {
			n.advanced = make(chan struct{})
		}
		advanced := n.advanced
		n.mu.Unlock()
		if !asked {
			asked = true
			select {
			case n.wants <- struct{}{}:
			default:
			}
		}
		select {
		case <-advanced:
		case <-ctx.Done():
			return &NotAppliedError{Missing: missing, Err: ctx.Err()}
		}
	}
}

// Wants receives a value when a reader waits in WaitApplied for deltas
// this node has not applied: a transport should then pull from a peer at
// once rather than at its next scheduled round. Signals coalesce.
func (n *Node) Wants() <-chan struct{} { return n.wants }
