package crdt

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"testing"

	"pgregory.net/rapid"
)

// chainOf returns the Chain of ds, deltas of one keyed replica in counter
// order from counter from, whose chain hash before from is base, signed
// at its end with key.
func chainOf(key ed25519.PrivateKey, base Hash, ds []*Delta) *Chain {
	c := &Chain{Replica: ds[0].Dot.Replica, From: ds[0].Dot.Counter, Base: base}
	h := base
	for _, d := range ds {
		s := StepOf(d)
		c.Steps = append(c.Steps, s)
		h = ChainNextSplit(h, s.Head, s.Own)
	}
	c.Sig = SignHead(key, c.Replica, c.End(), h)
	return c
}

// twoHistories returns two histories of replica r: adds 1..n, the same up
// to counter same and different from there on.
func twoHistories(tb testing.TB, r ReplicaID, n, same int) (a, b []*Delta) {
	tb.Helper()
	for i := 1; i <= n; i++ {
		for side, out := range []*[]*Delta{&a, &b} {
			val := `"common"`
			if i > same {
				val = fmt.Sprintf(`"side%d"`, side)
			}
			d, err := AddDelta(Key{"snapshots", fmt.Sprintf("s%d", i)}, nil, doc("v", val), Dot{r, uint64(i)}, Timestamp(uint64(i)<<16))
			if err != nil {
				tb.Fatal(err)
			}
			*out = append(*out, d)
		}
	}
	return a, b
}

// Two signed histories that share a prefix prove a fork at the first
// counter where they differ, from any overlapping runs of theirs; the
// proof survives its encoding and convicts no one when tampered with.
func TestFork_PinsTheFirstDifference(t *testing.T) {
	r, key := keyedReplica(t)
	a, b := twoHistories(t, r, 10, 4)
	start := ChainStart(r)
	ca := chainOf(key, start, a)
	cb := chainOf(key, start, b)
	for _, c := range []*Chain{ca, cb} {
		if err := c.Verify(); err != nil {
			t.Fatal(err)
		}
	}
	// b from counter 3 on: its base is the hash after counter 2, which a
	// holds too.
	cb3 := chainOf(key, ca.Hashes()[1], b[2:7])
	for _, pair := range [][2]*Chain{{ca, cb}, {cb, ca}, {ca, cb3}, {cb3, ca}} {
		f, err := ForkOf(pair[0], pair[1])
		if err != nil {
			t.Fatal(err)
		}
		if f.Counter() != 5 || f.Replica() != r {
			t.Fatalf("fork at %d of %s, want 5 of %s", f.Counter(), f.Replica(), r)
		}
		if err := f.Verify(); err != nil {
			t.Fatal(err)
		}
		back, err := DecodeFork(EncodeFork(f))
		if err != nil {
			t.Fatal(err)
		}
		if back.Counter() != 5 || len(back.A.Steps) != len(f.A.Steps) {
			t.Fatalf("decoded fork differs: %+v", back)
		}
	}
	// One history against itself, or a run of it, proves nothing.
	if _, err := ForkOf(ca, chainOf(key, ca.Hashes()[2], a[3:8])); !errors.Is(err, ErrNoFork) {
		t.Fatalf("a chain against a run of itself: %v", err)
	}
	// Runs that differ wherever they overlap cannot pin where the
	// histories parted.
	cb6 := chainOf(key, cb.Hashes()[5], b[6:])
	ca6 := chainOf(key, ca.Hashes()[5], a[6:])
	if _, err := ForkOf(ca6, cb6); !errors.Is(err, ErrNoFork) {
		t.Fatalf("runs that never agree: %v", err)
	}
	// Tampering: a signature of another key, a step changed after signing,
	// two chains that do not start at one place.
	f, _ := ForkOf(ca, cb)
	_, other := keyedReplica(t)
	bad := *f
	bad.B.Sig = SignHead(other, r, bad.B.End(), bad.B.Hashes()[len(bad.B.Steps)-1])
	if err := bad.Verify(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a signature of another key: %v", err)
	}
	bad = *f
	bad.A.Steps = append([]ChainStep(nil), f.A.Steps...)
	bad.A.Steps[1].Own[0] ^= 1
	if err := bad.Verify(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a changed step: %v", err)
	}
	bad = *f
	bad.B = *chainOf(key, ca.Hashes()[5], b[6:])
	if err := bad.Verify(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("chains from two places: %v", err)
	}
	// A chain from counter 1 must start at the chain's start, and no other
	// may.
	if err := chainOf(key, Hash{1}, a[:3]).Verify(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a first chain from another base: %v", err)
	}
}

// Two histories joined: the entries the replica wrote differently under
// one dot are dropped on both sides, whatever the order of the joins, and
// every other entry is kept.
func TestJoinItem_DropsEquivocatedEntries(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		r := ReplicaID("eq")
		var states []*Item
		ctx := NewContext()
		for i := range 3 {
			ctx.Add(Dot{r, 1})
			ts := Timestamp(1 << 16)
			val := rapid.SampledFrom([]string{`"x"`, `"y"`}).Draw(t, fmt.Sprintf("val%d", i))
			states = append(states, &Item{
				Presence: []Dot{{r, 1}},
				Fields:   map[string][]Entry{"v": {{Dot: Dot{r, 1}, TS: ts, Value: []byte(val)}}},
			})
		}
		j := func(a, b *Item) *Item { return JoinItem(a, ctx, b, ctx) }
		left := j(j(states[0], states[1]), states[2])
		right := j(states[0], j(states[1], states[2]))
		swapped := j(states[2], j(states[1], states[0]))
		if !left.Equal(right) || !left.Equal(swapped) {
			t.Fatalf("join order matters: %+v / %+v / %+v", left, right, swapped)
		}
		same := string(states[0].Fields["v"][0].Value) == string(states[1].Fields["v"][0].Value) &&
			string(states[1].Fields["v"][0].Value) == string(states[2].Fields["v"][0].Value)
		if _, kept := left.Field("v"); kept != same {
			t.Fatalf("field kept %v, all three equal %v", kept, same)
		}
		if !left.Visible() {
			t.Fatal("the presence dot, written alike by every history, was dropped")
		}
	})
}

func FuzzDecodeFork(f *testing.F) {
	r, key := keyedReplica(f)
	a, b := twoHistories(f, r, 4, 1)
	start := ChainStart(r)
	fk, err := ForkOf(chainOf(key, start, a), chainOf(key, start, b))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(EncodeFork(fk))
	f.Add(EncodeChain(&fk.A))
	f.Add([]byte{forkVersion, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		if fk, err := DecodeFork(b); err == nil {
			if err := fk.Verify(); err != nil {
				t.Fatalf("decoded a fork that does not verify: %v", err)
			}
			if _, err := DecodeFork(EncodeFork(fk)); err != nil {
				t.Fatalf("re-encoded fork: %v", err)
			}
		}
		if c, err := DecodeChain(b); err == nil {
			if _, err := DecodeChain(EncodeChain(c)); err != nil {
				t.Fatalf("re-encoded chain: %v", err)
			}
		}
	})
}
