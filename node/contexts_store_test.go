package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	ds "github.com/ipfs/go-datastore"
)

// recordingStore wraps a store and records the keys each committed batch
// wrote or deleted.
type recordingStore struct {
	ds.Batching
	mu      sync.Mutex
	batches [][]string
}

func (s *recordingStore) Batch(ctx context.Context) (ds.Batch, error) {
	b, err := s.Batching.Batch(ctx)
	if err != nil {
		return nil, err
	}
	return &recordingBatch{Batch: b, s: s}, nil
}

// take returns the batches committed since the last call.
func (s *recordingStore) take() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.batches
	s.batches = nil
	return b
}

type recordingBatch struct {
	ds.Batch
	s    *recordingStore
	keys []string
}

func (b *recordingBatch) Put(ctx context.Context, k ds.Key, v []byte) error {
	b.keys = append(b.keys, k.String())
	return b.Batch.Put(ctx, k, v)
}

func (b *recordingBatch) Delete(ctx context.Context, k ds.Key) error {
	b.keys = append(b.keys, k.String())
	return b.Batch.Delete(ctx, k)
}

func (b *recordingBatch) Commit(ctx context.Context) error {
	err := b.Batch.Commit(ctx)
	if err == nil {
		b.s.mu.Lock()
		b.s.batches = append(b.s.batches, b.keys)
		b.s.mu.Unlock()
	}
	return err
}

