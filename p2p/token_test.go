package p2p

import (
	"context"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// TestPeer_WaitingReaderPullsAtOnce: a reader waiting for writes its node
// has not applied (node.WaitApplied, a read with a causal token) makes
// the peer pull from a connected peer at once, not at its next round.
// The write is c's, joined by a only (gossip carries a node's own writes,
// not the ones it received), and b's rounds are an hour apart, so only
// that pull can bring it to b.
func TestPeer_WaitingReaderPullsAtOnce(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	cfg.AntiEntropyInterval = time.Hour
	a := startUnsignedPeer(t, cfg, nil)
	cfg = testConfig(t)
	cfg.AntiEntropyInterval = time.Hour
	b := startUnsignedPeer(t, cfg, nil)
	connectPeers(t, b, a)
	waitFor(t, 10*time.Second, "the pulls on connecting end", func() bool {
		return b.p.Stats().Rounds >= 1 && pullsIdle(a) && pullsIdle(b)
	})
	rounds := b.p.Stats().Rounds

	c := startNodeOnly(t)
	it, err := c.Add(ctx, key("from-c"), doc(t, `{"v":1}`))
	if err != nil {
		t.Fatal(err)
	}
	page, err := c.DeltasSince(ctx, 0, 10, true)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := a.n.ApplyDeltas(ctx, page.Deltas); err != nil || res.New != 1 {
		t.Fatalf("a joins c's write: %+v, %v", res, err)
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := b.n.WaitApplied(wctx, crdt.Token{it.Dot.Replica: it.Dot.Counter}); err != nil {
		t.Fatalf("b waiting for c's write: %v", err)
	}
	if !has(b.n, "from-c") {
		t.Fatal("WaitApplied returned before b holds the write")
	}
	// The pull's round is counted once it ends, after it applied the write.
	waitFor(t, 10*time.Second, "b's round that brought the write", func() bool { return b.p.Stats().Rounds > rounds })
}
