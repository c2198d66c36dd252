package p2p

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
	leveldb "github.com/ipfs/go-ds-leveldb"
	"github.com/libp2p/go-libp2p/core/crypto"
)

// testPeer is a node with its libp2p peer, on 127.0.0.1 only.
type testPeer struct {
	n *node.Node
	p *Peer
}

func quietLogger() *slog.Logger {
	if os.Getenv("P2P_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func testConfig(t testing.TB) Config {
	cfg := DefaultConfig()
	cfg.KeyFile = filepath.Join(t.TempDir(), "identity.key")
	cfg.Listen = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	cfg.DHT = false
	// Short, so that tests waiting for rounds (waitRounds) wait little;
	// a round between peers that hold the same deltas costs little.
	cfg.AntiEntropyInterval = 100 * time.Millisecond
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.Logger = quietLogger()
	return cfg
}

// startNodeOnly opens a node on an in-memory store, closed at the end of
// the test.
func startNodeOnly(t testing.TB) *node.Node {
	t.Helper()
	store, err := leveldb.NewDatastore("", nil)
	if err != nil {
		t.Fatal(err)
	}
	nc := node.DefaultConfig()
	nc.Logger = quietLogger()
	n, err := node.Open(context.Background(), store, nc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// startPeer opens a node on an in-memory store (or on store, if given) and
// starts its peer; both close at the end of the test.
func startPeer(t testing.TB, cfg Config, ncfg *node.Config) *testPeer {
	t.Helper()
	return startPeerWith(t, cfg, ncfg, true)
}

// startUnsignedPeer is startPeer with a node without a key: one that
// takes deltas of replicas that name no key, as a poisoned peer must.
func startUnsignedPeer(t testing.TB, cfg Config, ncfg *node.Config) *testPeer {
	t.Helper()
	return startPeerWith(t, cfg, ncfg, false)
}

func startPeerWith(t testing.TB, cfg Config, ncfg *node.Config, signed bool) *testPeer {
	t.Helper()
	store, err := leveldb.NewDatastore("", nil)
	if err != nil {
		t.Fatal(err)
	}
	nc := node.DefaultConfig()
	if ncfg != nil {
		nc = *ncfg
	}
	nc.Logger = quietLogger()
	if nc.Key == nil && signed {
		// Signed, as crdt-catalog runs it: the replica is this peer's.
		if nc.Key, err = NodeKey(cfg.KeyFile); err != nil {
			t.Fatal(err)
		}
	}
	n, err := node.Open(context.Background(), store, nc)
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(context.Background(), n, cfg)
	if err != nil {
		n.Close()
		t.Fatal(err)
	}
	tp := &testPeer{n: n, p: p}
	t.Cleanup(tp.close)
	return tp
}

func (tp *testPeer) close() {
	if tp.p != nil {
		tp.p.Close()
		tp.p = nil
	}
	if tp.n != nil {
		tp.n.Close()
		tp.n = nil
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// inParallel runs op(0) … op(n-1) on 8 goroutines and fails the test on
// the first error. A node commits the writes staged while it commits the
// previous ones as one group, with one signature and one gossip message:
// many writers cost far less than one writing in a loop.
func inParallel(t testing.TB, n int, op func(i int) error) {
	t.Helper()
	const workers = 8
	errs := make(chan error, workers)
	for w := range workers {
		go func() {
			for i := w; i < n; i += workers {
				if err := op(i); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// state returns a node's visible catalog as JSON, for comparison.
func state(t testing.TB, n *node.Node) string {
	t.Helper()
	var all []node.Item
	for _, c := range n.Collections() {
		cursor := ""
		for {
			page, err := n.Query(context.Background(), c, "", node.MaxQueryLimit, cursor)
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, page.Items...)
			if page.NextCursor == "" {
				break
			}
			cursor = page.NextCursor
		}
	}
	b, _ := json.Marshal(all)
	return string(b)
}

// converged reports whether all nodes hold the same applied context and
// the same visible state.
func converged(t testing.TB, ps ...*testPeer) bool {
	_, a0 := ps[0].n.Contexts()
	for _, p := range ps[1:] {
		if _, a := p.n.Contexts(); !a.Equal(a0) {
			return false
		}
	}
	s0 := state(t, ps[0].n)
	for _, p := range ps[1:] {
		if state(t, p.n) != s0 {
			return false
		}
	}
	return true
}

func doc(t testing.TB, s string) crdt.Document {
	t.Helper()
	d, err := crdt.ParseDocument([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func key(id string) crdt.Key { return crdt.Key{Collection: "snapshots", ID: id} }

func nodeConfigWithLog(entries int) node.Config {
	c := node.DefaultConfig()
	c.MaxLogEntries = entries
	return c
}

// noProofs returns n empty proofs, to send beside n deltas without one.
func noProofs(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = crdt.AppendProof(nil, crdt.Proof{})
	}
	return out
}

// ownDelta returns an add of id, the first delta of a new replica keyed by
// k, with the proof its owner gives it, and its encoding.
func ownDelta(t testing.TB, k crypto.PrivKey, id string) (*crdt.Delta, []byte) {
	t.Helper()
	raw, err := k.Raw()
	if err != nil {
		t.Fatal(err)
	}
	priv := ed25519.PrivateKey(raw)
	r, err := crdt.NewKeyedReplicaID(priv.Public().(ed25519.PublicKey), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d, err := crdt.AddDelta(key(id), nil, doc(t, `{"n":1}`), crdt.Dot{Replica: r, Counter: 1}, crdt.MakeTimestamp(time.Now().UnixMilli(), 0))
	if err != nil {
		t.Fatal(err)
	}
	enc, err := crdt.EncodeDelta(d)
	if err != nil {
		t.Fatal(err)
	}
	d.Proof.Prev = crdt.ChainStart(r)
	d.Proof.Sig = crdt.SignHead(priv, r, 1, crdt.ChainNext(d.Proof.Prev, enc))
	return d, enc
}
