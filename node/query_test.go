package node

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node/query"
)

func TestNode_QueryFiltersAndPages(t *testing.T) {
	ctx := context.Background()
	n := openMem(t, testConfig(nil))
	for i := range 25 {
		doc := mustDoc(t, fmt.Sprintf(`{"size":%d,"cluster":"cluster-%c","created":"2023-01-%02dT00:00:00Z"}`, i*100, 'a'+i%3, i+1))
		if _, err := n.Add(ctx, key("snapshots", fmt.Sprintf("snap%02d", i)), doc); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Remove(ctx, key("snapshots", "snap03")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, q string
		want    int
	}{
		{"all", "", 24},
		{"number", "size>=2000", 5},
		{"string", "cluster=cluster-a", 8}, // 0,6,9,...,24 minus removed 3
		{"time", "created<2023-01-03T00:00:00Z", 2},
		{"id prefix", "id~snap1", 10},
		{"and", "cluster=cluster-b size<1000", 3},
		{"bare word", "snap07", 1},
		{"nothing", "size>99999", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []Item
			cursor := ""
			for pages := 0; ; pages++ {
				p, err := n.Query(ctx, "snapshots", tc.q, 4, cursor)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, p.Items...)
				if p.NextCursor == "" {
					break
				}
				if pages > 30 {
					t.Fatal("paging does not end")
				}
				cursor = p.NextCursor
			}
			if len(got) != tc.want {
				t.Fatalf("%q: %d items, want %d", tc.q, len(got), tc.want)
			}
			for i := 1; i < len(got); i++ {
				if got[i-1].ID >= got[i].ID {
					t.Fatalf("not sorted by id: %s before %s", got[i-1].ID, got[i].ID)
				}
			}
		})
	}
	var se *query.SyntaxError
	if _, err := n.Query(ctx, "snapshots", "size>", 10, ""); !errors.As(err, &se) {
		t.Fatalf("bad query: %v, want a *query.SyntaxError", err)
	}
	if _, err := n.Query(ctx, "volumes", "", 10, ""); !errors.Is(err, ErrUnknownCollection) {
		t.Fatalf("unknown collection: %v", err)
	}
	if _, err := n.Query(ctx, "snapshots", "", 0, ""); !errors.Is(err, crdt.ErrInvalid) {
		t.Fatalf("zero limit: %v", err)
	}
	if _, err := n.Query(ctx, "snapshots", "", 10, "bad/cursor"); !errors.Is(err, crdt.ErrInvalid) {
		t.Fatalf("bad cursor: %v", err)
	}
}
