package httpapi

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
	"github.com/fxamacker/cbor/v2"
)

const (
	ctState  = "application/vnd.crdt-catalog.state"
	ctOctets = "application/octet-stream"
)

// stateBytes returns n's full-state stream.
func stateBytes(t testing.TB, n *node.Node) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := n.ExportState(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// nodeFingerprint is what a rejected import must not change: the full
// state, byte for byte, and both contexts.
func nodeFingerprint(t testing.TB, n *node.Node) string {
	t.Helper()
	seen, applied := n.Contexts()
	s, err := crdt.EncodeContext(seen)
	if err != nil {
		t.Fatal(err)
	}
	a, err := crdt.EncodeContext(applied)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x|%x|%x", s, a, stateBytes(t, n))
}

// httpDo sends one request to a real server with a deadline.
func httpDo(t testing.TB, method, url, ct string, body io.Reader) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Body.Close() })
	return res
}

// moveState streams the full state of the server at from into the one at
// to, over loopback HTTP, without holding it in memory: the body of GET
// /crdt/state is the body of POST /crdt/state. It returns the cursor the
// state covers and the import result.
func moveState(t testing.TB, from, to string) (cursor uint64, items, changed int) {
	t.Helper()
	get := httpDo(t, "GET", from+"/crdt/state", "", nil)
	if get.StatusCode != 200 {
		b, _ := io.ReadAll(get.Body)
		t.Fatalf("GET /crdt/state: %d %s", get.StatusCode, b)
	}
	if ct := get.Header.Get("Content-Type"); ct != ctState {
		t.Fatalf("GET /crdt/state: Content-Type %q", ct)
	}
	cursor, err := strconv.ParseUint(get.Header.Get("Crdt-Delta-Cursor"), 10, 64)
	if err != nil {
		t.Fatalf("GET /crdt/state: cursor header: %v", err)
	}
	post := httpDo(t, "POST", to+"/crdt/state", ctState, get.Body)
	b, _ := io.ReadAll(post.Body)
	if post.StatusCode != 200 {
		t.Fatalf("POST /crdt/state: %d %s", post.StatusCode, b)
	}
	var res struct{ Items, Changed int }
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("POST /crdt/state: %s: %v", b, err)
	}
	return cursor, res.Items, res.Changed
}

