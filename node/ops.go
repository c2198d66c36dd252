package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	leveldb "github.com/ipfs/go-ds-leveldb"
	"github.com/syndtr/goleveldb/leveldb/util"
)

// Item is a present item as callers see it: its resolved metadata and, for
// fields written concurrently, the losing entries.
type Item struct {
	Collection string
	ID         string
	Metadata   crdt.Document
	// Conflicts maps each field with concurrent writes to the losing
	// entries, greatest first; nil when there are none.
	Conflicts map[string][]crdt.Entry
	// Dot is the dot of the local write that returned the item (a
	// causal read token of it is crdt.Token{Dot.Replica: Dot.Counter});
	// zero for reads.
	Dot crdt.Dot `json:",omitzero"`
}

func view(k crdt.Key, it *crdt.Item) Item {
	return Item{Collection: k.Collection, ID: k.ID, Metadata: it.Metadata(), Conflicts: it.Conflicts()}
}

// checkKey validates a key of a local operation or read.
func (n *Node) checkKey(k crdt.Key) error {
	if err := k.Validate(); err != nil {
		return err
	}
	if !n.colls[k.Collection] {
		return fmt.Errorf("%w: %q", ErrUnknownCollection, k.Collection)
	}
	return nil
}

// Add adds the item with metadata doc, or, if it is present, makes doc its
// whole metadata. It returns once the write is durable.
func (n *Node) Add(ctx context.Context, k crdt.Key, doc crdt.Document) (Item, error) {
	return n.local(ctx, k, docMutator(k, doc, crdt.AddDelta))
}

// Create adds the item with metadata doc only if it is not present on this
// node; if it is, it changes nothing and returns an error wrapping
// ErrExists. The check and the add are one local operation, so of two
// Creates of one id on this node exactly one succeeds. It is local only:
// two nodes may each create the same id before either sees the other's
// add, and both adds then stand (concurrent adds merge, as Add's do). It
// returns once the write is durable.
func (n *Node) Create(ctx context.Context, k crdt.Key, doc crdt.Document) (Item, error) {
	return n.local(ctx, k, createMutator(k, doc))
}

// Remove removes a present item with all its observed metadata; a
// concurrent add on another replica wins over it. ErrNotFound if absent.
func (n *Node) Remove(ctx context.Context, k crdt.Key) error {
	_, err := n.local(ctx, k, removeMutator(k))
	return err
}

// Replace makes doc the whole metadata of a present item (fields absent
// from doc are removed). ErrNotFound if absent.
func (n *Node) Replace(ctx context.Context, k crdt.Key, doc crdt.Document) (Item, error) {
	return n.local(ctx, k, docMutator(k, doc, crdt.ReplaceDelta))
}

// Patch applies a JSON merge patch (RFC 7396) to the metadata of a present
// item. ErrNotFound if absent.
func (n *Node) Patch(ctx context.Context, k crdt.Key, patch crdt.Document) (Item, error) {
	return n.local(ctx, k, docMutator(k, patch, crdt.PatchDelta))
}

// The mutators of the local operations. Each canonicalizes its document
// before the write takes mu, so that under mu it is checked in one pass.

// docMutator is the mutator of an add, replace or patch: mk (crdt's
// AddDelta, ReplaceDelta or PatchDelta) with doc.
func docMutator(k crdt.Key, doc crdt.Document, mk func(crdt.Key, *crdt.Item, crdt.Document, crdt.Dot, crdt.Timestamp) (*crdt.Delta, error)) mutator {
	doc = canonicalDoc(doc)
	return func(cur *crdt.Item, dot crdt.Dot, ts crdt.Timestamp) (*crdt.Delta, error) {
		return mk(k, cur, doc, dot, ts)
	}
}

func createMutator(k crdt.Key, doc crdt.Document) mutator {
	add := docMutator(k, doc, crdt.AddDelta)
	return func(cur *crdt.Item, dot crdt.Dot, ts crdt.Timestamp) (*crdt.Delta, error) {
		if cur.Visible() {
			return nil, fmt.Errorf("create %s: %w", k, ErrExists)
		}
		return add(cur, dot, ts)
	}
}

func removeMutator(k crdt.Key) mutator {
	return func(cur *crdt.Item, dot crdt.Dot, ts crdt.Timestamp) (*crdt.Delta, error) {
		return crdt.RemoveDelta(k, cur, dot, ts)
	}
}

