package node

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// Causal delivery of remote deltas.
//
// A remote delta is joined only once this node has applied everything it
// depends on: the previous dot of its own replica (counters of a replica
// advance one by one from its origin) and every dot of its context (the
// writes it observed and overwrote or removed). Until then it waits in a
// bounded in-memory buffer, and joins as soon as the last delta it waits
// for is applied, by gossip, anti-entropy or a full-state import.
//
// This is what keeps a delta from claiming more than exists:
//   - a dot far ahead of its replica (2^64−1, 2^63) waits for
//     predecessors that never come, so it can neither block the replica's
//     later counters nor leave a dot cloud in the context;
//   - a remove or overwrite whose context names writes that do not exist
//     yet waits for them instead of erasing them when they arrive.
//
// The buffer holds nothing this node acknowledged: a waiting delta is still
// in its origin's log and comes back by anti-entropy if it is evicted or
// the node restarts. A delta of this node's own replica that it never
// wrote is refused, never joined: it can only come from another process
// using this replica (a copied data directory) or from a forger.

// waiter is one delta that waits for a dot this node has not applied.
type waiter struct {
	d    *crdt.Delta
	enc  []byte
	next crdt.Hash // the chain hash after d; zero if d has no proof
	on   crdt.Dot  // the dot it waits for; zero if unproven
	// unproven marks a delta of a keyed replica that waits for a later
	// delta of its replica to prove it (see offer), not for a dot.
	unproven bool
	elem     *list.Element
	bytes    int64
}

// escape returns a copy of x on the heap, for the waiting buffer.
func (x waiter) escape() *waiter { return &x }

// waiting is the buffer of deltas waiting for their dependencies. Guarded
// by Node.mu.
type waiting struct {
	byDot map[crdt.Dot]*waiter
	on    map[crdt.Dot][]*waiter // by the dot each waits for
	fifo  list.List              // oldest first, for eviction
	bytes int64
}

func (w *waiting) init() {
	w.byDot = map[crdt.Dot]*waiter{}
	w.on = map[crdt.Dot][]*waiter{}
}

// park adds x, waiting for dot on.
func (w *waiting) park(x *waiter, on crdt.Dot) {
	x.on = on
	w.on[on] = append(w.on[on], x)
}

// unpark removes x from the index of what it waits for.
func (w *waiting) unpark(x *waiter) {
	ws := w.on[x.on]
	for i, y := range ws {
		if y == x {
			ws[i] = ws[len(ws)-1]
			ws = ws[:len(ws)-1]
			break
		}
	}
	if len(ws) == 0 {
		delete(w.on, x.on)
	} else {
		w.on[x.on] = ws
	}
}

// remove takes x out of the buffer.
func (w *waiting) remove(x *waiter) {
	w.unpark(x)
	w.drop(x)
}

// drop takes x, already out of the index of what it waits for, out of the
// buffer.
func (w *waiting) drop(x *waiter) {
	w.fifo.Remove(x.elem)
	delete(w.byDot, x.d.Dot)
	w.bytes -= x.bytes
}

// unmet returns the first dot d depends on that this node has not
// applied, and whether there is one. Caller holds mu.
func (n *Node) unmet(d *crdt.Delta) (crdt.Dot, bool) {
	if d.Dot.Counter > 1 {
		if prev := (crdt.Dot{Replica: d.Dot.Replica, Counter: d.Dot.Counter - 1}); !n.applied.Contains(prev) {
			return prev, true
		}
	}
	for _, c := range d.Context {
		if c != d.Dot && !n.applied.Contains(c) {
			return c, true
		}
	}
	return crdt.Dot{}, false
}

