package httpapi

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
)

const (
	ctJSON  = "application/json"
	ctPatch = "application/merge-patch+json"
	// seedBody is the seed's curl example.
	seedBody = `{"size": 1024, "created": "2023-01-01T00:00:00Z", "cluster": "cluster-a"}`
)

// wantMetadata checks the item's metadata.
func wantMetadata(want map[string]any) func(t *testing.T, res response) {
	return func(t *testing.T, res response) {
		t.Helper()
		if got := field(t, res.obj(t), "metadata"); !reflect.DeepEqual(got, want) {
			t.Errorf("metadata %v, want %v", got, want)
		}
	}
}

// wantHeader checks one response header.
func wantHeader(name, want string) func(t *testing.T, res response) {
	return func(t *testing.T, res response) {
		t.Helper()
		if got := res.header.Get(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
}

// wantIDs checks the ids of a query answer and its next_cursor.
func wantIDs(ids []string, next string) func(t *testing.T, res response) {
	return func(t *testing.T, res response) {
		t.Helper()
		m := res.obj(t)
		var got []string
		for _, it := range m["items"].([]any) {
			got = append(got, it.(map[string]any)["id"].(string))
		}
		if !reflect.DeepEqual(got, ids) {
			t.Errorf("ids %v, want %v", got, ids)
		}
		if c, _ := m["next_cursor"].(string); c != next {
			t.Errorf("next_cursor %q, want %q", c, next)
		}
	}
}

func TestAPI_Items(t *testing.T) {
	s := newServer(t, newNode(t, nil), nil)
	seedMeta := map[string]any{"size": 1024.0, "created": "2023-01-01T00:00:00Z", "cluster": "cluster-a"}
	runCases(t, s, []apiCase{
		// The seed's curl example, then its query.
		{name: "seed add", req: request{"POST", "/snapshots/add/snap1", ctJSON, seedBody, nil}, want: 201,
			substr: `"id":"snap1","collection":"snapshots"`,
			check: func(t *testing.T, res response) {
				wantMetadata(seedMeta)(t, res)
				wantHeader("Location", "/snapshots/snap1")(t, res)
			}},
		{name: "seed query", req: request{"GET", "/catalog/query?type=snapshots", "", "", nil}, want: 200,
			substr: `"cluster":"cluster-a"`, check: wantIDs([]string{"snap1"}, "")},

		// POST /{collection}/add/{id}
		{name: "add without body or type", req: request{"POST", "/images/add/img1", "", "", nil}, want: 201,
			check: wantMetadata(map[string]any{})},
		{name: "add empty JSON body", req: request{"POST", "/images/add/img2", ctJSON, "", nil}, want: 201,
			substr: `"metadata":{}`},
		{name: "add with charset", req: request{"POST", "/snapshots/add/snap2", "application/json; charset=utf-8", `{"cluster":"cluster-b","size":2048}`, nil}, want: 201},
		{name: "add again replaces metadata", req: request{"POST", "/snapshots/add/snap2", ctJSON, `{"cluster":"cluster-b"}`, nil}, want: 201,
			check: wantMetadata(map[string]any{"cluster": "cluster-b"})},
		{name: "add keeps HTML characters", req: request{"POST", "/snapshots/add/html", ctJSON, `{"note":"<a&b>"}`, nil}, want: 201,
			substr: `"note":"<a&b>"`},
		{name: "add malformed JSON", req: request{"POST", "/snapshots/add/x", ctJSON, `{"size":`, nil}, want: 400},
		{name: "add array", req: request{"POST", "/snapshots/add/x", ctJSON, `[1,2]`, nil}, want: 400, substr: "object"},
		{name: "add null", req: request{"POST", "/snapshots/add/x", ctJSON, `null`, nil}, want: 400, substr: "object"},
		{name: "add trailing data", req: request{"POST", "/snapshots/add/x", ctJSON, `{} {}`, nil}, want: 400},
		{name: "add bad id", req: request{"POST", "/snapshots/add/bad%20id", ctJSON, `{}`, nil}, want: 400, substr: "id"},
		{name: "add id too long", req: request{"POST", "/snapshots/add/" + strings.Repeat("a", 257), ctJSON, `{}`, nil}, want: 400},
		{name: "add bad field name", req: request{"POST", "/snapshots/add/x", ctJSON, `{"":1}`, nil}, want: 400},
		{name: "add text/plain", req: request{"POST", "/snapshots/add/x", "text/plain", `{}`, nil}, want: 415, substr: "application/json"},
		{name: "add body without type", req: request{"POST", "/snapshots/add/x", "", `{}`, nil}, want: 415},
		{name: "add latin1", req: request{"POST", "/snapshots/add/x", "application/json; charset=latin1", `{}`, nil}, want: 415},
		{name: "add bad media type", req: request{"POST", "/snapshots/add/x", "application/", `{}`, nil}, want: 415},
		{name: "add unknown collection", req: request{"POST", "/volumes/add/x", ctJSON, `{}`, nil}, want: 404, substr: `unknown collection \"volumes\"`},

		// GET /{collection}/{id}
		{name: "get", req: request{"GET", "/snapshots/snap1", "", "", nil}, want: 200, check: func(t *testing.T, res response) {
			wantMetadata(seedMeta)(t, res)
			if _, ok := res.obj(t)["conflicts"]; ok {
				t.Error("conflicts present without ?conflicts=true")
			}
		}},
		{name: "get conflicts none", req: request{"GET", "/snapshots/snap1?conflicts=true", "", "", nil}, want: 200, substr: `"conflicts":{}`},
		{name: "get conflicts bad", req: request{"GET", "/snapshots/snap1?conflicts=maybe", "", "", nil}, want: 400, substr: "conflicts"},
		{name: "get absent", req: request{"GET", "/snapshots/nope", "", "", nil}, want: 404, substr: "not found"},
		{name: "get in other collection", req: request{"GET", "/images/snap1", "", "", nil}, want: 404},
		{name: "get bad id", req: request{"GET", "/snapshots/a%2Fb", "", "", nil}, want: 400},
		{name: "get unknown collection", req: request{"GET", "/volumes/x", "", "", nil}, want: 404, substr: "unknown collection"},
		{name: "head", req: request{"HEAD", "/snapshots/snap1", "", "", nil}, want: 200},

		// PUT /{collection}/metadata/{id}
		{name: "put", req: request{"PUT", "/snapshots/metadata/snap2", ctJSON, `{"size":4096,"status":"completed"}`, nil}, want: 200,
			check: wantMetadata(map[string]any{"size": 4096.0, "status": "completed"})},
		{name: "put absent", req: request{"PUT", "/snapshots/metadata/nope", ctJSON, `{}`, nil}, want: 404},
		{name: "put empty body", req: request{"PUT", "/snapshots/metadata/snap2", ctJSON, ``, nil}, want: 400},
		{name: "put not object", req: request{"PUT", "/snapshots/metadata/snap2", ctJSON, `"x"`, nil}, want: 400},
		{name: "put without type", req: request{"PUT", "/snapshots/metadata/snap2", "", `{}`, nil}, want: 415},
		{name: "put merge-patch type", req: request{"PUT", "/snapshots/metadata/snap2", ctPatch, `{}`, nil}, want: 415},

		// PATCH /{collection}/metadata/{id}
		{name: "patch merge-patch", req: request{"PATCH", "/snapshots/metadata/snap2", ctPatch, `{"status":null,"labels":{"tier":"gold"}}`, nil}, want: 200,
			check: wantMetadata(map[string]any{"size": 4096.0, "labels": map[string]any{"tier": "gold"}})},
		{name: "patch json", req: request{"PATCH", "/snapshots/metadata/snap2", ctJSON, `{"labels":{"zone":"b"}}`, nil}, want: 200,
			check: wantMetadata(map[string]any{"size": 4096.0, "labels": map[string]any{"tier": "gold", "zone": "b"}})},
		{name: "patch absent", req: request{"PATCH", "/snapshots/metadata/nope", ctPatch, `{}`, nil}, want: 404},
		{name: "patch text", req: request{"PATCH", "/snapshots/metadata/snap2", "text/plain", `{}`, nil}, want: 415},
		{name: "patch not object", req: request{"PATCH", "/snapshots/metadata/snap2", ctPatch, `[]`, nil}, want: 400},

		// DELETE /{collection}/remove/{id}
		{name: "remove", req: request{"DELETE", "/images/remove/img2", "", "", nil}, want: 200, substr: `{"removed":"img2","causal_token":"`},
		{name: "remove again", req: request{"DELETE", "/images/remove/img2", "", "", nil}, want: 404},
		{name: "get removed", req: request{"GET", "/images/img2", "", "", nil}, want: 404},
		{name: "remove bad id", req: request{"DELETE", "/images/remove/-%00", "", "", nil}, want: 400},

		// GET /catalog/query
		{name: "query all", req: request{"GET", "/catalog/query?type=snapshots", "", "", nil}, want: 200,
			check: wantIDs([]string{"html", "snap1", "snap2"}, "")},
		{name: "query q", req: request{"GET", "/catalog/query?type=snapshots&q=cluster%3Dcluster-a", "", "", nil}, want: 200,
			check: wantIDs([]string{"snap1"}, "")},
		{name: "query numeric", req: request{"GET", "/catalog/query?type=snapshots&q=size%3E2000", "", "", nil}, want: 200,
			check: wantIDs([]string{"snap2"}, "")},
		{name: "query page 1", req: request{"GET", "/catalog/query?type=snapshots&limit=2", "", "", nil}, want: 200,
			check: wantIDs([]string{"html", "snap1"}, "snap1")},
		{name: "query page 2", req: request{"GET", "/catalog/query?type=snapshots&limit=2&cursor=snap1", "", "", nil}, want: 200,
			check: wantIDs([]string{"snap2"}, "")},
		{name: "query empty result", req: request{"GET", "/catalog/query?type=images&q=nothing", "", "", nil}, want: 200, substr: `"items":[]`},
		{name: "query conflicts", req: request{"GET", "/catalog/query?type=snapshots&limit=1&conflicts=true", "", "", nil}, want: 200, substr: `"conflicts":{}`},
		{name: "query no type", req: request{"GET", "/catalog/query", "", "", nil}, want: 400, substr: "type"},
		{name: "query unknown type", req: request{"GET", "/catalog/query?type=volumes", "", "", nil}, want: 404, substr: "unknown collection"},
		{name: "query invalid type", req: request{"GET", "/catalog/query?type=a%2Fb", "", "", nil}, want: 400},
		{name: "query syntax", req: request{"GET", "/catalog/query?type=snapshots&q=size%3E1+%3D2", "", "", nil}, want: 400, substr: "position 7"},
		{name: "query limit 0", req: request{"GET", "/catalog/query?type=snapshots&limit=0", "", "", nil}, want: 400, substr: "limit"},
		{name: "query limit max", req: request{"GET", fmt.Sprintf("/catalog/query?type=snapshots&limit=%d", node.MaxQueryLimit), "", "", nil}, want: 200},
		{name: "query limit over max", req: request{"GET", fmt.Sprintf("/catalog/query?type=snapshots&limit=%d", node.MaxQueryLimit+1), "", "", nil}, want: 400},
		{name: "query limit text", req: request{"GET", "/catalog/query?type=snapshots&limit=ten", "", "", nil}, want: 400},
		{name: "query bad cursor", req: request{"GET", "/catalog/query?type=snapshots&cursor=a%20b", "", "", nil}, want: 400, substr: "cursor"},

		// Routing errors.
		{name: "unknown route", req: request{"GET", "/nope", "", "", nil}, want: 404, substr: "no route"},
		{name: "root", req: request{"GET", "/", "", "", nil}, want: 404},
		{name: "unknown verb", req: request{"POST", "/snapshots/rename/x", ctJSON, `{}`, nil}, want: 404},
		{name: "wrong method on add", req: request{"GET", "/snapshots/add/x", "", "", nil}, want: 405,
			check: wantHeader("Allow", "POST")},
		{name: "wrong method on metadata", req: request{"POST", "/snapshots/metadata/x", ctJSON, `{}`, nil}, want: 405,
			check: wantHeader("Allow", "PUT, PATCH")},
		{name: "wrong method on item", req: request{"DELETE", "/snapshots/snap1", "", "", nil}, want: 405,
			check: wantHeader("Allow", "GET, HEAD")},
		{name: "wrong method on delta", req: request{"DELETE", "/crdt/delta", "", "", nil}, want: 405,
			check: wantHeader("Allow", "GET, HEAD, POST")},
		{name: "wrong method on clear", req: request{"GET", "/crdt/delta/clear", "", "", nil}, want: 405,
			check: wantHeader("Allow", "POST")},
		{name: "wrong method on query", req: request{"PUT", "/catalog/query", ctJSON, `{}`, nil}, want: 405,
			check: wantHeader("Allow", "GET, HEAD")},
	})
}

func TestAPI_Deltas(t *testing.T) {
	s := newServer(t, newNode(t, nil), nil)
	mustDo(t, s, 201, "POST", "/snapshots/add/snap1", ctJSON, seedBody)
	runCases(t, s, []apiCase{
		{name: "get", req: request{"GET", "/crdt/delta", "", "", nil}, want: 200, check: func(t *testing.T, res response) {
			m := res.obj(t)
			ds := m["deltas"].([]any)
			if len(ds) != 1 || m["cursor"] != 1.0 || m["more"] != false {
				t.Fatalf("got %s, want one delta, cursor 1, more false", res.body)
			}
			d := ds[0].(map[string]any)
			if d["op"] != "add" || d["collection"] != "snapshots" || d["id"] != "snap1" {
				t.Errorf("delta %v is not the add of snapshots:snap1", d)
			}
		}},
		{name: "get limit 0", req: request{"GET", "/crdt/delta?limit=0", "", "", nil}, want: 400, substr: "limit"},
		{name: "get limit too big", req: request{"GET", "/crdt/delta?limit=10001", "", "", nil}, want: 400},
		{name: "apply empty array", req: request{"POST", "/crdt/delta", ctJSON, `[]`, nil}, want: 200, substr: `{"new":0,"duplicate":0,"waiting":0,"refused":0}`},
		{name: "apply empty body", req: request{"POST", "/crdt/delta", ctJSON, ``, nil}, want: 400},
		{name: "apply number", req: request{"POST", "/crdt/delta", ctJSON, `5`, nil}, want: 400},
		{name: "apply empty object", req: request{"POST", "/crdt/delta", ctJSON, `{}`, nil}, want: 400},
		{name: "apply null element", req: request{"POST", "/crdt/delta", ctJSON, `[null]`, nil}, want: 400, substr: "delta 0"},
		{name: "apply malformed", req: request{"POST", "/crdt/delta", ctJSON, `[{"op":`, nil}, want: 400, substr: "malformed"},
		{name: "apply unknown key", req: request{"POST", "/crdt/delta", ctJSON, `{"bogus":1}`, nil}, want: 400},
		{name: "apply without type", req: request{"POST", "/crdt/delta", "", `[]`, nil}, want: 415},
		{name: "apply form", req: request{"POST", "/crdt/delta", "application/x-www-form-urlencoded", `a=b`, nil}, want: 415},
		{name: "clear bad cursor", req: request{"POST", "/crdt/delta/clear", ctJSON, `{"cursor":"x"}`, nil}, want: 400},
		{name: "clear negative cursor", req: request{"POST", "/crdt/delta/clear", ctJSON, `{"cursor":-1}`, nil}, want: 400},
		{name: "clear unknown key", req: request{"POST", "/crdt/delta/clear", ctJSON, `{"cursr":1}`, nil}, want: 400},
		{name: "clear not object", req: request{"POST", "/crdt/delta/clear", ctJSON, `[1]`, nil}, want: 400},
		{name: "clear beyond log", req: request{"POST", "/crdt/delta/clear", ctJSON, `{"cursor":99}`, nil}, want: 400, substr: "beyond"},
		{name: "clear text", req: request{"POST", "/crdt/delta/clear", "text/plain", `{"cursor":1}`, nil}, want: 415},
		{name: "clear cursor 0", req: request{"POST", "/crdt/delta/clear", ctJSON, `{"cursor":0}`, nil}, want: 200, substr: `{"cleared":0}`},
		{name: "still pending", req: request{"GET", "/crdt/delta", "", "", nil}, want: 200, substr: `"op":"add"`},
		{name: "clear cursor 1", req: request{"POST", "/crdt/delta/clear", ctJSON, `{"cursor":1}`, nil}, want: 200, substr: `{"cleared":1}`},
		{name: "none pending", req: request{"GET", "/crdt/delta", "", "", nil}, want: 200, substr: `{"deltas":[],"cursor":1,"more":false}`},
		{name: "clear all empty body", req: request{"POST", "/crdt/delta/clear", "", "", nil}, want: 200, substr: `{"cleared":1}`},
		{name: "clear all no cursor", req: request{"POST", "/crdt/delta/clear", ctJSON, `{}`, nil}, want: 200, substr: `{"cleared":1}`},
	})
}

func TestAPI_DeltaPaging(t *testing.T) {
	s := newServer(t, newNode(t, nil), nil)
	for i := range 3 {
		mustDo(t, s, 201, "POST", fmt.Sprintf("/images/add/img%d", i), "", "")
	}
	res := mustDo(t, s, 200, "GET", "/crdt/delta?limit=2", "", "")
	if m := res.obj(t); len(m["deltas"].([]any)) != 2 || m["cursor"] != 2.0 || m["more"] != true {
		t.Fatalf("first page %s, want 2 deltas, cursor 2, more", res.body)
	}
	// Clearing up to the cursor of the GET leaves what came after pending.
	mustDo(t, s, 200, "POST", "/crdt/delta/clear", ctJSON, `{"cursor":2}`)
	res = mustDo(t, s, 200, "GET", "/crdt/delta?limit=2", "", "")
	if m := res.obj(t); len(m["deltas"].([]any)) != 1 || m["cursor"] != 3.0 || m["more"] != false {
		t.Fatalf("second page %s, want 1 delta, cursor 3, no more", res.body)
	}
}

func TestAPI_CursorExpired(t *testing.T) {
	n := newNode(t, func(c *node.Config) { c.MaxLogEntries = 2 })
	s := newServer(t, n, nil)
	for i := range 4 {
		mustDo(t, s, 201, "POST", fmt.Sprintf("/images/add/img%d", i), "", "")
	}
	res := mustDo(t, s, 410, "GET", "/crdt/delta", "", "")
	if msg := res.obj(t)["error"].(string); !strings.Contains(msg, "full state") {
		t.Errorf("410 message %q does not say to take a full state", msg)
	}
	mustDo(t, s, 200, "POST", "/crdt/delta/clear", "", "")
	mustDo(t, s, 200, "GET", "/crdt/delta", "", "")
}

func TestAPI_ApplyAllOrNothing(t *testing.T) {
	a, b := newNode(t, nil), newNode(t, nil)
	sa, sb := newServer(t, a, nil), newServer(t, b, nil)
	mustDo(t, sa, 201, "POST", "/snapshots/add/snap1", ctJSON, seedBody)
	mustDo(t, sa, 201, "POST", "/snapshots/add/snap2", ctJSON, `{"size":2048}`)
	deltas := deltasOf(t, sa)
	if len(deltas) != 2 {
		t.Fatalf("%d pending deltas, want 2", len(deltas))
	}
	// The second delta claims an entry whose dot its context lacks.
	bad := strings.Replace(string(deltas[1]), `"presence":[{"replica":"`, `"presence":[{"replica":"zz`, 1)
	if bad == string(deltas[1]) {
		t.Fatalf("could not corrupt %s", deltas[1])
	}
	body := "[" + string(deltas[0]) + "," + bad + "]"
	res := mustDo(t, sb, 400, "POST", "/crdt/delta", ctJSON, body)
	if msg := res.obj(t)["error"].(string); !strings.Contains(msg, "delta 1") {
		t.Errorf("error %q does not name delta 1", msg)
	}
	mustDo(t, sb, 404, "GET", "/snapshots/snap1", "", "")
	if st := b.Stats(); st.DeltasNew != 0 || st.Items["snapshots"] != 0 {
		t.Fatalf("after a rejected batch: %d new deltas, %d items; want none", st.DeltasNew, st.Items["snapshots"])
	}
	// The good ones alone apply, once.
	good := "[" + string(deltas[0]) + "," + string(deltas[1]) + "]"
	mustDo(t, sb, 200, "POST", "/crdt/delta", ctJSON, good)
	mustDo(t, sb, 200, "GET", "/snapshots/snap1", "", "")
	res = mustDo(t, sb, 200, "POST", "/crdt/delta", ctJSON, string(deltas[0]))
	if got := string(res.body); got != `{"new":0,"duplicate":1,"waiting":0,"refused":0}`+"\n" {
		t.Errorf("reapplying: %s, want one duplicate", got)
	}
}

func TestAPI_BodyLimit(t *testing.T) {
	s := newServer(t, newNode(t, nil), func(c *Config) { c.MaxBodyBytes = 64 })
	big := `{"note":"` + strings.Repeat("x", 100) + `"}`
	chunked := request{"POST", "/snapshots/add/c", ctJSON, big, nil}.build()
	chunked.ContentLength = -1 // unknown length: caught while reading
	if res := serve(s, chunked); res.code != 413 {
		t.Errorf("chunked body over the limit: status %d, want 413; %s", res.code, res.body)
	}
	// A document over crdt's field limit is too large however big the
	// body may be.
	var fields []string
	for i := range 1025 {
		fields = append(fields, fmt.Sprintf(`"f%d":0`, i))
	}
	wide := "{" + strings.Join(fields, ",") + "}"
	s2 := newServer(t, newNode(t, nil), nil)
	runCases(t, s, []apiCase{
		{name: "add", req: request{"POST", "/snapshots/add/x", ctJSON, big, nil}, want: 413, substr: "larger than 64 bytes"},
		{name: "put", req: request{"PUT", "/snapshots/metadata/x", ctJSON, big, nil}, want: 413},
		// POST /crdt/delta takes room for any delta, whatever MaxBodyBytes.
		{name: "delta", req: request{"POST", "/crdt/delta", ctJSON, "[" + strings.Repeat(" ", 100) + "]", nil}, want: 200},
		{name: "delta over any delta's size", req: request{"POST", "/crdt/delta", ctJSON, "[" + strings.Repeat(" ", crdt.MaxDeltaJSONBytes) + "]", nil}, want: 413},
		{name: "at the limit", req: request{"POST", "/snapshots/add/x", ctJSON, `{"note":"` + strings.Repeat("x", 52) + `"}`, nil}, want: 201},
	})
	runCases(t, s2, []apiCase{
		{name: "too many fields", req: request{"POST", "/snapshots/add/x", ctJSON, wide, nil}, want: 413, substr: "fields"},
	})
}

func TestAPI_Auth(t *testing.T) {
	n := newNode(t, nil)
	s := newServer(t, n, func(c *Config) { c.Token = "s3cret" })
	ok := []string{"Authorization: Bearer s3cret"}
	runCases(t, s, []apiCase{
		{name: "write without token", req: request{"POST", "/snapshots/add/x", ctJSON, `{}`, nil}, want: 401,
			check: wantHeader("WWW-Authenticate", "Bearer")},
		{name: "write with wrong token", req: request{"POST", "/snapshots/add/x", ctJSON, `{}`, []string{"Authorization: Bearer s3cre"}}, want: 401,
			check: wantHeader("WWW-Authenticate", `Bearer error="invalid_token"`)},
		{name: "write with basic auth", req: request{"POST", "/snapshots/add/x", ctJSON, `{}`, []string{"Authorization: Basic czNjcmV0"}}, want: 401},
		{name: "delta without token", req: request{"POST", "/crdt/delta", ctJSON, `[]`, nil}, want: 401},
		{name: "clear without token", req: request{"POST", "/crdt/delta/clear", "", "", nil}, want: 401},
		{name: "remove without token", req: request{"DELETE", "/snapshots/remove/x", "", "", nil}, want: 401},
		{name: "unknown route without token", req: request{"POST", "/nope", "", "", nil}, want: 401},
		{name: "write with token", req: request{"POST", "/snapshots/add/x", ctJSON, `{}`, ok}, want: 201},
		{name: "scheme is case-insensitive", req: request{"POST", "/snapshots/add/y", ctJSON, `{}`, []string{"Authorization: bearer s3cret"}}, want: 201},
		{name: "read without token", req: request{"GET", "/snapshots/x", "", "", nil}, want: 200},
		{name: "query without token", req: request{"GET", "/catalog/query?type=snapshots", "", "", nil}, want: 200},
	})

	sr := newServer(t, n, func(c *Config) { c.Token, c.TokenForReads = "s3cret", true })
	runCases(t, sr, []apiCase{
		{name: "read without token", req: request{"GET", "/snapshots/x", "", "", nil}, want: 401},
		{name: "deltas without token", req: request{"GET", "/crdt/delta", "", "", nil}, want: 401},
		{name: "status without token", req: request{"GET", "/status", "", "", nil}, want: 401},
		{name: "read with wrong token", req: request{"GET", "/snapshots/x", "", "", []string{"Authorization: Bearer nope"}}, want: 401},
		{name: "read with token", req: request{"GET", "/snapshots/x", "", "", ok}, want: 200},
		{name: "healthz without token", req: request{"GET", "/healthz", "", "", nil}, want: 200},
		{name: "readyz without token", req: request{"GET", "/readyz", "", "", nil}, want: 200},
		{name: "metrics without token", req: request{"GET", "/metrics", "", "", nil}, want: 401},
		{name: "metrics with token", req: request{"GET", "/metrics", "", "", ok}, want: 200},
	})
}

func TestAPI_Probes(t *testing.T) {
	n := newNode(t, nil)
	s := newServer(t, n, func(c *Config) {
		c.Status = func() map[string]any {
			return map[string]any{"peer_id": "12D3KooW", "replica": "not this one"}
		}
	})
	mustDo(t, s, 201, "POST", "/snapshots/add/snap1", ctJSON, seedBody)
	runCases(t, s, []apiCase{
		{name: "healthz", req: request{"GET", "/healthz", "", "", nil}, want: 200, substr: `{"status":"ok"}`},
		{name: "readyz", req: request{"GET", "/readyz", "", "", nil}, want: 200},
		{name: "status", req: request{"GET", "/status", "", "", nil}, want: 200, check: func(t *testing.T, res response) {
			m := res.obj(t)
			rep := string(n.ReplicaID())
			checks := []struct {
				got  any
				want any
			}{
				{m["replica"], rep},
				{m["peer_id"], "12D3KooW"},
				{field(t, m, "applied_version_vector", rep), 1.0},
				{field(t, m, "items", "snapshots"), 1.0},
				{field(t, m, "items", "images"), 0.0},
				{field(t, m, "delta_log", "entries"), 1.0},
				{m["pending"], 1.0},
			}
			for i, c := range checks {
				if c.got != c.want {
					t.Errorf("check %d: got %v, want %v; body %s", i, c.got, c.want, res.body)
				}
			}
			if b, _ := field(t, m, "delta_log", "bytes").(float64); b <= 0 {
				t.Errorf("delta_log.bytes %v, want > 0", b)
			}
		}},
	})

	s.SetClosing(true)
	runCases(t, s, []apiCase{
		{name: "readyz closing", req: request{"GET", "/readyz", "", "", nil}, want: 503},
		{name: "healthz closing", req: request{"GET", "/healthz", "", "", nil}, want: 200},
		{name: "read closing", req: request{"GET", "/snapshots/snap1", "", "", nil}, want: 503, substr: "shutting down"},
		{name: "write closing", req: request{"POST", "/snapshots/add/x", ctJSON, `{}`, nil}, want: 503},
		{name: "unknown route closing", req: request{"GET", "/nope", "", "", nil}, want: 503},
	})
	s.SetClosing(false)
	mustDo(t, s, 200, "GET", "/readyz", "", "")

	// A closed node answers 503 too.
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	runCases(t, s, []apiCase{
		{name: "write to closed node", req: request{"POST", "/snapshots/add/x", ctJSON, `{}`, nil}, want: 503, substr: "closed"},
		{name: "clear on closed node", req: request{"POST", "/crdt/delta/clear", "", "", nil}, want: 503},
	})
}

func TestNew_Errors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		colls []string
		mod   func(*Config)
		want  string
	}{
		{name: "reserved collection", colls: []string{"snapshots", "crdt"}, want: "clashes"},
		{name: "dot collection", colls: []string{".."}, want: "clashes"},
		{name: "negative body limit", mod: func(c *Config) { c.MaxBodyBytes = -1 }, want: "MaxBodyBytes"},
		{name: "reads token without token", mod: func(c *Config) { c.TokenForReads = true }, want: "Token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t, func(c *node.Config) { c.Collections = tc.colls })
			cfg := DefaultConfig()
			if tc.mod != nil {
				tc.mod(&cfg)
			}
			_, err := New(n, cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error about %q", err, tc.want)
			}
		})
	}
}

func TestStatusOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{node.ErrNotFound, http.StatusNotFound},
		{fmt.Errorf("x: %w", node.ErrUnknownCollection), http.StatusNotFound},
		{fmt.Errorf("x: %w", node.ErrClosed), http.StatusServiceUnavailable},
		{fmt.Errorf("x: %w", node.ErrFailed), http.StatusServiceUnavailable},
		{fmt.Errorf("x: %w: %w", node.ErrFailed, &fs.PathError{Op: "write", Path: "f", Err: syscall.ENOSPC}), http.StatusInsufficientStorage},
		{fmt.Errorf("x: %w: %w", node.ErrFailed, &fs.PathError{Op: "write", Path: "f", Err: syscall.EIO}), http.StatusServiceUnavailable},
		{bodyError(os.ErrDeadlineExceeded), http.StatusRequestTimeout},
		{bodyError(errors.New("broken")), http.StatusBadRequest},
		{fmt.Errorf("x: %w", node.ErrCursorExpired), http.StatusGone},
		{fmt.Errorf("x: %w", node.ErrCorrupt), http.StatusInternalServerError},
		{&http.MaxBytesError{Limit: 1}, http.StatusRequestEntityTooLarge},
		{fmt.Errorf("boom"), http.StatusInternalServerError},
	} {
		if got := statusOf(tc.err); got != tc.want {
			t.Errorf("statusOf(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
