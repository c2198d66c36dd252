package crdt

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"

	"pgregory.net/rapid"
)

// signedChain returns n add deltas of a new keyed replica, linked into its
// chain, with their encodings; the deltas at the counters in signAt carry
// the signature of the chain head there.
func signedChain(tb testing.TB, n int, signAt ...uint64) ([]*Delta, [][]byte, ed25519.PrivateKey) {
	tb.Helper()
	r, key := keyedReplica(tb)
	h := ChainStart(r)
	var ds []*Delta
	var encs [][]byte
	for c := uint64(1); c <= uint64(n); c++ {
		d, err := AddDelta(Key{"snapshots", "s"}, nil, doc("n", "1"), Dot{r, c}, Timestamp(c<<16))
		if err != nil {
			tb.Fatal(err)
		}
		enc, err := EncodeDelta(d)
		if err != nil {
			tb.Fatal(err)
		}
		d.Proof.Prev = h
		h = ChainNext(h, enc)
		for _, s := range signAt {
			if s == c {
				d.Proof.Sig = SignHead(key, r, c, h)
			}
		}
		ds, encs = append(ds, d), append(encs, enc)
	}
	return ds, encs, key
}

func TestKeyedReplicaID(t *testing.T) {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewKeyedReplicaID(pub, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Validate(); err != nil {
		t.Fatalf("keyed replica id %q is not a valid replica id: %v", r, err)
	}
	got, ok := r.PublicKey()
	if !ok || !got.Equal(pub) {
		t.Fatalf("PublicKey(%q) = %x, %v; want %x", r, got, ok, pub)
	}
	if p := r.Peer(); len(p) != 52 || p[:8] != "12D3KooW" {
		t.Fatalf("Peer() = %q, want a 52-character Ed25519 peer id", p)
	}
	for _, bad := range []ReplicaID{"a", "0123456789abcdef", r + "x", r[:len(r)-1], "1" + r, ReplicaID(r.Peer()) + ".ABCDEFGH", ReplicaID(r.Peer()) + ".abcdefg1"} {
		if _, ok := bad.PublicKey(); ok {
			t.Errorf("%q reads as keyed", bad)
		}
	}
}

func TestBase58RoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		b := rapid.SliceOfN(rapid.Byte(), 0, 45).Draw(t, "b")
		s := base58Encode(b)
		if len(b) == 0 {
			return
		}
		got, ok := base58Decode(s)
		if !ok || !bytes.Equal(got, b) {
			t.Fatalf("base58 %x -> %q -> %x, %v", b, s, got, ok)
		}
	})
}

func TestCheckProofs(t *testing.T) {
	ds, encs, _ := signedChain(t, 6, 3, 5)
	proven := func(ds []*Delta, encs [][]byte) []bool {
		t.Helper()
		out, err := CheckProofs(ds, encs)
		if err != nil {
			t.Fatal(err)
		}
		var p []bool
		for _, c := range out {
			p = append(p, c.Proven)
		}
		return p
	}
	want := func(got []bool, want ...bool) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("got %v, want %v", got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("proven %v, want %v", got, want)
			}
		}
	}
	// In order: everything up to the last signature (5) is proven, 6 is not.
	want(proven(ds, encs), true, true, true, true, true, false)
	// Any order, any subset that starts mid-chain: a run carries its own
	// Prev, so 4..5 is proven by 5's signature alone.
	want(proven([]*Delta{ds[4], ds[3]}, [][]byte{encs[4], encs[3]}), true, true)
	// A run cut before its signature proves nothing.
	want(proven(ds[3:4], encs[3:4]), false)
	// A changed delta breaks the chain: neither it nor the deltas before
	// it are covered by the signature any more; the signed delta after it
	// still is, by its own Prev.
	forged := *ds[1]
	forged.ID = "other"
	fenc, err := EncodeDelta(&forged)
	if err != nil {
		t.Fatal(err)
	}
	want(proven([]*Delta{ds[0], &forged, ds[2]}, [][]byte{encs[0], fenc, encs[2]}), false, false, true)
	// A bad signature is an error.
	bad := *ds[2]
	bad.Proof.Sig = bytes.Clone(bad.Proof.Sig)
	bad.Proof.Sig[0] ^= 1
	if _, err := CheckProofs([]*Delta{ds[0], ds[1], &bad}, encs[:3]); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad signature: err = %v, want ErrInvalid", err)
	}
	// A signature by another key over the same head is as bad.
	_, _, other := signedChain(t, 1)
	stolen := *ds[2]
	stolen.Proof.Sig = SignHead(other, ds[2].Dot.Replica, 3, ChainNext(ds[2].Proof.Prev, encs[2]))
	if _, err := CheckProofs([]*Delta{&stolen}, encs[2:3]); !errors.Is(err, ErrInvalid) {
		t.Fatalf("signature by another key: err = %v, want ErrInvalid", err)
	}
	// Deltas of a replica that names no key are never proven.
	plain, err := AddDelta(Key{"snapshots", "s"}, nil, doc("n", "1"), Dot{"a", 1}, Timestamp(1<<16))
	if err != nil {
		t.Fatal(err)
	}
	penc, _ := EncodeDelta(plain)
	plain.Proof = Proof{Prev: ChainStart("a"), Sig: make([]byte, SigSize)}
	want(proven([]*Delta{plain}, [][]byte{penc}), false)
}