// TestState_RecoverAfterTrim: an external-gossip consumer whose cursor
// fell behind the trimmed log (GET /crdt/delta answers 410) recovers over
// HTTP alone: the full state of each node, posted to the other, makes
// them converge; clearing up to the cursor of the state then lets GET
// /crdt/delta continue, with the deltas written after the export still
// pending.
func TestState_RecoverAfterTrim(t *testing.T) {
	n1 := newNode(t, func(c *node.Config) { c.MaxLogEntries = 3 })
	n2 := newNode(t, nil)
	h1, h2 := newServer(t, n1, nil), newServer(t, n2, nil)
	srv1, srv2 := httptest.NewServer(h1), httptest.NewServer(h2)
	t.Cleanup(srv1.Close)
	t.Cleanup(srv2.Close)

	for i := range 6 {
		mustDo(t, h1, 201, "POST", fmt.Sprintf("/snapshots/add/snap%d", i), ctJSON, fmt.Sprintf(`{"size":%d}`, i))
	}
	mustDo(t, h1, 200, "PATCH", "/snapshots/metadata/snap2", ctJSON, `{"status":"done"}`)
	mustDo(t, h1, 200, "DELETE", "/snapshots/remove/snap4", "", "")
	mustDo(t, h1, 201, "POST", "/images/add/img1", ctJSON, `{"os":"linux"}`)
	mustDo(t, h2, 201, "POST", "/images/add/img2", ctJSON, `{"os":"bsd"}`)
	mustDo(t, h2, 201, "POST", "/snapshots/add/snap1", ctJSON, `{"owner":"n2"}`) // concurrent with n1's

	res := mustDo(t, h1, 410, "GET", "/crdt/delta", "", "")
	msg := res.obj(t)["error"].(string)
	for _, want := range []string{"full state", "GET /crdt/state", "POST", "/crdt/delta/clear", "Crdt-Delta-Cursor"} {
		if !strings.Contains(msg, want) {
			t.Errorf("410 message %q does not mention %q", msg, want)
		}
	}

	cursor, items, changed := moveState(t, srv1.URL, srv2.URL)
	if items != 6 || changed != 6 { // snap0-5 without snap4, img1
		t.Fatalf("n2 imported %d items, changed %d; want 6 and 6", items, changed)
	}
	// A write after the export stays pending at n1.
	mustDo(t, h1, 201, "POST", "/images/add/late", "", "")
	mustDo(t, h1, 200, "POST", "/crdt/delta/clear", ctJSON, fmt.Sprintf(`{"cursor":%d}`, cursor))
	if ds := deltasOf(t, h1); len(ds) != 1 || !strings.Contains(string(ds[0]), `"late"`) {
		t.Fatalf("pending after clearing to the state's cursor: %s; want the late add alone", ds)
	}
	gossip(t, h1, h2) // the late add, the usual way

	if _, items, _ := moveState(t, srv2.URL, srv1.URL); items != 8 {
		t.Fatalf("n1 imported %d items from n2, want 8", items)
	}
	for _, q := range []string{"/catalog/query?type=snapshots&conflicts=true", "/catalog/query?type=images&conflicts=true"} {
		a := string(mustDo(t, h1, 200, "GET", q, "", "").body)
		b := string(mustDo(t, h2, 200, "GET", q, "", "").body)
		if a != b {
			t.Fatalf("%s differs:\n%s\n%s", q, a, b)
		}
	}
	_, a1 := n1.Contexts()
	_, a2 := n2.Contexts()
	if !a1.Equal(a2) {
		t.Fatal("applied contexts differ")
	}
	mustDo(t, h2, 404, "GET", "/snapshots/snap4", "", "")
	item := mustDo(t, h1, 200, "GET", "/snapshots/snap1", "", "").obj(t)
	if field(t, item, "metadata", "owner") != "n2" || field(t, item, "metadata", "size") != float64(1) {
		t.Fatalf("the concurrently added item lost a write: %v", item)
	}
	// Exchanging again changes nothing.
	if _, _, changed := moveState(t, srv1.URL, srv2.URL); changed != 0 {
		t.Fatalf("a second exchange changed %d items", changed)
	}
}

// stateFrame builds one frame of the state stream by hand.
func stateFrame(t testing.TB, v any) []byte {
	t.Helper()
	b, err := cbor.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return append(binary.AppendUvarint(nil, uint64(len(b))), b...)
}