// canonicalDoc returns a valid doc in canonical form, so that the mutator,
// which runs under mu, only has to check it in one pass. An invalid doc is
// returned as it is, for the mutator to reject in its usual order of checks
// (a missing item is reported before a bad document).
func canonicalDoc(doc crdt.Document) crdt.Document {
	if c, err := doc.Canonical(); err == nil {
		return c
	}
	return doc
}

type mutator func(cur *crdt.Item, dot crdt.Dot, ts crdt.Timestamp) (*crdt.Delta, error)

// write is one local operation: the item it is about and how it changes
// it.
type write struct {
	k   crdt.Key
	mut mutator
}

// planned is a local write computed but not staged: its delta, the item
// before and after it, and the item's record.
type planned struct {
	d         *crdt.Delta
	enc       []byte
	next      crdt.Hash
	cur, post *crdt.Item
	rec       []byte
}

// local runs one local operation: it takes the next dot and timestamp,
// computes the delta, joins it, and waits until it is durable.
func (n *Node) local(ctx context.Context, k crdt.Key, mut mutator) (Item, error) {
	if err := n.checkKey(k); err != nil {
		return Item{}, err
	}
	items, err := n.writeAll(ctx, []write{{k, mut}})
	if err != nil {
		var be *BatchError
		if errors.As(err, &be) {
			err = be.Err
		}
		return Item{}, err
	}
	return items[0], nil
}

// writeAll runs local operations as one atomic write: it computes every
// delta, each on the state its predecessors leave, and stages them only if
// all succeed, so a failure (an error wrapped in a *BatchError naming the
// operation) leaves the node as it was. It waits until they are durable
// and returns the items after each operation. The keys are checked.
func (n *Node) writeAll(ctx context.Context, ws []write) ([]Item, error) {
	g, err := n.begin()
	if err != nil {
		return nil, err
	}
	if n.forked != "" {
		return nil, n.abort(g, ErrForked)
	}
	plan, err := n.plan(ctx, ws)
	if err != nil {
		return nil, n.abort(g, err)
	}
	items := make([]Item, len(plan))
	for i, p := range plan {
		n.stageJoin(g, p.cur, p.post, p.rec, p.d, p.enc, p.next, true)
		items[i] = view(ws[i].k, p.post)
		items[i].Dot = p.d.Dot
	}
	n.stats.ops.Add(uint64(len(plan)))
	for _, p := range plan {
		n.releaseFor(ctx, g, p.d.Dot)
	}
	if err := n.end(ctx, g, true); err != nil {
		return nil, err
	}
	return items, nil
}

// plan computes the deltas of ws on this node's state without staging
// anything: the i-th takes the i-th next dot and sees the items as the
// writes before it leave them. Caller holds mu.
func (n *Node) plan(ctx context.Context, ws []write) ([]planned, error) {
	plan := make([]planned, len(ws))
	after := map[crdt.Key]*crdt.Item{} // items as the planned writes leave them
	var prev crdt.Hash
	for i, w := range ws {
		cur, ok := after[w.k]
		if !ok {
			var err error
			if cur, err = n.readItem(ctx, w.k); err != nil {
				return nil, &BatchError{i, err}
			}
		}
		dot := crdt.Dot{Replica: n.replica, Counter: n.meta.Counter + 1 + uint64(i)}
		d, err := w.mut(cur, dot, n.clock.Now(n.now()))
		if err != nil {
			return nil, &BatchError{i, err}
		}
		p := planned{d: d, cur: cur}
		if p.enc, err = crdt.EncodeDelta(d); err != nil {
			return nil, &BatchError{i, err}
		}
		if n.cfg.Key != nil {
			// The commit signs the chain head after the group's last write.
			if i == 0 {
				if prev, err = n.chainBefore(dot); err != nil {
					return nil, &BatchError{i, err}
				}
			}
			d.Proof.Prev, d.Proof.Split = prev, true
			p.next = d.Proof.Next(d, p.enc)
			prev = p.next
		}
		if p.post, p.rec, err = n.joined(cur, d, p.enc); err != nil {
			return nil, &BatchError{i, err}
		}
		after[w.k] = p.post
		plan[i] = p
	}
	return plan, nil
}

