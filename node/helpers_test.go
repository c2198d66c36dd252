package node

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	leveldb "github.com/ipfs/go-ds-leveldb"
)

// fakeClock is a settable physical clock for tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2023, 12, 7, 10, 30, 45, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func testConfig(clock func() time.Time) Config {
	cfg := DefaultConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if clock != nil {
		cfg.Now = clock
	}
	return cfg
}

// openMem opens a node on an in-memory LevelDB store.
func openMem(tb testing.TB, cfg Config) *Node {
	tb.Helper()
	store, err := leveldb.NewDatastore("", nil)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := Open(context.Background(), store, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = n.Close() })
	return n
}

// openDir opens a node on a LevelDB store in dir.
func openDir(tb testing.TB, dir string, cfg Config) *Node {
	tb.Helper()
	store, err := OpenLevelDB(dir, true)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := Open(context.Background(), store, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

func mustDoc(tb testing.TB, s string) crdt.Document {
	tb.Helper()
	d, err := crdt.ParseDocument([]byte(s))
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

func key(coll, id string) crdt.Key { return crdt.Key{Collection: coll, ID: id} }

// exchange moves every pending delta of from to to, as the seed's example
// does, and clears what it moved.
func exchange(tb testing.TB, from, to *Node) int {
	tb.Helper()
	ctx := context.Background()
	moved := 0
	for {
		p, err := from.GetDeltas(ctx, 100)
		if err != nil {
			tb.Fatal(err)
		}
		if len(p.Deltas) > 0 {
			if _, err := to.ApplyDeltas(ctx, p.Deltas); err != nil {
				tb.Fatal(err)
			}
		}
		if err := from.ClearDeltas(ctx, p.Cursor); err != nil {
			tb.Fatal(err)
		}
		moved += len(p.Deltas)
		if !p.More {
			return moved
		}
	}
}

// dump returns the visible state of a collection as JSON, for comparisons.
func dump(tb testing.TB, n *Node, coll string) string {
	tb.Helper()
	var all []Item
	cursor := ""
	for {
		p, err := n.Query(context.Background(), coll, "", MaxQueryLimit, cursor)
		if err != nil {
			tb.Fatal(err)
		}
		all = append(all, p.Items...)
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	b, _ := json.Marshal(all)
	return string(b)
}
