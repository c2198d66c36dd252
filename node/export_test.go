package node

import (
	"bytes"
	"context"
	"testing"
)

// Writes made between BeginExport and the end of Stream are left out of
// the stream (the receiver would refuse entries its sender's contexts do
// not account for) and reach the receiver by their deltas.
func TestExport_WritesDuringStreamAreLeftToTheirDeltas(t *testing.T) {
	ctx := context.Background()
	a, b := openMem(t, testConfig(nil)), openMem(t, testConfig(nil))
	mustAdd(t, a, "x", `{"v":1}`)
	mustAdd(t, a, "gone", `{"v":1}`)
	e, err := a.BeginExport(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A new field of an item the export names: x goes out without it.
	if _, err := a.Patch(ctx, key("snapshots", "x"), mustDoc(t, `{"w":2}`)); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, a, "y", `{"v":2}`) // an item the export does not know
	if err := a.Remove(ctx, key("snapshots", "gone")); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := e.Stream(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	res, err := b.ImportState(ctx, &buf)
	if err != nil {
		t.Fatalf("a state streamed during writes: %v", err)
	}
	if res.Items != 1 {
		t.Fatalf("the stream holds %d items, want 1 (x as the export knew it, without its new field)", res.Items)
	}
	antiEntropy(t, a, b)
	if got, want := dump(t, b, "snapshots"), dump(t, a, "snapshots"); got != want {
		t.Fatalf("after the deltas written during the export:\n%s\nwant\n%s", got, want)
	}
}
