package httpapi

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// TestAPI_CausalTokens: every write answers its causal token in the
// Crdt-Causal-Token header and the body; a read on another node with the
// token waits until that node has applied the write and then sees it,
// and answers 504 naming what is missing when the wait times out. Bad
// tokens and timeouts are 400.
func TestAPI_CausalTokens(t *testing.T) {
	na, nb := newNode(t, nil), newNode(t, nil)
	a, b := newServer(t, na, nil), newServer(t, nb, nil)
	replica := string(na.ReplicaID())

	tokens := map[string]string{}
	for _, w := range []struct{ name, method, path, ct, body, counter string }{
		{"add", "POST", "/snapshots/add/s1", ctJSON, `{"v":1}`, "1"},
		{"replace", "PUT", "/snapshots/metadata/s1", ctJSON, `{"v":2}`, "2"},
		{"patch", "PATCH", "/snapshots/metadata/s1", ctPatch, `{"v":3}`, "3"},
		{"add2", "POST", "/snapshots/add/s2", ctJSON, `{}`, "4"},
		{"remove", "DELETE", "/snapshots/remove/s2", "", "", "5"},
		{"batch", "POST", "/snapshots/batch", ctJSON, `{"ops":[{"op":"add","id":"s3"},{"op":"patch","id":"s1","metadata":{"v":4}}]}`, "7"},
	} {
		res := do(t, a, w.method, w.path, w.ct, w.body)
		if res.code >= 300 {
			t.Fatalf("%s: %d %s", w.name, res.code, res.body)
		}
		h := res.header.Get("Crdt-Causal-Token")
		if want := replica + ":" + w.counter; h != want {
			t.Fatalf("%s: token %q, want %q", w.name, h, want)
		}
		if body, _ := res.obj(t)["causal_token"].(string); body != h {
			t.Fatalf("%s: body's token %q, header's %q", w.name, body, h)
		}
		tokens[w.name] = h
	}
	if res := mustDo(t, a, 200, "GET", "/snapshots/s1", "", ""); res.header.Get("Crdt-Causal-Token") != "" || strings.Contains(string(res.body), "causal_token") {
		t.Fatalf("a read answered a token: %s", res.body)
	}
	// The writer has applied its own writes.
	mustDo(t, a, 200, "GET", "/snapshots/s1?after="+url.QueryEscape(tokens["batch"]), "", "")

	// b has none of them: the wait times out.
	res := do(t, b, "GET", "/snapshots/s1?timeout=50ms", "", "", "Crdt-Causal-Token: "+tokens["add"])
	if res.code != 504 || !strings.Contains(string(res.body), replica+":1") {
		t.Fatalf("read before the write arrived: %d %s", res.code, res.body)
	}
	for _, c := range []struct{ query, header, substr string }{
		{"after=nonsense", "", "causal token"},
		{"", "Crdt-Causal-Token: r:0", "causal token"},
		{"after=" + url.QueryEscape(tokens["add"]) + "&timeout=forever", "", `timeout\" must be`},
		{"after=" + url.QueryEscape(tokens["add"]) + "&timeout=2m", "", `timeout\" must be`},
	} {
		var hs []string
		if c.header != "" {
			hs = append(hs, c.header)
		}
		if res := do(t, b, "GET", "/catalog/query?type=snapshots&"+c.query, "", "", hs...); res.code != 400 || !strings.Contains(string(res.body), c.substr) {
			t.Fatalf("%q %q: %d %s", c.query, c.header, res.code, res.body)
		}
	}

	// A read waiting on b returns the write once b has applied it.
	got := make(chan response, 1)
	go func() {
		got <- do(t, b, "GET", "/catalog/query?type=snapshots&timeout=30s&after="+url.QueryEscape(tokens["batch"]), "", "")
	}()
	ctx := context.Background()
	for {
		p, err := na.DeltasSince(ctx, 0, 100, true)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nb.ApplyDeltas(ctx, p.Deltas); err != nil {
			t.Fatal(err)
		}
		if !p.More {
			break
		}
	}
	select {
	case res := <-got:
		if res.code != 200 || !strings.Contains(string(res.body), `"id":"s3"`) || !strings.Contains(string(res.body), `"v":4`) {
			t.Fatalf("read after the writes arrived: %d %s", res.code, res.body)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the read did not return once b applied the writes")
	}
	tok, _ := crdt.ParseToken(tokens["batch"])
	if err := nb.WaitApplied(ctx, tok); err != nil {
		t.Fatal(err)
	}
}

// TestAPI_QueryCount: count=true answers the number of matches, and
// refuses the paging parameters it ignores.
func TestAPI_QueryCount(t *testing.T) {
	s := newServer(t, newNode(t, nil), nil)
	for i := range 3 {
		mustDo(t, s, 201, "POST", "/snapshots/add/c"+string(rune('0'+i)), ctJSON, `{"odd":`+[]string{"false", "true", "false"}[i]+`}`)
	}
	runCases(t, s, []apiCase{
		{name: "all", req: request{"GET", "/catalog/query?type=snapshots&count=true", "", "", nil}, want: 200, substr: `{"count":3,"scanned":true}`},
		{name: "some", req: request{"GET", "/catalog/query?type=snapshots&count=true&q=odd%3Dfalse", "", "", nil}, want: 200, substr: `{"count":2,`},
		{name: "with limit", req: request{"GET", "/catalog/query?type=snapshots&count=true&limit=5", "", "", nil}, want: 400, substr: "takes no"},
		{name: "bad", req: request{"GET", "/catalog/query?type=snapshots&count=maybe", "", "", nil}, want: 400},
	})
}
