package httpapi

import (
	"net/http"
	"testing"
)

// fuzzRoutes are the body-decoding routes FuzzDecodeRequest drives.
var fuzzRoutes = []struct{ method, path string }{
	{"POST", "/crdt/delta"},
	{"POST", "/snapshots/add/x"},
	{"PUT", "/snapshots/metadata/x"},
	{"PATCH", "/snapshots/metadata/x"},
	{"POST", "/crdt/delta/clear"},
	{"POST", "/crdt/state"},
	{"POST", "/snapshots/batch"},
}

// FuzzDecodeRequest sends random bodies and content types through the
// handler to the request-decoding routes of a real node (POST /crdt/state
// included: a full-state stream). No input may
// panic or produce a 500, and the status must be one a client error or a
// success can give.
func FuzzDecodeRequest(f *testing.F) {
	n := newNode(f, nil)
	s := newServer(f, n, func(c *Config) { c.MaxBodyBytes = 64 << 10 })
	mustDo(f, s, 201, "POST", "/snapshots/add/x", ctJSON, seedBody)
	f.Add(uint8(0), ctJSON, []byte(`[]`))
	f.Add(uint8(1), ctJSON, []byte(seedBody))
	f.Add(uint8(3), ctPatch, []byte(`{"status":null}`))
	f.Add(uint8(4), "", []byte(``))
	src := newNode(f, nil)
	mustDo(f, newServer(f, src, nil), 201, "POST", "/images/add/y", ctJSON, `{"a":1}`)
	state := stateBytes(f, src)
	f.Add(uint8(5), ctState, state)
	f.Add(uint8(5), ctOctets, state[:len(state)-1])
	f.Add(uint8(5), ctState, append(state[:len(state)/2:len(state)/2], 0x01, 0xff))
	f.Add(uint8(6), ctJSON, []byte(`{"ops":[{"op":"add","id":"y","metadata":{"a":1}},{"op":"patch","id":"x","metadata":{"a":null}},{"op":"remove","id":"y"}]}`))
	f.Add(uint8(6), ctJSON, []byte(`{"ops":[{"op":"create","id":"x"}]}`))
	// 412: a batch's create of a present item.
	allowed := map[int]bool{200: true, 201: true, 400: true, 404: true, 412: true, 413: true, 415: true}
	f.Fuzz(func(t *testing.T, route uint8, ct string, body []byte) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		r := request{rt.method, rt.path, ct, string(body), nil}.build()
		res := serve(s, r)
		if !allowed[res.code] {
			t.Fatalf("%s %s (Content-Type %q, body %q): status %d; %s", rt.method, rt.path, ct, body, res.code, res.body)
		}
		if res.code >= 400 {
			res.obj(t) // every error is JSON
		}
		// Keep x present, so that PUT and PATCH reach the node (a remote
		// delta may have removed it).
		if res := serve(s, request{"GET", "/snapshots/x", "", "", nil}.build()); res.code == http.StatusNotFound {
			mustDo(t, s, http.StatusCreated, "POST", "/snapshots/add/x", "", "")
		}
	})
}
