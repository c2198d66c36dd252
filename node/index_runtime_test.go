package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node/query"
)

// indexFields are the fields the runtime-index tests index.
var indexFields = []string{"size", "cluster", "created", "flag"}

// randomStep applies one random add, patch, field removal or item removal
// to one of 300 ids of snapshots.
func randomStep(tb testing.TB, n *Node, r *rand.Rand) {
	k := key("snapshots", fmt.Sprintf("s%d", r.IntN(300)))
	var err error
	switch r.IntN(6) {
	case 0, 1:
		_, err = n.Add(context.Background(), k, mustDoc(tb, randomDoc(r)))
	case 2, 3:
		_, err = n.Patch(context.Background(), k, mustDoc(tb, randomDoc(r)))
	case 4:
		_, err = n.Patch(context.Background(), k, mustDoc(tb, `{"size":null,"created":null}`))
	default:
		err = n.Remove(context.Background(), k)
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		tb.Error(err)
	}
}

func indexState(n *Node, coll, field string) (IndexStatus, bool) {
	for _, st := range n.Indexes() {
		if st.Collection == coll && st.Field == field {
			return st, true
		}
	}
	return IndexStatus{}, false
}

// Indexes added while writers add, patch and remove items and a full
// state is imported hold exactly their items' entries once built, the
// planner reads none of them before, and every query then answers (and
// counts) as a scan does.
func TestIndex_BuildUnderConcurrentWrites(t *testing.T) {
	defer func(c int) { buildChunk = c }(buildChunk)
	buildChunk = 5 // many chunks, interleaved with the writes
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 1))
	n := openDir(t, t.TempDir(), testConfig(nil))
	for range 400 {
		randomStep(t, n, r)
	}
	other := openMem(t, testConfig(nil))
	for range 200 {
		randomStep(t, other, r)
	}
	var state bytes.Buffer
	if err := other.ExportState(context.Background(), &state); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(w)+10))
			for i := 0; ctx.Err() == nil && i < 100_000; i++ {
				randomStep(t, n, r)
			}
		}()
	}
	for _, f := range indexFields {
		st, created, err := n.AddIndex(context.Background(), "snapshots", f)
		if err != nil || !created || st.State != IndexBuilding {
			t.Fatalf("AddIndex %s: %+v, created %v, %v", f, st, created, err)
		}
	}
	if _, err := n.ImportState(context.Background(), &state); err != nil {
		t.Fatal(err)
	}
	// Until an index is ready, the planner does not read it.
	deadline := time.Now().Add(60 * time.Second)
	for checked := 0; ; checked++ {
		f := indexFields[r.IntN(len(indexFields))]
		v := indexQueryValues[r.IntN(len(indexQueryValues))]
		if strings.ContainsAny(v, " \"") {
			v = `"` + strings.ReplaceAll(v, `"`, `\"`) + `"`
		}
		q := f + []string{"=", ">="}[r.IntN(2)] + v
		p, err := n.Query(context.Background(), "snapshots", q, 10, "")
		if err != nil {
			t.Fatalf("%q: %v", q, err)
		}
		if st, _ := indexState(n, "snapshots", f); st.State != IndexReady && !p.Scanned {
			t.Fatalf("%q read the index on %s while it is %s", q, f, st.State)
		}
		ready := 0
		for _, st := range n.Indexes() {
			if st.State == IndexReady {
				ready++
			}
		}
		if ready == len(indexFields) {
			t.Logf("built 4 indexes under writes; %d queries checked while building", checked)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("indexes not built after 60 s: %+v", n.Indexes())
		}
	}
	cancel()
	wg.Wait()
	checkIndexes(t, n)
	indexed := 0
	for range 150 {
		if sameAsScan(t, n, randomQuery(r), 1+r.IntN(5)) {
			indexed++
		}
	}
	if indexed == 0 {
		t.Fatal("no query read an index")
	}
}

