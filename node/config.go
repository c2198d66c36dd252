package node

import (
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// Config configures a Node. Start from DefaultConfig.
type Config struct {
	// Collections are the collections local operations and queries may
	// name. Deltas for other valid collections are still joined and stored,
	// so peers with different lists still converge. Default: snapshots,
	// images.
	Collections []string

	// Indexes declares secondary indexes: for each collection, the
	// metadata fields to index (names of the query language's field
	// characters, A-Z a-z 0-9 . _ : -, not "id"). A query with an =, <,
	// <=, > or >= term on an indexed field reads that index instead of
	// scanning (see Query). Every write stages the entries of the items
	// it changes in the same atomic batch as the items. Open builds an
	// index the store does not hold yet, reading every item of its
	// collection, and drops (in the background) the entries of one no
	// longer declared here nor by AddIndex. At most
	// MaxIndexesPerCollection per collection, with those of AddIndex.
	// Default: none.
	Indexes map[string][]string

	// MaxLogBytes bounds the delta log by encoded size (about 300 bytes a
	// delta of a 200-byte document, with its proof); the oldest deltas are
	// dropped first. A longer log lets peers that were away longer catch
	// up by deltas instead of a full-state transfer, at the cost of disk.
	// Default 128 MiB, about 430,000 deltas: a catch-up through all of
	// it (128 MB on the wire, some 20 s of applying) costs about what a
	// full-state join of a catalog of 1,000,000 items costs (69 MB packed
	// on the wire, 20 s; docs/BENCHMARKS.md), so a longer log saves a
	// catalog of that size nothing, and a shorter one sends peers that
	// missed a few minutes of a busy writer to a full state.
	MaxLogBytes int64
	// MaxLogEntries, if positive, also bounds the delta log by count.
	// Default 0: by bytes alone.
	MaxLogEntries int

	// ChangeHistory bounds the change history (the numbered changes
	// of items that watchers resume from, see Watch) by count, and
	// ChangeHistoryBytes by the size of its records (each holds the item
	// before and after the change). A watcher that resumes from a change
	// older than the history must start again from a snapshot. Defaults
	// 100,000 and 64 MiB.
	ChangeHistory      int
	ChangeHistoryBytes int64

	// TempDir is unused: ImportState no longer copies streams outside
	// StateDir (see ImportState). Kept so that configurations that set it
	// still build.
	TempDir string
	// StateDir, if set, makes full-state imports survive a crash: every
	// checked piece of a stream ImportState takes is copied there and kept
	// under a "pending" name until its join has committed, and Open
	// finishes the join of a piece a crash cut short before it returns
	// (see ImportState for imports of several pieces). It also bounds
	// imports by the free space of its disk (see MaxStateBytes). Use a
	// directory on the disk of the store, owned by this node alone (the
	// data directory). Costs one write of every imported stream. Default
	// "": no copy, and an import cut by a crash keeps the items it joined
	// without the sender's contexts until another import or anti-entropy
	// completes it.
	StateDir string
	// MaxStateBytes, if positive, bounds an imported full-state stream; a
	// longer one is refused with ErrStateTooLarge (after the pieces before
	// the limit are joined, for a stream of several pieces). Default 0: no
	// fixed bound; with a StateDir, an import stops before it would leave
	// its disk less than 1 GiB free, so a node joins any catalog it has
	// disk for while a stream that never ends is cut off; without a
	// StateDir, 1 GiB.
	MaxStateBytes int64

	// MaxWaitingDeltas and MaxWaitingBytes bound the remote deltas held
	// in memory while they wait for a delta they depend on (see
	// ApplyDeltas). When either is reached the oldest waiting delta is
	// dropped; anti-entropy fetches it again later. Defaults 10,000 and
	// 4 MiB (of encoded deltas; each is also held decoded, which about
	// doubles it): 10,000 deltas of a typical 250 bytes fit, and a flood
	// of the largest deltas (up to 2 MiB each) costs a node no more than
	// its idle heap (docs/BENCHMARKS.md, "Memory under resource
	// attacks"); a larger buffer only saves re-fetching what was evicted.
	MaxWaitingDeltas int
	MaxWaitingBytes  int64

	// MaxReplicas bounds the replicas the causal contexts may name. A
	// delta of one more replica is refused (ApplyResult.Refused), and so
	// is a full state that would pass it, so that peers minting replica
	// IDs cannot grow the contexts without bound. It is a resource limit,
	// not a format one: a commit writes only the context entries of the
	// replicas it changed, and anti-entropy compares contexts by digest,
	// so a write costs the same whatever the number; but each replica
	// takes memory (a few hundred bytes with a keyed ID: its entries in
	// both contexts and its chain head), and a full state carries each.
	// Default 100,000; at most crdt.MaxContextReplicas, over 14 million.
	MaxReplicas int

	// MaxClockOffset is how far ahead of the local clock a remote timestamp
	// may be before it is logged and counted. Such a timestamp is joined
	// regardless (convergence comes first), but the local clock follows it
	// only up to MaxClockOffset past the wall clock, so no peer can make
	// this node stamp its own writes further ahead than that. Default 1
	// minute: clocks kept by NTP agree within a second, and a laptop that
	// missed NTP for a while drifts by seconds, not minutes.
	MaxClockOffset time.Duration

	// RetryInterval is how often a node whose store failed a write probes
	// it with a small write, to resume accepting writes once it succeeds
	// (see Node.Writable). Shorter resumes sooner after space comes back;
	// each probe of a LevelDB store asks it for a compaction, which fails
	// at once while the disk is still full. Default 2s.
	RetryInterval time.Duration

	// Key is this node's Ed25519 identity key (libp2p's, in crdt-catalog).
	// With it the node is signed: its replica is keyed by Key (a store
	// whose replica Key does not own, a new or reincarnated one, takes a
	// new keyed replica at Open), it signs its chain heads, and it joins
	// only deltas that carry their origin's proof (see crdt.Proof):
	// deltas of replicas that are not keyed are refused, and reach it only
	// in full states. Without Key the node is unsigned, for tests and
	// tools: its own replica is not keyed and it trusts whoever hands it
	// deltas of replicas that are not keyed. Deltas of keyed replicas
	// need their proof either way.
	Key ed25519.PrivateKey

	// Now reads the physical clock. Default time.Now.
	Now func() time.Time
	// Logger receives events. Default slog.Default().
	Logger *slog.Logger
}

// maxReplicasLimit is the largest Config.MaxReplicas: contexts naming that
// many replicas, each with the longest replica ID, still encode within
// crdt.MaxContextBytes, as a full state carries them.
const maxReplicasLimit = crdt.MaxContextReplicas

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Collections:        []string{"snapshots", "images"},
		MaxLogBytes:        128 << 20,
		ChangeHistory:      100_000,
		ChangeHistoryBytes: 64 << 20,
		MaxClockOffset:     time.Minute,
		MaxWaitingDeltas:   10_000,
		MaxWaitingBytes:    4 << 20,
		MaxReplicas:        100_000,
		RetryInterval:      2 * time.Second,
		Now:                time.Now,
		Logger:             slog.Default(),
	}
}

