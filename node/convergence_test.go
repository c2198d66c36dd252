package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"pgregory.net/rapid"
)

// antiEntropy brings to up to date with from the way the p2p layer does:
// the logged deltas to lacks, or a full-state transfer when from's log does
// not cover the gap. It reports whether a full state was needed.
func antiEntropy(tb testing.TB, from, to *Node) bool {
	tb.Helper()
	ctx := context.Background()
	_, have := to.Contexts()
	var batch []*crdt.Delta
	_, err := from.DeltasFor(ctx, have, func(d *crdt.Delta, _ []byte) error {
		batch = append(batch, d)
		return nil
	})
	if len(batch) > 0 {
		if _, err := to.ApplyDeltas(ctx, batch); err != nil {
			tb.Fatal(err)
		}
	}
	if errors.Is(err, ErrLogGap) {
		var buf bytes.Buffer
		if err := from.ExportState(ctx, &buf); err != nil {
			tb.Fatal(err)
		}
		if _, err := to.ImportState(ctx, &buf); err != nil {
			tb.Fatal(err)
		}
		return true
	}
	if err != nil {
		tb.Fatal(err)
	}
	return false
}

// TestNode_Convergence: 3–5 nodes on LevelDB stores make random operations;
// their deltas reach the others in random order, some duplicated, some
// dropped; logs are short, so some gaps need a full-state transfer. After
// anti-entropy between every pair, every node holds the same items, the
// same causal contexts and the same counts.
func TestNode_Convergence(t *testing.T) {
	fullStates := 0
	defer func() { t.Logf("full-state transfers: %d", fullStates) }()
	rapid.Check(t, func(rt *rapid.T) {
		ctx := context.Background()
		cfg := testConfig(nil)
		cfg.MaxLogEntries = rapid.IntRange(3, 50).Draw(rt, "log")
		nodes := make([]*Node, rapid.IntRange(3, 5).Draw(rt, "nodes"))
		subs := map[*Node]*Subscription{}
		for i := range nodes {
			nodes[i] = openMem(t, cfg)
			subs[nodes[i]] = nodes[i].Subscribe(1000)
		}
		defer func() {
			for _, n := range nodes {
				n.Close()
			}
		}()
		ids := []string{"a", "b", "c", "d"}
		var all []*crdt.Delta
		for range rapid.IntRange(1, 40).Draw(rt, "ops") {
			n := rapid.SampledFrom(nodes).Draw(rt, "node")
			if len(all) > 0 && rapid.IntRange(0, 3).Draw(rt, "deliver") == 0 {
				d := rapid.SampledFrom(all).Draw(rt, "delta")
				if _, err := n.ApplyDelta(ctx, d); err != nil {
					rt.Fatal(err)
				}
				continue
			}
			k := key(rapid.SampledFrom([]string{"snapshots", "images"}).Draw(rt, "coll"), rapid.SampledFrom(ids).Draw(rt, "id"))
			doc := crdt.Document{"v": []byte(fmt.Sprint(rapid.IntRange(0, 9).Draw(rt, "v")))}
			var err error
			switch rapid.IntRange(0, 3).Draw(rt, "op") {
			case 0:
				_, err = n.Add(ctx, k, doc)
			case 1:
				err = n.Remove(ctx, k)
			case 2:
				_, err = n.Replace(ctx, k, doc)
			default:
				_, err = n.Patch(ctx, k, crdt.Document{"w": doc["v"]})
			}
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				rt.Fatal(err)
			}
			// The change is published before the operation returns.
			c := <-subs[n].C
			for !c.Local { // remote deltas it joined come first
				c = <-subs[n].C
			}
			if c.Delta.Dot.Replica != n.ReplicaID() {
				rt.Fatalf("subscription delivered %+v after a local operation", c)
			}
			all = append(all, c.Delta)
		}
		// Push: each delta reaches each node with some fate.
		var err error
		for _, n := range nodes {
			for _, d := range rapid.Permutation(all).Draw(rt, "order") {
				switch rapid.IntRange(0, 4).Draw(rt, "fate") {
				case 0: // dropped
				case 1:
					_, err = n.ApplyDeltas(ctx, []*crdt.Delta{d, d})
				default:
					_, err = n.ApplyDelta(ctx, d)
				}
				if err != nil {
					rt.Fatal(err)
				}
			}
		}
		// Pull: two rounds of anti-entropy between every ordered pair.
		for range 2 {
			for _, a := range nodes {
				for _, b := range nodes {
					if a != b {
						if antiEntropy(t, a, b) {
							fullStates++
						}
					}
				}
			}
		}
		want := dump(t, nodes[0], "snapshots") + dump(t, nodes[0], "images")
		seen0, applied0 := nodes[0].Contexts()
		for _, n := range nodes[1:] {
			if got := dump(t, n, "snapshots") + dump(t, n, "images"); got != want {
				rt.Fatalf("node %s diverged:\n%s\nvs\n%s", n.ReplicaID(), got, want)
			}
			seen, applied := n.Contexts()
			if !seen.Equal(seen0) || !applied.Equal(applied0) {
				rt.Fatalf("node %s: contexts differ", n.ReplicaID())
			}
			if n.Stats().Items["snapshots"] != nodes[0].Stats().Items["snapshots"] {
				rt.Fatalf("node %s: item counts differ", n.ReplicaID())
			}
		}
	})
}

