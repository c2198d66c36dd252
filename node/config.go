package node

import (
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
	// MaxStateBytes bounds such a copied stream; a longer one is refused
	// with ErrStateTooLarge before anything is applied. The whole stream
	// sits in TempDir during the import, so mind that directory's space
	// (and whether it is a RAM-backed tmpfs). Default 1 GiB.
	MaxStateBytes int64

	// MaxClockOffset is how far ahead of the local clock a remote timestamp
	// may be before it is logged and counted (it is joined regardless).
	// Default 1 minute.
	MaxClockOffset time.Duration

	// RetryInterval is how often a node whose store failed a write probes
	// it with a small write, to resume accepting writes once it succeeds
	// (see Node.Writable). Shorter resumes sooner after space comes back;
	// each probe of a LevelDB store asks it for a compaction, which fails
	// at once while the disk is still full. Default 2s.
	RetryInterval time.Duration

	// Now reads the physical clock. Default time.Now.
	Now func() time.Time
	// Logger receives events. Default slog.Default().
	Logger *slog.Logger
	// OnCommit, if set, is called after every group commit with the number
	// of operations in it and how long the durable write took. It runs on
	// the commit goroutine and must not block.
	OnCommit func(ops int, took time.Duration)
}

// DefaultConfig returns the defaults documented on Config.
func DefaultConfig() Config {
	return Config{
		Collections:    []string{"snapshots", "images"},
		MaxLogEntries:  100_000,
		MaxLogBytes:    64 << 20,
		MaxStateBytes:  1 << 30,
		MaxClockOffset: time.Minute,
		RetryInterval:  2 * time.Second,
		Now:            time.Now,
		Logger:         slog.Default(),
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
	if c.MaxClockOffset == 0 {
		c.MaxClockOffset = d.MaxClockOffset
	}
	if c.MaxClockOffset < 0 {
		return fmt.Errorf("config: MaxClockOffset must not be negative, got %v", c.MaxClockOffset)
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
