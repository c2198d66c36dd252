package node

import (
	"context"
	"fmt"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	ds "github.com/ipfs/go-datastore"
	leveldb "github.com/ipfs/go-ds-leveldb"
	"github.com/syndtr/goleveldb/leveldb/util"
)

// A store write can fail — most often because the disk is full — without
// the node being at fault. The node then falls back to what the store
// holds, refuses writes while the store refuses them, and resumes by
// itself once a probe write succeeds:
//
//  1. commitOnce fails the group whose batch failed and the group staged
//     on top of it (fail), and reloads meta and the causal contexts from
//     the store. A batch is atomic, so the store holds all the groups
//     before the failed one and nothing of it.
//  2. While failed is set, stage refuses every write at once with that
//     error, so memory stays equal to the store.
//  3. Every Config.RetryInterval the commit goroutine probes the store by
//     rewriting the durable bookkeeping records (probe). When that write
//     succeeds, writes are accepted again.

// fail handles the failed commit of g, whose batch the store did not take
// (cause): g and the group staged on top of it (the filling one, whose
// item records and bookkeeping build on g's) fail with the returned
// error, and the node's bookkeeping falls back to the store's. Caller
// holds mu.
//
// Reloading the durable counter reuses the counters of the failed groups'
// dots. That is safe because no one outside this node has seen them: a
// local write's delta is returned to its caller, handed to subscribers
// (gossip) and logged only once its group is durable (commitOnce
// publishes after a successful write only), and the contexts a caller can
// read before that (Contexts, Stats) name dots but carry no delta, so no
// peer can hold an effect of these dots. The hybrid logical clock is not
// reloaded: it only moves forward, so timestamps issued in a failed group
// are simply never issued again.
func (n *Node) fail(g *group, cause error) error {
	err := fmt.Errorf("%w: %w", ErrFailed, cause)
	n.stats.commitFailures.Add(1)
	n.failed = err
	n.rewindBuilds(g, n.filling)
	if f := n.filling; f != nil && f != g {
		n.filling = nil
		f.err = err
		close(f.done)
	}
	// Every staged write belongs to g or to the filling group.
	n.overlay = map[string]staged{}
	if rerr := n.reload(); rerr != nil {
		n.stale = true
		n.log.Error("store write failed, and reading the store back failed too; refusing writes until both work", "err", cause, "read_err", rerr)
	} else {
		n.log.Error("store write failed; the writes of this group were not applied; refusing writes until the store takes one again",
			"err", cause, "retry", n.cfg.RetryInterval)
	}
	return err
}

// reload replaces meta and the causal contexts with the store's, and the
// durable log position with the store's last sequence number. Caller holds
// mu.
func (n *Node) reload() error {
	m, seen, applied, err := n.readBookkeeping(context.Background())
	if err != nil {
		return err
	}
	if m.Replica != string(n.replica) {
		return fmt.Errorf("%w: the store now holds replica %s, not %s", ErrCorrupt, m.Replica, n.replica)
	}
	heads, err := readHeads(context.Background(), n.store)
	if err != nil {
		return err
	}
	if err := n.loadFeed(context.Background()); err != nil {
		return err
	}
	n.meta, n.seen, n.applied, n.digest, n.heads = m, seen, applied, crdt.NewDigest(applied), heads
	n.sumHeads()
	n.durable = m.Seq
	n.stale = false
	return nil
}

// probe tries one write to a store that failed one: the bookkeeping
// records, rewritten with the values the store already holds (and the
// clock's current reading), after settleStore. If both succeed, the node
// accepts writes again; otherwise the newest error replaces the one that
// stops writes. It runs on the commit goroutine.
func (n *Node) probe() {
	n.mu.Lock()
	if n.failed == nil || n.closed {
		n.mu.Unlock()
		return
	}
	if n.stale {
		if err := n.reload(); err != nil {
			n.mu.Unlock()
			n.log.Debug("store still unreadable", "err", err)
			return
		}
	}
	g := &group{writes: n.bookkeeping()}
	n.mu.Unlock()

	err := settleStore(n.store)
	if err == nil {
		err = n.write(g)
	}
	if err != nil {
		n.mu.Lock()
		n.failed = fmt.Errorf("%w: %w", ErrFailed, err)
		n.mu.Unlock()
		n.log.Debug("store still refuses writes", "err", err)
		return
	}
	// Taking the gate waits for an ImportState under way: it must see
	// failed, fail and give up, rather than carry on after its earlier
	// chunks were lost and record the sender's contexts without them.
	n.gate.Lock()
	n.mu.Lock()
	n.failed = nil
	n.mu.Unlock()
	n.gate.Unlock()
	n.log.Info("store takes writes again; accepting writes")
}

// settleStore prepares a store that failed a write to take writes again.
// Only a LevelDB store needs it. goleveldb keeps the error of a failed
// journal write (for a full disk, an *fs.PathError wrapping
// syscall.ENOSPC) and returns it from every later write until it starts a
// new journal, which it does only when it rotates its memtable.
// CompactRange over the whole key space is the one exported call that
// always rotates it (a narrower range does only when the memtable holds
// keys in that range, and after a failed write it is often empty); it then
// waits until the old memtable is written out and the old journal
// removed, and compacts the whole store. That compaction costs time and
// space once, when space has come back; while the disk is still full it
// fails at once.
//
// Waiting for the old journal to go matters beyond the sticky error: a
// batch whose write reached the journal whole but whose fsync failed is
// in that journal though not in the memtable, and a restart would replay
// it. Once the journal is gone it never comes back; until then no write is
// accepted, so a crash replays it with its own counter and nothing has
// reused it.
func settleStore(store ds.Batching) error {
	l, ok := store.(*leveldb.Datastore)
	if !ok {
		return nil
	}
	return l.DB.CompactRange(util.Range{})
}

// Writable reports whether the node accepts writes: nil if it does,
// ErrClosed once it is closed, or, after the store failed a write, the
// error that stopped writes (wrapping ErrFailed and the store's error,
// such as syscall.ENOSPC for a full disk) until a background probe, every
// Config.RetryInterval, finds the store taking writes again. It does not
// block on I/O and is safe for concurrent use.
func (n *Node) Writable() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.closed:
		return ErrClosed
	case n.failed != nil:
		return n.failed
	}
	return nil
}

// failing reports whether a failed store write stops writes.
func (n *Node) failing() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.failed != nil && !n.closed
}