// TestState_BadBodies: POST /crdt/state refuses bad, cut, too large and
// mistyped bodies with the JSON error and the right status, and the node
// is byte for byte as it was; a good body then imports.
func TestState_BadBodies(t *testing.T) {
	src := newNode(t, nil)
	hs := newServer(t, src, nil)
	for i := range 5 {
		mustDo(t, hs, 201, "POST", fmt.Sprintf("/images/add/img%d", i), ctJSON, `{"evil":true}`)
	}
	good := stateBytes(t, src)

	n := newNode(t, func(c *node.Config) { c.TempDir = t.TempDir() })
	h := newServer(t, n, func(c *Config) { c.MaxStateBytes = int64(len(good)) })
	mustDo(t, h, 201, "POST", "/snapshots/add/mine", ctJSON, `{"own":true}`)
	// A node whose own limit is below the stream's size.
	small := newNode(t, func(c *node.Config) { c.MaxStateBytes = int64(len(good) / 2) })
	hsmall := newServer(t, small, nil)

	emptyCtx, err := crdt.EncodeContext(crdt.NewContext())
	if err != nil {
		t.Fatal(err)
	}
	type header struct {
		Kind    uint   `cbor:"1,keyasint"`
		Version uint   `cbor:"2,keyasint,omitempty"`
		Seen    []byte `cbor:"4,keyasint,omitempty"`
		Applied []byte `cbor:"5,keyasint,omitempty"`
	}
	type trailer struct {
		Kind  uint   `cbor:"1,keyasint"`
		Count uint64 `cbor:"9,keyasint,omitempty"`
	}
	newer := string(stateFrame(t, header{Kind: 1, Version: crdt.FormatVersion + 1, Seen: emptyCtx, Applied: emptyCtx})) +
		string(stateFrame(t, trailer{Kind: 3}))
	// The header and the first two items of good, then garbage.
	var prefix []byte
	for rest, i := good, 0; i < 3; i++ {
		size, k := binary.Uvarint(rest)
		prefix = append(prefix, rest[:k+int(size)]...)
		rest = rest[k+int(size):]
	}
	chunked := request{"POST", "/crdt/state", ctState, string(good) + "x", nil}.build()
	chunked.ContentLength = -1

	before, smallBefore := nodeFingerprint(t, n), nodeFingerprint(t, small)
	check := func(t *testing.T) {
		t.Helper()
		if after := nodeFingerprint(t, n); after != before {
			t.Fatal("a rejected body changed the node")
		}
		if after := nodeFingerprint(t, small); after != smallBefore {
			t.Fatal("a rejected body changed the small node")
		}
	}
	cases := []struct {
		name   string
		h      http.Handler
		req    *http.Request
		want   int
		substr string
	}{
		{"random bytes", h, request{"POST", "/crdt/state", ctState, "\x08" + strings.Repeat("\xfe", 8), nil}.build(), 400, "invalid"},
		{"valid items then garbage", h, request{"POST", "/crdt/state", ctState, string(prefix) + "\x02\xff\xff", nil}.build(), 400, "invalid"},
		{"cut short", h, request{"POST", "/crdt/state", ctState, string(good[:len(good)-2]), nil}.build(), 400, "cut short"},
		{"empty", h, request{"POST", "/crdt/state", ctState, "", nil}.build(), 400, "cut short"},
		{"a newer format version", h, request{"POST", "/crdt/state", ctState, newer, nil}.build(), 400, "unsupported format version"},
		{"JSON", h, request{"POST", "/crdt/state", ctJSON, string(good), nil}.build(), 415, "application/vnd.crdt-catalog.state"},
		{"no content type", h, request{"POST", "/crdt/state", "", string(good), nil}.build(), 415, ""},
		{"over the API's limit", h, request{"POST", "/crdt/state", ctState, string(good) + "x", nil}.build(), 413, fmt.Sprintf("larger than %d bytes", len(good))},
		{"over the API's limit, chunked", h, chunked, 413, "larger than"},
		{"over the node's limit", hsmall, request{"POST", "/crdt/state", ctOctets, string(good), nil}.build(), 413, "import limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := serve(tc.h, tc.req)
			if res.code != tc.want {
				t.Fatalf("status %d, want %d; %s", res.code, tc.want, res.body)
			}
			if ct := res.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if msg, _ := res.obj(t)["error"].(string); !strings.Contains(msg, tc.substr) || msg == "" {
				t.Errorf("error %q does not contain %q", msg, tc.substr)
			}
			check(t)
		})
	}
	// Data after the trailer is garbage (this server's limit allows it).
	h2 := newServer(t, n, nil)
	res := mustDo(t, h2, 400, "POST", "/crdt/state", ctState, string(good)+"\x00")
	if msg := res.obj(t)["error"].(string); !strings.Contains(msg, "after the trailer") {
		t.Errorf("error %q", msg)
	}
	check(t)

	// The good stream imports (octet-stream is accepted too).
	res = mustDo(t, h, 200, "POST", "/crdt/state", ctOctets, string(good))
	if got := string(res.body); got != `{"items":5,"changed":5}`+"\n" {
		t.Fatalf("import result %s", got)
	}
	mustDo(t, h, 200, "GET", "/images/img3", "", "")
	mustDo(t, h, 200, "GET", "/snapshots/mine", "", "")
}

