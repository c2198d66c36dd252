package node

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// benchIndexItems is the size of the catalog BenchmarkIndexedQuery reads:
// 100,000 by default; the million-item run of docs/BENCHMARKS.md passes
// -index-items 1000000.
var benchIndexItems = flag.Int("index-items", 100_000, "items in the catalog of BenchmarkIndexedQuery")

// benchIndexes are the three indexes of the index benchmarks.
var benchIndexes = map[string][]string{benchColl: {"cluster", "size", "created"}}

// benchIndexDoc is item i's ~200-byte document: 1% of the items (every
// 100th) are in cluster "cluster-hit", the others spread over 50
// clusters; sizes are distinct, so a size range of 1% of the span holds 1%
// of the items; creation times are one second apart.
func benchIndexDoc(i int) crdt.Document {
	cluster := fmt.Sprintf("cluster-%02d", i%50)
	if i%100 == 0 {
		cluster = "cluster-hit"
	}
	created := time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second).Format(time.RFC3339)
	return crdt.Document{
		"size":    []byte(fmt.Sprint(1<<30 + i)),
		"created": []byte(`"` + created + `"`),
		"cluster": []byte(`"` + cluster + `"`),
		"status":  []byte(`"completed"`),
		"region":  []byte(`"eu-west-1"`),
		"owner":   []byte(`"team-storage"`),
		"tier":    []byte(`"gold"`),
		"note":    []byte(`"a snapshot of the volume of a catalog benchmark item"`),
	}
}

var (
	benchIndexOnce sync.Once
	benchIndexNode *Node
)

// benchIndexedCatalog returns an in-memory node with the three indexes
// holding *benchIndexItems items, written in batches of MaxBatchOps, built
// once per process.
func benchIndexedCatalog(b *testing.B) *Node {
	b.Helper()
	benchIndexOnce.Do(func() {
		benchSetup(func() {
			start := time.Now()
			cfg := testConfig(nil)
			cfg.Indexes = benchIndexes
			n := benchOpenMem(b, cfg) // lives until the process ends
			count := *benchIndexItems
			ops := make([]Op, 0, MaxBatchOps)
			for i := 0; i < count; i += MaxBatchOps {
				ops = ops[:0]
				for j := i; j < min(i+MaxBatchOps, count); j++ {
					ops = append(ops, Op{Kind: OpAdd, Key: key(benchColl, benchID(j)), Doc: benchIndexDoc(j)})
				}
				if _, err := n.Batch(context.Background(), ops); err != nil {
					b.Fatal(err)
				}
			}
			benchIndexNode = n
			b.Logf("built a catalog of %d items with 3 indexes in %v", count, time.Since(start).Round(time.Millisecond))
		})
	})
	if benchIndexNode == nil {
		b.Fatal("catalog not built")
	}
	return benchIndexNode
}

// BenchmarkIndexedQuery reads pages of 100 through an index, over
// *benchIndexItems items: "eq-none" an equality that matches nothing,
// "eq-1pct" and "range-1pct" an equality and a size range that match 1%
// of the items, every page of them; "scan-none", for comparison, an
// equality on a field without an index that matches nothing. It reports
// the latency per page, p50 and p99, and the items read per page.
func BenchmarkIndexedQuery(b *testing.B) {
	count := *benchIndexItems
	lo := 1<<30 + count/2
	for _, bc := range []struct {
		name, q string
		want    int
		scan    bool
	}{
		{"scan-none", "status=none", 0, true},
		{"eq-none", "cluster=cluster-none", 0, false},
		{"eq-1pct", "cluster=cluster-hit", count / 100, false},
		{"range-1pct", fmt.Sprintf("size>=%d size<%d", lo, lo+count/100), count / 100, false},
		{"time-1pct", fmt.Sprintf("created>=%s created<%s", benchCreated(count/2), benchCreated(count/2+count/100)), count / 100, false},
	} {
		b.Run(fmt.Sprintf("%s-%d", bc.name, count), func(b *testing.B) {
			n := benchIndexedCatalog(b)
			ctx := context.Background()
			var pages []time.Duration
			read, got := 0, 0
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				got = 0
				for cursor := ""; ; {
					start := time.Now()
					p, err := n.Query(ctx, benchColl, bc.q, 100, cursor)
					pages = append(pages, time.Since(start))
					if err != nil {
						b.Fatal(err)
					}
					if p.Scanned != bc.scan {
						b.Fatalf("query %q: scanned %v", bc.q, p.Scanned)
					}
					read += p.Read
					got += len(p.Items)
					if cursor = p.NextCursor; cursor == "" {
						break
					}
				}
				if got != bc.want {
					b.Fatalf("query %q returned %d items, want %d", bc.q, got, bc.want)
				}
			}
			b.StopTimer()
			slices.Sort(pages)
			b.ReportMetric(float64(pages[len(pages)/2].Microseconds())/1e3, "p50-ms/page")
			b.ReportMetric(float64(pages[len(pages)*99/100].Microseconds())/1e3, "p99-ms/page")
			b.ReportMetric(float64(read)/float64(len(pages)), "read/page")
		})
	}
}

