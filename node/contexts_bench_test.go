package node

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	leveldb "github.com/ipfs/go-ds-leveldb"
	"github.com/syndtr/goleveldb/leveldb/util"
)

// BenchmarkAddReplicasSeen: one caller's local adds of distinct ids with
// a ~150-byte document on an in-memory LevelDB, on a node whose causal
// contexts name 1, 10,000 or 100,000 other replicas. Every variant first
// applies the same 100,000 remote adds (spread evenly over the other
// replicas), compacts the store and collects the garbage, so the store
// is alike and only the number of replicas differs. The store is in memory so that the figure
// is the commit's CPU, which is what grew with the replicas a commit
// rewrote; an fsync would hide it. Besides ns/op it reports cpu-us/add,
// the process's CPU time per add (see cpuClock), which the load of other
// processes changes far less. Issue 14's target: 100,000 replicas within
// 1.5x of 1.
func BenchmarkAddReplicasSeen(b *testing.B) {
	const deltas = 100_000
	for _, replicas := range []int{1, 10_000, 100_000} {
		b.Run(fmt.Sprintf("replicas=%d", replicas), func(b *testing.B) {
			cfg := testConfig(nil)
			cfg.MaxReplicas = replicas + 1
			n := benchOpenMem(b, cfg)
			defer n.Close()
			var batch []*crdt.Delta
			for i := range deltas {
				r := crdt.ReplicaID(fmt.Sprintf("other-%d", i%replicas))
				batch = append(batch, forgedAdd(b, key(benchColl, fmt.Sprintf("remote-%d", i)), crdt.Dot{Replica: r, Counter: uint64(i/replicas + 1)}))
				if len(batch) == 500 {
					if res := mustApply(b, n, batch...); res.New != len(batch) {
						b.Fatalf("apply: %+v", res)
					}
					batch = batch[:0]
				}
			}
			if err := n.store.(*leveldb.Datastore).DB.CompactRange(util.Range{}); err != nil {
				b.Fatal(err)
			}
			runtime.GC() // the setup's garbage is not the adds' cost
			doc := mustDoc(b, benchDocJSON(0))
			b.ReportAllocs()
			b.ResetTimer()
			var cpu cpuClock
			cpu.start()
			for i := range b.N {
				if _, err := n.Add(b.Context(), key(benchColl, benchID(i)), doc); err != nil {
					b.Fatal(err)
				}
			}
			cpu.stop()
			b.StopTimer()
			b.ReportMetric(float64(cpu.total.Nanoseconds())/1e3/float64(b.N), "cpu-us/add")
			if _, applied := n.Contexts(); applied.NumReplicas() != replicas+1 {
				b.Fatalf("the applied context names %d replicas, want %d", applied.NumReplicas(), replicas+1)
			}
		})
	}
}