// releaseFor joins the remote deltas that named this node's own dot
// before it existed, as they would join on every other node once it
// arrives there. One that fails to join (an item over its limit, a store
// read) is dropped from the buffer, as an evicted one is, and comes back
// by anti-entropy; the write itself stands. Caller holds mu.
func (n *Node) releaseFor(ctx context.Context, g *group, dot crdt.Dot) {
	if len(n.parked.on[dot]) == 0 {
		return
	}
	var res ApplyResult
	if err := n.release(ctx, g, dot, n.now(), &res); err != nil {
		n.log.Warn("joining deltas that waited for a local write", "dot", dot, "err", err)
	}
	n.stats.deltasNew.Add(uint64(res.New))
}

// abort ends a write that staged nothing and returns err.
func (n *Node) abort(g *group, err error) error {
	_ = n.end(context.Background(), g, false)
	return err
}

// readItem returns the newest state of an item, staged or durable; nil if
// the store holds nothing for it. Every item record in the store was
// encoded from a validated item, so it is decoded without re-checking its
// values' JSON. Caller holds mu.
func (n *Node) readItem(ctx context.Context, k crdt.Key) (*crdt.Item, error) {
	b, err := n.read(ctx, itemKey(k))
	if err != nil || b == nil {
		return nil, err
	}
	it, err := crdt.DecodeStoredItem(b)
	if err != nil {
		return nil, fmt.Errorf("%w: item %s: %v", ErrCorrupt, k, err)
	}
	return it, nil
}

// chainBefore returns this node's chain hash before its own dot. Caller
// holds mu.
func (n *Node) chainBefore(dot crdt.Dot) (crdt.Hash, error) {
	if dot.Counter == 1 {
		return crdt.ChainStart(dot.Replica), nil
	}
	h, ok := n.heads[dot.Replica]
	if !ok || h.Counter+1 != dot.Counter {
		return crdt.Hash{}, fmt.Errorf("%w: chain head of this replica at %d, next dot %s", ErrCorrupt, h.Counter, dot)
	}
	return h.Hash, nil
}

// join joins a validated delta into the item it is about (whose current
// state is cur), stages the item, the contexts, the log entry and, for a
// delta with a proof, its replica's chain head (next is the chain hash
// after it), and returns the item's new state. If the joined item would
// exceed crdt.MaxItemBytes it stages nothing and returns an error wrapping
// crdt.ErrTooLarge. Caller holds mu.
func (n *Node) join(g *group, cur *crdt.Item, d *crdt.Delta, enc []byte, next crdt.Hash, local bool) (*crdt.Item, error) {
	post, rec, err := n.joined(cur, d, enc)
	if err != nil {
		return nil, err
	}
	n.stageJoin(g, cur, post, rec, d, enc, next, local)
	return post, nil
}

// joined returns the state of the item d is about (now cur) once d is
// joined, and the record to store for it (nil if the item is empty); enc
// is d's encoding. It changes nothing. Caller holds mu.
func (n *Node) joined(cur *crdt.Item, d *crdt.Delta, enc []byte) (post *crdt.Item, rec []byte, err error) {
	post = d.JoinInto(cur, n.seen)
	if !post.Empty() {
		if rec, err = crdt.EncodeJoined(d, enc, post); err != nil {
			return nil, nil, fmt.Errorf("item %s with delta %s: %w", d.Key(), d.Dot, err)
		}
	}
	return post, rec, nil
}

// countVisible counts k's move from cur to post in the visible items of
// its collection. Caller holds mu.
func (n *Node) countVisible(k crdt.Key, cur, post *crdt.Item) {
	if was, is := cur.Visible(), post.Visible(); was != is {
		if is {
			n.meta.Visible[k.Collection]++
		} else {
			n.meta.Visible[k.Collection]--
		}
	}
}