// validate fills zero values with defaults and rejects bad ones.
func (c *Config) validate() error {
	d := DefaultConfig()
	if len(c.Collections) == 0 {
		c.Collections = d.Collections
	}
	seen := map[string]bool{}
	for _, name := range c.Collections {
		if err := crdt.ValidateCollection(name); err != nil {
			return fmt.Errorf("config: Collections: %w", err)
		}
		if seen[name] {
			return fmt.Errorf("config: Collections: %q listed twice", name)
		}
		seen[name] = true
	}
	if err := c.validateIndexes(seen); err != nil {
		return err
	}
	if c.MaxLogEntries < 0 {
		return fmt.Errorf("config: MaxLogEntries must not be negative, got %d", c.MaxLogEntries)
	}
	if c.MaxLogBytes == 0 {
		c.MaxLogBytes = d.MaxLogBytes
	}
	if c.MaxLogBytes < crdt.MaxDeltaBytes {
		return fmt.Errorf("config: MaxLogBytes must be at least %d, got %d", crdt.MaxDeltaBytes, c.MaxLogBytes)
	}
	if c.ChangeHistory == 0 {
		c.ChangeHistory = d.ChangeHistory
	}
	if c.ChangeHistory < 1 {
		return fmt.Errorf("config: ChangeHistory must be positive, got %d", c.ChangeHistory)
	}
	if c.ChangeHistoryBytes == 0 {
		c.ChangeHistoryBytes = d.ChangeHistoryBytes
	}
	if c.ChangeHistoryBytes < 1 {
		return fmt.Errorf("config: ChangeHistoryBytes must be positive, got %d", c.ChangeHistoryBytes)
	}
	if c.MaxStateBytes < 0 {
		return fmt.Errorf("config: MaxStateBytes must not be negative, got %d", c.MaxStateBytes)
	}
	if c.MaxWaitingDeltas == 0 {
		c.MaxWaitingDeltas = d.MaxWaitingDeltas
	}
	if c.MaxWaitingDeltas < 1 {
		return fmt.Errorf("config: MaxWaitingDeltas must be positive, got %d", c.MaxWaitingDeltas)
	}
	if c.MaxWaitingBytes == 0 {
		c.MaxWaitingBytes = d.MaxWaitingBytes
	}
	if c.MaxWaitingBytes < crdt.MaxDeltaBytes {
		return fmt.Errorf("config: MaxWaitingBytes must be at least %d, got %d", crdt.MaxDeltaBytes, c.MaxWaitingBytes)
	}
	if c.MaxReplicas == 0 {
		c.MaxReplicas = d.MaxReplicas
	}
	if c.MaxReplicas < 1 || c.MaxReplicas > maxReplicasLimit {
		return fmt.Errorf("config: MaxReplicas must be 1-%d, got %d", maxReplicasLimit, c.MaxReplicas)
	}
	if c.MaxClockOffset == 0 {
		c.MaxClockOffset = d.MaxClockOffset
	}
	if c.MaxClockOffset < 0 {
		return fmt.Errorf("config: MaxClockOffset must not be negative, got %v", c.MaxClockOffset)
	}
	if c.Key != nil && len(c.Key) != ed25519.PrivateKeySize {
		return fmt.Errorf("config: Key must be %d bytes, got %d", ed25519.PrivateKeySize, len(c.Key))
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = d.RetryInterval
	}
	if c.RetryInterval < 0 {
		return fmt.Errorf("config: RetryInterval must be positive, got %v", c.RetryInterval)
	}
	if c.Now == nil {
		c.Now = d.Now
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	return nil
}
