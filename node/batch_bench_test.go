package node

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// BenchmarkReplicatedPuts makes b.N puts on a signed writer and replicates
// them to signed in-memory peers as gossip does: each message carries
// the writer's changes that are ready together (a commit group), in their
// binary encoding, which every peer decodes and applies. It reports the
// CPU time of the whole process (writer and peers) per put, the puts per
// commit and per message. Puts come one at a time, from 32 concurrent
// callers, or in Batch calls of 100.
func BenchmarkReplicatedPuts(b *testing.B) {
	for _, peers := range []int{2, 9} {
		for _, mode := range []struct {
			name           string
			callers, batch int
		}{
			{"single", 1, 1},
			{"single-32callers", 32, 1},
			{"batch100", 1, 100},
		} {
			b.Run(fmt.Sprintf("%s/peers=%d", mode.name, peers), func(b *testing.B) {
				benchReplicated(b, peers, mode.callers, mode.batch)
			})
		}
	}
}

func benchReplicated(b *testing.B, peers, callers, batch int) {
	ctx := context.Background()
	w := benchOpenMem(b, signedConfig(b))
	defer w.Close()
	rs := make([]*Node, peers)
	for i := range rs {
		rs[i] = benchOpenMem(b, signedConfig(b))
		defer rs[i].Close()
	}
	doc := mustDoc(b, benchDocJSON(0))
	sub := w.Subscribe(b.N + 1)
	defer sub.Close()
	msgs := 0
	relayed := make(chan error, 1)
	go func() { relayed <- relay(ctx, sub.C, rs, b.N, &msgs) }()

	before, cpu0 := w.Stats(), cpuTime()
	b.ResetTimer()
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			for i := c * batch; i < b.N; i += callers * batch {
				ops := make([]Op, 0, batch)
				for j := i; j < min(i+batch, b.N); j++ {
					ops = append(ops, Op{Kind: OpAdd, Key: key(benchColl, benchID(j)), Doc: doc})
				}
				var err error
				if batch == 1 {
					_, err = w.Add(ctx, ops[0].Key, ops[0].Doc)
				} else {
					_, err = w.Batch(ctx, ops)
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := <-relayed; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	after := w.Stats()
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/put")
	b.ReportMetric(float64(after.Ops-before.Ops)/float64(max(after.Commits-before.Commits, 1)), "puts/commit")
	b.ReportMetric(float64(b.N)/float64(max(msgs, 1)), "puts/msg")
}

// relay delivers want changes from the writer's subscription to every
// peer as p2p's gossip does: one message per run of changes that are
// ready together, up to 256 unless the run has not yet reached a signed
// delta (the last of its commit group), and counts the messages.
func relay(ctx context.Context, changes <-chan Change, peers []*Node, want int, msgs *int) error {
	timeout := time.After(10 * time.Minute)
	next := func(wait bool) (Change, bool, error) {
		if !wait {
			select {
			case c := <-changes:
				return c, true, nil
			default:
				return Change{}, false, nil
			}
		}
		select {
		case c := <-changes:
			return c, true, nil
		case <-timeout:
			return Change{}, false, fmt.Errorf("relay timed out")
		}
	}
	for got := 0; got < want; {
		var msg []Change
		for wait := true; wait || len(msg) < 256; {
			c, ok, err := next(wait)
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			msg = append(msg, c)
			wait = c.Delta.Proof.Sig == nil // the rest of its group is on its way
		}
		*msgs++
		got += len(msg)
		for _, p := range peers {
			ds := make([]*crdt.Delta, len(msg))
			for i, c := range msg {
				d, err := crdt.DecodeDelta(c.Encoded)
				if err != nil {
					return err
				}
				d.Proof = c.Delta.Proof
				ds[i] = d
			}
			res, err := p.ApplyDeltas(ctx, ds)
			if err != nil {
				return err
			}
			if res.New != len(ds) {
				return fmt.Errorf("a peer joined %+v of a message of %d", res, len(ds))
			}
		}
	}
	return nil
}

// cpuTime returns the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
