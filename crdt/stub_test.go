package crdt

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"

	"pgregory.net/rapid"
)

// splitChain signs the chain of ds, deltas of one keyed replica in counter
// order, in the split format: each gets its Prev, and the last the
// signature of the head after it.
func splitChain(tb testing.TB, key ed25519.PrivateKey, ds ...*Delta) {
	tb.Helper()
	h := ChainStart(ds[0].Dot.Replica)
	for _, d := range ds {
		d.Proof = Proof{Prev: h, Split: true}
		h = d.Proof.Next(d, nil)
	}
	last := ds[len(ds)-1]
	last.Proof.Sig = SignHead(key, last.Dot.Replica, last.Dot.Counter, h)
}

func keyedReplica(tb testing.TB) (ReplicaID, ed25519.PrivateKey) {
	tb.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	r, err := NewKeyedReplicaID(pub, rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return r, key
}

// A stub verifies like its delta: same SplitDigest, same chain hash, the
// same signature proves it; Complete gives the delta back from an item
// that holds its own entries, and refuses one that does not.
func TestStub_VerifiesLikeItsDelta(t *testing.T) {
	r, key := keyedReplica(t)
	k := Key{"snapshots", "s"}
	add, err := AddDelta(k, nil, doc("a", "1", "b", "2"), Dot{r, 1}, Timestamp(1<<16))
	if err != nil {
		t.Fatal(err)
	}
	st := NewState()
	st.Apply(add)
	// A patch of a keeps the add's presence and b: a stub of it keeps
	// them too, with only its own entry elided.
	patch, err := PatchDelta(k, st.Items[k], doc("a", "3"), Dot{r, 2}, Timestamp(2<<16))
	if err != nil {
		t.Fatal(err)
	}
	splitChain(t, key, add, patch)
	for _, d := range []*Delta{add, patch} {
		s := Stub(d)
		if !s.IsStub() || s.HasOwn() || d.IsStub() {
			t.Fatalf("Stub(%s) = %+v", d.Dot, s)
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("stub of %s: %v", d.Dot, err)
		}
		dh, do := SplitDigest(d)
		sh, so := SplitDigest(s)
		if dh != sh || do != so {
			t.Fatalf("stub of %s digests differently", d.Dot)
		}
		enc, err := EncodeDelta(s)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeDelta(enc)
		if err != nil {
			t.Fatalf("a stub's encoding does not decode: %v", err)
		}
		back.Proof = s.Proof
		if bh, _ := SplitDigest(back); bh != sh {
			t.Fatal("a stub's encoding loses what its digest covers")
		}
	}
	ps := Stub(patch)
	if len(ps.Item.Presence) != 1 || ps.Item.Presence[0] != add.Dot || len(ps.Item.Fields["b"]) != 1 || ps.Item.Fields["a"] != nil {
		t.Fatalf("stub of the patch holds %+v, want the add's presence and b only", ps.Item)
	}
	// One signature, at the patch, proves both stubs.
	stubs := []*Delta{Stub(add), Stub(patch)}
	out, err := CheckProofs(stubs, [][]byte{nil, nil})
	if err != nil || !out[0].Proven || !out[1].Proven {
		t.Fatalf("CheckProofs of the stubs: %+v, %v", out, err)
	}
	// A stub whose context or carried entries were altered does not.
	bad := Stub(patch)
	bad.Context = []Dot{{r, 2}}
	bad.Item = Item{}
	if _, err := CheckProofs([]*Delta{Stub(add), bad}, [][]byte{nil, nil}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("an altered stub: err = %v, want ErrInvalid", err)
	}
	// Complete: from the state after the patch, the patch is whole again;
	// the add is not (its entry of a was overwritten).
	st.Apply(patch)
	if got, ok := Complete(Stub(patch), st.Items[k]); !ok || got.IsStub() || !bytes.Equal(mustEncode(t, got), mustEncode(t, patch)) {
		t.Fatalf("Complete(patch stub) = %+v, %v", got, ok)
	}
	if _, ok := Complete(Stub(add), st.Items[k]); ok {
		t.Fatal("Complete gave back an add whose entry of a was overwritten")
	}
}

func mustEncode(tb testing.TB, d *Delta) []byte {
	tb.Helper()
	b, err := EncodeDelta(d)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// A stub is refused if it holds its own entries, or is not of the split
// format; proofs of every tag survive the binary and JSON forms.
func TestStub_Malformed(t *testing.T) {
	r, key := keyedReplica(t)
	add, err := AddDelta(Key{"snapshots", "s"}, nil, doc("a", "1"), Dot{r, 1}, Timestamp(1<<16))
	if err != nil {
		t.Fatal(err)
	}
	splitChain(t, key, add)
	withOwn := *add
	withOwn.Proof.Elided = Stub(add).Proof.Elided
	if err := withOwn.Validate(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a stub holding its own entries: %v, want ErrInvalid", err)
	}
	old := *Stub(add)
	old.Proof.Split = false
	if err := old.Validate(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a stub of the old format: %v, want ErrInvalid", err)
	}
	for _, d := range []*Delta{add, Stub(add)} {
		p, err := DecodeProof(AppendProof(nil, d.Proof))
		if err != nil || p.Split != d.Proof.Split || p.Elided != d.Proof.Elided || !bytes.Equal(p.Sig, d.Proof.Sig) {
			t.Fatalf("proof %+v decodes as %+v, %v", d.Proof, p, err)
		}
		j, err := d.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var back Delta
		if err := back.UnmarshalJSON(j); err != nil {
			t.Fatalf("JSON %s: %v", j, err)
		}
		if back.Proof.Split != d.Proof.Split || back.Proof.Elided != d.Proof.Elided || back.IsStub() != d.IsStub() {
			t.Fatalf("JSON proof %+v came back as %+v", d.Proof, back.Proof)
		}
	}
}

// Joining stubs, each together with a delta that names its dot, gives the
// state of the whole deltas, in any order: random adds, patches, replaces
// and removes on two replicas; every delta that some later delta names is
// replaced by its stub.
func TestStub_JoinWithNamerEqualsWhole(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		replicas := []ReplicaID{"ra", "rb"}
		states := []*State{NewState(), NewState()}
		k := Key{"snapshots", "s"}
		var all []*Delta
		counters := []uint64{0, 0}
		for i := range rapid.IntRange(1, 12).Draw(rt, "ops") {
			w := rapid.IntRange(0, 1).Draw(rt, "writer")
			if rapid.Bool().Draw(rt, "sync") { // the writer first learns the other's deltas
				for _, d := range all {
					states[w].Apply(d)
				}
			}
			counters[w]++
			dot, ts := Dot{replicas[w], counters[w]}, Timestamp(uint64(i+1)<<16)
			cur := states[w].Items[k]
			v := doc("a", rapid.SampledFrom([]string{"1", "2"}).Draw(rt, "a"), "b", "3")
			var d *Delta
			var err error
			switch rapid.IntRange(0, 3).Draw(rt, "op") {
			case 0:
				d, err = AddDelta(k, cur, v, dot, ts)
			case 1:
				d, err = PatchDelta(k, cur, doc("a", "4"), dot, ts)
			case 2:
				d, err = ReplaceDelta(k, cur, v, dot, ts)
			default:
				d, err = RemoveDelta(k, cur, dot, ts)
			}
			if err != nil { // nothing to patch, replace or remove
				counters[w]--
				continue
			}
			d.Proof = Proof{Prev: Hash{1}, Split: true}
			states[w].Apply(d)
			all = append(all, d)
		}
		whole := NewState()
		for _, d := range all {
			whole.Apply(d)
		}
		named := map[Dot]bool{}
		for _, d := range all {
			for _, c := range d.Context {
				if c != d.Dot {
					named[c] = true
				}
			}
		}
		var mixed []*Delta
		for _, d := range all {
			if named[d.Dot] && rapid.Bool().Draw(rt, "stub") {
				d = Stub(d)
			}
			mixed = append(mixed, d)
		}
		got := NewState()
		for _, i := range rapid.Permutation(indexes(len(mixed))).Draw(rt, "order") {
			got.Apply(mixed[i])
		}
		if !got.Equal(whole) {
			rt.Fatalf("stubs with their namers:\n%+v\nwhole deltas:\n%+v", got.Items[k], whole.Items[k])
		}
	})
}

func indexes(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}
