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
	// collection, and drops the entries of one no longer declared.
	// Default: none.
	Indexes map[string][]string

	// MaxLogEntries bounds the delta log by count. A longer log lets peers
	// that were away longer catch up by deltas instead of a full-state
	// transfer, at the cost of disk. Default 100,000.
	MaxLogEntries int
	// MaxLogBytes bounds the delta log by encoded size. Default 64 MiB.
	MaxLogBytes int64

	// TempDir is the directory where ImportState copies a full-state
	// stream that it cannot seek back over (a network stream, a request
	// body), so that it can check all of the stream before applying any
	// of it. The file is removed before ImportState returns. Default "":
	// os.TempDir().
	TempDir string
	// StateDir, if set, makes full-state imports survive a crash: every
	// stream ImportState takes (seekable or not) is copied there, checked,
	// synced and kept under a "pending" name until its join has
	// committed, and Open finishes any import a crash cut short before it
	// returns. Use a directory on the disk of the store, owned by this
	// node alone (the data directory). Costs one disk copy and fsync of
	// every imported stream. Default "": no copy for seekable streams,
	// unseekable ones go to TempDir, and an import cut by a crash keeps
	// the items it joined without the sender's contexts until another
	// import or anti-entropy completes it.
	StateDir string
	// MaxStateBytes bounds such a copied stream; a longer one is refused
	// with ErrStateTooLarge before anything is applied. The whole stream
	// sits in TempDir during the import, so mind that directory's space
	// (and whether it is a RAM-backed tmpfs). Default 1 GiB.
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
		Collections:      []string{"snapshots", "images"},
		MaxLogEntries:    100_000,
		MaxLogBytes:      64 << 20,
		MaxStateBytes:    1 << 30,
		MaxClockOffset:   time.Minute,
		MaxWaitingDeltas: 10_000,
		MaxWaitingBytes:  4 << 20,
		MaxReplicas:      100_000,
		RetryInterval:    2 * time.Second,
		Now:              time.Now,
		Logger:           slog.Default(),
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
	if c.MaxLogEntries == 0 {
		c.MaxLogEntries = d.MaxLogEntries
	}
	if c.MaxLogEntries < 1 {
		return fmt.Errorf("config: MaxLogEntries must be positive, got %d", c.MaxLogEntries)
	}
	if c.MaxLogBytes == 0 {
		c.MaxLogBytes = d.MaxLogBytes
	}
	if c.MaxLogBytes < crdt.MaxDeltaBytes {
		return fmt.Errorf("config: MaxLogBytes must be at least %d, got %d", crdt.MaxDeltaBytes, c.MaxLogBytes)
	}
	if c.MaxStateBytes == 0 {
		c.MaxStateBytes = d.MaxStateBytes
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