// A build cut by Close resumes at the next Open from its last durable
// chunk, with writes in between, and ends with exactly the items'
// entries; the index is still declared after the restart.
func TestIndex_BuildResumesAfterRestart(t *testing.T) {
	defer func(c int) { buildChunk, buildHook = c, nil }(buildChunk)
	buildChunk = 7
	dir := t.TempDir()
	n := openDir(t, dir, testConfig(nil))
	r := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		randomStep(t, n, r)
	}
	steps := make(chan struct{}, 100)
	buildHook = func(ctx context.Context) {
		steps <- struct{}{}
		if len(steps) > 3 {
			<-ctx.Done() // hold the build until Close
		}
	}
	if _, _, err := n.AddIndex(context.Background(), "snapshots", "cluster"); err != nil {
		t.Fatal(err)
	}
	for len(steps) <= 3 {
		time.Sleep(time.Millisecond)
	}
	for range 50 {
		randomStep(t, n, r)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	buildHook = nil
	n = openDir(t, dir, testConfig(nil))
	defer n.Close()
	st, ok := indexState(n, "snapshots", "cluster")
	if !ok || st.State != IndexBuilding || !st.API || st.Config || st.Indexed == 0 {
		t.Fatalf("after the restart: %+v, %v; want building from where it stopped", st, ok)
	}
	for range 50 {
		randomStep(t, n, r)
	}
	waitIndexes(t, n)
	checkIndexes(t, n)
	if !sameAsScan(t, n, "cluster=cluster-a", 3) {
		t.Fatal("the resumed index was not read")
	}
}

// Dropping an index stops the planner reading it at once, deletes its
// entries in the background (resumed after a restart), and lets it be
// added again; an index of Config.Indexes can be declared both ways.
func TestIndex_Drop(t *testing.T) {
	defer func(c int) { indexChunk = c }(indexChunk)
	indexChunk = 3
	ctx := context.Background()
	dir := t.TempDir()
	n := openDir(t, dir, testConfig(nil))
	for i := range 100 {
		mustAdd(t, n, fmt.Sprintf("s%03d", i), fmt.Sprintf(`{"size":%d,"cluster":"c%d"}`, i, i%10))
	}
	for _, f := range []string{"size", "cluster"} {
		if _, _, err := n.AddIndex(ctx, "snapshots", f); err != nil {
			t.Fatal(err)
		}
	}
	waitIndexes(t, n)
	if !sameAsScan(t, n, "cluster=c3", 4) {
		t.Fatal("the index was not read")
	}
	if err := n.DropIndex(ctx, "snapshots", "cluster"); err != nil {
		t.Fatal(err)
	}
	if p, err := n.Query(ctx, "snapshots", "cluster=c3", 5, ""); err != nil || !p.Scanned {
		t.Fatalf("right after the drop: scanned %v, %v", p.Scanned, err)
	}
	sameAsScan(t, n, "cluster=c3", 4)
	if _, _, err := n.AddIndex(ctx, "snapshots", "cluster"); err != nil && !errors.Is(err, ErrIndexBusy) {
		t.Fatalf("AddIndex while dropping: %v", err)
	}
	if err := n.DropIndex(ctx, "snapshots", "size"); err != nil {
		t.Fatal(err)
	}
	// Closed before the entries are gone, most likely: the next Open
	// finishes the drops.
	n.Close()
	n = openDir(t, dir, testConfig(nil))
	waitIndexes(t, n)
	if st := n.Indexes(); len(st) != 1 || st[0].Field != "cluster" {
		// cluster is there only if AddIndex above found its drop done.
		if len(st) != 0 {
			t.Fatalf("indexes after the drops: %+v", st)
		}
	}
	for _, st := range n.Indexes() {
		if err := n.DropIndex(ctx, st.Collection, st.Field); err != nil {
			t.Fatal(err)
		}
	}
	waitIndexes(t, n)
	for _, f := range []string{"size", "cluster"} {
		left := 0
		_ = scan(ctx, n.store, indexPrefix("snapshots", f), "", func(string, []byte) (bool, error) {
			left++
			return true, nil
		})
		m, _ := get(ctx, n.store, indexMarker("snapshots", f))
		d, _ := get(ctx, n.store, defKey("snapshots", f))
		if left != 0 || m != nil || d != nil {
			t.Fatalf("dropped index on %s: %d entries, marker %v, definition %v", f, left, m, d)
		}
	}
	// Added again, and also declared by the configuration: one index,
	// which the configuration keeps from being dropped.
	if _, created, err := n.AddIndex(ctx, "snapshots", "size"); err != nil || !created {
		t.Fatalf("AddIndex after the drop: created %v, %v", created, err)
	}
	n.Close()
	cfg := testConfig(nil)
	cfg.Indexes = map[string][]string{"snapshots": {"size"}}
	n = openDir(t, dir, cfg)
	defer n.Close()
	if st, _ := indexState(n, "snapshots", "size"); st.State != IndexReady || !st.Config || !st.API {
		t.Fatalf("index declared both ways: %+v", st)
	}
	if err := n.DropIndex(ctx, "snapshots", "size"); !errors.Is(err, ErrIndexDeclared) {
		t.Fatalf("DropIndex of a configured index: %v", err)
	}
	checkIndexes(t, n)
}

