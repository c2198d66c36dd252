package p2p

import (
	"context"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// Issue 9, rows 1 and 2, through gossip: a swarm peer publishes a delta
// claiming the target's own replica at counter 2^64-1 and a remove whose
// context names the target's next hundred writes. The target refuses the
// first (and reports a suspected fork), holds the second waiting, and goes
// on writing; its writes reach the other peer and none is erased.
func TestPeer_ForgedGossipBlocksNoWrites(t *testing.T) {
	ctx := context.Background()
	target := startPeer(t, testConfig(t), nil)
	gcfg := testConfig(t)
	gcfg.Bootstrap = target.p.Addrs()[:1]
	good := startPeer(t, gcfg, nil)
	add(t, target, "before")
	waitFor(t, 10*time.Second, "target and good converge", func() bool { return converged(t, target, good) })

	topic := rawTopic(t, rawHost(t), target)

	victim := target.n.ReplicaID()
	ts := crdt.MakeTimestamp(time.Now().UnixMilli(), 0)
	top, err := crdt.AddDelta(key("evil"), nil, doc(t, `{"evil":true}`), crdt.Dot{Replica: victim, Counter: math.MaxUint64}, ts)
	if err != nil {
		t.Fatal(err)
	}
	own := crdt.Dot{Replica: "attacker", Counter: 1}
	remove := &crdt.Delta{Dot: own, TS: ts, Op: crdt.OpRemove, Collection: "snapshots", ID: "after", Context: []crdt.Dot{own}}
	for c := uint64(2); c <= 101; c++ {
		remove.Context = append(remove.Context, crdt.Dot{Replica: victim, Counter: c})
	}
	slices.SortFunc(remove.Context, func(a, b crdt.Dot) int {
		if a.Less(b) {
			return -1
		}
		if b.Less(a) {
			return 1
		}
		return 0
	})
	var encs [][]byte
	for _, d := range []*crdt.Delta{top, remove} {
		b, err := crdt.EncodeDelta(d)
		if err != nil {
			t.Fatal(err)
		}
		encs = append(encs, b)
	}
	msg, err := encodeGossip(target.p.cfg.Network, encs)
	if err != nil {
		t.Fatal(err)
	}
	if err := topic.Publish(ctx, msg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the target refuses the forged delta and holds the remove", func() bool {
		st := target.n.Stats()
		return st.Fork != "" && st.DeltasRefused == 1 && st.Waiting == 1
	})

	add(t, target, "after")
	add(t, target, "after-2")
	waitFor(t, 10*time.Second, "the target's writes reach the good peer", func() bool {
		return has(good.n, "after") && has(good.n, "after-2")
	})
	for _, p := range []*testPeer{target, good} {
		if !has(p.n, "after") || has(p.n, "evil") {
			t.Fatalf("after the forged gossip: after=%v evil=%v", has(p.n, "after"), has(p.n, "evil"))
		}
	}
	if got := target.n.Stats().Counter; got != 3 {
		t.Fatalf("target counter %d after three writes", got)
	}
}