// offer takes one validated remote delta: it joins it if everything it
// depends on is applied (and then every waiting delta that this unblocks),
// parks it otherwise, and counts the outcome in res. A delta of a keyed
// replica that no signature covers yet (the run it belongs to was cut
// before its signature, by a frame or page boundary) waits too, until a
// later delta of its replica that chains back to it is proven. Caller
// holds mu.
func (n *Node) offer(ctx context.Context, g *group, d *crdt.Delta, enc []byte, chk crdt.Checked, now int64, res *ApplyResult) error {
	if chk.Keyed && !chk.Proven {
		chk.Proven = n.provenByWaiting(d, chk.Next)
	}
	switch {
	case n.applied.Contains(d.Dot):
		res.Duplicate++
		if d.Dot.Replica == n.replica && chk.Proven {
			// Rare: peers send this node its own deltas only when they
			// hold a copy it may not have written.
			return n.checkOwn(ctx, g, d, enc)
		}
		return nil
	case !chk.Keyed && n.cfg.Key != nil, chk.Keyed && d.Proof.Prev.IsZero(), d.Dot.Replica == n.replica && chk.Keyed && !chk.Proven:
		// No proof of origin, and none can come.
		res.Refused++
		n.stats.deltasRefused.Add(1)
		n.stats.unproven.Add(1)
		n.log.Debug("refusing a delta without proof of its origin", "dot", d.Dot, "keyed", chk.Keyed)
		return nil
	case d.Dot.Replica == n.replica:
		// Not applied, so never written by this process.
		res.Refused++
		n.stats.deltasRefused.Add(1)
		if chk.Proven {
			n.proveFork(g, d.Dot, "a peer sent a delta of this node's own replica, signed with its key, that this node never wrote")
		} else {
			n.suspectFork(d.Dot, "a peer sent a delta of this node's own replica that this node never wrote")
		}
		return nil
	}
	if y := n.parked.byDot[d.Dot]; y != nil {
		if !y.unproven || !chk.Proven {
			res.Waiting++
			return nil
		}
		n.parked.remove(y) // a proven delta replaces one that was not
	}
	if !chk.Keyed && (!d.Proof.Prev.IsZero() || d.Proof.Sig != nil) {
		d = withProof(d, crdt.Proof{}) // a replica that is not keyed has no chain
	} else if chk.Keyed && chk.Sig == nil && d.Proof.Sig != nil {
		d = withProof(d, crdt.Proof{Prev: d.Proof.Prev}) // keep only signatures that were checked
	}
	// x stays on the stack unless it waits (most deltas join at once).
	x := waiter{d: d, enc: enc, next: chk.Next, bytes: int64(len(enc)), unproven: chk.Keyed && !chk.Proven}
	if x.unproven {
		n.enqueue(x.escape())
		res.Waiting++
		return nil
	}
	if chk.Keyed {
		if err := n.proveBack(ctx, g, &x, now, res); err != nil {
			return err
		}
	}
	if on, ok := n.unmet(d); ok {
		w := x.escape()
		n.enqueue(w)
		n.parked.park(w, on)
		res.Waiting++
		return nil
	}
	joined, err := n.joinRemote(ctx, g, &x, now)
	if err != nil || !joined {
		if err == nil {
			res.Refused++
		}
		return err
	}
	res.New++
	return n.release(ctx, g, d.Dot, now, res)
}

// provenByWaiting reports whether the waiting delta after d, proven,
// chains back to d (whose chain hash after it is next). Caller holds mu.
func (n *Node) provenByWaiting(d *crdt.Delta, next crdt.Hash) bool {
	y := n.parked.byDot[crdt.Dot{Replica: d.Dot.Replica, Counter: d.Dot.Counter + 1}]
	return y != nil && !y.unproven && !next.IsZero() && y.d.Proof.Prev == next
}

// proveBack proves the unproven waiting deltas that x, proven, chains back
// to, and joins those whose dependencies are met, with what that
// unblocks; the others now wait for their dependencies. Caller holds mu.
func (n *Node) proveBack(ctx context.Context, g *group, x *waiter, now int64, res *ApplyResult) error {
	var proven []*waiter // newest first
	prev := x.d.Proof.Prev
	for c := x.d.Dot.Counter - 1; c >= 1; c-- {
		y := n.parked.byDot[crdt.Dot{Replica: x.d.Dot.Replica, Counter: c}]
		if y == nil || !y.unproven || y.next != prev {
			break
		}
		y.unproven = false
		proven = append(proven, y)
		prev = y.d.Proof.Prev
	}
	var ready []*waiter
	for _, y := range proven {
		if on, ok := n.unmet(y.d); ok {
			n.parked.park(y, on)
		} else {
			ready = append(ready, y)
		}
	}
	for _, y := range ready {
		n.parked.drop(y)
		joined, err := n.joinRemote(ctx, g, y, now)
		if err != nil {
			return err
		}
		if !joined {
			res.Refused++
			continue
		}
		res.New++
		if err := n.release(ctx, g, y.d.Dot, now, res); err != nil {
			return err
		}
	}
	return nil
}

