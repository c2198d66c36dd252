package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// compareHistories runs what p2p does between two nodes after a pull:
// to's head sums go to from, from's signed heads where they differ come
// back, to fetches from's runs of the chains that contradict its own and
// checks them. It returns how many new proofs to found.
func compareHistories(tb testing.TB, from, to *Node) int {
	tb.Helper()
	ctx := context.Background()
	heads, err := from.HeadsFor(to.HeadSums(), 0)
	if err != nil {
		tb.Fatal(err)
	}
	if heads == nil {
		return 0
	}
	ranges, err := to.Contradictions(ctx, heads)
	if err != nil {
		tb.Fatal(err)
	}
	found := 0
	for _, rg := range ranges {
		enc, err := from.Chain(ctx, rg)
		if err != nil {
			tb.Fatalf("%s's chain %+v: %v", from.ReplicaID(), rg, err)
		}
		added, err := to.CheckChain(ctx, enc)
		if err != nil {
			tb.Fatal(err)
		}
		if added {
			found++
		}
	}
	return found
}

// sumsAnew computes n's head sums from its heads, as HeadSums keeps them
// commit by commit.
func sumsAnew(n *Node) []byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	var sums [headBuckets][headSumSize]byte
	for r, h := range n.heads {
		d := headDigest(r, h)
		for i := range d {
			sums[headBucket(r)][i] ^= d[i]
		}
	}
	var out []byte
	for _, s := range sums {
		out = append(out, s[:]...)
	}
	return out
}

// passForks hands to the proofs of equivocation from holds that to lacks.
func passForks(tb testing.TB, from, to *Node) {
	tb.Helper()
	known := map[crdt.ReplicaID]uint64{}
	for _, e := range to.Equivocators() {
		known[e.Replica] = e.From
	}
	for _, enc := range from.Forks(known) {
		if _, err := to.AddFork(context.Background(), enc); err != nil {
			tb.Fatal(err)
		}
	}
}

// fullPull joins from's full state into to.
func fullPull(tb testing.TB, from, to *Node) {
	tb.Helper()
	var buf bytes.Buffer
	if err := from.ExportState(context.Background(), &buf); err != nil {
		tb.Fatal(err)
	}
	if _, err := to.ImportState(context.Background(), &buf); err != nil {
		tb.Fatal(err)
	}
}

// visible returns the visible items of collection snapshots with their
// metadata.
func visible(tb testing.TB, n *Node) map[string]string {
	tb.Helper()
	out := map[string]string{}
	cursor := ""
	for {
		p, err := n.Query(context.Background(), "snapshots", "", 1000, cursor)
		if err != nil {
			tb.Fatal(err)
		}
		for _, it := range p.Items {
			b, err := json.Marshal(it.Metadata)
			if err != nil {
				tb.Fatal(err)
			}
			out[it.ID] = string(b)
		}
		if cursor = p.NextCursor; cursor == "" {
			return out
		}
	}
}

