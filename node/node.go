package node

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	ds "github.com/ipfs/go-datastore"
)

// Node is one replica of the catalog: the CRDT state in a store, the delta
// log, and the pending-delta cursor. All methods are safe for concurrent use.
//
// Every write (local operation or remote delta) is staged in memory and made
// durable by the commit goroutine, which gathers the writes of concurrent
// callers into one atomic store batch (group commit). A call returns only
// after its batch is durable, and a delta reaches subscribers only after
// that, so no peer ever sees a write its origin could lose.
type Node struct {
	cfg   Config
	store ds.Batching
	log   *slog.Logger
	colls map[string]bool

	// gate lets an import of full state exclude every other write for its
	// duration: writers hold it shared while they stage.
	gate sync.RWMutex

	mu      sync.Mutex // guards the fields below
	replica crdt.ReplicaID
	meta    *meta
	seen    *crdt.Context
	applied *crdt.Context
	// digest follows applied as of the last commit's bookkeeping, for
	// anti-entropy (see AppliedDigest).
	digest *crdt.Digest
	heads  map[crdt.ReplicaID]head // chain heads of keyed replicas, as stored under /h
	// headSums are HeadSums as of the last commit, and headSum each
	// replica's part of them; see equivocation.go.
	headSums [headBuckets][headSumSize]byte
	headSum  map[crdt.ReplicaID][headSumSize]byte
	clock    crdt.Clock
	filling  *group            // the group being staged; nil if none
	writing  *group            // the group the commit goroutine is writing; nil if none
	overlay  map[string]staged // staged writes not yet durable, by key
	ahead    map[string][]byte // item records read ahead for the write being staged (nil: absent); see readAhead
	subs     map[*Subscription]struct{}
	feed     feedMeta // the change feed's bookkeeping, as staged; see changes.go
	// feedSizes are the sizes of the history's records, First to Last, as
	// staged: trimming the history needs no read of what it deletes.
	feedSizes []int32
	hub       *hub // hands durable changes to watchers
	// advanced is closed by the next successful commit, for WaitApplied;
	// nil until someone waits.
	advanced chan struct{}
	wants    chan struct{} // see Wants
	parked   waiting       // remote deltas waiting for their dependencies; see causal.go
	fork     string        // first evidence that another process uses this replica; "" if none
	// forked is the proof (a signed delta of this replica that this node
	// never wrote) that stops local writes; "" if none. See ErrForked.
	forked string
	// bans holds the proofs of equivocation this node holds, by replica;
	// see equivocation.go.
	bans map[crdt.ReplicaID]forkRec
	// banStamp changes whenever this node's state moves for a proof of
	// equivocation; see BanStamp.
	banStamp atomic.Uint64
	// replicasFull is set once a delta was refused for MaxReplicas.
	replicasFull bool
	durable      uint64 // last log sequence number that is durable
	closed       bool
	// failed is the store error that stops writes: set when a group commit
	// fails, cleared when a probe write succeeds (see failure.go). While
	// it is set nothing is staged, so meta, seen and applied hold exactly
	// what the store holds.
	failed error
	// stale reports that, after a failed commit, meta, seen and applied
	// could not be reloaded from the store (its reads failed too): they
	// may be ahead of it until a probe reloads them. Only set with failed.
	stale bool

	kick chan struct{} // wakes the commit goroutine
	// arrived and departed count the writers that entered begin and those
	// that left it (end, or a failed begin); left signals each departure
	// to gather. See gather.
	arrived, departed atomic.Uint64
	left              chan struct{}
	stop              chan struct{}
	finished          chan struct{}

	stats counters
	ix    indexes // secondary indexes; see index_admin.go
}

// staged is one write of a group; a nil value is a delete.
type staged struct {
	val []byte
	g   *group
}

// group is the set of writes committed together.
type group struct {
	writes  map[string][]byte       // key -> value, nil for delete
	heads   map[crdt.ReplicaID]bool // replicas whose chain head moved: staged at commit
	changes []Change
	feed    feedGroup     // the item changes it numbers; see changes.go
	done    chan struct{} // closed once committed (or failed)
	err     error         // set before done is closed
	lazy    bool          // items of a full-state import only: written without a sync (see writeLazy)
}