// release joins the waiting deltas that the newly applied dot unblocks,
// and those that they unblock in turn. Caller holds mu.
func (n *Node) release(ctx context.Context, g *group, dot crdt.Dot, now int64, res *ApplyResult) error {
	work := []crdt.Dot{dot}
	for len(work) > 0 {
		dot, work = work[len(work)-1], work[:len(work)-1]
		ws := n.parked.on[dot]
		delete(n.parked.on, dot)
		for _, x := range ws {
			if on, ok := n.unmet(x.d); ok {
				n.parked.park(x, on)
				continue
			}
			n.parked.drop(x)
			joined, err := n.joinRemote(ctx, g, x, now)
			if err != nil {
				return err
			}
			if joined {
				res.New++
				work = append(work, x.d.Dot)
			}
		}
	}
	return nil
}

// releaseAll joins every waiting delta that has become ready, after a
// full-state import that may have applied many dots at once. Caller holds
// mu.
func (n *Node) releaseAll(ctx context.Context, g *group) (ApplyResult, error) {
	var res ApplyResult
	now := n.now()
	var ready []crdt.Dot
	for dot, x := range n.parked.byDot {
		if n.applied.Contains(dot) {
			n.parked.remove(x) // the state brought it
			continue
		}
		if !x.unproven && n.applied.Contains(x.on) {
			ready = append(ready, x.on)
		}
	}
	for _, dot := range ready {
		if err := n.release(ctx, g, dot, now, &res); err != nil {
			return res, err
		}
	}
	return res, nil
}

// enqueue adds x to the waiting buffer, evicting the oldest waiting
// deltas if it is full; the caller parks it on the dot it waits for, if
// any. Caller holds mu.
func (n *Node) enqueue(x *waiter) {
	w := &n.parked
	for w.fifo.Len() > 0 && (w.fifo.Len() >= n.cfg.MaxWaitingDeltas || w.bytes+x.bytes > n.cfg.MaxWaitingBytes) {
		old := w.fifo.Front().Value.(*waiter)
		w.remove(old)
		n.stats.waitingEvicted.Add(1)
	}
	x.elem = w.fifo.PushBack(x)
	w.byDot[x.d.Dot] = x
	w.bytes += x.bytes
	n.stats.deltasWaited.Add(1)
}

// joinRemote joins a remote delta whose dependencies are all applied. It
// reports false, joining nothing, if the delta names a replica this node
// has no room for (Config.MaxReplicas). Caller holds mu.
func (n *Node) joinRemote(ctx context.Context, g *group, x *waiter, now int64) (bool, error) {
	d := x.d
	if !x.next.IsZero() && !n.extends(d) {
		n.stats.deltasRefused.Add(1)
		n.stats.equivocations.Add(1)
		n.log.Warn("refusing a delta that contradicts the chain its replica signed before: the replica signed two histories (equivocation)",
			"dot", d.Dot)
		return false, nil
	}
	if !n.roomFor(d) {
		n.stats.deltasRefused.Add(1)
		level := slog.LevelDebug
		if !n.replicasFull {
			n.replicasFull, level = true, slog.LevelWarn // once; the metric counts the rest
		}
		n.log.Log(ctx, level, "refusing a delta of a new replica: the node knows of MaxReplicas replicas",
			"dot", d.Dot, "max_replicas", n.cfg.MaxReplicas)
		return false, nil
	}
	cur, err := n.readItem(ctx, d.Key())
	if err != nil {
		return false, err
	}
	if ahead := n.clock.Observe(d.TS, now); ahead > 0 {
		n.stats.clockAhead.Add(1)
		n.log.Warn("remote timestamp ahead of local clock; local writes do not follow it past the max clock offset",
			"dot", d.Dot, "ahead_ms", ahead)
	}
	if _, err := n.join(g, cur, d, x.enc, x.next, false); err != nil {
		n.stats.deltasRejected.Add(1)
		return false, fmt.Errorf("delta %s: %w", d.Dot, err)
	}
	return true, nil
}

