package node

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// FuzzItemFrame: the reflection-free item frame decoder accepts only what
// the generic decoder decodes to the same frame, and the reflection-free
// encoder writes exactly what it accepts.
func FuzzItemFrame(f *testing.F) {
	for _, fr := range []*stateFrame{
		{Kind: frameItem, Collection: "snapshots", ID: "a", Item: []byte{0x84, 0x01}},
		{Kind: frameItem, Collection: "images", ID: string(bytes.Repeat([]byte("i"), 300)), Item: bytes.Repeat([]byte{7}, 70000)},
		{Kind: frameEnd, Count: 3},
	} {
		b, err := cbor.Marshal(fr)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, ok := decodeItemFrame(b)
		if !ok {
			return
		}
		var generic stateFrame
		if err := cbor.Unmarshal(b, &generic); err != nil {
			t.Fatalf("accepted %x, which the generic decoder refuses: %v", b, err)
		}
		if !reflect.DeepEqual(*fr, generic) {
			t.Fatalf("decoded %+v, the generic decoder %+v", *fr, generic)
		}
		if enc := appendItemFrame(nil, fr); !bytes.Equal(enc, b) {
			t.Fatalf("re-encoded as %x, not %x", enc, b)
		}
		if enc, err := cbor.Marshal(fr); err != nil || !bytes.Equal(enc, b) {
			t.Fatalf("cbor.Marshal writes %x (%v), not %x", enc, err, b)
		}
	})
}

// FuzzPendingPiece: a pending piece file of any content (damaged on disk,
// say) makes Open's resume fail or join it; it never panics, and the node
// stays readable and writable.
func FuzzPendingPiece(f *testing.F) {
	ctx := context.Background()
	src := openMem(f, testConfig(nil))
	for i := range 4 {
		mustAdd(f, src, fmt.Sprint("s", i), `{"a":1}`)
	}
	fs := splitFrames(f, exportOf(f, src))
	hdr, items, trailer := fs[0], fs[1:len(fs)-1], fs[len(fs)-1]
	first := encodeFrame(f, &stateFrame{Kind: framePiece})
	f.Add(concat(hdr, first, concat(items...), trailer))
	f.Add(concat(hdr, first, items[0], items[1], encodeFrame(f, &stateFrame{Kind: framePieceEnd, Count: 2})))
	f.Add(concat(hdr, encodeFrame(f, &stateFrame{Kind: framePiece, Count: 2, From: "/i/snapshots/s1"}), items[2], items[3], trailer))
	f.Add(concat(hdr, first, items[1], items[0], trailer))
	f.Add([]byte{})
	dir := f.TempDir()
	cfg := testConfig(nil)
	cfg.StateDir = dir
	n := openMem(f, cfg)
	mustAdd(f, n, "own", `{"own":true}`)
	path := filepath.Join(dir, importPrefix+"fuzz"+importPending)
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, _ = n.resumeOne(ctx, path)
		if _, err := n.Query(ctx, "snapshots", "", 10, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Add(ctx, key("images", "after"), mustDoc(t, `{}`)); err != nil {
			t.Fatal(err)
		}
	})
}
