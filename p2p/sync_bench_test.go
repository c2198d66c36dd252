package p2p

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
)

// BenchmarkSyncRoundBytes: the bytes one anti-entropy round moves (sent
// and received by the puller) between two peers whose applied contexts
// name 100,000 replicas (one add each, applied before they meet): when
// nothing differs, when the responder holds one delta of one more
// replica, and the same two through sync/1 (the whole-context exchange
// of older releases) for comparison. It reports bytes/round; ns/op is
// the round's time.
func BenchmarkSyncRoundBytes(b *testing.B) {
	const replicas = 100_000
	ncfg := node.DefaultConfig()
	ncfg.MaxReplicas = 2 * replicas
	cfg := testConfig(b)
	cfg.AntiEntropyInterval = time.Hour
	resp := startUnsignedPeer(b, cfg, &ncfg)
	cfg = testConfig(b)
	cfg.AntiEntropyInterval = time.Hour
	puller := startUnsignedPeer(b, cfg, &ncfg)
	applyMadeUp(b, resp.n, "r", replicas)
	applyMadeUp(b, puller.n, "r", replicas)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := puller.p.Connect(ctx, tcpAddr(b, resp)); err != nil {
		b.Fatal(err)
	}
	waitFor(b, time.Minute, "the pulls at connect", func() bool {
		return resp.p.Stats().Rounds >= 1 && puller.p.Stats().Rounds >= 1
	})
	late := 0
	round := func(b *testing.B, differ bool) {
		var total uint64
		for range b.N {
			if differ {
				b.StopTimer()
				late++
				if res, err := resp.n.ApplyDeltas(ctx, []*crdt.Delta{madeUp(b, "late-"+strconv.Itoa(late))}); err != nil || res.New != 1 {
					b.Fatalf("apply: %+v %v", res, err)
				}
				b.StartTimer()
			}
			before := syncBytes(puller)
			if err := puller.p.Pull(ctx, resp.p.ID()); err != nil {
				b.Fatal(err)
			}
			total += syncBytes(puller) - before
			if differ && !has(puller.n, "late-"+strconv.Itoa(late)) {
				b.Fatal("the round did not bring the delta that differs")
			}
		}
		b.ReportMetric(float64(total)/float64(b.N), "bytes/round")
	}
	b.Run("sync2/equal", func(b *testing.B) { round(b, false) })
	b.Run("sync2/one-differs", func(b *testing.B) { round(b, true) })
	resp.p.h.RemoveStreamHandler(resp.p.proto2)
	waitFor(b, time.Minute, "the puller told that the responder no longer speaks sync/2", func() bool {
		ok, _ := puller.p.h.Peerstore().SupportsProtocols(resp.p.ID(), puller.p.proto2)
		return len(ok) == 0
	})
	b.Run("sync1/equal", func(b *testing.B) { round(b, false) })
	b.Run("sync1/one-differs", func(b *testing.B) { round(b, true) })
}