// extends reports whether d, a proven delta whose predecessor is
// applied, continues its replica's chain as this node holds it: its Prev
// is the chain hash after the replica's last applied delta (or the chain's
// start for a first delta). A node that learned the predecessor in a full
// state holds no chain hash there and cannot tell. Caller holds mu.
func (n *Node) extends(d *crdt.Delta) bool {
	if d.Dot.Counter == 1 {
		return d.Proof.Prev == crdt.ChainStart(d.Dot.Replica)
	}
	h, ok := n.heads[d.Dot.Replica]
	return !ok || h.Counter+1 != d.Dot.Counter || h.Hash == d.Proof.Prev
}

// withProof returns a copy of d with proof p.
func withProof(d *crdt.Delta, p crdt.Proof) *crdt.Delta {
	c := *d
	c.Proof = p
	return &c
}

// roomFor reports whether joining d keeps the number of replicas the
// causal contexts name within Config.MaxReplicas. Every dot d names is
// already applied (its dependencies are met), so only its own replica can
// be new. Caller holds mu.
func (n *Node) roomFor(d *crdt.Delta) bool {
	if d.Dot.Counter > 1 || n.applied.Base(d.Dot.Replica) > 0 {
		return true
	}
	return n.applied.NumReplicas() < n.cfg.MaxReplicas
}

// checkOwn compares d, a proven delta of this node's replica under a dot
// it applied, with the one it wrote: a different delta, signed with this
// node's key, proves a fork. A dot trimmed from the log cannot be
// compared. Caller holds mu.
func (n *Node) checkOwn(ctx context.Context, g *group, d *crdt.Delta, enc []byte) error {
	var b []byte
	if s, ok := n.overlay[logDotKey(d.Dot).String()]; ok {
		seq, err := decodeSeq(s.val)
		if err != nil {
			return err
		}
		b = n.overlay[logSeqKey(seq).String()].val
	} else {
		var err error
		if b, err = n.logged(ctx, d.Dot); errors.Is(err, ErrLogGap) {
			return nil
		} else if err != nil {
			return err
		}
	}
	_, _, mine, err := parseLogEntry(b)
	if err != nil {
		return err
	}
	if !bytes.Equal(mine, enc) {
		n.proveFork(g, d.Dot, "a peer sent a delta of this node's own replica, signed with its key, that differs from the one this node wrote under the same dot")
	}
	return nil
}

// proveFork records proof that another process uses this node's replica
// and key: from now on, and across restarts (the proof is staged in g),
// local writes fail with ErrForked. Caller holds mu.
func (n *Node) proveFork(g *group, dot crdt.Dot, why string) {
	n.suspectFork(dot, why)
	if n.forked != "" {
		return
	}
	n.forked = fmt.Sprintf("%s (dot %s)", why, dot)
	n.fork = n.forked
	n.put(g, keyFork, []byte(n.forked))
	n.log.Error("this replica is forked: local writes are refused until `crdt-catalog reincarnate` gives one of the copies a new replica", "dot", dot)
}

// suspectFork records evidence that another process uses this node's
// replica ID: it is counted and shown in Stats; the first evidence is
// logged at error, later evidence (anti-entropy offers the same delta
// every round) at debug. Caller holds mu.
func (n *Node) suspectFork(dot crdt.Dot, why string) {
	n.stats.forkEvidence.Add(1)
	if n.fork != "" {
		n.log.Debug("more evidence of a fork of this replica", "dot", dot, "why", why)
		return
	}
	n.fork = fmt.Sprintf("%s (dot %s, this replica's counter is %d)", why, dot, n.meta.Counter)
	n.log.Error("possible fork of this replica: another process may use the same data directory or a copy of it; "+
		"run `crdt-catalog reincarnate` on one of them", "dot", dot, "counter", n.meta.Counter, "why", why)
}
