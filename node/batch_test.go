package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// TestBatch_OneCommitInOrder: a batch's operations see each other in
// order, take consecutive dots, are committed in one group and reach a
// subscriber together; a signed peer joins them all under the one
// signature of the batch.
func TestBatch_OneCommitInOrder(t *testing.T) {
	ctx := context.Background()
	n := openMem(t, signedConfig(t))
	if _, err := n.Add(ctx, key("snapshots", "old"), mustDoc(t, `{"a":1}`)); err != nil {
		t.Fatal(err)
	}
	sub := n.Subscribe(64)
	defer sub.Close()
	before := n.Stats()
	ops := []Op{
		{Kind: OpAdd, Key: key("snapshots", "s1"), Doc: mustDoc(t, `{"size":1,"tag":"x"}`)},
		{Kind: OpPatch, Key: key("snapshots", "s1"), Doc: mustDoc(t, `{"size":2,"tag":null}`)},
		{Kind: OpCreate, Key: key("images", "i1"), Doc: mustDoc(t, `{}`)},
		{Kind: OpRemove, Key: key("snapshots", "old")},
		{Kind: OpAdd, Key: key("snapshots", "s2")},
		{Kind: OpReplace, Key: key("snapshots", "s2"), Doc: mustDoc(t, `{"b":true}`)},
	}
	items, err := n.Batch(ctx, ops)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(items[1].Metadata["size"]); got != "2" || items[1].Metadata["tag"] != nil {
		t.Fatalf("patch after add in one batch: %+v", items[1].Metadata)
	}
	if it := items[3]; it.ID != "old" || it.Metadata != nil || it.Dot.Counter != before.Counter+4 {
		t.Fatalf("a remove's item: %+v, want only its key and dot", it)
	}
	after := n.Stats()
	if after.Commits != before.Commits+1 {
		t.Fatalf("%d commits for one batch, want 1", after.Commits-before.Commits)
	}
	if after.Counter != before.Counter+uint64(len(ops)) {
		t.Fatalf("counter %d → %d for %d operations", before.Counter, after.Counter, len(ops))
	}
	var seqs []uint64
	for range ops {
		c := <-sub.C
		if c.Delta.Dot.Counter != before.Counter+uint64(len(seqs))+1 {
			t.Fatalf("change %d has dot %s", len(seqs), c.Delta.Dot)
		}
		seqs = append(seqs, c.Seq)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("batch logged at sequence numbers %v, want consecutive", seqs)
		}
	}
	for _, c := range []struct{ coll, id, want string }{
		{"snapshots", "s1", `{"size":2}`},
		{"snapshots", "s2", `{"b":true}`},
		{"images", "i1", `{}`},
	} {
		it, err := n.Get(ctx, key(c.coll, c.id))
		if err != nil {
			t.Fatal(err)
		}
		if got := docString(t, it.Metadata); got != c.want {
			t.Fatalf("%s/%s = %s, want %s", c.coll, c.id, got, c.want)
		}
	}
	if _, err := n.Get(ctx, key("snapshots", "old")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removed in the batch: %v", err)
	}

	peer := openMem(t, signedConfig(t))
	page, err := n.DeltasSince(ctx, 0, 100, true)
	if err != nil {
		t.Fatal(err)
	}
	res, err := peer.ApplyDeltas(ctx, page.Deltas)
	if err != nil || res.New != len(ops)+1 || res.Waiting+res.Refused != 0 {
		t.Fatalf("a signed peer joined %+v, %v; want all %d", res, err, len(ops)+1)
	}
	if got, want := dump(t, peer, "snapshots"), dump(t, n, "snapshots"); got != want {
		t.Fatalf("peer %s, writer %s", got, want)
	}
}

