package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

const repairItems = 200

// newestFile returns the path of the file in dir matching pattern with the
// highest number in its name (LevelDB numbers its files).
func newestFile(tb testing.TB, dir, pattern string) string {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no %s in %s (%v)", pattern, dir, err)
	}
	slices.Sort(files) // zero-padded numbers sort as text
	return files[len(files)-1]
}

// flipBytes inverts 4 bytes of path at the given fraction of its length.
func flipBytes(tb testing.TB, path string, at float64) {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	off := int(float64(len(b)) * at)
	for i := off; i < off+4 && i < len(b); i++ {
		b[i] ^= 0xff
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// writeAndShare opens a node on dir, adds repairItems items one commit
// each, hands every delta to peer, and closes the node. It returns the
// node's replica ID.
func writeAndShare(tb testing.TB, dir string, peer *Node) crdt.ReplicaID {
	tb.Helper()
	n := openDir(tb, dir, testConfig(nil))
	for i := range repairItems {
		mustAdd(tb, n, fmt.Sprintf("item-%03d", i), fmt.Sprintf(`{"n":%d}`, i))
	}
	exchange(tb, n, peer)
	id := n.ReplicaID()
	if err := n.Close(); err != nil {
		tb.Fatal(err)
	}
	return id
}

// repairDir runs what `crdt-catalog repair` runs on dir.
func repairDir(tb testing.TB, dir string) RepairReport {
	tb.Helper()
	store, err := RepairLevelDB(dir, true)
	if err != nil {
		tb.Fatal(err)
	}
	rep, err := Repair(context.Background(), store, nil, testConfig(nil).Logger)
	if cerr := store.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		tb.Fatal(err)
	}
	return rep
}

// Row 11: 4 flipped bytes in the journal or in a table refuse the open,
// naming the file; after a repair the node claims nothing it lost, has a
// new replica, and a peer gives everything back, by deltas or by a full
// state.
func TestRepair_DamagedStoreRefusedThenRefetched(t *testing.T) {
	for _, tc := range []struct {
		name    string
		damage  func(tb testing.TB, dir string) string // returns the damaged file
		byState bool                                   // the peer answers with a full state
	}{
		{"journal/deltas", func(tb testing.TB, dir string) string {
			f := newestFile(tb, dir, "*.log")
			flipBytes(tb, f, 0.3)
			return f
		}, false},
		{"journal/state", func(tb testing.TB, dir string) string {
			f := newestFile(tb, dir, "*.log")
			flipBytes(tb, f, 0.5)
			return f
		}, true},
		{"table/deltas", func(tb testing.TB, dir string) string {
			// An open replays the journal into a table.
			store, err := OpenLevelDB(dir, true)
			if err != nil {
				tb.Fatal(err)
			}
			_ = store.Close()
			f := newestFile(tb, dir, "*.ldb")
			flipBytes(tb, f, 0.4)
			return f
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			peer := openMem(t, testConfig(nil))
			old := writeAndShare(t, dir, peer)
			want := dump(t, peer, "snapshots")

			file := tc.damage(t, dir)
			_, err := OpenLevelDB(dir, true)
			if !errors.Is(err, ErrStoreDamaged) || !strings.Contains(err.Error(), filepath.Base(file)) {
				t.Fatalf("open of a store with %s damaged: %v; want ErrStoreDamaged naming the file", filepath.Base(file), err)
			}

			rep := repairDir(t, dir)
			t.Logf("repair: %+v", rep)
			// The meta record may be lost with the damage (a dropped table
			// can hold every record): then OldReplica is unknown.
			if (rep.OldReplica != old && rep.OldReplica != "") || rep.Replica == old || rep.Replica == "" {
				t.Fatalf("repair replica %s -> %s; want a new one instead of %s", rep.OldReplica, rep.Replica, old)
			}
			n := openDir(t, dir, testConfig(nil))
			defer n.Close()
			if n.ReplicaID() != rep.Replica {
				t.Fatalf("reopened as %s, want %s", n.ReplicaID(), rep.Replica)
			}
			if _, applied := n.Contexts(); applied.Len() != 0 {
				t.Fatalf("applied context after repair holds %d dots; want none", applied.Len())
			}
			held := n.Stats().Items["snapshots"]
			t.Logf("%d of %d items survived the damage", held, repairItems)

			if tc.byState {
				if _, err := n.ImportState(ctx, strings.NewReader(string(exportOf(t, peer)))); err != nil {
					t.Fatal(err)
				}
			} else if full := antiEntropy(t, peer, n); full {
				t.Fatal("the peer needed a full state; its log holds every delta")
			}
			if got := dump(t, n, "snapshots"); got != want {
				t.Fatalf("after the peer's answer the repaired node holds\n%s\nwant\n%s", got, want)
			}
			if _, applied := n.Contexts(); applied.Max(old) != repairItems {
				t.Fatalf("applied context names %s up to %d, want %d", old, applied.Max(old), repairItems)
			}
			// The new replica writes from counter 1, and the peer takes it.
			mustAdd(t, n, "after-repair", `{"n":-1}`)
			if res := exchangeCount(t, n, peer); res.New != 1 || res.Refused != 0 {
				t.Fatalf("peer took the repaired node's new write as %+v", res)
			}
			if got, want := dump(t, n, "snapshots"), dump(t, peer, "snapshots"); got != want {
				t.Fatalf("diverged after a new write:\n%s\n%s", got, want)
			}
			// Nothing goes back: reopening keeps all of it.
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
			n = openDir(t, dir, testConfig(nil))
			if got := n.Stats().Items["snapshots"]; got != repairItems+1 {
				t.Fatalf("%d items after reopening, want %d", got, repairItems+1)
			}
		})
	}
}

// exchangeCount hands from's pending deltas to to and returns what to did.
func exchangeCount(tb testing.TB, from, to *Node) ApplyResult {
	tb.Helper()
	p, err := from.GetDeltas(context.Background(), 1000)
	if err != nil {
		tb.Fatal(err)
	}
	res := mustApply(tb, to, p.Deltas...)
	if err := from.ClearDeltas(context.Background(), p.Cursor); err != nil {
		tb.Fatal(err)
	}
	return res
}

// A journal whose last record was cut by a crash is not damage: the open
// drops that record (it was never acknowledged) and keeps the rest.
func TestOpenLevelDB_TornJournalTailOpens(t *testing.T) {
	dir := t.TempDir()
	peer := openMem(t, testConfig(nil))
	writeAndShare(t, dir, peer)
	appendTornRecord(t, newestFile(t, dir, "*.log"))
	n := openDir(t, dir, testConfig(nil))
	defer n.Close()
	if got := n.Stats().Items["snapshots"]; got != repairItems {
		t.Fatalf("%d items after a torn tail, want %d", got, repairItems)
	}
}

// appendTornRecord appends to path what a process killed while writing a
// record leaves: a chunk header announcing 100 bytes, and 20 of them.
func appendTornRecord(tb testing.TB, path string) {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	torn := append([]byte{1, 2, 3, 4, 100, 0, 1}, bytes.Repeat([]byte{7}, 20)...)
	if _, err := f.Write(torn); err != nil {
		tb.Fatal(err)
	}
}

// A journal whose end is zeros (extended by a machine crash before its
// data reached the disk, with -sync=false) opens.
func TestOpenLevelDB_ZeroJournalTailOpens(t *testing.T) {
	dir := t.TempDir()
	peer := openMem(t, testConfig(nil))
	writeAndShare(t, dir, peer)
	f, err := os.OpenFile(newestFile(t, dir, "*.log"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 5000)); err != nil {
		t.Fatal(err)
	}
	_ = f.Close()
	n := openDir(t, dir, testConfig(nil))
	defer n.Close()
	if got := n.Stats().Items["snapshots"]; got != repairItems {
		t.Fatalf("%d items after a zero tail, want %d", got, repairItems)
	}
}

// A manifest whose last record was cut by a crash (during a compaction's
// commit) is not damage either; one whose bytes were flipped is.
func TestOpenLevelDB_TornManifestTailOpens(t *testing.T) {
	dir := t.TempDir()
	peer := openMem(t, testConfig(nil))
	writeAndShare(t, dir, peer)
	appendTornRecord(t, newestFile(t, dir, "MANIFEST-*"))
	n := openDir(t, dir, testConfig(nil))
	if got := n.Stats().Items["snapshots"]; got != repairItems {
		t.Fatalf("%d items after a torn manifest, want %d", got, repairItems)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	f := newestFile(t, dir, "MANIFEST-*")
	flipBytes(t, f, 0.5)
	if _, err := OpenLevelDB(dir, true); !errors.Is(err, ErrStoreDamaged) || !strings.Contains(err.Error(), filepath.Base(f)) {
		t.Fatalf("open with a flipped manifest: %v; want ErrStoreDamaged naming %s", err, filepath.Base(f))
	}
}

// A repair cut short leaves a marker that refuses the open until the
// repair is run again.
func TestRepair_UnfinishedRefusesOpen(t *testing.T) {
	dir := t.TempDir()
	peer := openMem(t, testConfig(nil))
	writeAndShare(t, dir, peer)
	store, err := OpenLevelDB(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put(context.Background(), keyRepair, []byte{1}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), store, testConfig(nil)); !errors.Is(err, ErrRepairUnfinished) {
		t.Fatalf("open with the repair marker: %v, want ErrRepairUnfinished", err)
	}
	_ = store.Close()
	repairDir(t, dir)
	n := openDir(t, dir, testConfig(nil))
	if got := n.Stats().Items["snapshots"]; got != repairItems {
		t.Fatalf("%d items after repairing an undamaged store, want %d", got, repairItems)
	}
	_ = n.Close()
}