// counters are the node's running totals; see Stats.
type counters struct {
	ops, deltasNew, deltasDuplicate, deltasRejected, clockAhead atomic.Uint64
	deltasRefused, deltasWaited, waitingEvicted, forkEvidence   atomic.Uint64
	unproven, equivocations                                     atomic.Uint64
	commits, commitNanos, commitFailures                        atomic.Uint64
}

// Open opens the catalog held in store, creating a new replica if the store
// is empty. It reads only the bookkeeping records, never the whole catalog,
// and then finishes any full-state import a crash cut short (see
// Config.StateDir), before it returns. It refuses a store whose Repair was
// cut short (ErrRepairUnfinished). The Node owns store from here on and
// closes it in Close; if Open fails, the caller still owns it.
func Open(ctx context.Context, store ds.Batching, cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	n := &Node{
		cfg:      cfg,
		store:    store,
		log:      cfg.Logger,
		colls:    map[string]bool{},
		overlay:  map[string]staged{},
		subs:     map[*Subscription]struct{}{},
		kick:     make(chan struct{}, 1),
		left:     make(chan struct{}, 1),
		wants:    make(chan struct{}, 1),
		stop:     make(chan struct{}),
		finished: make(chan struct{}),
	}
	for _, c := range cfg.Collections {
		n.colls[c] = true
	}
	n.parked.init()
	n.clock.MaxOffset = cfg.MaxClockOffset.Milliseconds()
	if err := n.load(ctx); err != nil {
		return nil, err
	}
	if err := n.loadFeed(ctx); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	if err := n.openIndexes(ctx); err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	go n.commitLoop()
	if err := n.resumeImports(ctx); err != nil {
		close(n.stop)
		<-n.finished
		return nil, fmt.Errorf("open: %w", err)
	}
	n.startIndexes()
	return n, nil
}

// load reads the bookkeeping records, or creates them for a new replica.
func (n *Node) load(ctx context.Context) error {
	b, err := get(ctx, n.store, keyMeta)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	if b == nil {
		replica, err := n.newReplicaID()
		if err != nil {
			return fmt.Errorf("open: %w", err)
		}
		n.meta = &meta{Version: crdt.FormatVersion, Replica: string(replica), First: 1, Visible: map[string]int64{}}
		n.seen, n.applied, n.heads = crdt.NewContext(), crdt.NewContext(), map[crdt.ReplicaID]head{}
		n.sumHeads()
		n.seen.Track()
		n.applied.Track()
		n.digest = crdt.NewDigest(n.applied)
		batch, err := n.store.Batch(ctx)
		if err != nil {
			return fmt.Errorf("open: %w", err)
		}
		for k, v := range n.bookkeeping() {
			if err := batch.Put(ctx, ds.RawKey(k), v); err != nil {
				return fmt.Errorf("open: %w", err)
			}
		}
		if err := batch.Commit(ctx); err != nil {
			return fmt.Errorf("open: create replica: %w", err)
		}
		n.replica = crdt.ReplicaID(n.meta.Replica)
		n.log.Info("created new replica", "replica", n.replica)
		return nil
	}
	if b, err := get(ctx, n.store, keyRepair); err != nil {
		return fmt.Errorf("open: %w", err)
	} else if b != nil {
		return fmt.Errorf("open: %w: a repair of this store was cut short; run it again", ErrRepairUnfinished)
	}
	if k, err := migrateContexts(ctx, n.store); err != nil {
		return fmt.Errorf("open: migrate the causal contexts to per-replica entries: %w", err)
	} else if k > 0 {
		n.log.Info("moved the causal contexts to one record per replica", "replicas", k)
	}
	m, seen, applied, err := n.readBookkeeping(ctx)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	if n.heads, err = readHeads(ctx, n.store); err != nil {
		return fmt.Errorf("open: %w", err)
	}
	n.sumHeads()
	if n.bans, err = readForks(ctx, n.store); err != nil {
		return fmt.Errorf("open: %w", err)
	}
	n.touchBans()
	forked, err := get(ctx, n.store, keyFork)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	n.forked = string(forked)
	if n.forked != "" {
		n.fork = n.forked
		n.log.Error("this replica is forked: local writes are refused until `crdt-catalog reincarnate`", "evidence", n.forked)
	}
	n.meta, n.seen, n.applied, n.digest = m, seen, applied, crdt.NewDigest(applied)
	n.replica = crdt.ReplicaID(n.meta.Replica)
	n.durable = n.meta.Seq
	n.clock.Restore(crdt.Timestamp(n.meta.HLC))
	if n.cfg.Key != nil {
		if pub, ok := n.replica.PublicKey(); !ok || !pub.Equal(n.cfg.Key.Public()) {
			return n.rekey(ctx)
		}
	}
	return nil
}

