package httpapi

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
	"github.com/fxamacker/cbor/v2"
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

// signedAdd returns an add of key id at counter 1 of a new replica keyed
// by a fresh Ed25519 key, chained and signed as its origin would, with
// timestamp ts.
func signedAdd(t *testing.T, id string, ts crdt.Timestamp) *crdt.Delta {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	r, err := crdt.NewKeyedReplicaID(pub, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d, err := crdt.AddDelta(crdt.Key{Collection: "snapshots", ID: id}, nil, crdt.Document{"v": []byte("1")}, crdt.Dot{Replica: r, Counter: 1}, ts)
	if err != nil {
		t.Fatal(err)
	}
	d.Proof = crdt.Proof{Prev: crdt.ChainStart(r), Split: true}
	d.Proof.Sig = crdt.SignHead(key, r, 1, d.Proof.Next(d, nil))
	return d
}

// Issue 9, rows 4, 13 and 14, through POST /crdt/delta on a signed node:
// validly signed deltas of more made-up replicas than MaxReplicas allows
// are refused past the limit; a delta of a live replica at counter 2^63
// without its signature is refused, and the replica's context stays one
// number; a signed delta stamped in year 9999 is joined, but the node's
// own next write stays within MaxClockOffset of its wall clock. The node
// keeps writing throughout.
func TestAPI_MintedReplicasForgedGapsAndFarFutureAreContained(t *testing.T) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	n := newNode(t, func(c *node.Config) {
		c.Key = key
		c.MaxReplicas = 5
		c.MaxClockOffset = 2 * time.Second
	})
	s := newServer(t, n, nil)
	post := func(ds ...*crdt.Delta) string {
		t.Helper()
		body, err := json.Marshal(ds)
		if err != nil {
			t.Fatal(err)
		}
		return string(mustDo(t, s, 200, "POST", "/crdt/delta", ctJSON, string(body)).body)
	}
	mustDo(t, s, 201, "POST", "/snapshots/add/own", ctJSON, `{}`) // this replica is one of the five
	now := crdt.MakeTimestamp(time.Now().UnixMilli(), 0)

	// Row 4: twenty minted replicas, room for four.
	var minted []*crdt.Delta
	for i := range 20 {
		minted = append(minted, signedAdd(t, fmt.Sprintf("m%d", i), now))
	}
	if got := post(minted...); got != `{"new":4,"duplicate":0,"waiting":0,"refused":16}`+"\n" {
		t.Fatalf("twenty minted replicas: %s", got)
	}

	// Row 13: the node's own replica and a live foreign one at 2^63,
	// unsigned.
	live := minted[0].Dot.Replica
	for _, r := range []crdt.ReplicaID{n.ReplicaID(), live} {
		d, err := crdt.AddDelta(crdt.Key{Collection: "snapshots", ID: "gap"}, nil, crdt.Document{"v": []byte("1")}, crdt.Dot{Replica: r, Counter: 1 << 63}, now)
		if err != nil {
			t.Fatal(err)
		}
		if got := post(d); !strings.Contains(got, `"new":0`) || !strings.Contains(got, `"refused":1`) {
			t.Fatalf("%s at 2^63, unsigned: %s", r, got)
		}
	}
	seen, applied := n.Contexts()
	for _, c := range []*crdt.Context{seen, applied} {
		if c.Max(live) != 1 || len(c.Cloud()) != 0 {
			t.Fatalf("after a forged gap the context holds %s up to %d, cloud %v", live, c.Max(live), c.Cloud())
		}
	}

	// Row 14: year 9999, validly signed (on a second node: the first has
	// no room for another replica).
	n2 := newNode(t, func(c *node.Config) { c.Key = key; c.MaxClockOffset = 2 * time.Second })
	s2 := newServer(t, n2, nil)
	far := signedAdd(t, "future", crdt.MakeTimestamp(crdt.MaxWallMillis, 0))
	body, err := json.Marshal([]*crdt.Delta{far})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(mustDo(t, s2, 200, "POST", "/crdt/delta", ctJSON, string(body)).body); !strings.Contains(got, `"new":1`) {
		t.Fatalf("a signed far-future delta: %s", got)
	}
	sub := n2.Subscribe(1)
	defer sub.Close()
	mustDo(t, s2, 201, "POST", "/snapshots/add/mine", ctJSON, `{}`)
	c := <-sub.C
	if limit := time.Now().Add(2 * time.Second).UnixMilli(); c.Delta.TS.Wall() > limit {
		t.Fatalf("a local write after a year-9999 delta is stamped %s, past the wall clock plus MaxClockOffset", c.Delta.TS)
	}
	st := string(mustDo(t, s2, 200, "GET", "/status", "", "").body)
	if !strings.Contains(st, `"clock_ahead":1`) {
		t.Fatalf("/status does not count the far-future timestamp: %s", st)
	}
	mustDo(t, s, 201, "POST", "/snapshots/add/still-writing", ctJSON, `{}`)
}