// stageJoin stages what joining d moved the item from cur to post (with
// record rec) changes: the item, the visible count, the contexts, the
// counter, the chain head, the log entry and the change. Caller holds mu.
func (n *Node) stageJoin(g *group, cur, post *crdt.Item, rec []byte, d *crdt.Delta, enc []byte, next crdt.Hash, local bool) {
	k := d.Key()
	n.put(g, itemKey(k), rec)
	n.stageIndexes(g, k, cur, post)
	n.stageChange(g, k, cur, post, nil, rec, viaOf(local), d.Dot)
	n.countVisible(k, cur, post)
	for _, c := range d.Context {
		if c != d.Dot || !d.IsStub() { // a stub's own entries are absent, not removed
			n.seen.Add(c)
		}
	}
	n.applied.Add(d.Dot)
	if d.Dot.Replica == n.replica {
		// Never mint a dot that some other copy of this replica's history
		// already used.
		n.meta.Counter = max(n.meta.Counter, d.Dot.Counter)
	}
	if !next.IsZero() {
		n.heads[d.Dot.Replica] = head{Counter: d.Dot.Counter, Hash: next, Sig: d.Proof.Sig}
		if g.heads == nil {
			g.heads = map[crdt.ReplicaID]bool{}
		}
		g.heads[d.Dot.Replica] = true
	}
	n.meta.Seq++
	entry := logEntry(d, enc, local)
	n.put(g, logSeqKey(n.meta.Seq), entry)
	n.put(g, logDotKey(d.Dot), encodeSeq(n.meta.Seq))
	n.meta.Bytes += int64(len(entry))
	g.changes = append(g.changes, Change{Seq: n.meta.Seq, Delta: d, Encoded: enc, Local: local})
}

// ApplyResult says what ApplyDeltas did.
type ApplyResult struct {
	// New counts the deltas joined: those of the call whose dependencies
	// were all applied, and waiting ones (of this call or earlier) that
	// they unblocked.
	New       int
	Duplicate int // deltas already applied: nothing changed
	// Waiting counts the deltas of the call that still wait when it
	// returns, for a delta they depend on (an earlier dot of their
	// replica, or a dot of their context) that this node has not applied,
	// for a later delta of their replica whose signature proves them, or,
	// for a stub, for a delta that names it; see causal.go. They are
	// joined once it arrives; meanwhile they are not durable here.
	Waiting int
	// Refused counts valid deltas this node will not join: deltas of its
	// own replica that it never wrote (evidence of a fork), of a new
	// replica beyond Config.MaxReplicas, without the proof of their origin
	// that this node requires (see Config.Key), or that contradict a chain
	// their replica signed before (equivocation).
	Refused int
}

// ApplyDelta joins one remote delta; see ApplyDeltas.
func (n *Node) ApplyDelta(ctx context.Context, d *crdt.Delta) (ApplyResult, error) {
	return n.ApplyDeltas(ctx, []*crdt.Delta{d})
}

// ApplyDeltas seals remote deltas (crdt.Seal: each is validated and
// encoded once) and joins them as ApplySealed does. If one fails to seal,
// none is applied and the error names its index. The node keeps its own
// copies: the caller may reuse deltas.
func (n *Node) ApplyDeltas(ctx context.Context, deltas []*crdt.Delta) (ApplyResult, error) {
	sealed := make([]*crdt.Sealed, len(deltas))
	for i, d := range deltas {
		if d == nil {
			n.stats.deltasRejected.Add(1)
			return ApplyResult{}, fmt.Errorf("delta %d: %w: nil", i, crdt.ErrInvalid)
		}
		s, err := crdt.Seal(d)
		if err != nil {
			n.stats.deltasRejected.Add(1)
			return ApplyResult{}, fmt.Errorf("delta %d (%s): %w", i, d.Dot, err)
		}
		sealed[i] = s
	}
	return n.ApplySealed(ctx, sealed)
}