func TestProofEncoding(t *testing.T) {
	ds, _, _ := signedChain(t, 2, 2)
	for _, p := range []Proof{{}, ds[0].Proof, ds[1].Proof} {
		b := AppendProof([]byte("x"), p)
		got, err := DecodeProof(b[1:])
		if err != nil || got.Prev != p.Prev || !bytes.Equal(got.Sig, p.Sig) {
			t.Fatalf("round trip of %+v: %+v, %v", p, got, err)
		}
	}
	for _, bad := range [][]byte{nil, {3}, {1, 2}, append([]byte{1}, make([]byte, 32)...), append(AppendProof(nil, ds[1].Proof), 0)} {
		if _, err := DecodeProof(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("DecodeProof(%x): err = %v, want ErrInvalid", bad, err)
		}
	}
}

// FuzzDecodeProof checks that DecodeProof never panics and that what it
// accepts encodes back to the same bytes.
func FuzzDecodeProof(f *testing.F) {
	f.Add([]byte{0})
	f.Add(append([]byte{1}, bytes.Repeat([]byte{7}, 32)...))
	f.Add(append([]byte{2}, bytes.Repeat([]byte{7}, 96)...))
	f.Add(append([]byte{3}, bytes.Repeat([]byte{7}, 32)...))
	f.Add(append([]byte{4}, bytes.Repeat([]byte{7}, 96)...))
	f.Add(append([]byte{5}, bytes.Repeat([]byte{7}, 64)...))
	f.Add(append([]byte{6}, bytes.Repeat([]byte{7}, 128)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodeProof(b)
		if err != nil {
			return
		}
		if got := AppendProof(nil, p); !bytes.Equal(got, b) {
			t.Fatalf("DecodeProof(%x) = %+v, which encodes as %x", b, p, got)
		}
	})
}

// A replica that signs many histories in one call gets at most
// maxChecksPerReplica signature checks; the rest stays unproven.
func TestCheckProofs_ChecksPerReplicaAreBounded(t *testing.T) {
	ds, encs, key := signedChain(t, 1, 1)
	r := ds[0].Dot.Replica
	for v := range 50 {
		d, err := AddDelta(Key{"snapshots", "s"}, nil, doc("v", fmt.Sprint(v)), Dot{r, 1}, Timestamp(1<<16))
		if err != nil {
			t.Fatal(err)
		}
		enc, _ := EncodeDelta(d)
		d.Proof.Prev = ChainStart(r)
		d.Proof.Sig = SignHead(key, r, 1, ChainNext(d.Proof.Prev, enc))
		ds, encs = append(ds, d), append(encs, enc)
	}
	out, err := CheckProofs(ds, encs)
	if err != nil {
		t.Fatal(err)
	}
	proven := 0
	for _, c := range out {
		if c.Proven {
			proven++
		}
	}
	if proven != maxChecksPerReplica {
		t.Fatalf("%d of 51 signed histories proven, want %d", proven, maxChecksPerReplica)
	}
}
