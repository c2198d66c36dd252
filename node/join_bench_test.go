package node

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// benchJoinItems is the size of the catalog BenchmarkImportState joins:
// 100,000 by default (-join-items 1000000 for a million; the figures of
// docs/BENCHMARKS.md come from "testnet join", between two processes).
var benchJoinItems = flag.Int("join-items", 100_000, "items in the catalog of BenchmarkImportState")

var (
	benchJoinOnce  sync.Once
	benchJoinState string // file holding the exported state
)

// benchJoinFile returns a file holding the full state of a node of
// *benchJoinItems items with benchIndexDoc's ~200-byte documents, written
// in batches of MaxBatchOps: os.TempDir()/crdt-catalog-bench-join-N,
// built by the first run and reused by later ones (delete it to rebuild).
func benchJoinFile(b *testing.B) string {
	b.Helper()
	benchJoinOnce.Do(func() {
		count := *benchJoinItems
		path := filepath.Join(os.TempDir(), fmt.Sprintf("crdt-catalog-bench-join-%d", count))
		if _, err := os.Stat(path); err == nil {
			benchJoinState = path
			return
		}
		benchSetup(func() {
			start := time.Now()
			n := benchOpenMem(b, testConfig(nil))
			defer n.Close()
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
			f, err := os.Create(path + ".tmp")
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			if err := n.ExportState(context.Background(), f); err != nil {
				b.Fatal(err)
			}
			if err := os.Rename(f.Name(), path); err != nil {
				b.Fatal(err)
			}
			benchJoinState = path
			b.Logf("built a catalog of %d items and exported it to %s in %v", count, path, time.Since(start).Round(time.Millisecond))
		})
	})
	if benchJoinState == "" {
		b.Fatal("state not built")
	}
	return benchJoinState
}

// BenchmarkImportState joins the full state of a catalog of
// *benchJoinItems items into a new node on an fsynced on-disk LevelDB
// with a StateDir, as a joining node of the binary does, read as a
// network stream would be (not seekable). It reports the time per join,
// the stream's bytes per item, and the process's CPU time per item during
// the imports (cpu-µs/item: the whole process, commit goroutine and
// LevelDB's compactions included), a steadier figure than the time on a
// shared machine.
func BenchmarkImportState(b *testing.B) {
	path := benchJoinFile(b)
	st, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	count := *benchJoinItems
	var cpu cpuClock
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		cfg := testConfig(nil)
		cfg.StateDir = dir
		store, err := OpenLevelDB(filepath.Join(dir, "store"), true)
		if err != nil {
			b.Fatal(err)
		}
		n, err := Open(context.Background(), store, cfg)
		if err != nil {
			b.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		cpu.start()
		res, err := n.ImportState(context.Background(), onlyReader{f})
		cpu.stop()
		b.StopTimer()
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		if res.Items != count {
			b.Fatalf("imported %d items, want %d", res.Items, count)
		}
		if err := n.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(st.Size())/float64(count), "B/item")
	b.ReportMetric(float64(cpu.total.Microseconds())/float64(b.N*count), "cpu-µs/item")
}
