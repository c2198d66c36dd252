package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
	leveldb "github.com/ipfs/go-ds-leveldb"
)

// runExample is the seed's two-node demonstration, computed by two real
// nodes on in-memory LevelDB stores in this process: node1 adds a
// snapshot, both nodes write its metadata concurrently (node2 a
// millisecond later by its clock), they exchange their pending deltas,
// and both end with the same catalog. There is no network: the deltas are
// handed from one node to the other in code, through the seed's Go API
// (GetDeltas, ApplyDelta, ClearDeltas), and the transcript says so.
func runExample(ctx context.Context, out io.Writer) error {
	base := time.Date(2023, 12, 7, 10, 30, 45, 0, time.UTC)
	c1, c2 := &exampleClock{t: base}, &exampleClock{t: base}
	n1, err := exampleNode(ctx, c1.now)
	if err != nil {
		return err
	}
	defer n1.Close()
	n2, err := exampleNode(ctx, c2.now)
	if err != nil {
		return err
	}
	defer n2.Close()
	ts := base.Format(time.RFC3339)
	snap := func(id string) crdt.Key { return crdt.Key{Collection: "snapshots", ID: id} }

	p := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) }
	p("=== CRDT Catalog Example ===")
	p("Two nodes in this process, each on an in-memory store: Node1 replica %s, Node2 replica %s.", n1.ReplicaID(), n2.ReplicaID())
	p("No network: deltas are handed from one node to the other in code with the seed's Go API")
	p("(GetDeltas, ApplyDelta, ClearDeltas). Running nodes move the same deltas by libp2p gossip")
	p("and anti-entropy, or an outside transport moves them through GET and POST /crdt/delta.")
	p("")
	p("--- Initial State ---")
	if err := printSnapshots(ctx, out, "Node1", n1); err != nil {
		return err
	}
	if err := printSnapshots(ctx, out, "Node2", n2); err != nil {
		return err
	}

	p("")
	p("--- Node1 adds snapshot ---")
	if _, err := n1.Add(ctx, snap("snap1"), exampleDoc(`{"size":1024,"created":"`+ts+`","cluster":"cluster-a"}`)); err != nil {
		return err
	}
	if err := printSnapshots(ctx, out, "Node1", n1); err != nil {
		return err
	}
	// Node2 must know snap1 before it can write its metadata: a metadata
	// write never creates an item. Node1 keeps the delta pending, so it is
	// sent again below and shows up as already applied.
	early, err := n1.DeltasSince(ctx, 0, 10, true)
	if err != nil {
		return err
	}
	if _, err := n2.ApplyDeltas(ctx, early.Deltas); err != nil {
		return err
	}
	p("Node1's add delta handed to Node2 (ApplyDeltas): Node2 holds snap1 too")

	p("")
	p("--- Concurrent metadata updates (conflict) ---")
	c1.advance(time.Millisecond)
	c2.advance(2 * time.Millisecond) // node2 writes one millisecond later
	t1, t2 := c1.now().Format(time.RFC3339Nano), c2.now().Format(time.RFC3339Nano)
	p("Each node replaces snap1's metadata without having seen the other's write;")
	p("\"updated\" is the writing node's clock: Node1 %s, Node2 %s.", t1, t2)
	it1, err := n1.Replace(ctx, snap("snap1"), exampleDoc(`{"size":1024,"status":"completed","updated":"`+t1+`"}`))
	if err != nil {
		return err
	}
	it2, err := n2.Replace(ctx, snap("snap1"), exampleDoc(`{"size":1024,"status":"failed","updated":"`+t2+`"}`))
	if err != nil {
		return err
	}
	p("Node1 metadata: %s", formatDoc(it1.Metadata))
	p("Node2 metadata: %s", formatDoc(it2.Metadata))
	if _, err := n1.Add(ctx, snap("snap2"), exampleDoc(`{"size":2048,"created":"`+ts+`","cluster":"cluster-b"}`)); err != nil {
		return err
	}

	p("")
	p("--- Delta Exchange ---")
	p("Each delta carries the hybrid logical clock timestamp of its write: wall-clock time,")
	p("then after the slash a logical counter that orders writes made within one millisecond.")
	if err := exampleSend(ctx, out, "Node1", n1, "Node2", n2); err != nil {
		return err
	}
	if err := exampleSend(ctx, out, "Node2", n2, "Node1", n1); err != nil {
		return err
	}

	p("")
	p("--- After Sync ---")
	if err := printSnapshots(ctx, out, "Node1", n1); err != nil {
		return err
	}
	if err := printSnapshots(ctx, out, "Node2", n2); err != nil {
		return err
	}

	p("")
	p("--- LWW Conflict Resolution ---")
	w1, err := n1.Get(ctx, snap("snap1"))
	if err != nil {
		return err
	}
	w2, err := n2.Get(ctx, snap("snap1"))
	if err != nil {
		return err
	}
	p("Both nodes wrote snap1's metadata concurrently: Node1 at %s, Node2 at %s.", t1, t2)
	p("The write with the later timestamp wins (LWW semantics; equal timestamps: higher replica ID).")
	p("Winner, on both nodes: %s", formatDoc(w1.Metadata))
	for _, f := range []string{"status", "updated"} {
		for _, l := range w1.Conflicts[f] {
			p("Losing %s value, kept as a visible conflict: %s, stamped %s by replica %s", f, l.Value, l.TS, l.Dot.Replica)
		}
	}
	if formatDoc(w1.Metadata) != formatDoc(w2.Metadata) {
		return fmt.Errorf("example: the nodes disagree after sync: %s vs %s", formatDoc(w1.Metadata), formatDoc(w2.Metadata))
	}
	p("")
	p("This demonstrates eventual consistency, conflict resolution and delta synchronization.")
	p("The README's three-node quickstart shows the same between running nodes over the network.")
	return nil
}

