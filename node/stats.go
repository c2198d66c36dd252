package node

import (
	"maps"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// Stats is a snapshot of the node's bookkeeping and running totals.
type Stats struct {
	Replica crdt.ReplicaID
	Counter uint64 // last dot counter this replica used
	// Version is the applied version vector: for each replica, the counter
	// up to which this node holds every delta.
	Version map[crdt.ReplicaID]uint64
	// Items counts the present items per collection.
	Items map[string]int64

	LogEntries uint64 // deltas in the log
	LogBytes   int64  // their encoded size
	Pending    uint64 // log entries (local and received) after the GetDeltas cursor

	Ops             uint64 // local operations acknowledged
	DeltasNew       uint64 // remote deltas joined
	DeltasDuplicate uint64 // remote deltas already applied
	DeltasRejected  uint64 // remote deltas that failed validation
	DeltasRefused   uint64 // valid remote deltas not joined: see ApplyResult.Refused
	DeltasWaited    uint64 // remote deltas that had to wait for a delta they depend on
	Waiting         int    // remote deltas waiting now
	WaitingBytes    int64  // their encoded size
	WaitingEvicted  uint64 // waiting deltas dropped because the buffer was full
	// Fork describes the first evidence that another process uses this
	// node's replica (see ErrForkSuspected); "" if there is none.
	Fork         string
	ForkEvidence uint64 // deltas and states that showed it
	// Forked reports that a signed delta proved the fork: local writes
	// fail with ErrForked until the store is reincarnated.
	Forked bool
	// Unproven counts remote deltas refused for lacking the proof of
	// their origin (see Config.Key); Equivocations those refused because
	// their replica had signed a different delta under the same dot.
	Unproven      uint64
	Equivocations uint64
	// Equivocators are the replicas this node holds a proof against (see
	// AddFork), sorted.
	Equivocators   []Equivocator
	ClockAhead     uint64 // remote timestamps beyond MaxClockOffset
	Commits        uint64 // group commits, failed ones included
	CommitFailures uint64 // group commits the store failed to write
	CommitTime     time.Duration
}

// Stats returns the current figures.
func (n *Node) Stats() Stats {
	n.mu.Lock()
	s := Stats{
		Replica:      n.replica,
		Counter:      n.meta.Counter,
		Version:      n.applied.Version(),
		Items:        maps.Clone(n.meta.Visible),
		LogEntries:   n.meta.Seq + 1 - n.meta.First,
		LogBytes:     n.meta.Bytes,
		Pending:      n.durable - min(n.meta.Cleared, n.durable),
		Waiting:      n.parked.fifo.Len(),
		WaitingBytes: n.parked.bytes,
		Fork:         n.fork,
		Forked:       n.forked != "",
	}
	n.mu.Unlock()
	s.Equivocators = n.Equivocators()
	for _, c := range n.cfg.Collections {
		if _, ok := s.Items[c]; !ok {
			s.Items[c] = 0
		}
	}
	s.Ops = n.stats.ops.Load()
	s.DeltasNew = n.stats.deltasNew.Load()
	s.DeltasDuplicate = n.stats.deltasDuplicate.Load()
	s.DeltasRejected = n.stats.deltasRejected.Load()
	s.DeltasRefused = n.stats.deltasRefused.Load()
	s.DeltasWaited = n.stats.deltasWaited.Load()
	s.WaitingEvicted = n.stats.waitingEvicted.Load()
	s.ForkEvidence = n.stats.forkEvidence.Load()
	s.Unproven = n.stats.unproven.Load()
	s.Equivocations = n.stats.equivocations.Load()
	s.ClockAhead = n.stats.clockAhead.Load()
	s.Commits = n.stats.commits.Load()
	s.CommitFailures = n.stats.commitFailures.Load()
	s.CommitTime = time.Duration(n.stats.commitNanos.Load())
	return s
}
