package httpapi

import (
	"net/http"
	"sync"
	"testing"
)

// TestAPI_CreateOnlyAdd: POST /{c}/add/{id} is an upsert; with
// If-None-Match: * it adds only an absent item and answers 412 (changing
// nothing) when the item is present on this node.
func TestAPI_CreateOnlyAdd(t *testing.T) {
	s := newServer(t, newNode(t, nil), nil)
	star := []string{"If-None-Match: *"}
	runCases(t, s, []apiCase{
		{name: "create absent", req: request{"POST", "/snapshots/add/s1", ctJSON, `{"v":1}`, star}, want: 201,
			check: wantMetadata(map[string]any{"v": 1.0})},
		{name: "create present", req: request{"POST", "/snapshots/add/s1", ctJSON, `{"v":2}`, star}, want: 412,
			substr: `snapshots \"s1\" is present on this node`},
		{name: "unchanged", req: request{"GET", "/snapshots/s1", "", "", nil}, want: 200,
			check: wantMetadata(map[string]any{"v": 1.0})},
		{name: "upsert present", req: request{"POST", "/snapshots/add/s1", ctJSON, `{"v":3}`, nil}, want: 201,
			check: wantMetadata(map[string]any{"v": 3.0})},
		{name: "remove", req: request{"DELETE", "/snapshots/remove/s1", "", "", nil}, want: 200},
		{name: "create after remove", req: request{"POST", "/snapshots/add/s1", ctJSON, `{"v":4}`, star}, want: 201},
		{name: "entity tag", req: request{"POST", "/snapshots/add/s2", ctJSON, `{}`, []string{`If-None-Match: "abc"`}}, want: 400,
			substr: "only * is supported"},
		{name: "bad id first", req: request{"POST", "/snapshots/add/bad%2Fid", ctJSON, `{}`, star}, want: 400},
		{name: "unknown collection", req: request{"POST", "/volumes/add/v1", ctJSON, `{}`, star}, want: 404},
	})

	// Of concurrent create-only adds of one id, exactly one is 201.
	const racers = 8
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		codes = map[int]int{}
	)
	for range racers {
		wg.Go(func() {
			res := serve(s, request{"POST", "/images/add/raced", ctJSON, `{}`, star}.build())
			mu.Lock()
			codes[res.code]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if codes[http.StatusCreated] != 1 || codes[http.StatusPreconditionFailed] != racers-1 {
		t.Fatalf("statuses of %d concurrent create-only adds: %v, want one 201 and the rest 412", racers, codes)
	}
}

// TestAPI_BadInputSaysWhatItIs: a body that is not a state stream and a
// bad cursor get messages about what they should be, not about frames or
// Go types.
func TestAPI_BadInputSaysWhatItIs(t *testing.T) {
	s := newServer(t, newNode(t, nil), nil)
	mustDo(t, s, 201, "POST", "/snapshots/add/snap1", ctJSON, seedBody)
	runCases(t, s, []apiCase{
		{name: "state: text", req: request{"POST", "/crdt/state", "application/octet-stream", "hello, this is not a state", nil}, want: 400,
			substr: "not a state stream"},
		{name: "state: JSON deltas", req: request{"POST", "/crdt/state", "application/octet-stream", `{"deltas":[],"cursor":0}`, nil}, want: 400,
			substr: "not a state stream"},
		{name: "clear: string cursor", req: request{"POST", "/crdt/delta/clear", ctJSON, `{"cursor":"x"}`, nil}, want: 400,
			substr: `\"cursor\" must be an integer from 0 to 18446744073709551615`},
		{name: "clear: negative", req: request{"POST", "/crdt/delta/clear", ctJSON, `{"cursor":-1}`, nil}, want: 400, substr: "got -1"},
		{name: "clear: fraction", req: request{"POST", "/crdt/delta/clear", ctJSON, `{"cursor":1.5}`, nil}, want: 400, substr: "got 1.5"},
		{name: "clear: beyond 64 bits", req: request{"POST", "/crdt/delta/clear", ctJSON, `{"cursor":18446744073709551616}`, nil}, want: 400, substr: "must be an integer"},
		{name: "clear: null", req: request{"POST", "/crdt/delta/clear", ctJSON, `{"cursor":null}`, nil}, want: 400, substr: "got null"},
		{name: "still pending", req: request{"GET", "/crdt/delta", "", "", nil}, want: 200, substr: `"op":"add"`},
		{name: "clear: cursor 1", req: request{"POST", "/crdt/delta/clear", ctJSON, `{"cursor":1}`, nil}, want: 200, substr: `{"cleared":1}`},
	})
}