// contextRecords returns the context records among keys, sorted.
func contextRecords(keys []string) []string {
	var out []string
	for _, k := range keys {
		if strings.HasPrefix(k, contextsPrefix+"/") || k == keyLegacySeen.String() || k == keyLegacyApplied.String() {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// applyReplicas applies one add from each of k new replicas.
func applyReplicas(tb testing.TB, n *Node, k int) {
	tb.Helper()
	var batch []*crdt.Delta
	for i := range k {
		batch = append(batch, forgedAdd(tb, key("snapshots", fmt.Sprintf("other-%d", i)), crdt.Dot{Replica: crdt.ReplicaID(fmt.Sprintf("other-%d", i)), Counter: 1}))
		if len(batch) == 500 || i == k-1 {
			if res := mustApply(tb, n, batch...); res.New != len(batch) {
				tb.Fatalf("apply: %+v", res)
			}
			batch = batch[:0]
		}
	}
}

// A commit writes the context entries of the replicas it changed and no
// others, however many replicas the contexts name.
func TestContexts_CommitWritesOnlyChangedEntries(t *testing.T) {
	ctx := context.Background()
	inner, err := OpenLevelDB(t.TempDir(), false)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingStore{Batching: inner}
	n, err := Open(ctx, rec, testConfig(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	applyReplicas(t, n, 300)
	rec.take()

	mustAdd(t, n, "mine", `{"v":1}`)
	own := n.ReplicaID()
	want := []string{entryKey(appliedPrefix, own), entryKey(seenPrefix, own)}
	for _, b := range rec.take() {
		if got := contextRecords(b); !slices.Equal(got, want) {
			t.Fatalf("a local add wrote context records %v, want %v", got, want)
		}
	}

	// A remote remove of another replica's write changes the entries of
	// its own replica only: the one it supersedes is applied and seen.
	d := forgedRemove(key("snapshots", "other-7"), crdt.Dot{Replica: "late", Counter: 1}, crdt.Dot{Replica: "other-7", Counter: 1})
	mustApply(t, n, d)
	want = []string{entryKey(appliedPrefix, "late"), entryKey(seenPrefix, "late")}
	for _, b := range rec.take() {
		if got := contextRecords(b); !slices.Equal(got, want) {
			t.Fatalf("a remote delta wrote context records %v, want %v", got, want)
		}
	}
}

// toLegacyLayout rewrites the contexts of the store in dir as releases
// before per-replica entries kept them: whole, under /m/seen and
// /m/applied. It also leaves a stray entry of a replica the legacy
// contexts do not name, which the migration must drop.
func toLegacyLayout(tb testing.TB, dir string) {
	tb.Helper()
	ctx := context.Background()
	store, err := OpenLevelDB(dir, true)
	if err != nil {
		tb.Fatal(err)
	}
	defer store.Close()
	old, err := contextKeys(ctx, store)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := store.Batch(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	for _, c := range []struct {
		prefix string
		key    ds.Key
	}{{seenPrefix, keyLegacySeen}, {appliedPrefix, keyLegacyApplied}} {
		whole, err := readContext(ctx, store, c.prefix)
		if err != nil {
			tb.Fatal(err)
		}
		enc, err := crdt.EncodeContext(whole)
		if err != nil {
			tb.Fatal(err)
		}
		if err := b.Put(ctx, c.key, enc); err != nil {
			tb.Fatal(err)
		}
	}
	for _, k := range old {
		if err := b.Delete(ctx, k); err != nil {
			tb.Fatal(err)
		}
	}
	stray := crdt.NewContext()
	stray.Add(crdt.Dot{Replica: "stray", Counter: 9})
	if err := b.Put(ctx, ds.RawKey(entryKey(appliedPrefix, "stray")), stray.AppendEntry(nil, "stray")); err != nil {
		tb.Fatal(err)
	}
	if err := b.Commit(ctx); err != nil {
		tb.Fatal(err)
	}
}

// A store in the layout of releases before per-replica entries opens with
// the same contexts, migrated once; it keeps working and reopens.
func TestContexts_LegacyLayoutIsMigrated(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	n := openDir(t, dir, testConfig(nil))
	applyReplicas(t, n, 50)
	mustAdd(t, n, "mine", `{"v":1}`)
	mustApply(t, n, forgedRemove(key("snapshots", "other-3"), crdt.Dot{Replica: "remover", Counter: 1},
		crdt.Dot{Replica: "other-3", Counter: 1}))
	seen, applied := n.Contexts()
	before := dump(t, n, "snapshots")
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	toLegacyLayout(t, dir)

	n = openDir(t, dir, testConfig(nil))
	s2, a2 := n.Contexts()
	if !s2.Equal(seen) || !a2.Equal(applied) {
		t.Fatalf("contexts after migration differ:\nseen %v %v, want %v %v\napplied %v, want %v",
			s2.Version(), s2.Cloud(), seen.Version(), seen.Cloud(), a2.Version(), applied.Version())
	}
	if got := dump(t, n, "snapshots"); got != before {
		t.Fatalf("items after migration: %s, want %s", got, before)
	}
	for _, k := range []ds.Key{keyLegacySeen, keyLegacyApplied, ds.RawKey(entryKey(appliedPrefix, "stray"))} {
		if ok, err := n.store.Has(ctx, k); err != nil || ok {
			t.Fatalf("%s still stored after migration (%v)", k, err)
		}
	}
	mustAdd(t, n, "after", `{"v":2}`)
	seen, applied = n.Contexts()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = openDir(t, dir, testConfig(nil))
	defer n.Close()
	if s3, a3 := n.Contexts(); !s3.Equal(seen) || !a3.Equal(applied) {
		t.Fatal("contexts changed across a reopen after the migration")
	}
}

// Two nodes that hold the same deltas have equal digests; when one holds
// more, the buckets that differ are the ones of the replicas it holds
// more of, and the other rebuilds its context from its entries there.
// The digest survives a reopen.
func TestContexts_DigestFindsTheDifference(t *testing.T) {
	dir := t.TempDir()
	a, b := openDir(t, dir, testConfig(nil)), openMem(t, testConfig(nil))
	applyReplicas(t, a, 200)
	applyReplicas(t, b, 200)
	ra, _ := a.AppliedDigest(false)
	if rb, _ := b.AppliedDigest(false); ra != rb {
		t.Fatal("nodes holding the same deltas have different roots")
	}
	more := []*crdt.Delta{
		forgedAdd(t, key("snapshots", "new"), crdt.Dot{Replica: "newcomer", Counter: 1}),
		forgedAdd(t, key("snapshots", "second"), crdt.Dot{Replica: "other-5", Counter: 2}),
	}
	mustApply(t, b, more...)
	_, bucketsA := a.AppliedDigest(true)
	rb, bucketsB := b.AppliedDigest(true)
	if ra == rb {
		t.Fatal("the roots did not change")
	}
	var diff []int
	for i := range bucketsA {
		if bucketsA[i] != bucketsB[i] {
			diff = append(diff, i)
		}
	}
	want := []int{crdt.BucketOf("newcomer"), crdt.BucketOf("other-5")}
	slices.Sort(want)
	if want = slices.Compact(want); !slices.Equal(diff, want) {
		t.Fatalf("differing buckets %v, want %v", diff, want)
	}
	entries := map[crdt.ReplicaID][]byte{}
	for _, i := range diff {
		for r, e := range b.AppliedEntries(i) {
			entries[r] = e
		}
	}
	got, err := a.PeerApplied(diff, entries)
	if err != nil {
		t.Fatal(err)
	}
	if _, appliedB := b.Contexts(); !got.Equal(appliedB) {
		t.Fatal("a's view of b's context, rebuilt from b's entries of the differing buckets, is not b's context")
	}
	if _, err := a.PeerApplied([]int{crdt.DigestBuckets}, nil); !errors.Is(err, crdt.ErrInvalid) {
		t.Fatalf("a bucket out of range: %v, want ErrInvalid", err)
	}

	mustApply(t, a, more...)
	if ra, _ = a.AppliedDigest(false); ra != rb {
		t.Fatal("the roots differ after a took b's deltas")
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a = openDir(t, dir, testConfig(nil))
	defer a.Close()
	if again, _ := a.AppliedDigest(false); again != ra {
		t.Fatal("the root changed across a reopen")
	}
}
