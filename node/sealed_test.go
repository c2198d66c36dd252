package node

import (
	"context"
	"errors"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// addOfA returns the delta of adding snapshots/a {"size":1} on a fresh
// node.
func addOfA(t *testing.T) *crdt.Delta {
	t.Helper()
	ctx := context.Background()
	src := openMem(t, testConfig(nil))
	if _, err := src.Add(ctx, key("snapshots", "a"), mustDoc(t, `{"size":1}`)); err != nil {
		t.Fatal(err)
	}
	p, err := src.GetDeltas(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	return p.Deltas[0]
}

// TestNode_ApplySealedRejectsEmpty: a nil or zero Sealed is refused before
// anything is applied.
func TestNode_ApplySealedRejectsEmpty(t *testing.T) {
	ctx := context.Background()
	dst := openMem(t, testConfig(nil))
	good, err := crdt.Seal(addOfA(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []*crdt.Sealed{nil, {}} {
		res, err := dst.ApplySealed(ctx, []*crdt.Sealed{good, bad})
		if !errors.Is(err, crdt.ErrInvalid) || res != (ApplyResult{}) {
			t.Errorf("ApplySealed with %v: %+v, %v", bad, res, err)
		}
	}
	if got := dump(t, dst, "snapshots"); got != dump(t, openMem(t, testConfig(nil)), "snapshots") {
		t.Errorf("a refused call applied something: %s", got)
	}
}

// TestNode_ApplyDeltasKeepsItsCopy: a caller that changes a delta after
// ApplyDeltas changes neither what was joined nor what was logged.
func TestNode_ApplyDeltasKeepsItsCopy(t *testing.T) {
	ctx := context.Background()
	dst := openMem(t, testConfig(nil))
	d := addOfA(t)
	want, err := crdt.EncodeDelta(d)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := dst.ApplyDeltas(ctx, []*crdt.Delta{d}); err != nil || res.New != 1 {
		t.Fatalf("ApplyDeltas: %+v, %v", res, err)
	}
	d.ID = "b"
	d.Item.Fields["size"][0].Value[0] = '2'
	it, err := dst.Get(ctx, key("snapshots", "a"))
	if err != nil || string(it.Metadata["size"]) != "1" {
		t.Fatalf("joined item changed with the caller's delta: %+v, %v", it, err)
	}
	sent := 0
	if _, err := dst.DeltasFor(ctx, crdt.NewContext(), func(_ *crdt.Delta, enc []byte) error {
		sent++
		if string(enc) != string(want) {
			t.Errorf("logged %x, want %x", enc, want)
		}
		return nil
	}); err != nil || sent != 1 {
		t.Fatalf("DeltasFor: %d deltas, %v", sent, err)
	}
}