// A data directory copied to a second process makes one replica sign two
// histories, each reaching other nodes (b holds one, c the other) who
// look equal by their contexts. Comparing signed heads proves the
// equivocation; every node holding the proof drops the replica's writes
// from where the histories part, and after full states (each node's once
// per ban stamp, as p2p pulls them) all converge, keeping every other
// replica's writes, those made on top of either history included. The replica's later
// deltas are refused, and the proof, handed to the original, stops its
// writes as a fork.
func TestEquivocation_ProvenAndConvergedWithoutLosingHonestWrites(t *testing.T) {
	ctx := context.Background()
	// d lags: it never sees either history past the fork, only the proof
	// and the honest writes made on top of them.
	b, c, d := openMem(t, signedConfig(t)), openMem(t, signedConfig(t)), openMem(t, signedConfig(t))
	a, twin, _, _ := forkedPairAfter(t, func(a *Node) {
		mustAdd(t, a, "x", `{"v":1}`)
		mustAdd(t, a, "keep", `{"v":"before the fork"}`)
		for _, n := range []*Node{b, c, d} {
			pull(t, a, n)
		}
	})
	defer a.Close()
	eq := a.ReplicaID()

	mustAdd(t, a, "x", `{"v":"a"}`)
	mustAdd(t, a, "y", `{"v":"a"}`)
	mustAdd(t, twin, "x", `{"v":"twin"}`)
	mustAdd(t, twin, "z", `{"v":"twin"}`)
	pull(t, a, b)
	pull(t, twin, c)
	// Honest writes on top of each history: b removes a's y, c patches
	// the twin's z; and one each of their own.
	if err := b.Remove(ctx, key("snapshots", "y")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Patch(ctx, key("snapshots", "z"), mustDoc(t, `{"c":"patched"}`)); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, b, "from-b", `{"v":"b"}`)
	mustAdd(t, c, "from-c", `{"v":"c"}`)

	_, last := c.ChangeBounds()
	watch, err := c.Watch(last)
	if err != nil {
		t.Fatal(err)
	}
	if found := compareHistories(t, b, c); found != 1 {
		t.Fatalf("c found %d proofs comparing with b, want 1", found)
	}
	if eqs := c.Equivocators(); len(eqs) != 1 || eqs[0].Replica != eq || eqs[0].From != 3 {
		t.Fatalf("c's equivocators: %+v, want %s from 3", eqs, eq)
	}
	// c's change feed tells its watchers that x went with the proof.
	evs, err := watch.Next(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	var xGone bool
	for _, e := range evs {
		xGone = xGone || (e.Key == key("snapshots", "x") && e.Kind == ChangeRemoved && e.Via == ViaEquivocation && e.Dot == crdt.Dot{Replica: eq, Counter: 3})
	}
	if !xGone {
		t.Fatalf("c's feed after the proof: %d changes, none removing x by equivocation", len(evs))
	}
	passForks(t, c, b)
	passForks(t, c, d)
	for _, n := range []*Node{b, c, d} {
		if n.BanStamp() == 0 {
			t.Fatalf("%s holds a proof but no ban stamp", n.ReplicaID())
		}
	}
	// The proof alone drops the replica's entries from the fork on: x,
	// which both histories rewrote there, is gone on b and c.
	for _, n := range []*Node{b, c} {
		if _, err := n.Get(ctx, key("snapshots", "x")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("x on %s after the proof: %v", n.ReplicaID(), err)
		}
	}
	// Deltas, then full states: b's reaches d only through c. The honest
	// writes made on top of either history join on d, which never saw
	// them, without waiting for the dots they name.
	pull(t, b, c)
	pull(t, c, b)
	pull(t, b, d)
	pull(t, c, d)
	if s := d.Stats(); s.Waiting != 0 {
		t.Fatalf("d has %d deltas waiting for an equivocator's dots", s.Waiting)
	}
	for _, id := range []string{"from-b", "from-c"} {
		if _, err := d.Get(ctx, key("snapshots", id)); err != nil {
			t.Fatalf("%s on d: %v", id, err)
		}
	}
	fullPull(t, b, c)
	fullPull(t, c, d)
	fullPull(t, c, b)
	want := map[string]string{
		"keep":   `{"v":"before the fork"}`,
		"from-b": `{"v":"b"}`,
		"from-c": `{"v":"c"}`,
	}
	for _, v := range []map[string]string{visible(t, b), visible(t, c), visible(t, d)} {
		if len(v) != len(want) {
			t.Fatalf("visible items %v, want %v", v, want)
		}
		for id, doc := range want {
			if v[id] != doc {
				t.Fatalf("visible items %v, want %v", v, want)
			}
		}
	}
	// z is gone with the twin's add, but c's patch of it is kept, as a
	// concurrent remove would keep it; b holds the same.
	for _, n := range []*Node{b, c, d} {
		if _, err := n.Get(ctx, key("snapshots", "z")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("z on %s: %v", n.ReplicaID(), err)
		}
		if s := n.Stats(); s.Waiting != 0 {
			t.Fatalf("%s has %d deltas waiting", n.ReplicaID(), s.Waiting)
		}
	}

	// A new node restored from b's full state (a backup) takes the proof
	// with it, and the state's claims of the banned dots with it.
	e := openMem(t, signedConfig(t))
	fullPull(t, b, e)
	if eqs := e.Equivocators(); len(eqs) != 1 || eqs[0].Replica != eq {
		t.Fatalf("a node restored from b's state holds equivocators %+v", eqs)
	}
	if got := visible(t, e); len(got) != len(want) {
		t.Fatalf("restored from b's state: %v, want %v", got, want)
	}

	// The equivocator's next writes are refused on both.
	mustAdd(t, a, "later", `{"v":"a"}`)
	pull(t, a, b)
	if _, err := b.Get(ctx, key("snapshots", "later")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a's write after the fork reached b: %v", err)
	}
	// The proof survives a restart of the node that holds it (b is in
	// memory; a reopened twin stands in) and, handed to a copy of the
	// replica, stops its writes.
	passForks(t, c, twin)
	if _, err := twin.Add(ctx, key("snapshots", "w"), mustDoc(t, `{}`)); !errors.Is(err, ErrForked) {
		t.Fatalf("a write on the twin after the proof: %v, want ErrForked", err)
	}
}

// Two nodes that hold the same history find nothing to prove, and a
// chain that does not verify is refused.
func TestEquivocation_AgreeingHistoriesProveNothing(t *testing.T) {
	ctx := context.Background()
	a := openMem(t, signedConfig(t))
	b, c := openMem(t, signedConfig(t)), openMem(t, signedConfig(t))
	for i := range 5 {
		mustAdd(t, a, string(rune('p'+i)), `{"v":1}`)
	}
	pull(t, a, b)
	pull(t, a, c)
	if found := compareHistories(t, b, c); found != 0 {
		t.Fatalf("found %d proofs between agreeing nodes", found)
	}
	enc, err := b.Chain(ctx, ChainRange{a.ReplicaID(), 2, 5})
	if err != nil {
		t.Fatal(err)
	}
	if added, err := c.CheckChain(ctx, enc); err != nil || added {
		t.Fatalf("an agreeing chain: %v, %v", added, err)
	}
	enc[len(enc)-1] ^= 1
	if _, err := c.CheckChain(ctx, enc); !errors.Is(err, crdt.ErrInvalid) {
		t.Fatalf("a chain with a bad signature: %v", err)
	}
	if _, err := b.Chain(ctx, ChainRange{a.ReplicaID(), 3, 9}); !errors.Is(err, ErrNoChain) {
		t.Fatalf("a run beyond what b holds: %v", err)
	}
	if len(b.Equivocators())+len(c.Equivocators()) != 0 {
		t.Fatal("an equivocator was named")
	}
	// The sums kept commit by commit are the sums of the heads.
	for _, n := range []*Node{a, b, c} {
		if got, want := n.HeadSums(), sumsAnew(n); !bytes.Equal(got, want) || bytes.Equal(got, make([]byte, len(got))) {
			t.Fatalf("%s's head sums drifted from its heads (or are empty)", n.ReplicaID())
		}
	}
}

func FuzzDecodeHeads(f *testing.F) {
	a := openMem(f, signedConfig(f))
	mustAdd(f, a, "x", `{}`)
	heads, err := a.HeadsFor(make([]byte, headBuckets*headSumSize), 0)
	if err != nil || heads == nil {
		f.Fatal(heads, err)
	}
	f.Add(heads)
	f.Add([]byte{0xff, 0xff, 0x03})
	f.Fuzz(func(t *testing.T, b []byte) {
		hs, err := decodeHeads(b)
		if err == nil && len(hs) > MaxHeadsExchanged {
			t.Fatalf("%d heads", len(hs))
		}
	})
}

// madeUpFork returns a proof that a new keyed replica signed two
// histories, parting at counter 2.
func madeUpFork(t *testing.T) []byte {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	r, err := crdt.NewKeyedReplicaID(pub, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	chain := func(vals ...string) *crdt.Chain {
		c := &crdt.Chain{Replica: r, From: 1, Base: crdt.ChainStart(r)}
		h := c.Base
		for i, v := range vals {
			d, err := crdt.AddDelta(key("snapshots", fmt.Sprint("f", i)), nil, mustDoc(t, `{"v":"`+v+`"}`), crdt.Dot{Replica: r, Counter: uint64(i + 1)}, testTS)
			if err != nil {
				t.Fatal(err)
			}
			s := crdt.StepOf(d)
			c.Steps = append(c.Steps, s)
			h = crdt.ChainNextSplit(h, s.Head, s.Own)
		}
		c.Sig = crdt.SignHead(priv, r, c.End(), h)
		return c
	}
	f, err := crdt.ForkOf(chain("same", "a"), chain("same", "b"))
	if err != nil {
		t.Fatal(err)
	}
	return crdt.EncodeFork(f)
}

// Proofs held survive a restart, each whole (the store's iterator reuses
// its buffer from one record to the next).
func TestEquivocation_ProofsSurviveARestart(t *testing.T) {
	ctx := context.Background()
	dir, cfg := t.TempDir(), signedConfig(t)
	n := openDir(t, dir, cfg)
	for range 3 {
		enc := madeUpFork(t)
		if added, err := n.AddFork(ctx, enc); err != nil || !added {
			t.Fatalf("AddFork: %v, %v", added, err)
		}
	}
	want := n.Equivocators()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = openDir(t, dir, cfg)
	defer n.Close()
	if got := n.Equivocators(); fmt.Sprint(got) != fmt.Sprint(want) || len(got) != 3 {
		t.Fatalf("after a restart: %+v, want %+v", got, want)
	}
	replicas := map[crdt.ReplicaID]bool{}
	for _, enc := range n.Forks(nil) {
		f, err := crdt.DecodeFork(enc)
		if err != nil {
			t.Fatalf("a proof held after a restart does not decode: %v", err)
		}
		replicas[f.Replica()] = true
	}
	if len(replicas) != 3 {
		t.Fatalf("after a restart the proofs held convict %d replicas, want 3", len(replicas))
	}
}