// A drop cut short, and then declared by the configuration again, is
// cleared and rebuilt at Open.
func TestIndex_CutDropRedeclared(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	n := openDir(t, dir, testConfig(nil))
	for i := range 50 {
		mustAdd(t, n, fmt.Sprintf("s%03d", i), fmt.Sprintf(`{"size":%d}`, i))
	}
	if _, _, err := n.AddIndex(ctx, "snapshots", "size"); err != nil {
		t.Fatal(err)
	}
	waitIndexes(t, n)
	n.Close()
	// What a DropIndex cut right after its durable step leaves, with
	// writes after it that the index no longer followed.
	n = openDir(t, dir, testConfig(nil))
	if err := n.store.Delete(ctx, defKey("snapshots", "size")); err != nil {
		t.Fatal(err)
	}
	if err := n.store.Put(ctx, indexMarker("snapshots", "size"), []byte{indexVersion, markDropping}); err != nil {
		t.Fatal(err)
	}
	if err := n.store.Put(ctx, indexEntryKey(t, "size", "zz", `5`), []byte("zz")); err != nil {
		t.Fatal(err)
	}
	n.Close()
	cfg := testConfig(nil)
	cfg.Indexes = map[string][]string{"snapshots": {"size"}}
	n = openDir(t, dir, cfg)
	defer n.Close()
	checkIndexes(t, n)
}

