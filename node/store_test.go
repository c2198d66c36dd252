package node

import (
	"context"
	"fmt"
	"testing"

	leveldb "github.com/ipfs/go-ds-leveldb"
)

// TestOpenLevelDB_OptionsKeepFormat: OpenLevelDB's options (write buffer,
// Bloom filter) do not change the files: a store written with LevelDB's
// defaults opens with them, and the other way round, with every item.
func TestOpenLevelDB_OptionsKeepFormat(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	openDefault := func() *Node {
		store, err := leveldb.NewDatastore(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		n, err := Open(ctx, store, testConfig(nil))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	openTuned := func() *Node {
		store, err := OpenLevelDB(dir, false)
		if err != nil {
			t.Fatal(err)
		}
		n, err := Open(ctx, store, testConfig(nil))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	added := 0
	for round, open := range []func() *Node{openDefault, openTuned, openDefault, openTuned} {
		n := open()
		for i := range added {
			if _, err := n.Get(ctx, key("snapshots", fmt.Sprint("s", i))); err != nil {
				t.Fatalf("round %d: item %d: %v", round, i, err)
			}
		}
		for range 2000 { // tables are written at the latest when the store reopens
			if _, err := n.Add(ctx, key("snapshots", fmt.Sprint("s", added)), mustDoc(t, benchDocJSON(added))); err != nil {
				t.Fatal(err)
			}
			added++
		}
		if got := n.Stats().Items["snapshots"]; got != int64(added) {
			t.Fatalf("round %d: %d items, want %d", round, got, added)
		}
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