// newReplicaID returns a new replica ID: keyed by Config.Key if the node
// has one.
func (n *Node) newReplicaID() (crdt.ReplicaID, error) { return replicaFor(n.cfg.Key) }

// rekey gives a store whose replica this node's key does not own (one
// written before replicas were keyed, one reincarnated, or one whose
// identity key was replaced) a new replica keyed by it: this node cannot
// sign for the old one. As with Reincarnate, everything the store holds
// stays and the old replica becomes an ordinary foreign one.
func (n *Node) rekey(ctx context.Context) error {
	old := n.replica
	replica, err := n.newReplicaID()
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	n.meta.Replica, n.meta.Counter = string(replica), 0
	n.meta.HLC = uint64(n.clock.Last())
	err = n.store.Put(ctx, keyMeta, encodeMeta(n.meta))
	if err == nil {
		err = n.store.Delete(ctx, keyFork) // the old replica's fork is not the new one's
		n.fork, n.forked = "", ""
	}
	if err != nil {
		return fmt.Errorf("open: new replica for this node's key: %w", err)
	}
	n.replica = replica
	n.log.Warn("this node's key does not own the store's replica; continuing as a new replica", "old", old, "replica", replica)
	return nil
}

// readBookkeeping reads the durable meta record and causal contexts; the
// contexts track their changes, for bookkeeping.
func (n *Node) readBookkeeping(ctx context.Context) (*meta, *crdt.Context, *crdt.Context, error) {
	b, err := get(ctx, n.store, keyMeta)
	if err != nil {
		return nil, nil, nil, err
	}
	if b == nil {
		return nil, nil, nil, fmt.Errorf("%w: %s missing", ErrCorrupt, keyMeta)
	}
	m, err := decodeMeta(b)
	if err != nil {
		return nil, nil, nil, err
	}
	seen, err := readContext(ctx, n.store, seenPrefix)
	if err != nil {
		return nil, nil, nil, err
	}
	applied, err := readContext(ctx, n.store, appliedPrefix)
	if err != nil {
		return nil, nil, nil, err
	}
	return m, seen, applied, nil
}

// bookkeeping encodes the records every commit writes: the meta record,
// and the entries of the causal contexts that changed since the last
// call (nil: delete). Its cost grows with the replicas whose entries
// changed, not with the number of replicas the contexts name. Caller
// holds mu.
func (n *Node) bookkeeping() map[string][]byte {
	n.meta.HLC = uint64(n.clock.Last())
	w := map[string][]byte{keyMeta.String(): encodeMeta(n.meta)}
	stageEntries(w, seenPrefix, n.seen)
	n.digest.Update(stageEntries(w, appliedPrefix, n.applied))
	return w
}

// ReplicaID returns this node's replica ID.
func (n *Node) ReplicaID() crdt.ReplicaID { return n.replica }

// ReplicaLimit returns Config.MaxReplicas: the most replicas a context
// from a peer may name to be of use here, which a transport checks before
// it decodes one (crdt.DecodeContextMax).
func (n *Node) ReplicaLimit() int { return n.cfg.MaxReplicas }

// Collections returns the collections local operations may name.
func (n *Node) Collections() []string { return slices.Clone(n.cfg.Collections) }

// begin starts staging a write: it takes the shared gate and mu and returns
// the group to stage into. The caller must call end.
func (n *Node) begin() (*group, error) {
	n.gate.RLock()
	// Counted once past the gate: writers held at it by an import are not
	// on their way into a group, and gather must not wait for them.
	n.arrived.Add(1)
	g, err := n.stage()
	if err != nil {
		n.gate.RUnlock()
		n.leave()
	}
	return g, err
}

// leave counts a writer out of begin and tells gather.
func (n *Node) leave() {
	n.departed.Add(1)
	select {
	case n.left <- struct{}{}:
	default:
	}
}

