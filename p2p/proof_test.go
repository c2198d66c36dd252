package p2p

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
	"github.com/libp2p/go-libp2p/core/crypto"
)

// A replica's deltas forwarded by anti-entropy through a peer that keeps
// only the signature at the end of what it received: the sync stream cuts
// that run into frames, and the receiver holds each frame's unproven tail
// until the frame that proves it arrives. The writer is gone by then, so
// the forwarder is the only source.
func TestPeer_ForwardedRunsCutIntoFramesJoin(t *testing.T) {
	ctx := context.Background()
	a := startPeer(t, testConfig(t), nil)
	bcfg := testConfig(t)
	bcfg.Bootstrap = a.p.Addrs()[:1]
	b := startPeer(t, bcfg, nil)
	waitFor(t, 10*time.Second, "a and b connect", func() bool { return len(a.p.catalogPeers()) == 1 })
	pad := strings.Repeat("x", 500) // ~600-byte deltas: a 256 KiB frame holds ~400
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 250 {
				if _, err := a.n.Add(ctx, key(fmt.Sprintf("w%d-%03d", w, i)), doc(t, fmt.Sprintf(`{"pad":%q}`, pad))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	// Deadlines for a loaded machine: under -race with other jobs beside
	// it, 2000 signed writes and their gossip took over 30 s.
	waitFor(t, 2*time.Minute, "b has a's 2000 writes", func() bool { return converged(t, a, b) })
	a.close()

	ccfg := testConfig(t)
	ccfg.Bootstrap = b.p.Addrs()[:1]
	c := startPeer(t, ccfg, nil)
	waitFor(t, 2*time.Minute, "c has a's writes from b", func() bool {
		st := c.n.Stats()
		return st.Items["snapshots"] == 2000 && st.Waiting == 0
	})
	if st := c.n.Stats(); st.Unproven != 0 || st.DeltasRefused != 0 {
		t.Fatalf("c refused %d deltas (%d unproven)", st.DeltasRefused, st.Unproven)
	}
	if st := c.p.Stats(); st.SyncBytesReceived < 2*chunkBytes {
		t.Fatalf("c received %d sync bytes: fewer than two frames, nothing was cut", st.SyncBytesReceived)
	}
}

// A gossip message ends with a signed delta: the batch of a commit group
// whose signed last delta is still on its way waits for it, rather than
// leave receivers an unproven tail.
func TestGossipBatch_EndsWithTheGroupsSignature(t *testing.T) {
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	signed, enc := ownDelta(t, k, "s")
	open := *signed
	open.Proof.Sig = nil
	plain := *signed
	plain.Proof = crdt.Proof{}
	changes := make(chan node.Change, 1)
	var b gossipBatch
	b.add(node.Change{Seq: 1, Delta: &open, Encoded: enc, Local: true})
	go func() {
		time.Sleep(50 * time.Millisecond) // the commit goroutine, preempted mid-group
		changes <- node.Change{Seq: 2, Delta: signed, Encoded: enc, Local: true}
	}()
	b.collect(changes, nil)
	if len(b.deltas) != 2 || b.last != 2 || b.open {
		t.Fatalf("the batch stopped before its group's signature: %d deltas, last seq %d, open %v", len(b.deltas), b.last, b.open)
	}
	// Without proofs (an unsigned node), nothing is waited for.
	var u gossipBatch
	u.add(node.Change{Seq: 1, Delta: &plain, Encoded: enc, Local: true})
	u.collect(make(chan node.Change), nil)
	if len(u.deltas) != 1 {
		t.Fatalf("unsigned batch: %d deltas", len(u.deltas))
	}
}
