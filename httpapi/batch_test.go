package httpapi

import (
	"fmt"
	"strings"
	"testing"
)

// TestAPI_Batch: POST /{c}/batch applies its operations in order as one
// write, answers each operation's item, and on any bad or failing
// operation answers the error of that operation and changes nothing.
// GET /{c}/batch still reads the item whose id is "batch".
func TestAPI_Batch(t *testing.T) {
	n := newNode(t, nil)
	s := newServer(t, n, nil)
	mustDo(t, s, 201, "POST", "/snapshots/add/old", ctJSON, `{"v":0}`)
	mustDo(t, s, 201, "POST", "/snapshots/add/batch", ctJSON, `{"id":"batch"}`)
	commits := func() uint64 { return n.Stats().Commits }
	before := commits()
	ok := `{"ops":[
		{"op":"add","id":"s1","metadata":{"size":1,"tag":"x"}},
		{"op":"patch","id":"s1","metadata":{"tag":null}},
		{"op":"create","id":"s2"},
		{"op":"replace","id":"s2","metadata":{"b":true}},
		{"op":"remove","id":"old"}]}`
	runCases(t, s, []apiCase{
		{name: "batch", req: request{"POST", "/snapshots/batch", ctJSON, ok, nil}, want: 200,
			substr: `{"results":[{"op":"add","id":"s1","item":{"id":"s1","collection":"snapshots","metadata":{"size":1,"tag":"x"}}},` +
				`{"op":"patch","id":"s1","item":{"id":"s1","collection":"snapshots","metadata":{"size":1}}},` +
				`{"op":"create","id":"s2","item":{"id":"s2","collection":"snapshots","metadata":{}}},` +
				`{"op":"replace","id":"s2","item":{"id":"s2","collection":"snapshots","metadata":{"b":true}}},` +
				`{"op":"remove","id":"old"}],"causal_token":"`},
		{name: "one commit", req: request{"GET", "/snapshots/s1", "", "", nil}, want: 200,
			check: func(t *testing.T, _ response) {
				if c := commits(); c != before+1 {
					t.Fatalf("%d commits for one batch", c-before)
				}
			}},
		{name: "removed", req: request{"GET", "/snapshots/old", "", "", nil}, want: 404},
		{name: "the item batch", req: request{"GET", "/snapshots/batch", "", "", nil}, want: 200,
			check: wantMetadata(map[string]any{"id": "batch"})},
	})
	state := dump(t, s)
	for _, c := range []struct {
		name, body string
		want       int
		substr     string
	}{
		{"not found", `{"ops":[{"op":"add","id":"n1"},{"op":"remove","id":"absent"}]}`, 404, `operation 1 (remove \"absent\")`},
		{"exists", `{"ops":[{"op":"create","id":"s1","metadata":{}}]}`, 412, `operation 0 (create \"s1\")`},
		{"unknown op", `{"ops":[{"op":"add","id":"n1"},{"op":"set","id":"s1"}]}`, 400, `operation 1: \"op\" must be`},
		{"bad id", `{"ops":[{"op":"add","id":"a/b"}]}`, 400, "operation 0"},
		{"bad metadata", `{"ops":[{"op":"add","id":"n1"},{"op":"add","id":"n2","metadata":[1]}]}`, 400, "operation 1"},
		{"replace without metadata", `{"ops":[{"op":"replace","id":"s1"}]}`, 400, `replace needs \"metadata\"`},
		{"remove with metadata", `{"ops":[{"op":"remove","id":"s1","metadata":{}}]}`, 400, "a remove takes no"},
		{"unknown field", `{"ops":[{"op":"add","id":"n1","meta":{}}]}`, 400, "unknown field"},
		{"no ops", `{}`, 400, `want {\"ops\"`},
		{"not an object", `[]`, 400, "JSON object"},
		{"too many", `{"ops":[` + strings.Repeat(`{"op":"add","id":"x"},`, 1000) + `{"op":"add","id":"x"}]}`, 400, "at most 1000"},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := do(t, s, "POST", "/snapshots/batch", ctJSON, c.body)
			if res.code != c.want || !strings.Contains(string(res.body), c.substr) {
				t.Fatalf("status %d, body %s; want %d containing %q", res.code, res.body, c.want, c.substr)
			}
			if got := dump(t, s); got != state {
				t.Fatalf("a refused batch changed the catalog: %s, was %s", got, state)
			}
		})
	}
	mustDo(t, s, 415, "POST", "/snapshots/batch", "text/plain", ok)
	mustDo(t, s, 404, "POST", "/volumes/batch", ctJSON, ok)
	small := newServer(t, newNode(t, nil), func(c *Config) { c.MaxBodyBytes = 64 })
	mustDo(t, small, 413, "POST", "/snapshots/batch", ctJSON, ok)
}

// dump returns every snapshot as the query API shows it.
func dump(t testing.TB, s *Server) string {
	t.Helper()
	res := mustDo(t, s, 200, "GET", "/catalog/query?type=snapshots&limit=1000", "", "")
	return fmt.Sprint(res.obj(t)["items"])
}