// ApplySealed joins remote deltas, in any order, and returns once the ones
// it joined are durable. They were validated and encoded when they were
// sealed (crdt.DecodeSealed, crdt.Seal) and are not again; the signatures
// of their proofs are checked first (crdt.CheckProofs): if one fails, none
// is applied and the error names its index. A delta of a keyed replica is
// joined only if a signature of its origin covers it, and a delta of a
// replica that is not keyed only by a node without Config.Key; others are
// refused. A delta is joined only once every delta it depends on is
// applied (causal delivery, see causal.go); until then it waits in memory,
// and it is joined by whichever later call applies its last dependency. A
// delta that cannot be joined (its item would exceed crdt.MaxItemBytes, or
// the store fails to read) stops the call there: the deltas before it stay
// applied. A delta already applied changes nothing and counts as a
// duplicate. New deltas are logged under their own dots, so this node can
// serve them to others, and are passed to subscribers.
func (n *Node) ApplySealed(ctx context.Context, sealed []*crdt.Sealed) (ApplyResult, error) {
	var res ApplyResult
	deltas := make([]*crdt.Delta, len(sealed))
	encs := make([][]byte, len(sealed))
	for i, s := range sealed {
		if s == nil || s.Delta() == nil {
			n.stats.deltasRejected.Add(1)
			return res, fmt.Errorf("delta %d: %w: nil", i, crdt.ErrInvalid)
		}
		deltas[i], encs[i] = s.Delta(), s.Bytes()
	}
	checked, err := crdt.CheckProofs(deltas, encs)
	if err != nil {
		n.stats.deltasRejected.Add(1)
		return res, err
	}
	g, err := n.begin()
	if err != nil {
		return res, err
	}
	n.ahead = n.readAhead(deltas)
	now := n.now()
	for i, d := range deltas {
		if err = n.offer(ctx, g, d, encs[i], checked[i], now, &res); err != nil {
			err = fmt.Errorf("delta %d: %w", i, err)
			break
		}
	}
	n.ahead = nil
	if err != nil {
		// Deltas joined so far in this call stay staged; they are valid
		// and commit with the group.
		return res, n.endWith(ctx, g, res.New > 0, err)
	}
	n.stats.deltasNew.Add(uint64(res.New))
	n.stats.deltasDuplicate.Add(uint64(res.Duplicate))
	return res, n.end(ctx, g, res.New > 0)
}

// readAheadMin is the fewest item reads worth one pass of a LevelDB
// iterator instead of a lookup each.
const readAheadMin = 8

// readAhead reads the stored records of the items that deltas are about —
// those not applied yet and not staged — in one ordered pass over a
// LevelDB store, and returns them by key (nil for an absent item), for
// read to use while the caller stages them. A lookup of a key that is not
// in the store must visit every table whose key range covers it, and item
// keys fall inside the range of most tables (the delta log's keys sort
// after them); walking the keys in order with one iterator settles every
// key that falls between two stored ones without a lookup. It returns nil
// (read then looks each item up) for other stores, for few items, or if
// the iterator fails. The iterator reads a snapshot: writes committed after
// it was taken are still in the overlay, which read consults first, since
// only a holder of mu removes them. Caller holds mu.
func (n *Node) readAhead(deltas []*crdt.Delta) map[string][]byte {
	l, ok := n.store.(*leveldb.Datastore)
	if !ok || len(deltas) < readAheadMin {
		return nil
	}
	keys := make([]string, 0, len(deltas))
	for _, d := range deltas {
		if n.applied.Contains(d.Dot) {
			continue
		}
		k := itemKey(d.Key()).String()
		if _, staged := n.overlay[k]; !staged {
			keys = append(keys, k)
		}
	}
	if len(keys) < readAheadMin {
		return nil
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	got := make(map[string][]byte, len(keys))
	it := l.DB.NewIterator(&util.Range{Start: []byte(keys[0]), Limit: []byte(keys[len(keys)-1] + "\x00")}, nil)
	defer it.Release()
	valid, done := false, false
	for _, k := range keys {
		// The iterator stands at the first stored key at or after the
		// previous k; seek only if that is before this k.
		if !done && (!valid || string(it.Key()) < k) {
			valid = it.Seek([]byte(k))
			done = !valid
		}
		if valid && string(it.Key()) == k {
			got[k] = bytes.Clone(it.Value())
		} else {
			got[k] = nil
		}
	}
	if it.Error() != nil {
		return nil
	}
	return got
}

// endWith ends a write and returns err, after waiting for what was staged.
func (n *Node) endWith(ctx context.Context, g *group, staged bool, err error) error {
	if e := n.end(ctx, g, staged); e != nil {
		return e
	}
	return err
}

// Get returns a present item. Reads see only durable writes.
func (n *Node) Get(ctx context.Context, k crdt.Key) (Item, error) {
	if err := n.checkKey(k); err != nil {
		return Item{}, err
	}
	b, err := get(ctx, n.store, itemKey(k))
	if err != nil {
		return Item{}, fmt.Errorf("get %s: %w", k, err)
	}
	if b == nil {
		return Item{}, fmt.Errorf("get %s: %w", k, ErrNotFound)
	}
	it, err := crdt.DecodeStoredItem(b)
	if err != nil {
		return Item{}, fmt.Errorf("%w: item %s: %v", ErrCorrupt, k, err)
	}
	if !it.Visible() {
		return Item{}, fmt.Errorf("get %s: %w", k, ErrNotFound)
	}
	return view(k, it), nil
}