// AddIndex and DropIndex refuse bad input with the error callers branch
// on, and leave the indexes as they were.
func TestIndex_AddDropErrors(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(nil)
	cfg.Indexes = map[string][]string{"snapshots": {"cluster"}}
	n := openMem(t, cfg)
	for _, tc := range []struct {
		coll, field string
		want        error
	}{
		{"nope", "size", ErrUnknownCollection},
		{"snapshots", "", crdt.ErrInvalid},
		{"snapshots", "id", crdt.ErrInvalid},
		{"snapshots", "a b", crdt.ErrInvalid},
		{"snapshots", "a/b", crdt.ErrInvalid},
		{"snapshots", strings.Repeat("f", 10_000), crdt.ErrInvalid},
	} {
		if _, _, err := n.AddIndex(ctx, tc.coll, tc.field); !errors.Is(err, tc.want) {
			t.Errorf("AddIndex(%q, %.20q): %v, want %v", tc.coll, tc.field, err, tc.want)
		}
	}
	if st, created, err := n.AddIndex(ctx, "snapshots", "cluster"); err != nil || created || st.State != IndexReady {
		t.Errorf("AddIndex of a configured index: %+v, created %v, %v", st, created, err)
	}
	for i := 1; i < MaxIndexesPerCollection; i++ {
		if _, _, err := n.AddIndex(ctx, "snapshots", fmt.Sprintf("f%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := n.AddIndex(ctx, "snapshots", "one-more"); !errors.Is(err, ErrIndexLimit) {
		t.Errorf("AddIndex over the limit: %v", err)
	}
	if _, _, err := n.AddIndex(ctx, "images", "one-more"); err != nil {
		t.Errorf("the limit is per collection: %v", err)
	}
	if err := n.DropIndex(ctx, "snapshots", "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("DropIndex of no index: %v", err)
	}
	if err := n.DropIndex(ctx, "snapshots", "cluster"); !errors.Is(err, ErrIndexDeclared) {
		t.Errorf("DropIndex of a configured index: %v", err)
	}
	if got := len(n.Indexes()); got != MaxIndexesPerCollection+1 {
		t.Errorf("%d indexes, want %d", got, MaxIndexesPerCollection+1)
	}
}

// Count answers an equality from the index alone when the index keeps the
// value whole, and reads the items when the value is longer than the
// index keeps, so that values sharing the cut prefix are told apart.
func TestIndex_CountFromIndex(t *testing.T) {
	n := openMem(t, indexedConfig())
	long := strings.Repeat("x", query.MaxIndexedBytes+2)
	for i, c := range []string{long + "a", long + "b", long + "a", long[:query.MaxIndexedBytes], "c1", "c1", "c2"} {
		mustAdd(t, n, fmt.Sprintf("s%d", i), fmt.Sprintf(`{"cluster":%q}`, c))
	}
	if err := n.Remove(context.Background(), key("snapshots", "s5")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		q         string
		want      int
		fromIndex bool
	}{
		{"cluster=c1", 1, true},
		{"cluster=none", 0, true},
		{"cluster=" + long[:query.MaxIndexedBytes], 1, true},
		{"cluster=" + long + "a", 2, false},
		{"cluster=" + long + "b", 1, false},
		{"cluster=c1 size=1", 0, false},
		{"cluster>=c", 6, false},
	} {
		parsed, err := query.Parse(tc.q)
		if err != nil {
			t.Fatal(err)
		}
		c, ok, err := n.countIndexed(context.Background(), "snapshots", parsed)
		if err != nil || ok != tc.fromIndex || ok && c != tc.want {
			t.Errorf("countIndexed(%.20q) = %d, %v, %v; want %d, %v", tc.q, c, ok, err, tc.want, tc.fromIndex)
		}
		if got, scanned, err := n.Count(context.Background(), "snapshots", tc.q); err != nil || got != tc.want || scanned {
			t.Errorf("Count(%.20q) = %d, scanned %v, %v; want %d", tc.q, got, scanned, err, tc.want)
		}
	}
}

// A build and writers under store failures that drop staged writes: the
// build rewinds to its last durable chunk each time, and the index ends
// with exactly its items' entries. A drop racing a build's chunks leaves
// no entry, marker or definition.
func TestIndex_BuildAndDropUnderFailures(t *testing.T) {
	defer func(c, d int) { buildChunk, indexChunk = c, d }(buildChunk, indexChunk)
	buildChunk, indexChunk = 3, 3
	cfg := testConfig(nil)
	cfg.RetryInterval = time.Millisecond
	n, fst := openFaulty(t, t.TempDir(), cfg)
	defer n.Close()
	r := rand.New(rand.NewPCG(3, 4))
	for range 400 {
		randomStep(t, n, r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(5, uint64(w)))
			for i := 0; ctx.Err() == nil && i < 100_000; i++ {
				k := key("snapshots", fmt.Sprintf("s%d", r.IntN(300)))
				// Not ctx: a write whose caller stops waiting still
				// commits, after the checks below would have begun.
				var err error
				if r.IntN(4) == 0 {
					err = n.Remove(context.Background(), k)
				} else {
					_, err = n.Add(context.Background(), k, mustDoc(t, randomDoc(r)))
				}
				if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrFailed) {
					t.Error(err)
					return
				}
				if errors.Is(err, ErrFailed) {
					time.Sleep(time.Millisecond)
				}
			}
		}()
	}
	add := func(f string) {
		t.Helper()
		for {
			_, _, err := n.AddIndex(context.Background(), "snapshots", f)
			if err == nil {
				return
			}
			if !errors.Is(err, ErrFailed) && !errors.Is(err, ErrIndexBusy) {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond)
		}
	}
	add("cluster")
	add("size")
	// Ten spells of a full disk, each held until a commit has failed
	// under it (the writers keep committing), with the builds and the
	// drop in flight.
	for range 10 {
		failed := fst.commits.Load()
		fst.set(enospc)
		waitFor(t, "a commit to fail", func() bool { return fst.commits.Load() > failed })
		fst.set(nil)
	}
	waitFor(t, "the store takes writes", func() bool { return n.Writable() == nil })
	for {
		if err := n.DropIndex(context.Background(), "snapshots", "size"); err == nil {
			break
		} else if !errors.Is(err, ErrFailed) {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	waitIndexes(t, n)
	cancel()
	wg.Wait()
	if st := n.Indexes(); len(st) != 1 || st[0].Field != "cluster" {
		t.Fatalf("indexes: %+v", st)
	}
	checkIndexes(t, n)
	left := 0
	_ = scan(context.Background(), n.store, indexPrefix("snapshots", "size"), "", func(string, []byte) (bool, error) {
		left++
		return true, nil
	})
	m, _ := get(context.Background(), n.store, indexMarker("snapshots", "size"))
	d, _ := get(context.Background(), n.store, defKey("snapshots", "size"))
	if left != 0 || m != nil || d != nil {
		t.Fatalf("dropped index: %d entries, marker %v, definition %v", left, m, d)
	}
	if fst.commits.Load() == 0 {
		t.Fatal("no commit failed")
	}
}

// An index added at runtime survives a Repair, which drops every marker:
// the next Open clears and rebuilds it in the background.
func TestIndex_RuntimeRebuiltAfterRepair(t *testing.T) {
	dir := t.TempDir()
	n := openDir(t, dir, testConfig(nil))
	for i := range 40 {
		mustAdd(t, n, fmt.Sprintf("s%02d", i), fmt.Sprintf(`{"size":%d}`, i))
	}
	if _, _, err := n.AddIndex(context.Background(), "snapshots", "size"); err != nil {
		t.Fatal(err)
	}
	waitIndexes(t, n)
	// A stale entry the repair's damage might have left.
	if err := n.store.Put(context.Background(), indexEntryKey(t, "size", "zz", `5`), []byte("zz")); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	repairDir(t, dir)
	n = openDir(t, dir, testConfig(nil))
	defer n.Close()
	waitIndexes(t, n)
	checkIndexes(t, n)
	if st, _ := indexState(n, "snapshots", "size"); !st.API || st.State != IndexReady {
		t.Fatalf("after the repair: %+v", st)
	}
}

// FuzzIndexMarker: markerState and parseNamed take any bytes without
// panicking, and what they accept is what the encoders write.
func FuzzIndexMarker(f *testing.F) {
	f.Add([]byte{indexVersion}, "/m/index/csnapshots/fsize")
	f.Add(buildingMarker(7, "s01"), "/m/idef/csnapshots/fa.b")
	f.Add([]byte{indexVersion, markDropping}, "/m/index/c/f")
	f.Add([]byte{indexVersion, markBuilding, 0xff}, "/m/index/cx/fid/fy")
	f.Fuzz(func(t *testing.T, val []byte, key string) {
		complete, building, done, pos := markerState(val)
		if complete && building {
			t.Fatal("complete and building")
		}
		if building && !bytes.Equal(buildingMarker(done, pos), val) {
			t.Fatalf("building marker %q does not round-trip: done %d pos %q", val, done, pos)
		}
		for _, prefix := range []string{markersPrefix, defsPrefix} {
			if coll, field, ok := parseNamed(key, prefix); ok {
				if indexMarker(coll, field).String() != markersPrefix+strings.TrimPrefix(key, prefix) {
					t.Fatalf("%q parsed as %q, %q", key, coll, field)
				}
			}
		}
	})
}
