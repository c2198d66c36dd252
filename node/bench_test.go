package node

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	dssync "github.com/ipfs/go-datastore/sync"
	leveldb "github.com/ipfs/go-ds-leveldb"
	"github.com/syndtr/goleveldb/leveldb/util"
)

// Benchmarks of the node. Figures and the commands that produced them are
// in docs/BENCHMARKS.md.

const (
	benchColl  = "snapshots"
	benchItems = 100_000 // the delta pool, and the catalog BenchmarkQuery scans
	benchBatch = 100     // deltas per ApplyDeltas call
	benchLast  = 100     // items at the end of the id order that the selective query matches
)

// benchDocJSON returns the ~150-byte metadata document of item i; only the
// last benchLast items of benchItems are in cluster "cluster-zz".
func benchDocJSON(i int) string {
	cluster := "cluster-a"
	if i >= benchItems-benchLast {
		cluster = "cluster-zz"
	}
	return fmt.Sprintf(`{"size":%d,"created":"2023-12-07T10:30:45Z","cluster":"%s","status":"completed","region":"eu-west-1","owner":"team-storage","tier":"gold"}`,
		1<<30+i, cluster)
}

func benchID(i int) string { return fmt.Sprintf("snap-%06d", i) }

// benchOpenMem opens a node on an in-memory LevelDB store; the caller
// closes it.
func benchOpenMem(tb testing.TB, cfg Config) *Node {
	tb.Helper()
	store, err := leveldb.NewDatastore("", nil)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := Open(context.Background(), store, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// benchAddAll adds items [0, count) to n from `callers` concurrent
// goroutines, with doc(i) as metadata.
func benchAddAll(tb testing.TB, n *Node, count, callers int, doc func(i int) crdt.Document) {
	tb.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= count {
					return
				}
				if _, err := n.Add(context.Background(), key(benchColl, benchID(i)), doc(i)); err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		tb.Fatal(err)
	}
}

// benchSetup runs fn with the profiler label bench=setup, which goroutines
// started by fn (such as a node's commit goroutine) inherit, so that
// `go tool pprof -tagignore bench=setup` shows the measured work alone.
func benchSetup(fn func()) {
	pprof.Do(context.Background(), pprof.Labels("bench", "setup"), func(context.Context) { fn() })
}

// benchPool is a pool of deltas made by a source node: encoded (no
// pointers for the GC to trace), with their proofs in crdt's proof form
// when the source is signed.
type benchPool struct {
	once   sync.Once
	encs   [][]byte
	proofs [][]byte
	err    error
}

// benchPools holds the unsigned pool and the signed one.
var benchPools [2]benchPool

// benchDeltas returns benchItems encoded add deltas of distinct ids with
// ~150-byte documents, made by another node (signed, if signed is set)
// and read back from its delta log, as a peer would receive them, with
// their proofs. They are built once per process and kept encoded, so that
// a large pool of decoded deltas does not inflate the garbage collector's
// work in the measured code.
func benchDeltas(tb testing.TB, signed bool) *benchPool {
	tb.Helper()
	pool := &benchPools[0]
	if signed {
		pool = &benchPools[1]
	}
	pool.once.Do(func() {
		benchSetup(func() {
			start := time.Now()
			cfg := testConfig(nil)
			if signed {
				cfg = signedConfig(tb)
			}
			cfg.MaxLogEntries = 2 * benchItems
			cfg.MaxLogBytes = 1 << 30
			src := benchOpenMem(tb, cfg)
			defer src.Close()
			docs := make([]crdt.Document, benchItems)
			for i := range docs {
				if docs[i], pool.err = crdt.ParseDocument([]byte(benchDocJSON(i))); pool.err != nil {
					return
				}
			}
			benchAddAll(tb, src, benchItems, 64, func(i int) crdt.Document { return docs[i] })
			var cursor uint64
			for {
				p, err := src.GetDeltas(context.Background(), MaxQueryLimit)
				if err == nil {
					err = src.ClearDeltas(context.Background(), p.Cursor)
				}
				if err != nil {
					pool.err = err
					return
				}
				for _, d := range p.Deltas {
					enc, err := crdt.EncodeDelta(d)
					if err != nil {
						pool.err = err
						return
					}
					pool.encs = append(pool.encs, enc)
					pool.proofs = append(pool.proofs, crdt.AppendProof(nil, d.Proof))
				}
				cursor = p.Cursor
				if !p.More {
					break
				}
			}
			if len(pool.encs) != benchItems {
				pool.err = fmt.Errorf("source node logged %d deltas (cursor %d), want %d", len(pool.encs), cursor, benchItems)
			}
			tb.Logf("built %d deltas in %v", len(pool.encs), time.Since(start).Round(time.Millisecond))
		})
	})
	if pool.err != nil {
		tb.Fatal(pool.err)
	}
	if len(pool.encs) != benchItems {
		tb.Fatal("delta pool not built")
	}
	return pool
}

// decode decodes the pool's deltas i..j-1, with their proofs.
func (p *benchPool) decode(tb testing.TB, i, j int) []*crdt.Delta {
	tb.Helper()
	out := make([]*crdt.Delta, j-i)
	for k := range out {
		d, err := crdt.DecodeDelta(p.encs[i+k])
		if err == nil {
			d.Proof, err = crdt.DecodeProof(p.proofs[i+k])
		}
		if err != nil {
			tb.Fatal(err)
		}
		out[k] = d
	}
	return out
}

// benchChunk is how many pool deltas are decoded at a time, outside the
// timer.
const benchChunk = 10_000

// BenchmarkApplyDeltas applies remote add deltas in batches of benchBatch,
// one caller. Deltas are decoded benchChunk at a time with the timer
// stopped (decoding is the transport's work). When the pool of pre-made
// deltas is used up, the rest goes to a fresh node (outside the timer),
// since re-applying would only measure the duplicate check. The signed
// variants apply a signed node's deltas, proofs checked, on a signed
// node: a batch's deltas after its last signature wait and join with the
// next batch.
func BenchmarkApplyDeltas(b *testing.B) {
	mapds := func(cfg Config) func(b *testing.B) *Node {
		return func(b *testing.B) *Node {
			n, err := Open(context.Background(), dssync.MutexWrap(ds.NewMapDatastore()), cfg)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	signed := signedConfig(b)
	for _, bc := range []struct {
		name   string
		signed bool
		open   func(b *testing.B) *Node
	}{
		{"memory", false, func(b *testing.B) *Node { return benchOpenMem(b, testConfig(nil)) }},
		// go-datastore's in-memory map: no LevelDB at all.
		{"mapds", false, mapds(testConfig(nil))},
		{"leveldb", false, func(b *testing.B) *Node { return benchOpenDir(b, true) }},
		// Diagnostic: the same without fsync, to separate the disk's
		// share from the CPU's.
		{"leveldb-nosync", false, func(b *testing.B) *Node { return benchOpenDir(b, false) }},
		{"memory-signed", true, func(b *testing.B) *Node { return benchOpenMem(b, signed) }},
		{"mapds-signed", true, mapds(signed)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			pool := benchDeltas(b, bc.signed)
			ctx := context.Background()
			n := bc.open(b)
			b.ReportAllocs()
			b.ResetTimer()
			next, joined, waiting := 0, 0, 0
			var chunk []*crdt.Delta
			for done := 0; done < b.N; {
				if len(chunk) == 0 {
					b.StopTimer()
					if next == len(pool.encs) {
						waiting += n.Stats().Waiting
						if err := n.Close(); err != nil {
							b.Fatal(err)
						}
						n, next = bc.open(b), 0
					}
					chunk = pool.decode(b, next, min(next+benchChunk, len(pool.encs), next+b.N-done))
					b.StartTimer()
				}
				k := min(benchBatch, len(chunk))
				res, err := n.ApplyDeltas(ctx, chunk[:k])
				if err != nil {
					b.Fatal(err)
				}
				joined += res.New
				chunk = chunk[k:]
				next += k
				done += k
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "deltas/s")
			if waiting += n.Stats().Waiting; joined+waiting != b.N || waiting > benchBatch {
				b.Fatalf("of %d deltas %d joined and %d wait", b.N, joined, waiting)
			}
			if err := n.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// benchOpenDir opens a node on a fresh on-disk LevelDB; the caller closes
// it.
func benchOpenDir(b *testing.B, sync bool) *Node {
	b.Helper()
	store, err := OpenLevelDB(b.TempDir(), sync)
	if err != nil {
		b.Fatal(err)
	}
	n, err := Open(context.Background(), store, testConfig(nil))
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkAdd/durable-32: local adds of distinct ids with a ~150-byte
// document on an fsynced on-disk LevelDB, from 32 concurrent callers, so
// group commit shares each fsync among the callers waiting for it. The
// memory-32 variant is a diagnostic: the same on an in-memory store, the
// CPU's ceiling.
func BenchmarkAdd(b *testing.B) {
	for _, bc := range []struct {
		name string
		open func(b *testing.B) *Node
	}{
		{"durable-32", func(b *testing.B) *Node { return benchOpenDir(b, true) }},
		{"memory-32", func(b *testing.B) *Node { return benchOpenMem(b, testConfig(nil)) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			n := bc.open(b)
			defer n.Close()
			doc := mustDoc(b, benchDocJSON(0))
			b.ReportAllocs()
			b.ResetTimer()
			benchAddAll(b, n, b.N, 32, func(int) crdt.Document { return doc })
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "adds/s")
			st := n.Stats()
			b.ReportMetric(float64(st.Ops)/float64(max(st.Commits, 1)), "adds/commit")
		})
	}
}

// benchAddDelta returns the delta of adding item 0 with its ~150-byte
// document, as a node with a 16-hex-digit replica ID makes it.
func benchAddDelta(tb testing.TB) (*crdt.Delta, string) {
	tb.Helper()
	js := benchDocJSON(0)
	dot := crdt.Dot{Replica: "3f2a9c41d07e5b68", Counter: 123456}
	ts := crdt.MakeTimestamp(time.Date(2023, 12, 7, 10, 30, 45, 0, time.UTC).UnixMilli(), 0)
	d, err := crdt.AddDelta(key(benchColl, benchID(0)), nil, mustDoc(tb, js), dot, ts)
	if err != nil {
		tb.Fatal(err)
	}
	return d, js
}

// BenchmarkEncodedAddDelta encodes an add delta and reports its size next
// to the bound 2×len(json)+64 (asserted in crdt's tests too).
func BenchmarkEncodedAddDelta(b *testing.B) {
	d, js := benchAddDelta(b)
	var size int
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		enc, err := crdt.EncodeDelta(d)
		if err != nil {
			b.Fatal(err)
		}
		size = len(enc)
	}
	b.StopTimer()
	b.ReportMetric(float64(len(js)), "json-bytes")
	b.ReportMetric(float64(size), "bytes")
	b.ReportMetric(float64(2*len(js)+64), "bound-bytes")
	if size > 2*len(js)+64 {
		b.Errorf("encoded add delta is %d bytes, over 2×%d+64", size, len(js))
	}
}

// stateBytes sums the sizes of every key and value of n's store outside
// the delta log: the items (/i) and the bookkeeping (/m).
func stateBytes(tb testing.TB, n *Node) (bytes, records int) {
	tb.Helper()
	for _, prefix := range []string{itemsPrefix, "/m"} {
		res, err := n.store.Query(context.Background(), dsq.Query{Prefix: prefix})
		if err != nil {
			tb.Fatal(err)
		}
		for {
			r, ok := res.NextSync()
			if !ok {
				break
			}
			if r.Error != nil {
				tb.Fatal(r.Error)
			}
			bytes += len(r.Key) + len(r.Value)
			records++
		}
		if err := res.Close(); err != nil {
			tb.Fatal(err)
		}
	}
	return bytes, records
}

const (
	churnItems    = 10_000
	churnMaxBytes = 4096
)

// churn adds churnItems items and then removes them all, from 32
// concurrent callers, and returns what the state (outside the log) takes.
func churn(tb testing.TB, n *Node) (bytes, records int) {
	tb.Helper()
	doc := mustDoc(tb, benchDocJSON(0))
	benchAddAll(tb, n, churnItems, 32, func(int) crdt.Document { return doc })
	if got := n.Stats().Items[benchColl]; got != churnItems {
		tb.Fatalf("%d items after the adds, want %d", got, churnItems)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < churnItems; i = int(next.Add(1) - 1) {
				if err := n.Remove(context.Background(), key(benchColl, benchID(i))); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	if got := n.Stats().Items[benchColl]; got != 0 {
		tb.Fatalf("%d items after removing all, want 0", got)
	}
	return stateBytes(tb, n)
}

// TestNode_NoTombstonesAfterChurn: removed items leave nothing behind but
// their dots in the causal context, which stays a version vector when the
// dots are contiguous, so adding and removing 10k items leaves a state of
// a few records.
func TestNode_NoTombstonesAfterChurn(t *testing.T) {
	n := openMem(t, testConfig(nil))
	size, records := churn(t, n)
	t.Logf("state after %d adds and %d removes: %d bytes in %d records", churnItems, churnItems, size, records)
	if size >= churnMaxBytes {
		t.Errorf("state after churn is %d bytes in %d records, want < %d", size, records, churnMaxBytes)
	}
	if _, err := n.Get(context.Background(), key(benchColl, benchID(0))); err == nil {
		t.Error("a removed item is still present")
	}
}

// BenchmarkStateSizeAfterChurn: one op is 10k adds and 10k removes of the
// same items on a fresh in-memory node; "state-bytes" is what is left
// outside the delta log.
func BenchmarkStateSizeAfterChurn(b *testing.B) {
	b.ReportAllocs()
	var size int
	for range b.N {
		b.StopTimer()
		n := benchOpenMem(b, testConfig(nil))
		b.StartTimer()
		size, _ = churn(b, n)
		b.StopTimer()
		if err := n.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(size), "state-bytes")
	b.ReportMetric(float64(2*churnItems*b.N)/b.Elapsed().Seconds(), "ops/s")
}

var (
	benchQueryOnce sync.Once
	benchQueryNode *Node
)

// benchCatalog returns an in-memory node holding benchItems items, built
// once per process from the delta pool.
func benchCatalog(b *testing.B) *Node {
	b.Helper()
	pool := benchDeltas(b, false)
	benchQueryOnce.Do(func() {
		benchSetup(func() {
			start := time.Now()
			// Not closed: it lives until the process ends, shared by the
			// sub-benchmarks and by -count repetitions.
			n := benchOpenMem(b, testConfig(nil))
			for i := 0; i < len(pool.encs); i += 1000 {
				if _, err := n.ApplyDeltas(context.Background(), pool.decode(b, i, min(i+1000, len(pool.encs)))); err != nil {
					b.Fatal(err)
				}
			}
			benchQueryNode = n
			b.Logf("built a catalog of %d items in %v", len(pool.encs), time.Since(start).Round(time.Millisecond))
		})
	})
	if benchQueryNode == nil {
		b.Fatal("catalog not built")
	}
	return benchQueryNode
}

// BenchmarkQuery: "100k" is a selective query over 100k items that must
// scan them all (only the last 100 ids match); "page100" is the first page
// of 100 with the empty query.
func BenchmarkQuery(b *testing.B) {
	for _, bc := range []struct {
		name, q string
		want    int
	}{
		{"100k", "size>=0 cluster~zz", benchLast},
		{"page100", "", 100},
	} {
		b.Run(bc.name, func(b *testing.B) {
			n := benchCatalog(b)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				p, err := n.Query(ctx, benchColl, bc.q, 100, "")
				if err != nil {
					b.Fatal(err)
				}
				if len(p.Items) != bc.want {
					b.Fatalf("query %q returned %d items, want %d", bc.q, len(p.Items), bc.want)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1e6/float64(b.N), "ms/op")
		})
	}
}

// BenchmarkStorageAfterDeletes (issue 13, item 4): a signed node on an
// on-disk LevelDB takes storeItems puts of distinct ids with ~150-byte
// documents (32 callers), then deletes every other id; it reports what
// the store holds per byte of live values: "stored/live" counts every
// record's key and value, "disk/live" the LevelDB files after a full
// compaction (LevelDB compresses blocks with Snappy, and these documents
// differ only in a number, so the disk figure flatters values and not the
// log's hashes).
func BenchmarkStorageAfterDeletes(b *testing.B) {
	const storeItems = 10_000
	ctx := context.Background()
	docs := make([]crdt.Document, storeItems)
	live := 0
	for i := range docs {
		docs[i] = mustDoc(b, benchDocJSON(i))
		if i%2 == 1 {
			live += len(benchDocJSON(i))
		}
	}
	var logical, log, disk int64
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		store, err := OpenLevelDB(dir, false)
		if err != nil {
			b.Fatal(err)
		}
		cfg := signedConfig(b)
		cfg.MaxLogEntries = 2 * storeItems
		n, err := Open(ctx, store, cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		benchAddAll(b, n, storeItems, 32, func(i int) crdt.Document { return docs[i] })
		for i := 0; i < storeItems; i += 2 {
			if err := n.Remove(ctx, key(benchColl, benchID(i))); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		logical, log = 0, 0
		res, err := store.Query(ctx, dsq.Query{})
		if err != nil {
			b.Fatal(err)
		}
		for r := range res.Next() {
			if r.Error != nil {
				b.Fatal(r.Error)
			}
			logical += int64(len(r.Key) + len(r.Value))
			if strings.HasPrefix(r.Key, "/l/") {
				log += int64(len(r.Key) + len(r.Value))
			}
		}
		if err := store.DB.CompactRange(util.Range{}); err != nil {
			b.Fatal(err)
		}
		if disk, err = dirSize(dir); err != nil {
			b.Fatal(err)
		}
		if err := n.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(live), "live-B")
	b.ReportMetric(float64(logical)/float64(live), "stored/live")
	b.ReportMetric(float64(log)/float64(live), "log/live")
	b.ReportMetric(float64(disk)/float64(live), "disk/live")
}

// dirSize returns the size of the files in dir.
func dirSize(dir string) (int64, error) {
	var size int64
	err := filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		fi, err := e.Info()
		if err == nil {
			size += fi.Size()
		}
		return err
	})
	return size, err
}