// exampleSend moves from's pending deltas to to in this process, naming
// each with its timestamp, and clears them on from.
func exampleSend(ctx context.Context, out io.Writer, fromName string, from *node.Node, toName string, to *node.Node) error {
	pending, err := from.GetDeltas(ctx, 1000)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s hands its %d pending deltas to %s (GetDeltas, then ApplyDelta on %s)\n", fromName, len(pending.Deltas), toName, toName)
	for _, d := range pending.Deltas {
		res, err := to.ApplyDelta(ctx, d)
		if err != nil {
			return err
		}
		note := ""
		if res.Duplicate > 0 {
			note = ", already applied: nothing changes"
		}
		fmt.Fprintf(out, "Applying delta: %s (%s, %s, stamped %s%s)\n", d.Key(), d.Kind(), d.Op, d.TS, note)
	}
	return from.ClearDeltas(ctx, pending.Cursor)
}

func exampleNode(ctx context.Context, now func() time.Time) (*node.Node, error) {
	store, err := leveldb.NewDatastore("", nil)
	if err != nil {
		return nil, err
	}
	cfg := node.DefaultConfig()
	cfg.Now = now
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return node.Open(ctx, store, cfg)
}

func exampleDoc(s string) crdt.Document {
	d, err := crdt.ParseDocument([]byte(s))
	if err != nil {
		panic(err) // the example's documents are constants
	}
	return d
}

func printSnapshots(ctx context.Context, out io.Writer, name string, n *node.Node) error {
	page, err := n.Query(ctx, "snapshots", "", node.MaxQueryLimit, "")
	if err != nil {
		return err
	}
	items := make([]string, len(page.Items))
	for i, it := range page.Items {
		items[i] = fmt.Sprintf("{id:%s metadata:%s}", it.ID, formatDoc(it.Metadata))
	}
	fmt.Fprintf(out, "%s snapshots: [%s]\n", name, strings.Join(items, " "))
	return nil
}

// formatDoc prints a document the way the seed's transcript does:
// map[key:value ...] with keys sorted.
func formatDoc(d crdt.Document) string {
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		var v any
		if err := json.Unmarshal(d[k], &v); err != nil {
			v = string(d[k])
		}
		parts[i] = fmt.Sprintf("%s:%v", k, v)
	}
	return "map[" + strings.Join(parts, " ") + "]"
}

// exampleClock is a physical clock the example moves by hand, so its
// output is the same on every run.
type exampleClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *exampleClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *exampleClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