// maxGather bounds how long a commit waits for writers already on their
// way into its group; see gather.
const maxGather = 2 * time.Millisecond

// gather lets writers on their way into the filling group finish staging
// before the commit goroutine takes it: those that entered begin and have
// not left it, and those that keep arriving (callers just released by the
// previous commit come back one after another), until none is left and no
// new one came, or maxGather has passed. Concurrent callers then share one
// commit, and with it one signature, one write of the bookkeeping
// records, one fsync and one gossip message, instead of each taking the
// next commit nearly alone. A lone writer has left begin before it kicks
// the commit goroutine, so it costs one yield here.
func (n *Node) gather() {
	want := n.arrived.Load()
	if n.departed.Load() >= want {
		runtime.Gosched()
		if n.arrived.Load() == want {
			return
		}
	}
	t := time.NewTimer(maxGather)
	defer t.Stop()
	for {
		want = n.arrived.Load()
		for n.departed.Load() < want {
			select {
			case <-n.left:
			case <-t.C:
				return
			}
		}
		runtime.Gosched()
		if n.arrived.Load() == want {
			return
		}
		select {
		case <-t.C:
			return
		default:
		}
	}
}

// stage takes mu and returns the group to stage into; on error mu is not
// held. While the store refuses writes it fails at once with the error
// that stopped them (wrapping ErrFailed and the store's cause).
func (n *Node) stage() (*group, error) {
	n.mu.Lock()
	switch {
	case n.closed:
		n.mu.Unlock()
		return nil, ErrClosed
	case n.failed != nil:
		err := n.failed
		n.mu.Unlock()
		return nil, err
	}
	if n.filling == nil {
		n.filling = &group{writes: map[string][]byte{}, done: make(chan struct{})}
	}
	return n.filling, nil
}

// end releases what begin took and, if anything was staged, waits until
// the group is durable.
func (n *Node) end(ctx context.Context, g *group, staged bool) error {
	n.mu.Unlock()
	n.gate.RUnlock()
	n.leave()
	return n.wait(ctx, g, staged)
}

// wait wakes the commit goroutine and waits until g is durable.
func (n *Node) wait(ctx context.Context, g *group, staged bool) error {
	if !staged {
		return nil
	}
	select {
	case n.kick <- struct{}{}:
	default:
	}
	select {
	case <-g.done:
		return g.err
	case <-ctx.Done():
		// The write stays staged and will commit; the caller just stops
		// waiting for it.
		return ctx.Err()
	}
}

// settled returns a group whose commit makes durable everything staged
// or being written now: the filling group (the commit goroutine writes
// groups in order), else the one being written; nil if there is neither.
// A reader that took a view under mu waits for it before it may claim
// that what it read is durable, and nothing is committed for a read that
// finds nothing staged. Caller holds mu.
func (n *Node) settled() *group {
	if n.filling != nil {
		return n.filling
	}
	return n.writing
}

// readBarrier takes a view of the node with view, under mu, and waits
// until everything the view may include is durable: a read's barrier,
// which commits nothing of its own.
func (n *Node) readBarrier(ctx context.Context, view func()) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return ErrClosed
	}
	if n.failed != nil {
		err := n.failed
		n.mu.Unlock()
		return err
	}
	view()
	g := n.settled()
	n.mu.Unlock()
	if g == nil {
		return nil
	}
	return n.wait(ctx, g, true)
}

// put stages a write in g. Caller holds mu.
func (n *Node) put(g *group, k ds.Key, v []byte) {
	g.writes[k.String()] = v
	n.overlay[k.String()] = staged{v, g}
}

// read returns the newest value of k: staged or durable. Caller holds mu.
func (n *Node) read(ctx context.Context, k ds.Key) ([]byte, error) {
	if s, ok := n.overlay[k.String()]; ok {
		return s.val, nil
	}
	if b, ok := n.ahead[k.String()]; ok {
		return b, nil
	}
	return get(ctx, n.store, k)
}

// commitLoop is the commit goroutine: it takes the filling group, adds the
// bookkeeping records, writes it as one batch, then releases its callers and
// notifies subscribers. While a failed commit stops writes, it probes the
// store every Config.RetryInterval until it takes writes again.
func (n *Node) commitLoop() {
	defer close(n.finished)
	var retry <-chan time.Time
	for {
		select {
		case <-n.kick:
			n.commitOnce()
		case <-retry:
			retry = nil
			n.probe()
		case <-n.stop:
			// Close waits for writers to leave; commit what they staged.
			n.commitOnce()
			return
		}
		if retry == nil && n.failing() {
			retry = time.After(n.cfg.RetryInterval)
		}
	}
}

