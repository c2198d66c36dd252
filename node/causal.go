package node

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"

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
	// ready marks a proven delta whose dependencies are each applied or
	// ready themselves, which waits only for stubs to be named (see
	// settle).
	ready bool
	// call is the result of the ApplyDeltas call that brought it, whose
	// Waiting count it leaves if it joins before that call returns.
	call  *ApplyResult
	elem  *list.Element
	bytes int64
}

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
	if n.banned(d.Dot) {
		res.Refused++
		n.stats.deltasRefused.Add(1)
		n.stats.equivocations.Add(1)
		return nil
	}
	n.coverBanned(d)
	if y := n.parked.byDot[d.Dot]; y != nil {
		switch {
		case y.unproven && chk.Proven: // a proven delta replaces one that was not
		case !y.unproven && chk.Proven && y.d.IsStub() && !d.IsStub(): // the whole delta replaces its stub
		default:
			res.Waiting++
			return nil
		}
		n.parked.remove(y)
	}
	if !chk.Keyed {
		if !d.Proof.Prev.IsZero() || d.Proof.Sig != nil || d.Proof.Split || !d.Proof.Elided.IsZero() {
			d = withProof(d, crdt.Proof{}) // a replica that is not keyed has no chain
		}
	} else if chk.Sig == nil && d.Proof.Sig != nil {
		p := d.Proof
		p.Sig = nil
		d = withProof(d, p) // keep only signatures that were checked
	}
	x := &waiter{d: d, enc: enc, next: chk.Next, bytes: int64(len(enc)), unproven: chk.Keyed && !chk.Proven}
	if x.unproven {
		n.enqueue(x)
		x.call = res
		res.Waiting++
		return nil
	}
	if chk.Keyed {
		if err := n.proveBack(ctx, g, x, now, res); err != nil {
			return err
		}
	}
	waited, err := n.settle(ctx, g, x, false, now, res)
	if waited {
		res.Waiting++
	}
	return err
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
	for i := len(proven) - 1; i >= 0; i-- { // oldest first
		if y := proven[i]; n.parked.byDot[y.d.Dot] == y { // not joined meanwhile
			if _, err := n.settle(ctx, g, y, true, now, res); err != nil {
				return err
			}
		}
	}
	return nil
}

// release joins the waiting deltas that the newly applied dot unblocks,
// and those that they unblock in turn (settle releases what it joins).
// Caller holds mu.
func (n *Node) release(ctx context.Context, g *group, dot crdt.Dot, now int64, res *ApplyResult) error {
	return n.retry(ctx, g, dot, nil, now, res)
}

