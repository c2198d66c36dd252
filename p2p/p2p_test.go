package p2p

import (
	"context"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"sync"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// TestPeer_ThreeNodesConverge: three peers joined by a bootstrap list
// converge after writes on all three, including concurrent conflicting
// metadata writes, with the same winner everywhere.
func TestPeer_ThreeNodesConverge(t *testing.T) {
	ctx := context.Background()
	a := startPeer(t, testConfig(t), nil)
	cfg := testConfig(t)
	cfg.Bootstrap = a.p.Addrs()[:1]
	b := startPeer(t, cfg, nil)
	cfg = testConfig(t)
	cfg.Bootstrap = a.p.Addrs()[1:2] // QUIC
	c := startPeer(t, cfg, nil)
	all := []*testPeer{a, b, c}
	waitFor(t, 10*time.Second, "peers connected", func() bool { return len(a.p.h.Network().Peers()) == 2 })

	if _, err := a.n.Add(ctx, key("shared"), doc(t, `{"status":"new"}`)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "shared item everywhere", func() bool { return converged(t, all...) })

	var wg sync.WaitGroup
	for i, p := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				if _, err := p.n.Add(ctx, key(fmt.Sprintf("p%d-%d", i, j)), doc(t, `{"n":1}`)); err != nil {
					t.Error(err)
				}
			}
			if _, err := p.n.Replace(ctx, key("shared"), doc(t, fmt.Sprintf(`{"status":"from-%d"}`, i))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	waitFor(t, 20*time.Second, "convergence", func() bool { return converged(t, all...) })
	var winner string
	for _, p := range all {
		it, err := p.n.Get(ctx, key("shared"))
		if err != nil {
			t.Fatal(err)
		}
		if w := string(it.Metadata["status"]); winner == "" {
			winner = w
		} else if w != winner {
			t.Fatalf("different winners: %s vs %s", w, winner)
		}
	}
	if st := a.n.Stats(); st.Items["snapshots"] != 151 {
		t.Fatalf("items: %d, want 151", st.Items["snapshots"])
	}
	if a.p.Stats().Published == 0 || b.p.Stats().Received == 0 {
		t.Fatalf("gossip carried nothing: a %+v, b %+v", a.p.Stats(), b.p.Stats())
	}
}

// TestPeer_LateNodeCatchesUpWithWhatItMissed: a node that was down while
// 5,000 operations happened elsewhere catches up after it starts, and is
// sent roughly what it missed rather than the whole catalog.
func TestPeer_LateNodeCatchesUpWithWhatItMissed(t *testing.T) {
	ctx := context.Background()
	a := startPeer(t, testConfig(t), nil)
	cfg := testConfig(t)
	cfg.Bootstrap = a.p.Addrs()[:1]
	b := startPeer(t, cfg, nil)
	// A catalog both hold before c appears: c must not be sent this twice.
	inParallel(t, 1000, func(i int) error {
		_, err := a.n.Add(ctx, key(fmt.Sprintf("old%04d", i)), doc(t, `{"n":1}`))
		return err
	})
	waitFor(t, 2*time.Minute, "a and b converge", func() bool { return converged(t, a, b) })

	// c joins and catches up, then goes down (its peer closes, its node
	// stays) while 5000 operations happen on b.
	ccfg := testConfig(t)
	ccfg.Bootstrap = a.p.Addrs()[:1]
	c := startPeer(t, ccfg, nil)
	waitFor(t, 2*time.Minute, "c catches up the first time", func() bool { return converged(t, a, b, c) })
	c.p.Close()
	c.p = nil
	inParallel(t, 2500, func(i int) error { // each an add, then a patch
		k := key(fmt.Sprintf("new%04d", i))
		if _, err := b.n.Add(ctx, k, doc(t, `{"n":2}`)); err != nil {
			return err
		}
		_, err := b.n.Patch(ctx, k, doc(t, `{"m":3}`))
		return err
	})
	before := c.n.Stats().DeltasNew
	p, err := New(ctx, c.n, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	c.p = p
	waitFor(t, 2*time.Minute, "c catches up after its downtime", func() bool { return converged(t, a, b, c) })
	got := c.n.Stats().DeltasNew - before
	if got < 5000 || got > 5500 {
		t.Fatalf("c joined %d new deltas to catch up on 5000 missed operations", got)
	}
	st := c.p.Stats()
	if st.FullStatesReceived != 0 {
		t.Fatalf("c needed a full state although the logs cover the gap: %+v", st)
	}
	// c was sent what it missed (possibly by two peers at once), not the
	// 1000-item catalog again plus the 5000.
	if st.SyncDeltasReceived > 2*5000+100 {
		t.Fatalf("c received %d deltas by anti-entropy for 5000 missed", st.SyncDeltasReceived)
	}
	t.Logf("catch-up: %d deltas joined, %d received by anti-entropy, %d sync bytes", got, st.SyncDeltasReceived, st.SyncBytesReceived)

	// The per-round histogram tells the same: its rounds add up to what
	// the counters say, and none received 10,000 deltas or more.
	reg := prometheus.NewRegistry()
	reg.MustRegister(c.p.Collector())
	var h *dto.Histogram
	waitFor(t, 10*time.Second, "the round histogram to agree with the counters", func() bool {
		before := c.p.Stats() // pulls keep running: read around the gathering
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "catalog_p2p_antientropy_round_deltas" {
				h = mf.GetMetric()[0].GetHistogram()
			}
		}
		after := c.p.Stats()
		return before.Rounds == after.Rounds && h != nil &&
			h.GetSampleCount() == after.Rounds && uint64(h.GetSampleSum()) == after.SyncDeltasReceived
	})
	for _, b := range h.GetBucket() {
		if b.GetUpperBound() == 10_000 && b.GetCumulativeCount() != h.GetSampleCount() {
			t.Fatalf("a round received 10,000 deltas or more: %v", h)
		}
	}
}

// TestPeer_FullStateWhenLogTrimmed: a node whose peers' logs no longer
// cover its gap gets a full-state transfer and converges.
func TestPeer_FullStateWhenLogTrimmed(t *testing.T) {
	ctx := context.Background()
	ncfg := nodeConfigWithLog(10)
	a := startPeer(t, testConfig(t), &ncfg)
	for i := range 100 {
		if _, err := a.n.Add(ctx, key(fmt.Sprintf("i%03d", i)), doc(t, `{"n":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.n.Remove(ctx, key("i050")); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Bootstrap = a.p.Addrs()[:1]
	b := startPeer(t, cfg, nil)
	waitFor(t, 20*time.Second, "b converges", func() bool { return converged(t, a, b) })
	if a.p.Stats().FullStatesSent == 0 || b.p.Stats().FullStatesReceived == 0 {
		t.Fatalf("no full-state transfer: a %+v b %+v", a.p.Stats(), b.p.Stats())
	}
	if _, err := b.n.Get(ctx, key("i050")); err == nil {
		t.Fatal("the removed item came back")
	}
}

func TestPeer_StatusReportsPeers(t *testing.T) {
	a := startPeer(t, testConfig(t), nil)
	cfg := testConfig(t)
	cfg.Bootstrap = a.p.Addrs()[:1]
	b := startPeer(t, cfg, nil)
	if _, err := b.n.Add(context.Background(), key("x"), crdt.Document{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "converged and contexts exchanged", func() bool {
		ps := a.p.Peers()
		return converged(t, a, b) && len(ps) == 1 && ps[0].Known && ps[0].Ahead == 0 && ps[0].Behind == 0
	})
	if ps := a.p.Peers(); ps[0].ID != b.p.ID().String() || len(ps[0].Addrs) == 0 {
		t.Fatalf("status: %+v", ps)
	}
}