func (n *Node) commitOnce() {
	n.gather()
	n.mu.Lock()
	g := n.filling
	n.filling = nil
	if g == nil {
		n.mu.Unlock()
		return
	}
	n.writing = g
	n.signGroup(g)
	n.stageHeads(g)
	n.trimLog(g)
	n.stageFeed(g)
	for k, v := range n.bookkeeping() {
		g.writes[k] = v
	}
	n.mu.Unlock()

	start := time.Now()
	err := n.write(g)
	took := time.Since(start)

	n.mu.Lock()
	if err != nil {
		// Nothing of g reached the store (a batch is atomic), and nothing
		// of it was acknowledged or published: fail it, and whatever was
		// staged on top of it, and fall back to what the store holds.
		err = n.fail(g, err)
	} else {
		for k := range g.writes {
			if s, ok := n.overlay[k]; ok && s.g == g {
				delete(n.overlay, k)
			}
		}
		if n.advanced != nil {
			close(n.advanced)
			n.advanced = nil
		}
		if len(g.changes) > 0 {
			// Publish only now that g is durable: no peer ever sees a dot
			// that a failed commit could hand out again (see fail).
			n.durable = g.changes[len(g.changes)-1].Seq
			n.publish(g.changes)
		}
		n.publishChanges(g.feed)
	}
	g.err = err
	n.writing = nil
	n.mu.Unlock()
	// Counted before the writers are released, so that a caller's Stats
	// after its write includes its commit.
	n.stats.commits.Add(1)
	n.stats.commitNanos.Add(uint64(took))
	close(g.done)
}

// signGroup signs the chain head after g's last write of this node's own
// replica, in its change and the replica's chain head, so that gossip,
// which carries each group's writes together, carries their proof. The
// log entry is not rewritten with the signature: whoever serves this
// replica's deltas from the log signs the end of what it serves
// (DeltasFor, Attest), so a stored one would only take 64 bytes per
// commit. Caller holds mu.
func (n *Node) signGroup(g *group) {
	for i := len(g.changes) - 1; i >= 0; i-- {
		c := g.changes[i]
		if !c.Local || c.Delta.Dot.Replica != n.replica {
			continue
		}
		n.sign(c.Delta, c.Encoded)
		if c.Delta.Proof.Sig == nil {
			return
		}
		if h := n.heads[n.replica]; h.Counter == c.Delta.Dot.Counter {
			h.Sig = c.Delta.Proof.Sig
			n.heads[n.replica] = h
		}
		return
	}
}

// stageHeads stages the chain heads that g's deltas moved, once per
// replica. Caller holds mu.
func (n *Node) stageHeads(g *group) {
	for r := range g.heads {
		n.put(g, headKey(r), encodeHead(n.heads[r]))
		n.sumHead(r)
	}
}

// write commits g's writes as one atomic batch.
func (n *Node) write(g *group) error {
	if g.lazy {
		if done, err := n.writeLazy(g); done {
			return err
		}
	}
	ctx := context.Background()
	batch, err := n.store.Batch(ctx)
	if err != nil {
		return err
	}
	for k, v := range g.writes {
		key := ds.RawKey(k)
		if v == nil {
			err = batch.Delete(ctx, key)
		} else {
			err = batch.Put(ctx, key, v)
		}
		if err != nil {
			return err
		}
	}
	return batch.Commit(ctx)
}

// Close commits what is staged, stops the commit goroutine and closes the
// store. Calls after the first return ErrClosed.
func (n *Node) Close() error {
	n.gate.Lock() // wait for writers that are staging
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		n.gate.Unlock()
		return ErrClosed
	}
	n.closed = true
	for s := range n.subs {
		s.close(ErrClosed)
	}
	n.hub.close()
	n.mu.Unlock()
	n.gate.Unlock()
	close(n.stop)
	<-n.finished
	n.stopIndexes()
	if err := n.store.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// now returns the physical clock in milliseconds.
func (n *Node) now() int64 { return n.cfg.Now().UnixMilli() }
