package node

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// FuzzImportState feeds arbitrary bytes to the full-state decoder: it must
// return an error or join a valid state, never panic.
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
	f.Add(buf.Bytes())
	f.Add([]byte{})
	f.Add([]byte{0x01, 0xa0})
	dst := openMem(f, testConfig(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := dst.ImportState(ctx, bytes.NewReader(b)); err == nil {
			// A stream that imports must leave the node readable.
			if _, err := dst.Query(ctx, "snapshots", "", 10, ""); err != nil {
				t.Fatal(err)
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
