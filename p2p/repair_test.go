package p2p

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/node"
)

// TestPeer_RepairedNodeGetsEverythingBack (issue 9, row 11): a node whose
// LevelDB journal was damaged after 200 acknowledged writes is refused at
// start; after node.RepairLevelDB and node.Repair it starts under a new
// replica, and anti-entropy with a real peer brings back every write,
// its own old ones included; its new writes reach the peer.
func TestPeer_RepairedNodeGetsEverythingBack(t *testing.T) {
	if testing.Short() {
		t.Skip("writes, damages and repairs a LevelDB store")
	}
	const items = 200
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "store")
	ncfg := node.DefaultConfig()
	ncfg.Logger = quietLogger()
	keyFile := filepath.Join(t.TempDir(), "identity.key") // the node's, across restarts
	var err error
	if ncfg.Key, err = NodeKey(keyFile); err != nil {
		t.Fatal(err)
	}
	peer := startPeer(t, testConfig(t), nil)
	start := func() *testPeer {
		t.Helper()
		store, err := node.OpenLevelDB(dir, true)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		n, err := node.Open(ctx, store, ncfg)
		if err != nil {
			_ = store.Close()
			t.Fatal(err)
		}
		pcfg := testConfig(t)
		pcfg.KeyFile = keyFile
		pcfg.Bootstrap = peer.p.Addrs()[:1]
		p, err := New(ctx, n, pcfg)
		if err != nil {
			_ = n.Close()
			t.Fatal(err)
		}
		tp := &testPeer{n: n, p: p}
		t.Cleanup(tp.close)
		return tp
	}

	a := start()
	for i := range items {
		add(t, a, fmt.Sprintf("a-%03d", i))
	}
	waitFor(t, 30*time.Second, "the peer holds a's writes", func() bool { return converged(t, a, peer) })
	old := a.n.ReplicaID()
	a.close()

	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	slices.Sort(logs)
	b, err := os.ReadFile(logs[len(logs)-1])
	if err != nil {
		t.Fatal(err)
	}
	for i := len(b) / 3; i < len(b)/3+4; i++ {
		b[i] ^= 0xff
	}
	if err := os.WriteFile(logs[len(logs)-1], b, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := node.OpenLevelDB(dir, true); err == nil {
		_ = s.Close()
		t.Fatal("a damaged store opened")
	}
	store, err := node.RepairLevelDB(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := node.Repair(ctx, store, ncfg.Key, quietLogger())
	if cerr := store.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}

	a = start()
	if a.n.ReplicaID() == old {
		t.Fatal("the repaired node kept its replica")
	}
	kept := a.n.Stats().Items["snapshots"]
	waitFor(t, 30*time.Second, "the repaired node holds everything again", func() bool { return converged(t, a, peer) })
	t.Logf("repair kept %d of %d items (%+v); anti-entropy brought back the rest", kept, items, rep)
	add(t, a, "after-repair")
	waitFor(t, 30*time.Second, "the peer has the repaired node's new write", func() bool { return has(peer.n, "after-repair") })
	if got := peer.n.Stats().DeltasRefused; got != 0 {
		t.Fatalf("the peer refused %d deltas of the repaired node", got)
	}
}