// TestState_AuthAndRoutes: POST /crdt/state needs the token like every
// write; GET /crdt/state is a read (open unless TokenForReads); HEAD
// answers the headers only; a wrong method is 405 with Allow; a closed
// node answers 503 before any byte of state.
func TestState_AuthAndRoutes(t *testing.T) {
	src := newNode(t, nil)
	mustDo(t, newServer(t, src, nil), 201, "POST", "/snapshots/add/x", "", "")
	good := string(stateBytes(t, src))
	n := newNode(t, nil)
	s := newServer(t, n, func(c *Config) { c.Token = "s3cret" })
	ok := []string{"Authorization: Bearer s3cret"}
	runCases(t, s, []apiCase{
		{name: "import without token", req: request{"POST", "/crdt/state", ctState, good, nil}, want: 401,
			check: wantHeader("WWW-Authenticate", "Bearer")},
		{name: "import with wrong token", req: request{"POST", "/crdt/state", ctState, good, []string{"Authorization: Bearer nope"}}, want: 401},
		{name: "wrong method", req: request{"DELETE", "/crdt/state", "", "", ok}, want: 405,
			check: wantHeader("Allow", "GET, HEAD, POST")},
	})
	mustDo(t, s, 404, "GET", "/snapshots/x", "", "")
	mustDo(t, s, 200, "POST", "/crdt/state", ctState, good, ok...)
	mustDo(t, s, 200, "GET", "/snapshots/x", "", "")

	res := mustDo(t, s, 200, "GET", "/crdt/state", "", "")
	if res.header.Get("Content-Type") != ctState || !bytes.Equal(res.body, stateBytes(t, n)) {
		t.Fatalf("GET /crdt/state: %q, %d bytes", res.header.Get("Content-Type"), len(res.body))
	}
	head := mustDo(t, s, 200, "HEAD", "/crdt/state", "", "")
	if len(head.body) != 0 || head.header.Get("Crdt-Delta-Cursor") == "" {
		t.Fatalf("HEAD /crdt/state: %d bytes, cursor %q", len(head.body), head.header.Get("Crdt-Delta-Cursor"))
	}

	sr := newServer(t, n, func(c *Config) { c.Token, c.TokenForReads = "s3cret", true })
	runCases(t, sr, []apiCase{
		{name: "export without token", req: request{"GET", "/crdt/state", "", "", nil}, want: 401},
	})
	mustDo(t, sr, 200, "GET", "/crdt/state", "", "", ok...)

	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	runCases(t, s, []apiCase{
		{name: "export from a closed node", req: request{"GET", "/crdt/state", "", "", nil}, want: 503},
		{name: "import into a closed node", req: request{"POST", "/crdt/state", ctState, good, ok}, want: 503},
	})
}

// brokenWriter is a response writer whose connection broke: every write
// of the body fails.
type brokenWriter struct {
	h    http.Header
	code int
}

func (w *brokenWriter) Header() http.Header       { return w.h }
func (w *brokenWriter) WriteHeader(code int)      { w.code = code }
func (w *brokenWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

// TestState_ExportCutShort: when the export fails after the status went
// out, the handler aborts the response (http.ErrAbortHandler, so net/http
// drops the connection and the client sees a stream without its trailer)
// rather than append a JSON error to half a state; the request is still
// counted.
func TestState_ExportCutShort(t *testing.T) {
	n := newNode(t, nil)
	s := newServer(t, n, nil)
	mustDo(t, s, 201, "POST", "/snapshots/add/x", "", "")
	w := &brokenWriter{h: http.Header{}}
	func() {
		defer func() {
			if v := recover(); v != http.ErrAbortHandler {
				t.Fatalf("recovered %v, want http.ErrAbortHandler", v)
			}
		}()
		s.ServeHTTP(w, httptest.NewRequest("GET", "/crdt/state", nil))
	}()
	if w.code != 200 || w.h.Get("Content-Type") != ctState {
		t.Fatalf("status %d, Content-Type %q", w.code, w.h.Get("Content-Type"))
	}
	res := mustDo(t, s, 200, "GET", "/metrics", "", "")
	if want := `catalog_http_requests_total{code="200",route="GET /crdt/state"} 1`; !strings.Contains(string(res.body), want) {
		t.Errorf("metrics lack %s", want)
	}
}