// retry settles again the waiting deltas parked on dot, but skip: after
// dot was applied, or after skip, a stub of dot, began to wait for a delta
// that names it (they may join together). Caller holds mu.
func (n *Node) retry(ctx context.Context, g *group, dot crdt.Dot, skip *waiter, now int64, res *ApplyResult) error {
	ws := n.parked.on[dot]
	if len(ws) == 0 || (len(ws) == 1 && ws[0] == skip) {
		return nil
	}
	delete(n.parked.on, dot)
	for _, x := range ws {
		if x == skip {
			if n.parked.byDot[x.d.Dot] == x { // not joined meanwhile
				n.parked.park(x, dot)
			}
			continue
		}
		if n.parked.byDot[x.d.Dot] != x {
			continue // joined meanwhile, with a delta settled before it
		}
		if _, err := n.settle(ctx, g, x, true, now, res); err != nil {
			return err
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
	var ready []*waiter
	for dot, x := range n.parked.byDot {
		if n.applied.Contains(dot) {
			n.parked.remove(x) // the state brought it
			continue
		}
		if !x.unproven && (n.applied.Contains(x.on) || (x.on == dot && n.seen.Contains(dot))) {
			ready = append(ready, x)
		}
	}
	for _, x := range ready {
		if n.parked.byDot[x.d.Dot] != x {
			continue
		}
		n.parked.unpark(x)
		if _, err := n.settle(ctx, g, x, true, now, &res); err != nil {
			return res, err
		}
	}
	return res, nil
}

// settle joins x, a proven remote delta, if every delta it depends on is
// applied or waits ready to join with it, and else parks it on a dot it
// waits for. queued reports whether x is in the buffer already (and then
// not parked on any dot); it is enqueued if it must wait, and settle
// reports whether it waits.
//
// Stubs join only with, or after, a delta that names their dot (see
// crdt/stub.go), which is one that depends on them. So a delta is ready
// when each delta it depends on is applied or ready; a ready stub that
// nothing applied names (the seen context lacks its dot) waits, parked on
// its own dot, for a delta that names it; and a ready delta that does not
// wait so joins with the ready deltas it depends on (its plan), provided
// that every stub among them is named by one of them or by the seen
// context; else it waits for such a stub. Caller holds mu.
func (n *Node) settle(ctx context.Context, g *group, x *waiter, queued bool, now int64, res *ApplyResult) (waited bool, err error) {
	wait := func(on crdt.Dot, ready bool) (bool, error) {
		if !queued {
			n.enqueue(x)
			x.call = res
		}
		x.ready = ready
		n.parked.park(x, on)
		if ready {
			// Deltas that wait for this one may join with it now.
			return true, n.retry(ctx, g, x.d.Dot, x, now, res)
		}
		return true, nil
	}
	var blocked crdt.Dot
	alone := true // everything x depends on is applied
	ready := n.eachDep(x.d, func(c crdt.Dot) bool {
		if n.applied.Contains(c) {
			return true
		}
		alone = false
		if w := n.parked.byDot[c]; w == nil || w.unproven || !w.ready {
			blocked = c
			return false
		}
		return true
	})
	switch {
	case !ready:
		return wait(blocked, false)
	case x.d.IsStub() && !n.seen.Contains(x.d.Dot):
		return wait(x.d.Dot, true)
	}
	members := []*waiter{x}
	if !alone {
		if s, ok := n.blockedBy(x); ok {
			return wait(s, true)
		}
		var missing crdt.Dot
		var ok bool
		if members, missing, ok = n.joinPlan(x); !ok {
			return wait(missing, false) // a ready delta it depends on was evicted
		}
	}
	// A delta that names a waiting stub of another item, or that joinRemote
	// would refuse (it contradicts its replica's chain or needs room for a
	// replica) while stubs before it in the plan would join without what
	// names them, is refused now.
	bad := n.crossNamer(members)
	if bad == nil {
		bad = n.unjoinable(members)
	}
	if bad != nil {
		res.Refused++
		n.stats.deltasRefused.Add(1)
		n.log.Debug("refusing a delta that names a waiting stub of another item, or that cannot join with its plan", "dot", bad.d.Dot)
		if bad != x {
			n.parked.remove(bad)
			return wait(bad.d.Dot, false)
		}
		if queued {
			n.parked.drop(x)
		}
		return false, nil
	}
	if on, ok := n.uncovered(members); ok {
		if !n.namesWaitingStub(x.d) {
			return wait(on, true)
		}
		// x names a stub that waits: deltas that wait on either side of
		// it may join together, though no one plan holds them all.
		if !queued {
			n.enqueue(x)
		}
		x.ready = true
		n.parked.park(x, on)
		if err := n.joinReady(ctx, g, now, res); err != nil || n.parked.byDot[x.d.Dot] != x {
			return false, err
		}
		if !queued {
			x.call = res
		}
		return true, n.retry(ctx, g, x.d.Dot, x, now, res)
	}
	if queued {
		n.parked.drop(x)
	}
	return false, n.joinAll(ctx, g, members, now, res)
}

// joinAll joins members, in order, taking those still in the buffer out
// of it, then joins what waited for them. Caller holds mu.
func (n *Node) joinAll(ctx context.Context, g *group, members []*waiter, now int64, res *ApplyResult) error {
	var joined []crdt.Dot
	for _, m := range members {
		if n.parked.byDot[m.d.Dot] == m {
			n.parked.remove(m)
		}
		ok, err := n.joinRemote(ctx, g, m, now)
		if err != nil {
			return err
		}
		if !ok {
			res.Refused++
			continue
		}
		res.New++
		if m.call == res {
			res.Waiting-- // it waited within this call only
		}
		joined = append(joined, m.d.Dot)
	}
	for _, dot := range joined {
		if err := n.release(ctx, g, dot, now, res); err != nil {
			return err
		}
	}
	return nil
}

// joinPlan returns x's plan: the ready waiting deltas that x depends on,
// directly or through one another, dependencies first, and x last; or a
// dot they depend on that is neither applied nor ready. Caller holds mu.
func (n *Node) joinPlan(x *waiter) (members []*waiter, missing crdt.Dot, ok bool) {
	visited := map[crdt.Dot]bool{}
	var visit func(d *crdt.Delta) bool
	visit = func(d *crdt.Delta) bool {
		return n.eachDep(d, func(c crdt.Dot) bool {
			if n.applied.Contains(c) || visited[c] {
				return true
			}
			w := n.parked.byDot[c]
			if w == nil || w.unproven || !w.ready {
				missing = c
				return false
			}
			visited[c] = true
			if !visit(w.d) {
				return false
			}
			members = append(members, w)
			return true
		})
	}
	if !visit(x.d) {
		return nil, missing, false
	}
	return append(members, x), crdt.Dot{}, true
}

// namesWaitingStub reports whether d names a ready stub that waits to be
// named. Caller holds mu.
func (n *Node) namesWaitingStub(d *crdt.Delta) bool {
	for _, c := range d.Context {
		if w := n.parked.byDot[c]; c != d.Dot && w != nil && w.ready && w.on == c && sameItem(w.d, d) {
			return true
		}
	}
	return false
}

// joinReady joins the largest set of ready waiting deltas that can join
// together: each depends only on applied dots and on members, and each
// stub among them is named by another member or by the seen context. It
// starts from every ready delta and drops, until none is left to drop, the
// stubs nobody names and the deltas that depend on a dropped one. Caller
// holds mu.
func (n *Node) joinReady(ctx context.Context, g *group, now int64, res *ApplyResult) error {
	in := map[crdt.Dot]*waiter{}
	for dot, w := range n.parked.byDot {
		if w.ready && !w.unproven {
			in[dot] = w
		}
	}
	dependents := map[crdt.Dot][]*waiter{}
	namers := map[crdt.Dot]int{}
	for _, m := range in {
		n.eachDep(m.d, func(c crdt.Dot) bool {
			if !n.applied.Contains(c) {
				dependents[c] = append(dependents[c], m)
			}
			return true
		})
		for _, c := range m.d.Context {
			if s := in[c]; s != nil && s != m && s.d.IsStub() && sameItem(s.d, m.d) {
				namers[c]++
			}
		}
	}
	if bad := n.crossNamer(slices.Collect(maps.Values(in))); bad != nil {
		n.parked.remove(bad)
		res.Refused++
		n.stats.deltasRefused.Add(1)
		return nil
	}
	bad := func(m *waiter) bool {
		if m.d.IsStub() && namers[m.d.Dot] == 0 && !n.seen.Contains(m.d.Dot) {
			return true
		}
		return !n.eachDep(m.d, func(c crdt.Dot) bool { return n.applied.Contains(c) || in[c] != nil })
	}
	var work []*waiter
	for _, m := range in {
		if bad(m) {
			work = append(work, m)
		}
	}
	for len(work) > 0 {
		m := work[len(work)-1]
		work = work[:len(work)-1]
		if in[m.d.Dot] != m {
			continue
		}
		delete(in, m.d.Dot)
		for _, c := range m.d.Context {
			if s := in[c]; s != nil && s.d.IsStub() && sameItem(s.d, m.d) {
				if namers[c]--; bad(s) {
					work = append(work, s)
				}
			}
		}
		work = append(work, dependents[m.d.Dot]...)
	}
	if len(in) == 0 {
		return nil
	}
	// Dependencies first.
	var order []*waiter
	done := map[crdt.Dot]bool{}
	var visit func(m *waiter)
	visit = func(m *waiter) {
		done[m.d.Dot] = true
		n.eachDep(m.d, func(c crdt.Dot) bool {
			if y := in[c]; y != nil && !done[c] {
				visit(y)
			}
			return true
		})
		order = append(order, m)
	}
	for _, m := range in {
		if !done[m.d.Dot] {
			visit(m)
		}
	}
	if bad := n.unjoinable(order); bad != nil {
		n.parked.remove(bad)
		res.Refused++
		n.stats.deltasRefused.Add(1)
		return nil
	}
	return n.joinAll(ctx, g, order, now, res)
}

// eachDep calls fn with each dot d depends on — the previous dot of its
// replica, and its context's other dots — until fn returns false, and
// reports whether it did not.
func (n *Node) eachDep(d *crdt.Delta, fn func(crdt.Dot) bool) bool {
	if d.Dot.Counter > 1 && !fn(crdt.Dot{Replica: d.Dot.Replica, Counter: d.Dot.Counter - 1}) {
		return false
	}
	for _, c := range d.Context {
		if c != d.Dot && !fn(c) {
			return false
		}
	}
	return true
}

// blockedBy returns a stub that x, ready, must wait for, found without
// walking its plan: if x depends on one waiting delta w only (everything
// else it depends on is applied), and w waits for a stub s to be named
// that x does not name, x waits for s too. w's plan does not name s (or
// w would not wait for it), and x's plan is w's and x. This keeps a run
// of deltas that all wait for one stub (a replica's catch-up whose first
// delta waits for another replica's delta) from walking the run once per
// delta. Caller holds mu.
func (n *Node) blockedBy(x *waiter) (crdt.Dot, bool) {
	var w *waiter
	single := n.eachDep(x.d, func(c crdt.Dot) bool {
		if n.applied.Contains(c) {
			return true
		}
		y := n.parked.byDot[c]
		if w != nil && y != w {
			return false
		}
		w = y
		return true
	})
	if !single || w == nil {
		return crdt.Dot{}, false
	}
	s := w.on
	if s == w.d.Dot || n.applied.Contains(s) || n.seen.Contains(s) {
		return crdt.Dot{}, false
	}
	if st := n.parked.byDot[s]; st == nil || (x.d.JoinCovers().Contains(s) && sameItem(st.d, x.d)) {
		return crdt.Dot{}, false
	}
	return s, true
}

// uncovered returns the dot of a stub among members that no other member
// about the same item names and that the seen context lacks: it may not
// join yet. Caller holds mu.
func (n *Node) uncovered(members []*waiter) (crdt.Dot, bool) {
	if len(members) == 1 { // x alone: settle checked that a stub is named
		return crdt.Dot{}, false
	}
	stubs := map[crdt.Dot]*waiter{}
	for _, m := range members {
		if m.d.IsStub() {
			stubs[m.d.Dot] = m
		}
	}
	named := map[crdt.Dot]bool{}
	for _, m := range members {
		for _, c := range m.d.Context {
			if s := stubs[c]; s != nil && s != m && sameItem(s.d, m.d) {
				named[c] = true
			}
		}
	}
	for dot := range stubs {
		if !named[dot] && !n.seen.Contains(dot) {
			return dot, true
		}
	}
	return crdt.Dot{}, false
}

// sameItem reports whether deltas a and b are about the same item.
func sameItem(a, b *crdt.Delta) bool { return a.ID == b.ID && a.Collection == b.Collection }

// crossNamer returns a member that names a stub among members about
// another item: no honest delta does (a context names the writes the
// operation observed on its own item), and joining it before the stub's
// own namers would put the stub's dot in the seen context and drop the
// entries those namers carry. Caller holds mu.
func (n *Node) crossNamer(members []*waiter) *waiter {
	if len(members) == 1 {
		return nil
	}
	stubs := map[crdt.Dot]*waiter{}
	for _, m := range members {
		if m.d.IsStub() {
			stubs[m.d.Dot] = m
		}
	}
	for _, m := range members {
		for _, c := range m.d.Context {
			if s := stubs[c]; s != nil && s != m && !sameItem(s.d, m.d) {
				return m
			}
		}
	}
	return nil
}

// unjoinable returns the first of members, joined in order, that
// joinRemote would refuse: one that does not extend its replica's chain
// as this node holds it (after the members before it), or a delta of a
// new replica beyond Config.MaxReplicas. Caller holds mu.
func (n *Node) unjoinable(members []*waiter) *waiter {
	if len(members) == 1 {
		return nil // joinRemote refuses it alone, with nothing joined before it
	}
	after := map[crdt.ReplicaID]head{}
	added := 0
	for _, m := range members {
		d := m.d
		if !m.next.IsZero() {
			h, ok := after[d.Dot.Replica]
			if !ok {
				h, ok = n.heads[d.Dot.Replica]
			}
			switch {
			case d.Dot.Counter == 1 && d.Proof.Prev != crdt.ChainStart(d.Dot.Replica):
				return m
			case d.Dot.Counter > 1 && ok && h.Counter+1 == d.Dot.Counter && h.Hash != d.Proof.Prev:
				return m
			}
			after[d.Dot.Replica] = head{Counter: d.Dot.Counter, Hash: m.next}
		}
		if d.Dot.Counter == 1 && n.applied.Base(d.Dot.Replica) == 0 {
			if n.applied.NumReplicas()+added >= n.cfg.MaxReplicas {
				return m
			}
			added++
		}
	}
	return nil
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
	b, err := n.loggedOrStaged(ctx, d.Dot)
	if errors.Is(err, ErrLogGap) {
		return nil
	}
	if err != nil {
		return err
	}
	_, m, mine, err := decodeLogEntry(b)
	if err != nil {
		return err
	}
	same := m.Proof.Split == d.Proof.Split && bytes.Equal(mine, enc)
	if m.Proof.Split && d.Proof.Split {
		// Logged as a stub: compare what the chain hashes.
		mh, mo := crdt.SplitDigest(m)
		dh, do := crdt.SplitDigest(d)
		same = mh == dh && mo == do
	}
	if !same {
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
