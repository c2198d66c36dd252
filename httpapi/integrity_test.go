package httpapi

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// Issue 9, rows 1 and 2, through POST /crdt/delta: a delta claiming the
// node's own replica at counter 2^64-1 is refused and reported, and a
// remove naming writes the node has not made yet (its dots 1-3) waits;
// neither stops the node's writes or erases them as they are made.
func TestAPI_ForgedDeltasBlockNoWrites(t *testing.T) {
	n := newNode(t, nil)
	s := newServer(t, n, nil)
	ts := crdt.MakeTimestamp(1_700_000_000_000, 0)
	top, err := crdt.AddDelta(crdt.Key{Collection: "snapshots", ID: "evil"}, nil, crdt.Document{"x": []byte("1")},
		crdt.Dot{Replica: n.ReplicaID(), Counter: math.MaxUint64}, ts)
	if err != nil {
		t.Fatal(err)
	}
	own := crdt.Dot{Replica: "attacker", Counter: 1}
	remove := &crdt.Delta{Dot: own, TS: ts, Op: crdt.OpRemove, Collection: "snapshots", ID: "s1",
		Context: []crdt.Dot{{Replica: n.ReplicaID(), Counter: 1}, {Replica: n.ReplicaID(), Counter: 2}, {Replica: n.ReplicaID(), Counter: 3}, own}}
	if n.ReplicaID() > "attacker" {
		remove.Context = []crdt.Dot{own, {Replica: n.ReplicaID(), Counter: 1}, {Replica: n.ReplicaID(), Counter: 2}, {Replica: n.ReplicaID(), Counter: 3}}
	}
	body, err := json.Marshal([]*crdt.Delta{top, remove})
	if err != nil {
		t.Fatal(err)
	}
	res := mustDo(t, s, 200, "POST", "/crdt/delta", ctJSON, string(body))
	if got := string(res.body); got != `{"new":0,"duplicate":0,"waiting":1,"refused":1}`+"\n" {
		t.Fatalf("forged deltas: %s", got)
	}
	mustDo(t, s, 201, "POST", "/snapshots/add/s1", ctJSON, `{"size":1}`)
	mustDo(t, s, 200, "PUT", "/snapshots/metadata/s1", ctJSON, `{"size":2,"keep":true}`)
	if got := mustDo(t, s, 200, "GET", "/snapshots/s1", "", "").body; !strings.Contains(string(got), `"keep":true`) {
		t.Fatalf("write erased: %s", got)
	}
	st := string(mustDo(t, s, 200, "GET", "/status", "", "").body)
	for _, want := range []string{`"fork_suspected"`, `"waiting":{"bytes":`, `"refused":1`} {
		if !strings.Contains(st, want) {
			t.Errorf("/status lacks %s: %s", want, st)
		}
	}
}
