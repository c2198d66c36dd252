package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/node"
)

// deltasOf returns the pending deltas of the node behind h, as GET
// /crdt/delta gives them.
func deltasOf(t testing.TB, h http.Handler) []json.RawMessage {
	t.Helper()
	var page struct {
		Deltas []json.RawMessage `json:"deltas"`
	}
	res := mustDo(t, h, 200, "GET", "/crdt/delta", "", "")
	if err := json.Unmarshal(res.body, &page); err != nil {
		t.Fatal(err)
	}
	return page.Deltas
}

// gossip moves the pending deltas of from to to purely over HTTP, the way
// an external transport would: GET /crdt/delta, POST /crdt/delta, then
// POST /crdt/delta/clear with the cursor of the GET. It returns how many
// deltas were new to the receiver.
func gossip(t testing.TB, from, to http.Handler) int {
	t.Helper()
	res := mustDo(t, from, 200, "GET", "/crdt/delta", "", "")
	var page struct {
		Deltas json.RawMessage `json:"deltas"`
		Cursor uint64          `json:"cursor"`
		More   bool            `json:"more"`
	}
	if err := json.Unmarshal(res.body, &page); err != nil {
		t.Fatal(err)
	}
	if page.More {
		t.Fatal("more deltas than one page")
	}
	res = mustDo(t, to, 200, "POST", "/crdt/delta", ctJSON, string(page.Deltas))
	var applied struct{ New, Duplicate int }
	if err := json.Unmarshal(res.body, &applied); err != nil {
		t.Fatal(err)
	}
	mustDo(t, from, 200, "POST", "/crdt/delta/clear", ctJSON, fmt.Sprintf(`{"cursor":%d}`, page.Cursor))
	return applied.New
}

// TestSync_TwoNodes replays the seed's example over HTTP only: node 1 adds
// snapshots, both nodes write the metadata of snap1 concurrently, and the
// deltas travel through the external-gossip endpoints.
func TestSync_TwoNodes(t *testing.T) {
	n1 := newNode(t, nil)
	// Node 2's clock runs ahead, so its concurrent write has the later
	// timestamp and wins, as "failed" does in the seed's transcript.
	n2 := newNode(t, func(c *node.Config) { c.Now = func() time.Time { return time.Now().Add(30 * time.Second) } })
	s1, s2 := newServer(t, n1, nil), newServer(t, n2, nil)

	mustDo(t, s1, 201, "POST", "/snapshots/add/snap1", ctJSON, `{"size":1024,"created":"2023-12-07T10:30:45Z","cluster":"cluster-a"}`)
	if got := gossip(t, s1, s2); got != 1 {
		t.Fatalf("node 2 took %d new deltas, want 1", got)
	}
	mustDo(t, s2, 200, "GET", "/snapshots/snap1", "", "")

	// Concurrent metadata updates (conflict).
	mustDo(t, s1, 200, "PUT", "/snapshots/metadata/snap1", ctJSON, `{"size":1024,"status":"completed","updated":"2023-12-07T10:30:45Z"}`)
	mustDo(t, s2, 200, "PUT", "/snapshots/metadata/snap1", ctJSON, `{"size":1024,"status":"failed","updated":"2023-12-07T10:30:45Z"}`)
	mustDo(t, s1, 201, "POST", "/snapshots/add/snap2", ctJSON, `{"size":2048,"created":"2023-12-07T10:30:45Z","cluster":"cluster-b"}`)

	// Delta exchange, both ways.
	if got := gossip(t, s1, s2); got != 2 {
		t.Fatalf("node 2 took %d new deltas, want 2", got)
	}
	if got := gossip(t, s2, s1); got != 1 {
		t.Fatalf("node 1 took %d new deltas, want 1", got)
	}
	// Nothing is pending any more, and nothing echoes back.
	for i, s := range []http.Handler{s1, s2} {
		if ds := deltasOf(t, s); len(ds) != 0 {
			t.Errorf("node %d: %d deltas still pending", i+1, len(ds))
		}
	}

	// Both resolve the conflict the same way and report the loser.
	var items [2]map[string]any
	for i, s := range []http.Handler{s1, s2} {
		items[i] = mustDo(t, s, 200, "GET", "/snapshots/snap1?conflicts=true", "", "").obj(t)
	}
	if !reflect.DeepEqual(items[0], items[1]) {
		t.Fatalf("nodes disagree:\n%v\n%v", items[0], items[1])
	}
	if got := field(t, items[0], "metadata", "status"); got != "failed" {
		t.Errorf("winner %v, want failed (the later timestamp)", got)
	}
	losers, _ := field(t, items[0], "conflicts", "status").([]any)
	if len(losers) != 1 {
		t.Fatalf("conflicts on status: %v, want one loser", losers)
	}
	loser := losers[0].(map[string]any)
	if loser["value"] != "completed" || loser["replica"] != string(n1.ReplicaID()) {
		t.Errorf("loser %v, want completed from %s", loser, n1.ReplicaID())
	}
	if ts, _ := loser["ts"].(string); len(ts) < len("2006-01-02T15:04:05.000Z/0") {
		t.Errorf("loser ts %q is not a timestamp", loser["ts"])
	}

	// The whole catalog agrees.
	var pages [2]string
	for i, s := range []http.Handler{s1, s2} {
		pages[i] = string(mustDo(t, s, 200, "GET", "/catalog/query?type=snapshots&conflicts=true", "", "").body)
	}
	if pages[0] != pages[1] {
		t.Fatalf("queries differ:\n%s\n%s", pages[0], pages[1])
	}
	res := mustDo(t, s1, 200, "GET", "/catalog/query?type=snapshots", "", "")
	wantIDs([]string{"snap1", "snap2"}, "")(t, res)

	// A remove on one side reaches the other.
	mustDo(t, s2, 200, "DELETE", "/snapshots/remove/snap2", "", "")
	if got := gossip(t, s2, s1); got != 1 {
		t.Fatalf("node 1 took %d new deltas, want 1", got)
	}
	mustDo(t, s1, 404, "GET", "/snapshots/snap2", "", "")
}
