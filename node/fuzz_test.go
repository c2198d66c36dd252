package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// FuzzImportState feeds arbitrary bytes to the full-state decoder, through
// a seekable reader and through one it must spool: it must join a valid
// state, or return an error of a known class and leave the node byte for
// byte as it was; never panic.
func FuzzImportState(f *testing.F) {
	ctx := context.Background()
	src := openMem(f, testConfig(nil))
	for i := range 3 {
		if _, err := src.Add(ctx, key("snapshots", fmt.Sprint("s", i)), mustDoc(f, `{"a":1,"b":"x"}`)); err != nil {
			f.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := src.ExportState(ctx, &buf); err != nil {
		f.Fatal(err)
	}
	good := buf.Bytes()
	fs := splitFrames(f, good)
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x01, 0xa0})
	f.Add(good[:len(good)-1])                                  // cut in the trailer
	f.Add(concat(concat(fs[:3]...), []byte{0x02, 0xff, 0xff})) // valid items, then garbage
	f.Add(concat(fs[0], fs[2], fs[1], fs[3], fs[4]))           // out of order
	cfg := testConfig(nil)
	cfg.TempDir = f.TempDir()
	dst := openMem(f, cfg)
	if _, err := dst.Add(ctx, key("images", "own"), mustDoc(f, `{"own":true}`)); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, r := range []io.Reader{bytes.NewReader(b), onlyReader{bytes.NewReader(b)}} {
			before := fingerprint(t, dst)
			_, err := dst.ImportState(ctx, r)
			if err == nil {
				// A stream that imports must leave the node readable.
				if _, err := dst.Query(ctx, "snapshots", "", 10, ""); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if !errors.Is(err, crdt.ErrInvalid) && !errors.Is(err, crdt.ErrTooLarge) &&
				!errors.Is(err, crdt.ErrVersion) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("rejected with an error of no known class: %v", err)
			}
			if after := fingerprint(t, dst); after != before {
				t.Fatalf("a rejected stream (%v) changed the node", err)
			}
		}
	})
}

// FuzzDecodeMeta: the bookkeeping record decoder never panics.
func FuzzDecodeMeta(f *testing.F) {
	f.Add(encodeMeta(&meta{Version: crdt.FormatVersion, Replica: "abc", First: 1}))
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err == nil && m.Visible == nil {
			t.Fatal("decoded meta without a count map")
		}
	})
}

// FuzzDecodeLogEntry: the delta-log entry decoder never panics, and what
// it accepts encodes back to the same entry.
func FuzzDecodeLogEntry(f *testing.F) {
	d, err := crdt.AddDelta(crdt.Key{Collection: "snapshots", ID: "s"}, nil, crdt.Document{"n": []byte("1")},
		crdt.Dot{Replica: "abc", Counter: 1}, crdt.MakeTimestamp(1, 0))
	if err != nil {
		f.Fatal(err)
	}
	enc, err := crdt.EncodeDelta(d)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(logEntry(d, enc, true))
	f.Add(logEntry(withProof(d, crdt.Proof{Prev: crdt.ChainStart("abc"), Sig: make([]byte, crdt.SigSize)}), enc, false))
	f.Add(logEntry(withProof(d, crdt.Proof{Prev: crdt.ChainStart("abc"), Split: true}), enc, true)) // a stub
	f.Add(append([]byte{entryLocalLegacy}, enc...))
	f.Fuzz(func(t *testing.T, b []byte) {
		local, d, enc, err := decodeLogEntry(b)
		if err != nil {
			return
		}
		if b[0] <= entryLocalLegacy {
			return // legacy entries are read, never written
		}
		if d.Proof.Split && !d.IsStub() && d.HasOwn() {
			return // logged as its stub, never whole
		}
		if got := logEntry(d, enc, local); !bytes.Equal(got, b) {
			t.Fatalf("entry %x decodes to one that encodes as %x", b, got)
		}
	})
}

// FuzzDecodeHead: the chain-head record decoder never panics, and what it
// accepts encodes back to the same record.
func FuzzDecodeHead(f *testing.F) {
	f.Add(encodeHead(head{Counter: 7, Hash: crdt.ChainStart("abc")}))
	f.Add(encodeHead(head{Counter: 7, Hash: crdt.ChainStart("abc"), Sig: make([]byte, crdt.SigSize)}))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHead(b)
		if err != nil {
			return
		}
		if got := encodeHead(h); !bytes.Equal(got, b) {
			t.Fatalf("head %x decodes to one that encodes as %x", b, got)
		}
	})
}
