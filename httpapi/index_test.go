package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
)

// A query's response says whether it scanned and how many items it read.
func TestAPI_QueryReportsIndexUse(t *testing.T) {
	n := newNode(t, func(c *node.Config) { c.Indexes = map[string][]string{"snapshots": {"cluster"}} })
	for i := range 10 {
		doc := crdt.Document{"cluster": []byte(fmt.Sprintf(`"c%d"`, i%2)), "size": []byte(fmt.Sprint(i))}
		if _, err := n.Add(context.Background(), crdt.Key{Collection: "snapshots", ID: fmt.Sprintf("s%d", i)}, doc); err != nil {
			t.Fatal(err)
		}
	}
	h := newServer(t, n, nil)
	for q, want := range map[string][2]any{"cluster%3Dc1": {false, 5.0}, "size%3D3": {true, 10.0}} {
		res := mustDo(t, h, http.StatusOK, "GET", "/catalog/query?type=snapshots&q="+q, "", "")
		if o := res.obj(t); o["scanned"] != want[0] || o["read"] != want[1] {
			t.Errorf("q=%s: %s; want scanned %v read %v", q, res.body, want[0], want[1])
		}
	}
}
