package p2p

import (
	"bufio"
	"bytes"
	"errors"
	"reflect"
	"slices"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/libp2p/go-libp2p/core/crypto"
)

// fuzzDeltas returns a signed delta and an unsigned one, encoded, with
// their proofs.
func fuzzDeltas(f *testing.F) (encs, proofs [][]byte) {
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		f.Fatal(err)
	}
	d, enc := ownDelta(f, k, "s")
	encs, proofs = appendDelta(encs, proofs, d, enc)
	plain, err := crdt.AddDelta(key("p"), nil, crdt.Document{"n": []byte("1")}, crdt.Dot{Replica: "plain", Counter: 1}, crdt.MakeTimestamp(1, 0))
	if err != nil {
		f.Fatal(err)
	}
	enc, err = crdt.EncodeDelta(plain)
	if err != nil {
		f.Fatal(err)
	}
	return appendDelta(encs, proofs, plain, enc)
}

// FuzzDecodeGossip: the gossip decoder never panics, fails only with
// ErrBadMessage or crdt.ErrVersion, and what it accepts encodes to a
// message that decodes to the same deltas.
func FuzzDecodeGossip(f *testing.F) {
	encs, proofs := fuzzDeltas(f)
	for i := range encs {
		msg, err := encodeGossip("net", encs[:i+1], proofs[:i+1])
		if err != nil {
			f.Fatal(err)
		}
		f.Add(msg)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ds, err := decodeGossip(b, "net", 1<<20)
		if err != nil {
			if !errors.Is(err, ErrBadMessage) && !errors.Is(err, crdt.ErrVersion) {
				t.Fatalf("error %v is neither ErrBadMessage nor ErrVersion", err)
			}
			return
		}
		var encs, proofs [][]byte
		for _, s := range ds {
			enc, err := crdt.EncodeDelta(s.Delta())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(enc, s.Bytes()) {
				t.Fatalf("delta %s sealed with\n %x\nEncodeDelta writes\n %x", s.Dot(), s.Bytes(), enc)
			}
			encs, proofs = appendDelta(encs, proofs, s.Delta(), enc)
		}
		msg, err := encodeGossip("net", encs, proofs)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeGossip(msg, "net", 1<<20)
		if err != nil || !reflect.DeepEqual(again, ds) {
			t.Fatalf("re-encoded message decodes to %v, %v; want %v", again, err, ds)
		}
	})
}

// FuzzReadSyncFrame: the sync-frame reader never panics, and the deltas
// of a frame it reads decode, or fail, as a peer's answer would.
func FuzzReadSyncFrame(f *testing.F) {
	encs, proofs := fuzzDeltas(f)
	for _, fr := range []*syncFrame{
		{Kind: frameRequest, Version: wireVersion, Network: "net", Context: []byte{0x80}},
		{Kind: frameDeltas, Deltas: encs, Proofs: proofs},
		{Kind: frameDone},
	} {
		var buf bytes.Buffer
		if _, err := writeFrame(&buf, fr); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, _, err := readFrame(bufio.NewReader(bytes.NewReader(b)), maxSyncFrame)
		if err != nil {
			return
		}
		if _, err := decodeDeltas(fr.Deltas, fr.Proofs); err != nil && !errors.Is(err, ErrBadMessage) && !errors.Is(err, crdt.ErrVersion) {
			t.Fatalf("error %v is neither ErrBadMessage nor ErrVersion", err)
		}
	})
}

// FuzzDigestFrames: the sync/2 decoders (hashes, groups, context entries)
// never panic, refuse with ErrBadMessage, and what decodeEntries accepts
// patches a context or is refused by it with crdt.ErrInvalid or
// crdt.ErrVersion, leaving it unchanged.
func FuzzDigestFrames(f *testing.F) {
	c := crdt.NewContext()
	for _, d := range []crdt.Dot{{Replica: "a", Counter: 3}, {Replica: "b", Counter: 1}, {Replica: "b", Counter: 4}} {
		c.Add(d)
	}
	good := &syncFrame{Kind: frameEntries}
	putEntries(good, []int{crdt.BucketOf("a"), crdt.BucketOf("b")}, func(b int) map[crdt.ReplicaID][]byte {
		out := map[crdt.ReplicaID][]byte{}
		for _, r := range []crdt.ReplicaID{"a", "b"} {
			if crdt.BucketOf(r) == b {
				out[r] = c.AppendEntry(nil, r)
			}
		}
		return out
	})
	for _, fr := range []*syncFrame{
		good,
		{Kind: frameBuckets, Digests: make([]byte, 8*crdt.DigestGroups)},
		{Kind: frameGroups, Buckets: []uint64{0, 7, 63}},
		{Kind: frameDigest, Version: wireVersion, Network: "net", Root: make([]byte, crdt.HashSize)},
	} {
		var buf bytes.Buffer
		if _, err := writeFrame(&buf, fr); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, _, err := readFrame(bufio.NewReader(bytes.NewReader(b)), maxDigestFrame)
		if err != nil {
			return
		}
		if hs, err := decodeBucketHashes(fr.Digests, crdt.DigestGroups); err != nil && !errors.Is(err, ErrBadMessage) {
			t.Fatalf("decodeBucketHashes: %v is not ErrBadMessage", err)
		} else if err == nil && len(hs) != crdt.DigestGroups {
			t.Fatalf("%d group hashes", len(hs))
		}
		if gs, err := decodeGroups(fr); err != nil && !errors.Is(err, ErrBadMessage) {
			t.Fatalf("decodeGroups: %v is not ErrBadMessage", err)
		} else if err == nil && !slices.IsSorted(gs) {
			t.Fatalf("groups %v not ascending", gs)
		}
		buckets, entries, err := decodeEntries(fr)
		if err != nil {
			if !errors.Is(err, ErrBadMessage) {
				t.Fatalf("decodeEntries: %v is not ErrBadMessage", err)
			}
			return
		}
		p := c.Clone()
		var drop []crdt.ReplicaID
		for _, r := range c.Replicas() {
			if slices.Contains(buckets, crdt.BucketOf(r)) {
				drop = append(drop, r)
			}
		}
		if err := p.Patch(buckets, drop, entries); err != nil {
			if !errors.Is(err, crdt.ErrInvalid) && !errors.Is(err, crdt.ErrVersion) {
				t.Fatalf("Patch: %v", err)
			}
			if !p.Equal(c) {
				t.Fatal("a refused patch changed the context")
			}
			return
		}
		for r, e := range entries {
			if got := p.AppendEntry(nil, r); !bytes.Equal(got, e) {
				t.Fatalf("patched entry of %s: %x, sent %x", r, got, e)
			}
		}
	})
}
