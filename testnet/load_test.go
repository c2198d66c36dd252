package testnet

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const testColl = "snapshots"

// load runs recorded writers against a cluster: each writer is one
// goroutine bound to one peer, drawing from its own random stream.
type load struct {
	c      *Cluster
	seed   int64
	maxOps int64
	ops    atomic.Int64
	wg     sync.WaitGroup
	mu     sync.Mutex
	holds  map[int]*sync.RWMutex // per peer: writers read-lock around each op
}

func newLoad(c *Cluster, seed int64, maxOps int64) *load {
	return &load{c: c, seed: seed, maxOps: maxOps, holds: map[int]*sync.RWMutex{}}
}

func (l *load) hold(p int) *sync.RWMutex {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.holds[p] == nil {
		l.holds[p] = &sync.RWMutex{}
	}
	return l.holds[p]
}

// pause blocks new writes on peer p and waits for those in flight; resume
// lets them go on.
func (l *load) pause(p int)  { l.hold(p).Lock() }
func (l *load) resume(p int) { l.hold(p).Unlock() }

// ids returns n ids with a prefix.
func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return out
}

// start runs a writer on peer p over ids until ctx ends or the load's
// operation budget is spent: half adds, a quarter puts, a quarter removes,
// with 0-2 ms between operations. If stopOnDown, it returns at the first
// write that got no answer; otherwise it retries every 50 ms.
func (l *load) start(ctx context.Context, p int, name string, keys []string, stopOnDown bool) {
	rng := Rand(l.seed, name)
	cl := l.c.Client(p)
	h := l.hold(p)
	// Requests outlive the loop's context, so that its end does not turn
	// writes in flight into unknown outcomes; RequestTimeout bounds them.
	rctx := context.WithoutCancel(ctx)
	l.wg.Go(func() {
		for n := 0; ctx.Err() == nil && l.ops.Add(1) <= l.maxOps; n++ {
			id := keys[rng.IntN(len(keys))]
			doc := map[string]any{"peer": p, "writer": name, "n": n}
			h.RLock()
			if ctx.Err() != nil {
				h.RUnlock()
				return
			}
			var r Result
			switch x := rng.IntN(100); {
			case x < 50:
				r = cl.Add(rctx, testColl, id, doc)
			case x < 75:
				r = cl.Put(rctx, testColl, id, doc)
			default:
				r = cl.Remove(rctx, testColl, id)
			}
			h.RUnlock()
			wait := time.Duration(rng.IntN(3)) * time.Millisecond
			if r.Down() {
				if stopOnDown {
					return
				}
				wait = 50 * time.Millisecond
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
	})
}

func (l *load) wait() { l.wg.Wait() }

// checkAll runs the set checker over the whole history against st and
// fails t with the report on any anomaly.
func checkAll(t *testing.T, c *Cluster, st State, keys func(Key) bool) {
	t.Helper()
	rep := Check(c.History().Record(), st, keys)
	t.Logf("check: %s", rep.Summary())
	if !rep.OK() {
		t.Errorf("set checker:\n%s", rep)
	}
}

// ctxFor returns a context bounded by d and by the test's deadline.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

// sleepCtx sleeps d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// converge waits (at most d) for the live peers to converge and fails t
// otherwise; it logs how long it took.
func converge(t *testing.T, c *Cluster, d time.Duration) State {
	t.Helper()
	t0 := time.Now()
	st, err := c.AwaitConverged(ctxFor(t, d))
	if err != nil {
		t.Fatalf("after %v: %v", time.Since(t0).Round(time.Millisecond), err)
	}
	t.Logf("converged in %v: %d items on peers %v", time.Since(t0).Round(time.Millisecond), len(st), c.Live())
	return st
}