// itemRecords returns every item record in n's store, by key.
func itemRecords(tb testing.TB, n *Node) map[string]string {
	tb.Helper()
	out := map[string]string{}
	err := scan(context.Background(), n.store, itemsPrefix, "", func(key string, val []byte) (bool, error) {
		out[key] = string(val)
		return true, nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// TestNode_ApplyDeltasInBatchesMatchesOneByOne: ApplyDeltas reads the
// items of a batch ahead in one pass over a LevelDB store; a node fed
// batches — of new items, items it stores, items staged by the same batch,
// duplicates — ends with the same records and contexts as one fed the
// same deltas one at a time.
func TestNode_ApplyDeltasInBatchesMatchesOneByOne(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		ctx := context.Background()
		srcs := []*Node{openMem(t, testConfig(nil)), openMem(t, testConfig(nil))}
		subs := []*Subscription{srcs[0].Subscribe(10000), srcs[1].Subscribe(10000)}
		ids := make([]string, rapid.IntRange(1, 40).Draw(rt, "ids"))
		for i := range ids {
			ids[i] = fmt.Sprintf("item-%02d", i)
		}
		var all []*crdt.Delta
		for range rapid.IntRange(1, 150).Draw(rt, "ops") {
			i := rapid.IntRange(0, 1).Draw(rt, "src")
			n := srcs[i]
			k := key("snapshots", rapid.SampledFrom(ids).Draw(rt, "id"))
			doc := crdt.Document{"v": []byte(fmt.Sprint(rapid.IntRange(0, 9).Draw(rt, "v")))}
			var err error
			switch rapid.IntRange(0, 3).Draw(rt, "op") {
			case 0, 1:
				_, err = n.Add(ctx, k, doc)
			case 2:
				err = n.Remove(ctx, k)
			default:
				_, err = n.Patch(ctx, k, doc)
			}
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				rt.Fatal(err)
			}
			c := <-subs[i].C
			all = append(all, c.Delta)
			if rapid.IntRange(0, 4).Draw(rt, "sync") == 0 { // sources see each other's writes now and then
				res, err := srcs[1-i].ApplyDelta(ctx, c.Delta)
				if err != nil {
					rt.Fatal(err)
				}
				for range res.New { // this delta, and those it released
					<-subs[1-i].C
				}
			}
		}
		batched, single := openMem(t, testConfig(nil)), openMem(t, testConfig(nil))
		defer batched.Close()
		defer single.Close()
		order := rapid.Permutation(all).Draw(rt, "order")
		for len(order) > 0 {
			k := min(len(order), rapid.IntRange(1, 40).Draw(rt, "batch"))
			batch := append([]*crdt.Delta(nil), order[:k]...)
			if rapid.Bool().Draw(rt, "dup") {
				batch = append(batch, rapid.SampledFrom(all).Draw(rt, "again"))
			}
			if _, err := batched.ApplyDeltas(ctx, batch); err != nil {
				rt.Fatal(err)
			}
			for _, d := range batch {
				if _, err := single.ApplyDelta(ctx, d); err != nil {
					rt.Fatal(err)
				}
			}
			order = order[k:]
		}
		got, want := itemRecords(t, batched), itemRecords(t, single)
		if len(got) != len(want) {
			rt.Fatalf("batched node holds %d item records, one-by-one %d", len(got), len(want))
		}
		for k, v := range want {
			if got[k] != v {
				rt.Fatalf("item %s differs:\n%x\n%x", k, got[k], v)
			}
		}
		s1, a1 := batched.Contexts()
		s2, a2 := single.Contexts()
		if !s1.Equal(s2) || !a1.Equal(a2) {
			rt.Fatal("contexts differ")
		}
	})
}