func benchCreated(i int) string {
	return time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second).Format(time.RFC3339)
}

// BenchmarkIndexedAdd: durable adds of distinct ids with ~200-byte
// documents from 32 concurrent callers, as BenchmarkAdd/durable-32, with
// no index and with three; the memory variants are the CPU's ceiling.
func BenchmarkIndexedAdd(b *testing.B) {
	for _, bc := range []struct {
		name    string
		durable bool
		indexes map[string][]string
	}{
		{"durable-none", true, nil},
		{"durable-3", true, benchIndexes},
		{"memory-none", false, nil},
		{"memory-3", false, benchIndexes},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := testConfig(nil)
			cfg.Indexes = bc.indexes
			open := benchOpenMem
			if bc.durable {
				open = func(tb testing.TB, cfg Config) *Node { return openDir(tb, b.TempDir(), cfg) }
			}
			n := open(b, cfg)
			defer n.Close()
			b.ReportAllocs()
			b.ResetTimer()
			benchAddAll(b, n, b.N, 32, benchIndexDoc)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "adds/s")
		})
	}
}

// BenchmarkIndexedAddPaired measures the write-rate ratio the target is
// about under a shared machine's changing load: two nodes, one without
// index and one with three, take rounds of 1,000 adds of new ids (32
// callers) in turn, and each node's rate is its adds over its own time.
// b.N is the number of rounds. "durable" is on fsynced on-disk stores,
// "memory" on in-memory ones (the CPU's share).
func BenchmarkIndexedAddPaired(b *testing.B) {
	b.Run("durable", func(b *testing.B) { benchAddPaired(b, true) })
	b.Run("memory", func(b *testing.B) { benchAddPaired(b, false) })
}

func benchAddPaired(b *testing.B, durable bool) {
	const round = 1000
	open := func(indexes map[string][]string) *Node {
		cfg := testConfig(nil)
		cfg.Indexes = indexes
		if !durable {
			return benchOpenMem(b, cfg)
		}
		return openDir(b, b.TempDir(), cfg)
	}
	nodes := [2]*Node{open(nil), open(benchIndexes)}
	defer nodes[0].Close()
	defer nodes[1].Close()
	var took [2]time.Duration
	b.ResetTimer()
	for r := range b.N {
		for k := range 2 {
			i := (r + k) % 2 // alternate which goes first
			start := time.Now()
			benchAddRange(b, nodes[i], r*round, (r+1)*round, 32)
			took[i] += time.Since(start)
		}
	}
	b.StopTimer()
	none, three := float64(b.N*round)/took[0].Seconds(), float64(b.N*round)/took[1].Seconds()
	b.ReportMetric(none, "adds/s-none")
	b.ReportMetric(three, "adds/s-3")
	b.ReportMetric(three/none, "ratio")
}

