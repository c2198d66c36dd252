package node

import (
	"context"
	"fmt"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"pgregory.net/rapid"
)

// Stubs: the delta log keeps no values that a later write or remove
// superseded (crdt/stub.go, node/log.go), and receivers join a stub only
// with a delta that names its dot (node/causal.go).

// servedPart runs DeltasFor from `from` for what `to` lacks and returns
// the deltas served, in order.
func servedPart(tb testing.TB, from, to *Node) []*crdt.Delta {
	tb.Helper()
	_, have := to.Contexts()
	var ds []*crdt.Delta
	if _, err := from.DeltasFor(context.Background(), have, func(d *crdt.Delta, _ []byte) error {
		ds = append(ds, d)
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	return ds
}

// TestStub_HonestReplicasConvergeWithStubs: signed replicas write, remove
// and overwrite a few items; deltas move between them by anti-entropy
// runs that are cut, duplicated and reordered (stubs among them, since
// superseded deltas are served as stubs); after a full exchange every
// replica holds what a clean node holds that received every whole delta
// as written, in a random order, and has applied the same dots.
func TestStub_HonestReplicasConvergeWithStubs(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		ctx := context.Background()
		nodes := []*Node{openMem(t, signedConfig(t)), openMem(t, signedConfig(t)), openMem(t, signedConfig(t))}
		subs := map[*Node]*Subscription{}
		for _, n := range nodes {
			subs[n] = n.Subscribe(10_000)
			defer subs[n].Close()
		}
		clean := openMem(t, signedConfig(t))
		ids := []string{"a", "b", "c"}
		var mine []*crdt.Delta
		stubs := 0
		for range rapid.IntRange(1, 50).Draw(rt, "steps") {
			n := nodes[rapid.IntRange(0, len(nodes)-1).Draw(rt, "node")]
			if rapid.IntRange(0, 2).Draw(rt, "step") > 0 {
				honestWrite(ctx, rt, n, subs[n], ids, &mine)
				if got, want := rawItems(t, n, ids), joinOfApplied(n, mine, ids); got != want {
					rt.Fatalf("after a write %s holds\n%s\nthe join of the whole deltas it applied:\n%s", n.ReplicaID(), got, want)
				}
				continue
			}
			from := nodes[rapid.IntRange(0, len(nodes)-1).Draw(rt, "from")]
			if from == n {
				continue
			}
			ds := servedPart(t, from, n)
			var batch []*crdt.Delta
			for _, d := range ds {
				if d.IsStub() {
					stubs++
				}
				switch rapid.IntRange(0, 3).Draw(rt, "fate") {
				case 0: // dropped
				case 1: // twice
					batch = append(batch, d, d)
				default:
					batch = append(batch, d)
				}
			}
			batch = shuffled(rt, batch)
			for len(batch) > 0 { // in calls of random sizes
				k := rapid.IntRange(1, len(batch)).Draw(rt, "call")
				if _, err := n.ApplyDeltas(ctx, batch[:k]); err != nil {
					rt.Fatal(err)
				}
				batch = batch[k:]
				if got, want := rawItems(t, n, ids), joinOfApplied(n, mine, ids); got != want {
					rt.Fatalf("%s holds\n%s\nthe join of the whole deltas it applied:\n%s", n.ReplicaID(), got, want)
				}
			}
		}
		for range 2 {
			for _, a := range nodes {
				for _, b := range nodes {
					if a != b {
						pull(t, a, b)
						if got, want := rawItems(t, b, ids), joinOfApplied(b, mine, ids); got != want {
							rt.Fatalf("after a pull %s holds\n%s\nthe join of the whole deltas it applied:\n%s", b.ReplicaID(), got, want)
						}
					}
				}
			}
		}
		if _, err := clean.ApplyDeltas(ctx, shuffled(rt, mine)); err != nil {
			rt.Fatal(err)
		}
		want := itemsOf(ctx, clean, ids)
		_, cleanApplied := clean.Contexts()
		for _, n := range nodes {
			if w := n.Stats().Waiting; w != 0 {
				rt.Fatalf("%s still holds %d waiting deltas:\n%s", n.ReplicaID(), w, dumpWaiting(n))
			}
			if _, applied := n.Contexts(); !applied.Equal(cleanApplied) {
				rt.Fatalf("%s applied %v, the clean node %v", n.ReplicaID(), applied, cleanApplied)
			}
			if got := itemsOf(ctx, n, ids); got != want {
				rt.Fatalf("items on %s:\n%s\nclean node, from whole deltas:\n%s", n.ReplicaID(), got, want)
			}
		}
		_ = stubs
	})
}

// rawItems formats the item records ids of n, visible or not.
func rawItems(tb testing.TB, n *Node, ids []string) string {
	tb.Helper()
	var s string
	for _, id := range ids {
		b, err := get(context.Background(), n.store, itemKey(key("snapshots", id)))
		if err != nil {
			tb.Fatal(err)
		}
		var it *crdt.Item
		if b != nil {
			if it, err = crdt.DecodeStoredItem(b); err != nil {
				tb.Fatal(err)
			}
		}
		s += fmt.Sprintf("%s=%v ", id, formatItem(it))
	}
	return s
}

// joinOfApplied formats the items ids of the join of the deltas of all
// whose dots n applied.
func joinOfApplied(n *Node, all []*crdt.Delta, ids []string) string {
	_, applied := n.Contexts()
	st := crdt.NewState()
	for _, d := range all {
		if applied.Contains(d.Dot) {
			st.Apply(d)
		}
	}
	var s string
	for _, id := range ids {
		s += fmt.Sprintf("%s=%v ", id, formatItem(st.Items[key("snapshots", id)]))
	}
	return s
}

func formatItem(it *crdt.Item) string {
	if it.Empty() {
		return "{}"
	}
	s := fmt.Sprint(it.Presence)
	for f, es := range it.Fields {
		for _, e := range es {
			s += fmt.Sprintf(" %s:%s@%v", f, e.Value, e.Dot)
		}
	}
	return "{" + s + "}"
}

// dumpWaiting describes n's waiting deltas.
func dumpWaiting(n *Node) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var s string
	for dot, x := range n.parked.byDot {
		s += fmt.Sprintf("%s stub=%v ready=%v unproven=%v on=%s applied(on)=%v seen(dot)=%v ctx=%v\n",
			dot, x.d.IsStub(), x.ready, x.unproven, x.on, n.applied.Contains(x.on), n.seen.Contains(dot), x.d.Context)
	}
	return s
}
