package node

import (
	"context"
	"fmt"
	"strings"
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
	served, stubs := 0, 0
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
				served++
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
	})
	t.Logf("%d of %d deltas served were stubs", stubs, served)
	if stubs == 0 {
		t.Error("no stub was served: the test does not exercise them")
	}
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

// A forwarder cannot make a node lose a write by sending the stub of a
// live delta: the stub waits, alone or with deltas that do not name its
// dot, the node does not claim it (its applied context lacks it), and the
// whole delta, from anyone, joins and replaces it.
func TestStub_ForgedStubOfALiveDeltaLosesNothing(t *testing.T) {
	ctx := context.Background()
	a, c := openMem(t, signedConfig(t)), openMem(t, signedConfig(t))
	sub := a.Subscribe(10)
	defer sub.Close()
	mustAdd(t, a, "k", `{"v":1}`)
	d1 := (<-sub.C).Delta
	mustAdd(t, a, "other", `{"v":2}`)
	d2 := (<-sub.C).Delta
	if d1.Proof.Sig == nil || d2.Proof.Sig == nil {
		t.Fatal("each write of a lone writer is its own signed commit")
	}
	forged := crdt.Stub(d1) // keeps the signature: it proves the stub
	if !forged.IsStub() {
		t.Fatal("no stub")
	}
	if res := mustApply(t, c, forged); res.Waiting != 1 || res.New != 0 {
		t.Fatalf("a lone stub: %+v, want it waiting", res)
	}
	if res := mustApply(t, c, forged, d2); res.New != 0 {
		t.Fatalf("a stub with a delta that does not name it: %+v, want nothing joined", res)
	}
	if _, applied := c.Contexts(); applied.Contains(d1.Dot) || !c.Gap(d1.Dot) {
		t.Fatalf("c claims the stubbed delta (%v) or sees no gap", applied)
	}
	if res := pull(t, a, c); res.New != 2 {
		t.Fatalf("pull from the writer: %+v, want both deltas joined", res)
	}
	if it, err := c.Get(ctx, key("snapshots", "k")); err != nil || string(it.Metadata["v"]) != "1" {
		t.Fatalf("k on c: %+v, %v", it, err)
	}
	if w := c.Stats().Waiting; w != 0 {
		t.Fatalf("%d deltas still wait", w)
	}
}

// A superseded delta is served as its stub, which joins on a node that
// lacks both it and the delta that superseded it; the log keeps no copy
// of the values, live or dead.
func TestStub_SupersededDeltasAreServedAsStubs(t *testing.T) {
	ctx := context.Background()
	a, b := openMem(t, signedConfig(t)), openMem(t, signedConfig(t))
	mustAdd(t, a, "k", `{"v":"first"}`)
	mustAdd(t, a, "k", `{"v":"second"}`)
	mustAdd(t, a, "gone", `{"v":"third"}`)
	if err := a.Remove(ctx, key("snapshots", "gone")); err != nil {
		t.Fatal(err)
	}
	ds := servedPart(t, a, b)
	var kinds string
	for _, d := range ds {
		kinds += fmt.Sprintf("%v ", d.IsStub())
	}
	if kinds != "true false true false " {
		t.Fatalf("served stubs: %s, want the overwritten and the removed add as stubs", kinds)
	}
	if res := mustApply(t, b, ds...); res.New != 4 || b.Stats().Waiting != 0 {
		t.Fatalf("b joined %+v, want all 4 (the stubs wait until what names them comes)", res)
	}
	if got, want := itemsOf(ctx, b, []string{"k", "gone"}), itemsOf(ctx, a, []string{"k", "gone"}); got != want {
		t.Fatalf("b holds %s, a %s", got, want)
	}
	// Nothing in a's or b's log holds a value.
	for _, n := range []*Node{a, b} {
		p, err := n.DeltasSince(ctx, 0, 100, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, seq := range p.Seqs {
			e, err := n.store.Get(ctx, logSeqKey(seq))
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range []string{"first", "second", "third"} {
				if strings.Contains(string(e), v) {
					t.Fatalf("log entry %d holds the value %q", seq, v)
				}
			}
		}
	}
}

// The seed's pending deltas carry stubs through their JSON form: a page
// of a node whose add was overwritten joins whole on another node.
func TestStub_PendingPageWithStubsThroughJSON(t *testing.T) {
	ctx := context.Background()
	a, b := openMem(t, signedConfig(t)), openMem(t, signedConfig(t))
	mustAdd(t, a, "k", `{"v":"first"}`)
	mustAdd(t, a, "k", `{"v":"second"}`)
	p, err := a.GetDeltas(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Deltas) != 2 || !p.Deltas[0].IsStub() || p.Deltas[1].IsStub() {
		t.Fatalf("pending page: %+v, want the overwritten add as a stub, then the overwrite", p.Deltas)
	}
	var ds []*crdt.Delta
	for _, d := range p.Deltas {
		j, err := d.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var back crdt.Delta
		if err := back.UnmarshalJSON(j); err != nil {
			t.Fatalf("%s: %v", j, err)
		}
		ds = append(ds, &back)
	}
	// In either order: the stub waits for the overwrite that names it.
	if res := mustApply(t, b, ds[1], ds[0]); res.New != 2 || b.Stats().Waiting != 0 {
		t.Fatalf("b: %+v", res)
	}
	if got, want := itemsOf(ctx, b, []string{"k"}), itemsOf(ctx, a, []string{"k"}); got != want {
		t.Fatalf("b holds %s, a %s", got, want)
	}
}

// Only a delta about the stub's own item lets the stub join: a Byzantine
// replica's delta about another item that names a live delta's dot does
// not make a forged stub of it join, which would lose its values here
// while every node holding the whole delta keeps them.
func TestStub_NamerOfAnotherItemDoesNotCoverAStub(t *testing.T) {
	ctx := context.Background()
	a, victim, clean := openMem(t, signedConfig(t)), openMem(t, signedConfig(t)), openMem(t, signedConfig(t))
	sub := a.Subscribe(10)
	defer sub.Close()
	mustAdd(t, a, "k", `{"v":1}`)
	x := (<-sub.C).Delta
	byz := newByzSigner(t)
	b := byz.sign(t, forgedRemove(key("snapshots", "elsewhere"), byz.dot(), x.Dot), true)
	mustApply(t, victim, crdt.Stub(x), b)
	mustApply(t, clean, x, b)
	pull(t, a, victim)
	if got, want := itemsOf(ctx, victim, []string{"k"}), itemsOf(ctx, clean, []string{"k"}); got != want {
		t.Fatalf("victim holds %s, a node that got the whole delta %s", got, want)
	}
	if _, err := victim.Get(ctx, key("snapshots", "k")); err != nil {
		t.Fatalf("the live write is lost on the victim: %v", err)
	}
}
