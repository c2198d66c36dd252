package crdt_test

import (
	"fmt"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// Two replicas of the catalog: node1 adds a snapshot, both then PUT its
// metadata concurrently, and after exchanging deltas both resolve the
// conflict the same way — the later timestamp wins — while the losing write
// stays visible as a conflict.
func Example() {
	type node struct {
		id    crdt.ReplicaID
		n     uint64
		clock crdt.Clock
		state *crdt.State
	}
	node1 := &node{id: "node1", state: crdt.NewState()}
	node2 := &node{id: "node2", state: crdt.NewState()}
	next := func(nd *node, physMillis int64) (crdt.Dot, crdt.Timestamp) {
		nd.n++
		return crdt.Dot{Replica: nd.id, Counter: nd.n}, nd.clock.Now(physMillis)
	}
	// receive decodes a delta as it comes off the wire and joins it.
	receive := func(nd *node, wire []byte, physMillis int64) {
		d, err := crdt.DecodeDelta(wire)
		if err != nil {
			panic(err)
		}
		nd.clock.Observe(d.TS, physMillis)
		nd.state.Apply(d)
	}
	send := func(d *crdt.Delta) []byte {
		b, err := crdt.EncodeDelta(d)
		if err != nil {
			panic(err)
		}
		return b
	}
	must := func(d *crdt.Delta, err error) *crdt.Delta {
		if err != nil {
			panic(err)
		}
		return d
	}
	parse := func(s string) crdt.Document {
		d, err := crdt.ParseDocument([]byte(s))
		if err != nil {
			panic(err)
		}
		return d
	}
	const t0 = 1_701_945_045_000 // 2023-12-07T10:30:45Z
	k := crdt.Key{Collection: "snapshots", ID: "snap1"}

	// node1 adds snap1; the delta reaches node2.
	dot, ts := next(node1, t0)
	add := must(crdt.AddDelta(k, nil, parse(`{"size":1024,"cluster":"cluster-a"}`), dot, ts))
	node1.state.Apply(add)
	receive(node2, send(add), t0)

	// Concurrent PUTs: node2's clock reads 5 ms later.
	dot, ts = next(node1, t0+10)
	put1 := must(crdt.ReplaceDelta(k, node1.state.Items[k], parse(`{"size":1024,"status":"completed"}`), dot, ts))
	node1.state.Apply(put1)
	dot, ts = next(node2, t0+15)
	put2 := must(crdt.ReplaceDelta(k, node2.state.Items[k], parse(`{"size":1024,"status":"failed"}`), dot, ts))
	node2.state.Apply(put2)

	// Exchange.
	receive(node2, send(put1), t0+20)
	receive(node1, send(put2), t0+20)

	for _, nd := range []*node{node1, node2} {
		it := nd.state.Items[k]
		w, _ := it.Field("status")
		fmt.Printf("%s: status=%s (written by %s at %s)\n", nd.id, w.Value, w.Dot, w.TS)
		for _, lost := range it.Conflicts()["status"] {
			fmt.Printf("%s: losing write %s by %s\n", nd.id, lost.Value, lost.Dot)
		}
	}
	fmt.Println("converged:", node1.state.Equal(node2.state))
	// Output:
	// node1: status="failed" (written by node2:1 at 2023-12-07T10:30:45.015Z/0)
	// node1: losing write "completed" by node1:2
	// node2: status="failed" (written by node2:1 at 2023-12-07T10:30:45.015Z/0)
	// node2: losing write "completed" by node1:2
	// converged: true
}
