package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/node"
	leveldb "github.com/ipfs/go-ds-leveldb"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// newNode opens a real node on an in-memory LevelDB store, closed at the
// end of the test. mod, if not nil, adjusts its config.
func newNode(t testing.TB, mod func(*node.Config)) *node.Node {
	t.Helper()
	store, err := leveldb.NewDatastore("", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.Logger = discard()
	if mod != nil {
		mod(&cfg)
	}
	n, err := node.Open(context.Background(), store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil && !errors.Is(err, node.ErrClosed) {
			t.Errorf("close node: %v", err)
		}
	})
	return n
}

// newServer returns the API over c with a discarding logger. mod, if not
// nil, adjusts its config.
func newServer(t testing.TB, c Catalog, mod func(*Config)) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Logger = discard()
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// response is what a request through the handler produced.
type response struct {
	code   int
	header http.Header
	body   []byte
}

// obj decodes the body as a JSON object.
func (r response) obj(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

// request is one request to send; header lines are "Name: value".
type request struct {
	method, path, ct, body string
	header                 []string
}

func (q request) build() *http.Request {
	r := httptest.NewRequest(q.method, q.path, strings.NewReader(q.body))
	if q.ct != "" {
		r.Header.Set("Content-Type", q.ct)
	}
	for _, h := range q.header {
		k, v, _ := strings.Cut(h, ":")
		r.Header.Set(k, strings.TrimSpace(v))
	}
	return r
}

// serve sends r through h.
func serve(h http.Handler, r *http.Request) response {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	res := w.Result()
	b, _ := io.ReadAll(res.Body)
	return response{code: res.StatusCode, header: res.Header, body: b}
}

// do sends one request through h.
func do(t testing.TB, h http.Handler, method, path, ct, body string, header ...string) response {
	t.Helper()
	return serve(h, request{method, path, ct, body, header}.build())
}

// mustDo is do that fails the test unless the status is want.
func mustDo(t testing.TB, h http.Handler, want int, method, path, ct, body string, header ...string) response {
	t.Helper()
	res := do(t, h, method, path, ct, body, header...)
	if res.code != want {
		t.Fatalf("%s %s: status %d, want %d; body %s", method, path, res.code, want, res.body)
	}
	return res
}

// apiCase is one row of an endpoint table.
type apiCase struct {
	name   string
	req    request
	want   int
	substr string                           // the body must contain it
	check  func(t *testing.T, res response) // further checks, if any
}

// runCases runs the rows in order against h (later rows may rely on the
// state earlier ones made). Every error response must be JSON
// {"error": "..."}.
func runCases(t *testing.T, h http.Handler, cases []apiCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := serve(h, tc.req.build())
			if res.code != tc.want {
				t.Fatalf("%s %s: status %d, want %d; body %s", tc.req.method, tc.req.path, res.code, tc.want, res.body)
			}
			if !strings.Contains(string(res.body), tc.substr) {
				t.Errorf("body %s does not contain %q", res.body, tc.substr)
			}
			if tc.req.method != http.MethodHead && tc.req.path != "/metrics" {
				if ct := res.header.Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q, want application/json", ct)
				}
			}
			if res.code >= 400 {
				if msg, _ := res.obj(t)["error"].(string); msg == "" {
					t.Errorf("error body %s has no error message", res.body)
				}
			}
			if tc.check != nil {
				tc.check(t, res)
			}
		})
	}
}

// field walks a decoded JSON value along object keys.
func field(t testing.TB, v any, keys ...string) any {
	t.Helper()
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("at %q: %v is not an object", k, v)
		}
		if v, ok = m[k]; !ok {
			t.Fatalf("no key %q in %v", k, m)
		}
	}
	return v
}
