package p2p

import (
	"bufio"
	"bytes"
	"errors"
	"reflect"
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
		fr, _, err := readFrame(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			return
		}
		if _, err := decodeDeltas(fr.Deltas, fr.Proofs); err != nil && !errors.Is(err, ErrBadMessage) && !errors.Is(err, crdt.ErrVersion) {
			t.Fatalf("error %v is neither ErrBadMessage nor ErrVersion", err)
		}
	})
}
