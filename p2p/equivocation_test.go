package p2p

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
	leveldb "github.com/ipfs/go-ds-leveldb"
)

// openKeyed opens a node with key on an in-memory store, or on a LevelDB
// store in dir if dir is not empty.
func openKeyed(t testing.TB, dir string, key ed25519.PrivateKey) *node.Node {
	t.Helper()
	var store *leveldb.Datastore
	var err error
	if dir == "" {
		store, err = leveldb.NewDatastore("", nil)
	} else {
		store, err = node.OpenLevelDB(dir, true)
	}
	if err != nil {
		t.Fatal(err)
	}
	nc := node.DefaultConfig()
	nc.Logger = quietLogger()
	nc.Key = key
	n, err := node.Open(context.Background(), store, nc)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// handOver joins into to the deltas from holds that it lacks, as a pull
// does, without a network.
func handOver(t testing.TB, from, to *node.Node) {
	t.Helper()
	ctx := context.Background()
	_, have := to.Contexts()
	var ds []*crdt.Delta
	if _, err := from.DeltasFor(ctx, have, func(d *crdt.Delta, _ []byte) error {
		ds = append(ds, d)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := to.ApplyDeltas(ctx, ds); err != nil {
		t.Fatal(err)
	}
}

// A copied data directory makes one replica sign two histories; b holds
// one, c the other, and d, behind c only, neither past the fork. Over the
// sync protocol alone — head sums, signed heads, chain runs, proofs and
// full states asked for once per ban stamp — the three find the
// equivocation, pass its proof on, and end with the same catalog: the
// replica's writes from the fork on dropped, every honest write kept.
func TestPeer_EquivocationIsProvenAndHonestPeersConverge(t *testing.T) {
	ctx := context.Background()
	_, eqKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	a := openKeyed(t, dir, eqKey)
	cfgs := make([]Config, 3)
	honest := make([]*node.Node, 3)
	for i := range cfgs {
		cfgs[i] = testConfig(t)
		cfgs[i].fullGap = 200 * time.Millisecond
		k, err := NodeKey(cfgs[i].KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		honest[i] = openKeyed(t, "", k)
		defer honest[i].Close()
	}
	b, c := honest[0], honest[1] // and honest[2], d
	for _, id := range []string{"x", "keep"} {
		if _, err := a.Add(ctx, key(id), doc(t, `{"v":"before the fork"}`)); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range honest {
		handOver(t, a, n)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	copyDir := t.TempDir()
	if err := os.CopyFS(copyDir, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	a, twin := openKeyed(t, dir, eqKey), openKeyed(t, copyDir, eqKey)
	defer a.Close()
	defer twin.Close()
	for _, w := range []struct {
		n       *node.Node
		id, doc string
	}{{a, "x", `{"v":"a"}`}, {a, "y", `{"v":"a"}`}, {twin, "x", `{"v":"twin"}`}, {twin, "z", `{"v":"twin"}`}} {
		if _, err := w.n.Add(ctx, key(w.id), doc(t, w.doc)); err != nil {
			t.Fatal(err)
		}
	}
	handOver(t, a, b)
	handOver(t, twin, c)
	// Honest writes on top of each history, and one of each node's own.
	if err := b.Remove(ctx, key("y")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Patch(ctx, key("z"), doc(t, `{"c":"patched"}`)); err != nil {
		t.Fatal(err)
	}
	for i, n := range honest {
		if _, err := n.Add(ctx, key(string(rune('p'+i))), doc(t, `{"honest":true}`)); err != nil {
			t.Fatal(err)
		}
	}

	// b - c - d in a line.
	peers := make([]*Peer, 3)
	for i, n := range honest {
		if i > 0 {
			cfgs[i].Bootstrap = peers[i-1].Addrs()[:1]
		}
		p, err := New(ctx, n, cfgs[i])
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		peers[i] = p
	}
	want := map[string]bool{"keep": true, "p": true, "q": true, "r": true}
	waitFor(t, 2*time.Minute, "b, c and d hold the proof and the same catalog", func() bool {
		s0 := state(t, b)
		for _, n := range honest {
			if len(n.Equivocators()) != 1 || state(t, n) != s0 || n.Stats().Waiting != 0 {
				return false
			}
		}
		for _, n := range honest {
			for _, id := range []string{"keep", "p", "q", "r", "x", "y", "z"} {
				_, err := n.Get(ctx, key(id))
				if (err == nil) != want[id] || (err != nil && !errors.Is(err, node.ErrNotFound)) {
					return false
				}
			}
		}
		return true
	})
	if e := b.Equivocators()[0]; e.Replica != a.ReplicaID() || e.From != 3 {
		t.Fatalf("equivocator %+v, want %s from 3", e, a.ReplicaID())
	}
	for i, p := range peers {
		if st := p.Stats(); st.SyncRejected != 0 || st.BadPeers != 0 {
			t.Fatalf("peer %d rejected %d sync answers and backed off %d peers", i, st.SyncRejected, st.BadPeers)
		}
	}
}
