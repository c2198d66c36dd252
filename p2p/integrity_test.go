package p2p

import (
	"context"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// Issue 9, rows 1, 2 and 5, through gossip: a swarm peer publishes a delta
// claiming the target's own replica at counter 2^64-1, a delta of a
// replica that names no key, and, under its own keyed replica with a valid
// proof, a remove whose context names the target's next hundred writes.
// The target rejects the first before it is joined or forwarded (a peer
// publishes only its own replica's deltas), refuses the second (no proof
// of origin), holds the third waiting, and goes on writing; its writes
// reach the other peer and none is erased.
func TestPeer_ForgedGossipBlocksNoWrites(t *testing.T) {
	ctx := context.Background()
	target := startPeer(t, testConfig(t), nil)
	gcfg := testConfig(t)
	gcfg.Bootstrap = target.p.Addrs()[:1]
	good := startPeer(t, gcfg, nil)
	add(t, target, "before")
	waitFor(t, 10*time.Second, "target and good converge", func() bool { return converged(t, target, good) })

	h := rawHost(t)
	topic := rawTopic(t, h, target)
	publish := func(ds ...*crdt.Delta) {
		t.Helper()
		var encs, proofs [][]byte
		for _, d := range ds {
			enc, err := crdt.EncodeDelta(d)
			if err != nil {
				t.Fatal(err)
			}
			encs, proofs = appendDelta(encs, proofs, d, enc)
		}
		msg, err := encodeGossip(target.p.cfg.Network, encs, proofs)
		if err != nil {
			t.Fatal(err)
		}
		if err := topic.Publish(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}

	victim := target.n.ReplicaID()
	ts := crdt.MakeTimestamp(time.Now().UnixMilli(), 0)
	unkeyed, err := crdt.AddDelta(key("unkeyed"), nil, doc(t, `{"n":1}`), crdt.Dot{Replica: "attacker", Counter: 1}, ts)
	if err != nil {
		t.Fatal(err)
	}
	publish(unkeyed)
	waitFor(t, 10*time.Second, "the delta without proof refused", func() bool { return target.n.Stats().Unproven == 1 })

	// The attacker's own replica, its first delta: a remove of "after"
	// whose context names the target's next writes.
	first, _ := ownDelta(t, h.Peerstore().PrivKey(h.ID()), "placeholder")
	own := first.Dot
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
	enc, err := crdt.EncodeDelta(remove)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := h.Peerstore().PrivKey(h.ID()).Raw()
	if err != nil {
		t.Fatal(err)
	}
	remove.Proof.Prev = crdt.ChainStart(own.Replica)
	remove.Proof.Sig = crdt.SignHead(raw, own.Replica, 1, crdt.ChainNext(remove.Proof.Prev, enc))
	publish(remove)
	waitFor(t, 10*time.Second, "the target holds the remove waiting", func() bool { return target.n.Stats().Waiting == 1 })

	top, err := crdt.AddDelta(key("evil"), nil, doc(t, `{"evil":true}`), crdt.Dot{Replica: victim, Counter: math.MaxUint64}, ts)
	if err != nil {
		t.Fatal(err)
	}
	rejected := target.p.Stats().Rejected
	publish(top) // last: the target disconnects whoever forwards it
	waitFor(t, 10*time.Second, "the delta of the target's replica rejected", func() bool { return target.p.Stats().Rejected > rejected })

	add(t, target, "after")
	add(t, target, "after-2")
	waitFor(t, 10*time.Second, "the target's writes reach the good peer", func() bool {
		return has(good.n, "after") && has(good.n, "after-2")
	})
	for _, p := range []*testPeer{target, good} {
		if !has(p.n, "after") || has(p.n, "evil") || has(p.n, "unkeyed") {
			t.Fatalf("after the forged gossip: after=%v evil=%v unkeyed=%v", has(p.n, "after"), has(p.n, "evil"), has(p.n, "unkeyed"))
		}
	}
	if st := target.n.Stats(); st.Counter != 3 || st.Fork != "" {
		t.Fatalf("target counter %d after three writes, fork %q", st.Counter, st.Fork)
	}
}
