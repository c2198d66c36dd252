package node

import (
	"context"
	"fmt"
	"testing"
)

// TestCount: Count counts the present items a query matches, across more
// than one page, through an index when a term is indexed and by a scan
// otherwise, with the same result.
func TestCount(t *testing.T) {
	ctx := context.Background()
	n := openMem(t, indexedConfig())
	ops := make([]Op, 0, MaxBatchOps)
	for i := range 2500 {
		ops = append(ops, Op{Kind: OpAdd, Key: key("snapshots", fmt.Sprintf("s%05d", i)),
			Doc: mustDoc(t, fmt.Sprintf(`{"size":%d,"cluster":"c%d","other":%d}`, i, i%5, i%2))})
		if len(ops) == MaxBatchOps {
			if _, err := n.Batch(ctx, ops); err != nil {
				t.Fatal(err)
			}
			ops = ops[:0]
		}
	}
	if _, err := n.Batch(ctx, ops); err != nil {
		t.Fatal(err)
	}
	if err := n.Remove(ctx, key("snapshots", "s00000")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		q       string
		want    int
		scanned bool
	}{
		{"", 2499, true},
		{"cluster=c0", 499, false},
		{"cluster=c1 other=1", 250, false},
		{"size>=1000", 1500, false},
		{"other=0", 1249, true},
		{"cluster=none", 0, false},
	} {
		got, scanned, err := n.Count(ctx, "snapshots", c.q)
		if err != nil || got != c.want || scanned != c.scanned {
			t.Errorf("Count(%q) = %d, scanned %v, %v; want %d, scanned %v", c.q, got, scanned, err, c.want, c.scanned)
		}
	}
	if _, _, err := n.Count(ctx, "snapshots", "size>"); err == nil {
		t.Error("Count of a query that does not parse succeeded")
	}
}
