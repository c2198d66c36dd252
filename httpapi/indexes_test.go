package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
)

// The index routes add, show and drop indexes, and refuse bad input with
// a clear JSON error, leaving the indexes as they were.
func TestAPI_Indexes(t *testing.T) {
	n := newNode(t, func(c *node.Config) { c.Indexes = map[string][]string{"snapshots": {"cluster"}} })
	for i := range 20 {
		doc := crdt.Document{"cluster": []byte(fmt.Sprintf(`"c%d"`, i%2)), "size": []byte(fmt.Sprint(i))}
		if _, err := n.Add(context.Background(), crdt.Key{Collection: "snapshots", ID: fmt.Sprintf("s%02d", i)}, doc); err != nil {
			t.Fatal(err)
		}
	}
	h := newServer(t, n, func(c *Config) { c.Token = "secret" })
	auth := "Authorization: Bearer secret"
	req := func(method, path string) request { return request{method: method, path: path, header: []string{auth}} }
	runCases(t, h, []apiCase{
		{"list", req("GET", "/catalog/indexes"), 200, `"field":"cluster","state":"ready","config":true,"api":false,"indexed":20,"total":20`, nil},
		{"add", req("PUT", "/catalog/indexes/snapshots/size"), 202, `"field":"size","state":"building"`, nil},
		{"add again", req("PUT", "/catalog/indexes/snapshots/size"), 200, `"field":"size"`, nil},
		{"add without token", request{method: "PUT", path: "/catalog/indexes/snapshots/other"}, 401, "token", nil},
		{"unknown collection", req("PUT", "/catalog/indexes/nope/size"), 404, "unknown collection", nil},
		{"id", req("PUT", "/catalog/indexes/snapshots/id"), 400, `index field \"id\"`, nil},
		{"bad field", req("PUT", "/catalog/indexes/snapshots/a%20b"), 400, "invalid character", nil},
		{"slash in field", req("PUT", "/catalog/indexes/snapshots/a%2Fb"), 400, "invalid character", nil},
		{"long field", req("PUT", "/catalog/indexes/snapshots/"+strings.Repeat("f", 5000)), 400, "index field", nil},
		{"extra segment", req("PUT", "/catalog/indexes/snapshots/a/b"), 404, "", nil},
		{"method", req("POST", "/catalog/indexes/snapshots/size"), 405, "", nil},
		{"drop configured", req("DELETE", "/catalog/indexes/snapshots/cluster"), 409, "-index flag", nil},
		{"drop none", req("DELETE", "/catalog/indexes/snapshots/nope"), 404, "no index", nil},
		{"get none", req("GET", "/catalog/indexes/snapshots/nope"), 404, "no index", nil},
		{"status", req("GET", "/status"), 200, `"indexes":[{"collection":"snapshots","field":"cluster"`, nil},
	})
	// Once built, the planner reads it; dropped, it stops at once.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(string(mustDo(t, h, 200, "GET", "/catalog/indexes/snapshots/size", "", "").body), `"ready"`) {
		if time.Now().After(deadline) {
			t.Fatal("index on size not built after 30 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if o := mustDo(t, h, 200, "GET", "/catalog/query?type=snapshots&q=size%3E%3D15", "", "").obj(t); o["scanned"] != false || o["read"] != 5.0 {
		t.Fatalf("query on the built index: %v", o)
	}
	mustDo(t, h, http.StatusAccepted, "DELETE", "/catalog/indexes/snapshots/size", "", "", auth)
	if o := mustDo(t, h, 200, "GET", "/catalog/query?type=snapshots&q=size%3E%3D15", "", "").obj(t); o["scanned"] != true {
		t.Fatalf("query after the drop: %v", o)
	}
	// Up to the limit per collection, then 409.
	for i := 2; i <= node.MaxIndexesPerCollection; i++ {
		mustDo(t, h, http.StatusAccepted, "PUT", fmt.Sprintf("/catalog/indexes/snapshots/f%d", i), "", "", auth)
	}
	res := mustDo(t, h, http.StatusConflict, "PUT", "/catalog/indexes/snapshots/one-more", "", "", auth)
	if !strings.Contains(string(res.body), "too many indexes") {
		t.Fatalf("over the limit: %s", res.body)
	}
}
