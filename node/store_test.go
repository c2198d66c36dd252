package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	leveldb "github.com/ipfs/go-ds-leveldb"
)

// TestOpenLevelDB_OptionsKeepFormat: OpenLevelDB's options (write buffer,
// Bloom filter) do not change the files: a store written with LevelDB's
// defaults opens with them, and the other way round, with every item.
// Neither store syncs: the test is about the files, not durability.
func TestOpenLevelDB_OptionsKeepFormat(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	openDefault := func() *Node {
		store, err := leveldb.NewDatastore(dir, &leveldb.Options{NoSync: true})
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
		if tables, err := filepath.Glob(filepath.Join(dir, "*.ldb")); round > 0 && (err != nil || len(tables) == 0) {
			t.Fatalf("round %d: no table after reopening (%v): nothing is read across the options", round, err)
		}
		for i := range added {
			if _, err := n.Get(ctx, key("snapshots", fmt.Sprint("s", i))); err != nil {
				t.Fatalf("round %d: item %d: %v", round, i, err)
			}
		}
		// An absent key is where a Bloom filter answers alone.
		if _, err := n.Get(ctx, key("snapshots", "absent")); !errors.Is(err, ErrNotFound) {
			t.Fatalf("round %d: absent item: %v, want ErrNotFound", round, err)
		}
		// The journal becomes a table when the store reopens, however
		// small, so the next round reads this round's items from a table
		// written under the other options.
		for range 250 {
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