// Issue 9, row 3, through POST /crdt/state on a signed node: a crafted
// state (a header and a trailer, no items) whose seen context claims a
// live keyed replica's operations far beyond what the node applied,
// without that replica's signed head, is refused whole; the node's items
// stay, and the replica's next operation still joins instead of being
// taken as seen.
func TestAPI_CraftedStateClaimingAReplicasFutureIsRefused(t *testing.T) {
	_, nodeKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	n := newNode(t, func(c *node.Config) { c.Key = nodeKey })
	s := newServer(t, n, nil)
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	live, err := crdt.NewKeyedReplicaID(pub, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := crdt.MakeTimestamp(time.Now().UnixMilli(), 0)
	prev := crdt.ChainStart(live)
	liveAdd := func(counter uint64, id string) *crdt.Delta {
		d, err := crdt.AddDelta(crdt.Key{Collection: "snapshots", ID: id}, nil, crdt.Document{"v": []byte("1")}, crdt.Dot{Replica: live, Counter: counter}, now)
		if err != nil {
			t.Fatal(err)
		}
		d.Proof = crdt.Proof{Prev: prev, Split: true}
		prev = d.Proof.Next(d, nil)
		d.Proof.Sig = crdt.SignHead(key, live, counter, prev)
		return d
	}
	post := func(ds ...*crdt.Delta) string {
		t.Helper()
		body, err := json.Marshal(ds)
		if err != nil {
			t.Fatal(err)
		}
		return string(mustDo(t, s, 200, "POST", "/crdt/delta", ctJSON, string(body)).body)
	}
	if got := post(liveAdd(1, "first")); !strings.Contains(got, `"new":1`) {
		t.Fatalf("the live replica's first add: %s", got)
	}
	mustDo(t, s, 201, "POST", "/snapshots/add/mine", ctJSON, `{}`)

	claim := crdt.NewContext()
	for c := uint64(1); c <= 1000; c++ {
		claim.Add(crdt.Dot{Replica: live, Counter: c})
	}
	enc, err := crdt.EncodeContext(claim)
	if err != nil {
		t.Fatal(err)
	}
	frame := func(m map[int]any) []byte {
		b, err := cbor.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return append(binary.AppendUvarint(nil, uint64(len(b))), b...)
	}
	state := append(frame(map[int]any{1: 1, 2: crdt.FormatVersion, 3: "intruder", 4: enc, 5: enc}), frame(map[int]any{1: 3})...)
	res := mustDo(t, s, 400, "POST", "/crdt/state", ctState, string(state))
	if !strings.Contains(string(res.body), "carries no head") {
		t.Fatalf("a state claiming %s up to 1000: %s", live, res.body)
	}
	for _, id := range []string{"first", "mine"} {
		mustDo(t, s, 200, "GET", "/snapshots/"+id, "", "")
	}
	if got := post(liveAdd(2, "second")); !strings.Contains(got, `"new":1`) {
		t.Fatalf("the live replica's next add after the crafted state: %s", got)
	}
	mustDo(t, s, 200, "GET", "/snapshots/second", "", "")
}
