package p2p

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
)

// poisonDelta is an add of id stamped with dot, as a forger would write it.
func poisonDelta(t testing.TB, id string, dot crdt.Dot) *crdt.Delta {
	t.Helper()
	d, err := crdt.AddDelta(key(id), nil, crdt.Document{"poison": []byte("true")}, dot, crdt.MakeTimestamp(time.Now().UnixMilli(), 0))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestPeer_CrashLoopNextToPoison (issue 9, item 9): a node restarted
// several times on its LevelDB store next to peers holding what once
// crashed nodes on every restart stays up, keeps accepting writes, and
// keeps taking honest writes:
//   - p1 holds, in its log, deltas of more made-up replicas than the
//     node's MaxReplicas allows, and, at each restart, a forged delta of
//     the node's own replica with the counter it will use next (the node
//     refuses it and reports a suspected fork; that its next write takes
//     that dot anyway, which p1 then skips as a duplicate, is row 5,
//     closed by signed deltas);
//   - p2 holds a context naming 2,000 replicas and a log too short to
//     answer with deltas, so it answers every pull with a full state
//     whose context is far over the node's limit.
//
// The nodes are unsigned: a signed peer would hold none of this poison
// (it takes no delta without its origin's proof); the signed nodes' own
// defences are node's TestProof_* tests.
func TestPeer_CrashLoopNextToPoison(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts a LevelDB node several times")
	}
	const limit, madeUp, cycles = 10, 30, 3
	ctx := context.Background()
	dir := t.TempDir()
	ncfg := node.DefaultConfig()
	ncfg.Logger = quietLogger()
	ncfg.MaxReplicas = limit
	ncfg.StateDir = dir
	openVictim := func() *node.Node {
		t.Helper()
		store, err := node.OpenLevelDB(filepath.Join(dir, "store"), false)
		if err != nil {
			t.Fatal(err)
		}
		n, err := node.Open(ctx, store, ncfg)
		if err != nil {
			_ = store.Close()
			t.Fatalf("open: %v", err)
		}
		return n
	}

	// The victim's first writes; p1 gets them, then the forged next one.
	v := openVictim()
	for i := range 3 {
		if _, err := v.Add(ctx, key(fmt.Sprint("v-", i)), doc(t, `{"n":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	own, _ := v.GetDeltas(ctx, 100)
	replica, counter := v.ReplicaID(), v.Stats().Counter
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}

	p1 := startUnsignedPeer(t, testConfig(t), nil)
	poison := append([]*crdt.Delta{}, own.Deltas...)
	poison = append(poison, poisonDelta(t, "forged-own", crdt.Dot{Replica: replica, Counter: counter + 1}))
	for i := range madeUp {
		poison = append(poison, poisonDelta(t, fmt.Sprint("made-up-", i), crdt.Dot{Replica: crdt.ReplicaID(fmt.Sprintf("made-up-%03d", i)), Counter: 1}))
	}
	if res, err := p1.n.ApplyDeltas(ctx, poison); err != nil || res.New != len(poison) {
		t.Fatalf("p1 takes the poison: %+v %v", res, err)
	}

	p2cfg := nodeConfigWithLog(10)
	p2 := startUnsignedPeer(t, testConfig(t), &p2cfg)
	var cloud []*crdt.Delta
	for i := range 2000 {
		cloud = append(cloud, poisonDelta(t, fmt.Sprint("cloud-", i), crdt.Dot{Replica: crdt.ReplicaID(fmt.Sprintf("cloud-%04d", i)), Counter: 1}))
	}
	if _, err := p2.n.ApplyDeltas(ctx, cloud); err != nil {
		t.Fatal(err)
	}

	for cycle := range cycles {
		if cycle > 0 {
			// The victim's write of the last cycle took the dot forged
			// then; p1 now holds a forgery of the next one.
			forged := poisonDelta(t, fmt.Sprint("forged-own-", cycle), crdt.Dot{Replica: replica, Counter: counter + 1})
			if res, err := p1.n.ApplyDeltas(ctx, []*crdt.Delta{forged}); err != nil || res.New != 1 {
				t.Fatalf("p1 takes the forged delta %s: %+v %v", forged.Dot, res, err)
			}
		}
		n := openVictim()
		pcfg := testConfig(t)
		pcfg.Bootstrap = []string{p1.p.Addrs()[0], p2.p.Addrs()[0]}
		p, err := New(ctx, n, pcfg)
		if err != nil {
			_ = n.Close()
			t.Fatal(err)
		}
		honest := fmt.Sprint("honest-", cycle)
		add(t, p1, honest)
		// Both poisoned peers answered a pull of this process: p1's
		// deltas were refused (fork evidence, replicas over the limit),
		// p2's full state was refused whole; the honest write arrived.
		last := ""
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("cycle %d, last seen: %s", cycle, last)
			}
		})
		waitFor(t, 30*time.Second, "the poison offered and refused, the honest write joined", func() bool {
			st, ps := n.Stats(), p.Stats()
			last = fmt.Sprintf("node %+v\npeer %+v honest=%v", st, ps, has(n, honest))
			return st.ForkEvidence > 0 && st.DeltasRefused > 1 && ps.SyncRejected+ps.SyncFailures+ps.BadPeers > 0 && has(n, honest)
		})
		mine := fmt.Sprint("mine-", cycle)
		if _, err := n.Add(ctx, key(mine), doc(t, `{"n":2}`)); err != nil {
			t.Fatalf("cycle %d: write next to the poison: %v", cycle, err)
		}
		st, ps := n.Stats(), p.Stats()
		counter = st.Counter
		if k := len(st.Version); k > limit {
			t.Fatalf("cycle %d: the applied context names %d replicas, limit %d", cycle, k, limit)
		}
		if has(n, "forged-own") || has(n, fmt.Sprint("forged-own-", cycle)) || has(n, "cloud-0") {
			t.Fatalf("cycle %d: poison joined", cycle)
		}
		t.Logf("cycle %d: refused %d deltas, fork evidence %d, sync rejected %d failures %d, bad peers %d; %d replicas known",
			cycle, st.DeltasRefused, st.ForkEvidence, ps.SyncRejected, ps.SyncFailures, ps.BadPeers, len(st.Version))
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	}
	n := openVictim()
	defer n.Close()
	for cycle := range cycles {
		if !has(n, fmt.Sprint("mine-", cycle)) || !has(n, fmt.Sprint("honest-", cycle)) {
			t.Fatalf("after %d restarts the writes of cycle %d are missing", cycles, cycle)
		}
	}
}