// benchAddRange adds items [from, to) with benchIndexDoc from `callers`
// concurrent goroutines.
func benchAddRange(b *testing.B, n *Node, from, to, callers int) {
	var next atomic.Int64
	next.Store(int64(from))
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < to; i = int(next.Add(1) - 1) {
				if _, err := n.Add(context.Background(), key(benchColl, benchID(i)), benchIndexDoc(i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkIndexedCount counts matches over *benchIndexItems items:
// "eq-none", "eq-1pct" (cluster-hit) and "eq-2pct" (one of the 50 other
// clusters) are equalities the index answers alone (no item read);
// "range-1pct" is a size range, which reads its items. It reports the
// latency per count, p50 and p99.
func BenchmarkIndexedCount(b *testing.B) {
	count := *benchIndexItems
	lo := 1<<30 + count/2
	for _, bc := range []struct {
		name, q string
		want    int
	}{
		{"eq-none", "cluster=cluster-none", 0},
		{"eq-1pct", "cluster=cluster-hit", count / 100},
		{"eq-2pct", "cluster=cluster-07", benchClusterCount(count, 7)},
		{"range-1pct", fmt.Sprintf("size>=%d size<%d", lo, lo+count/100), count / 100},
	} {
		b.Run(fmt.Sprintf("%s-%d", bc.name, count), func(b *testing.B) {
			n := benchIndexedCatalog(b)
			ctx := context.Background()
			var took []time.Duration
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				got, scanned, err := n.Count(ctx, benchColl, bc.q)
				took = append(took, time.Since(start))
				if err != nil || scanned || got != bc.want {
					b.Fatalf("Count(%q) = %d, scanned %v, %v; want %d", bc.q, got, scanned, err, bc.want)
				}
			}
			b.StopTimer()
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2].Microseconds())/1e3, "p50-ms")
			b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1e3, "p99-ms")
		})
	}
}

// benchClusterCount is how many of the first count items benchIndexDoc
// puts in cluster-NN.
func benchClusterCount(count, nn int) int {
	c := 0
	for i := nn; i < count; i += 50 {
		if i%100 != 0 {
			c++
		}
	}
	return c
}

// BenchmarkIndexBuild adds an index on region to the *benchIndexItems
// catalog at runtime and waits until it is ready, while 8 callers keep
// rewriting existing items (the same documents, so the other benchmarks'
// answers hold), then drops it and waits until its entries are gone. It
// reports the build's time, the writers' rate during it and in the second
// before it (the same writers, no build), and the drop's time.
func BenchmarkIndexBuild(b *testing.B) {
	count := *benchIndexItems
	b.Run(fmt.Sprintf("region-%d", count), func(b *testing.B) {
		n := benchIndexedCatalog(b)
		ctx := context.Background()
		var build, drop, before time.Duration
		var during, preceding int64
		for range b.N {
			var writes atomic.Int64
			wctx, stop := context.WithCancel(ctx)
			var wg sync.WaitGroup
			for w := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; wctx.Err() == nil; i = (i + 8) % count {
						if _, err := n.Add(ctx, key(benchColl, benchID(i)), benchIndexDoc(i)); err != nil {
							b.Error(err)
							return
						}
						writes.Add(1)
					}
				}()
			}
			start := time.Now()
			time.Sleep(time.Second)
			before += time.Since(start)
			preceding += writes.Swap(0)
			start = time.Now()
			if _, _, err := n.AddIndex(ctx, benchColl, "region"); err != nil {
				b.Fatal(err)
			}
			benchWaitIndex(b, n, func(st []IndexStatus) bool {
				return slices.ContainsFunc(st, func(s IndexStatus) bool { return s.Field == "region" && s.State == IndexReady })
			})
			build += time.Since(start)
			during += writes.Load()
			stop()
			wg.Wait()
			if got, scanned, err := n.Count(ctx, benchColl, "region=eu-west-1"); err != nil || scanned || got != count {
				b.Fatalf("count through the new index: %d, scanned %v, %v", got, scanned, err)
			}
			start = time.Now()
			if err := n.DropIndex(ctx, benchColl, "region"); err != nil {
				b.Fatal(err)
			}
			benchWaitIndex(b, n, func(st []IndexStatus) bool {
				return !slices.ContainsFunc(st, func(s IndexStatus) bool { return s.Field == "region" })
			})
			drop += time.Since(start)
		}
		b.ReportMetric(build.Seconds()/float64(b.N), "build-s")
		b.ReportMetric(float64(during)/build.Seconds(), "writes/s-during")
		b.ReportMetric(float64(preceding)/before.Seconds(), "writes/s-before")
		b.ReportMetric(drop.Seconds()/float64(b.N), "drop-s")
	})
}

// benchWaitIndex polls n.Indexes until done holds (at most 30 min).
func benchWaitIndex(b *testing.B, n *Node, done func([]IndexStatus) bool) {
	deadline := time.Now().Add(30 * time.Minute)
	for !done(n.Indexes()) {
		if time.Now().After(deadline) {
			b.Fatalf("indexes not settled: %+v", n.Indexes())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