// TestBatch_AllOrNothing: a batch with a failing operation changes
// nothing, uses no dot and names the operation; the next write goes on
// as if the batch had not been tried.
func TestBatch_AllOrNothing(t *testing.T) {
	ctx := context.Background()
	n := openMem(t, signedConfig(t))
	if _, err := n.Add(ctx, key("snapshots", "keep"), mustDoc(t, `{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	want := dump(t, n, "snapshots")
	before := n.Stats()
	big := crdt.Document{"blob": []byte(`"` + strings.Repeat("a", crdt.MaxItemBytes) + `"`)}
	for _, c := range []struct {
		name  string
		ops   []Op
		index int
		want  error
	}{
		{"remove of an absent item", []Op{
			{Kind: OpAdd, Key: key("snapshots", "new")},
			{Kind: OpPatch, Key: key("snapshots", "keep"), Doc: mustDoc(t, `{"v":2}`)},
			{Kind: OpRemove, Key: key("snapshots", "absent")},
		}, 2, ErrNotFound},
		{"create twice", []Op{
			{Kind: OpCreate, Key: key("snapshots", "c")},
			{Kind: OpCreate, Key: key("snapshots", "c")},
		}, 1, ErrExists},
		{"create of a present item", []Op{
			{Kind: OpRemove, Key: key("snapshots", "keep")},
			{Kind: OpAdd, Key: key("snapshots", "x")},
			{Kind: OpCreate, Key: key("snapshots", "x")},
		}, 2, ErrExists},
		{"patch after remove", []Op{
			{Kind: OpRemove, Key: key("snapshots", "keep")},
			{Kind: OpPatch, Key: key("snapshots", "keep"), Doc: mustDoc(t, `{"v":3}`)},
		}, 1, ErrNotFound},
		{"unknown collection", []Op{
			{Kind: OpAdd, Key: key("snapshots", "y")},
			{Kind: OpAdd, Key: key("nope", "y")},
		}, 1, ErrUnknownCollection},
		{"bad id", []Op{{Kind: OpAdd, Key: key("snapshots", "")}}, 0, crdt.ErrInvalid},
		{"unknown kind", []Op{{Kind: 99, Key: key("snapshots", "y")}}, 0, crdt.ErrInvalid},
		{"bad document", []Op{
			{Kind: OpAdd, Key: key("snapshots", "y")},
			{Kind: OpAdd, Key: key("snapshots", "z"), Doc: crdt.Document{"f": []byte(`{`)}},
		}, 1, crdt.ErrInvalid},
		{"item over its limit", []Op{
			{Kind: OpAdd, Key: key("snapshots", "y")},
			{Kind: OpAdd, Key: key("snapshots", "z"), Doc: big},
		}, 1, crdt.ErrTooLarge},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := n.Batch(ctx, c.ops)
			var be *BatchError
			if !errors.As(err, &be) || be.Index != c.index || !errors.Is(err, c.want) {
				t.Fatalf("Batch: %v, want operation %d failing with %v", err, c.index, c.want)
			}
			if got := dump(t, n, "snapshots"); got != want {
				t.Fatalf("a failed batch changed the state: %s, was %s", got, want)
			}
			if s := n.Stats(); s.Counter != before.Counter || s.Commits != before.Commits {
				t.Fatalf("a failed batch used dots or commits: %+v → %+v", before, s)
			}
		})
	}
	if _, err := n.Batch(ctx, make([]Op, MaxBatchOps+1)); !errors.Is(err, crdt.ErrInvalid) {
		t.Fatalf("a batch over MaxBatchOps: %v", err)
	}
	if items, err := n.Batch(ctx, nil); err != nil || items != nil {
		t.Fatalf("an empty batch: %v, %v", items, err)
	}
	// The chain goes on from where it was: a peer joins the next write.
	if _, err := n.Add(ctx, key("snapshots", "next"), nil); err != nil {
		t.Fatal(err)
	}
	peer := openMem(t, signedConfig(t))
	page, err := n.DeltasSince(ctx, 0, 100, true)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := peer.ApplyDeltas(ctx, page.Deltas); err != nil || res.New != 2 {
		t.Fatalf("peer joined %+v, %v; want 2", res, err)
	}
}

// TestBatch_DurableAcrossRestart: a batch that returned is in the store,
// whole, after the node is closed and opened again.
func TestBatch_DurableAcrossRestart(t *testing.T) {
	ctx := context.Background()
	dir, cfg := t.TempDir(), signedConfig(t)
	n := openDir(t, dir, cfg)
	ops := make([]Op, 200)
	for i := range ops {
		ops[i] = Op{Kind: OpAdd, Key: key("images", fmt.Sprintf("i%03d", i)), Doc: mustDoc(t, fmt.Sprintf(`{"n":%d}`, i))}
	}
	if _, err := n.Batch(ctx, ops); err != nil {
		t.Fatal(err)
	}
	want := dump(t, n, "images")
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = openDir(t, dir, cfg)
	defer n.Close()
	if got := dump(t, n, "images"); got != want {
		t.Fatalf("after restart %s, want %s", got, want)
	}
	if s := n.Stats(); s.Counter != uint64(len(ops)) {
		t.Fatalf("counter %d after restart, want %d", s.Counter, len(ops))
	}
}

func TestOpKind_String(t *testing.T) {
	for k := OpAdd; k <= OpPatch; k++ {
		if got, ok := ParseOpKind(k.String()); !ok || got != k {
			t.Fatalf("ParseOpKind(%q) = %v, %v", k.String(), got, ok)
		}
	}
	if _, ok := ParseOpKind("set"); ok {
		t.Fatal("ParseOpKind accepted an unknown name")
	}
	if s := OpKind(0).String(); s != "OpKind(0)" {
		t.Fatalf("OpKind(0).String() = %q", s)
	}
}

func docString(tb testing.TB, d crdt.Document) string {
	tb.Helper()
	b, err := json.Marshal(d)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}
