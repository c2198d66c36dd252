package p2p

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
)

// TestGossipParams_AcceptedByGossipSub: every mesh degree Config accepts
// gives parameters that GossipSub's own validation accepts, and 6 gives
// its default mesh bounds.
func TestGossipParams_AcceptedByGossipSub(t *testing.T) {
	h, err := libp2p.New(libp2p.NoListenAddrs)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for d := 2; d <= 64; d++ {
		ctx, cancel := context.WithCancel(context.Background())
		_, err := pubsub.NewGossipSub(ctx, h, pubsub.WithGossipSubParams(gossipParams(d, time.Second)))
		cancel()
		if err != nil {
			t.Fatalf("mesh degree %d: %v", d, err)
		}
	}
	got, def := gossipParams(6, time.Second), pubsub.DefaultGossipSubParams()
	if got.D != def.D || got.Dlo != def.Dlo || got.Dhi != def.Dhi || got.Dout != def.Dout {
		t.Fatalf("degree 6: D/Dlo/Dhi/Dout %d/%d/%d/%d, want GossipSub's %d/%d/%d/%d",
			got.D, got.Dlo, got.Dhi, got.Dout, def.D, def.Dlo, def.Dhi, def.Dout)
	}
}

func TestConfig_MeshDegreeBounds(t *testing.T) {
	for _, d := range []int{-1, 1, 65} {
		cfg := testConfig(t)
		cfg.MeshDegree = d
		if err := cfg.validate(); err == nil {
			t.Errorf("mesh degree %d accepted", d)
		}
	}
	cfg := testConfig(t)
	cfg.MeshDegree = 0
	if err := cfg.validate(); err != nil || cfg.MeshDegree != DefaultConfig().MeshDegree {
		t.Fatalf("zero mesh degree: %v, %d", err, cfg.MeshDegree)
	}
}

func TestMessageID_ShortAndDistinct(t *testing.T) {
	from := []byte("\x00\x24\x08\x01\x12\x20-------------------------------a")
	other := []byte("\x00\x24\x08\x01\x12\x20-------------------------------b")
	seq := func(n byte) []byte { return []byte{0, 0, 0, 0, 0, 0, 0, n} }
	ids := map[string]bool{}
	for _, m := range []*pb.Message{
		{From: from, Seqno: seq(1)},
		{From: from, Seqno: seq(2)},
		{From: other, Seqno: seq(1)},
	} {
		id := messageID(m)
		if len(id) != 16 {
			t.Fatalf("id of %d bytes", len(id))
		}
		ids[id] = true
	}
	if len(ids) != 3 {
		t.Fatalf("ids collide: %d distinct of 3", len(ids))
	}
}

// TestPeer_GossipReachesLeavesOfABootstrapHub: four peers that know only a
// common bootstrap peer (no DHT, no mDNS), with periodic anti-entropy and
// gap checks off in effect. The hub's mesh must take all of them, so every
// write, on the hub or on any leaf, reaches every peer by gossip alone,
// with few duplicates.
func TestPeer_GossipReachesLeavesOfABootstrapHub(t *testing.T) {
	ctx := context.Background()
	slow := func() Config {
		cfg := testConfig(t)
		cfg.AntiEntropyInterval = time.Hour
		// On a busy machine GossipSub's parallel validation delivers a
		// peer's messages out of order, and a gap check would pull the
		// late ones before gossip delivers them.
		cfg.gapCheckDelay = time.Hour
		return cfg
	}
	hub := startPeer(t, slow(), nil)
	all := []*testPeer{hub}
	for range 4 {
		cfg := slow()
		cfg.Bootstrap = hub.p.Addrs()[:1]
		all = append(all, startPeer(t, cfg, nil))
	}
	waitFor(t, 10*time.Second, "hub meshed with every leaf", func() bool {
		for _, l := range all[1:] {
			if !l.p.tracer.inMesh(hub.p.h.ID()) || !hub.p.tracer.inMesh(l.p.h.ID()) {
				return false
			}
		}
		return hub.p.Stats().MeshPeers == 4
	})
	rounds := func() (n uint64) {
		for _, p := range all {
			n += p.p.Stats().Rounds
		}
		return n
	}
	// The pulls on connect (the hub pulls from each leaf, each leaf from
	// the hub) are over before the writes.
	waitFor(t, 10*time.Second, "the pulls on connect", func() bool {
		for _, l := range all[1:] {
			if l.p.Stats().Rounds < 1 {
				return false
			}
		}
		return hub.p.Stats().Rounds >= 4
	})
	pulls := rounds()
	synced := func() (n uint64) {
		for _, p := range all {
			n += p.p.Stats().SyncDeltasReceived
		}
		return n
	}
	syncedBefore := synced()
	for i, p := range all {
		for j := range 20 {
			if _, err := p.n.Add(ctx, key(fmt.Sprintf("p%d-%d", i, j)), doc(t, `{"n":1}`)); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitFor(t, 20*time.Second, "convergence", func() bool { return converged(t, all...) })
	if st := hub.n.Stats(); st.Items["snapshots"] != 100 {
		t.Fatalf("items: %d, want 100", st.Items["snapshots"])
	}
	var received, dups uint64
	for _, p := range all {
		s := p.p.Stats()
		received += s.Received
		dups += s.GossipDuplicates
	}
	t.Logf("gossip messages received %d, duplicates %d; pulls %d after the writes, %d deltas pulled after them", received, dups, rounds()-pulls, synced()-syncedBefore)
	// No pull was due: everything came by gossip.
	if n := synced() - syncedBefore; n != 0 {
		t.Fatalf("%d deltas arrived by anti-entropy after the writes: gossip missed them", n)
	}
	if dups > received {
		t.Fatalf("%d duplicate gossip messages for %d received", dups, received)
	}
}

// TestValidate_RejectsGarbageIgnoresNewerFormats: every kind of garbage is
// rejected by the topic validator (and counted), while a message in a
// later wire or delta version is ignored without penalty.
func TestValidate_RejectsGarbageIgnoresNewerFormats(t *testing.T) {
	target := startPeer(t, testConfig(t), nil)
	goodDelta, badDelta := validDelta(t, "intruder")
	newerDelta := bytes.Clone(goodDelta)
	newerDelta[1]++ // the format version, the delta array's first element
	if _, err := crdt.DecodeDelta(newerDelta); !errors.Is(err, crdt.ErrVersion) {
		t.Fatalf("the newer delta decodes with %v, want ErrVersion", err)
	}
	net := target.p.cfg.Network
	enc := func(v any) []byte {
		b, err := cbor.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	msg := func(network string, ds ...[]byte) []byte {
		return enc(&gossipMsg{Version: wireVersion, Network: network, Deltas: ds, Proofs: noProofs(len(ds))})
	}
	cases := []struct {
		what string
		msg  []byte
		want pubsub.ValidationResult
	}{
		{"random bytes", randomBytes(t, 200), pubsub.ValidationReject},
		{"another network", msg("beta", goodDelta), pubsub.ValidationReject},
		{"a corrupted delta", msg(net, badDelta), pubsub.ValidationReject},
		{"random bytes as a delta", msg(net, randomBytes(t, 64)), pubsub.ValidationReject},
		{"a good delta and a corrupted one", msg(net, goodDelta, badDelta), pubsub.ValidationReject},
		{"no deltas", msg(net), pubsub.ValidationReject},
		{"wire version 0", enc(&gossipMsg{Version: 0, Network: net, Deltas: [][]byte{goodDelta}}), pubsub.ValidationReject},
		{"an unknown field", enc(map[int]any{1: wireVersion, 2: net, 3: [][]byte{goodDelta}, 9: "new"}), pubsub.ValidationReject},
		{"an earlier wire version", enc(&gossipMsg{Version: wireVersion - 1, Network: net, Deltas: [][]byte{goodDelta}}), pubsub.ValidationIgnore},
		{"deltas without their proofs", enc(&gossipMsg{Version: wireVersion, Network: net, Deltas: [][]byte{goodDelta}}), pubsub.ValidationReject},
		{"a later wire version", enc(&gossipMsg{Version: wireVersion + 1, Network: net, Deltas: [][]byte{goodDelta}}), pubsub.ValidationIgnore},
		{"a later wire version with a new field", enc(map[int]any{1: wireVersion + 1, 2: net, 3: [][]byte{goodDelta}, 9: "new"}), pubsub.ValidationIgnore},
		{"a later delta version", msg(net, goodDelta, newerDelta), pubsub.ValidationIgnore},
		{"a good delta", msg(net, goodDelta), pubsub.ValidationAccept},
	}
	stranger := rawHost(t).ID() // not connected: the disconnect is a no-op
	var wantRejected, wantIgnored uint64
	for _, c := range cases {
		m := &pubsub.Message{Message: &pb.Message{Data: c.msg}}
		if got := target.p.validate(context.Background(), stranger, m); got != c.want {
			t.Errorf("%s: validator says %v, want %v", c.what, got, c.want)
		}
		switch c.want {
		case pubsub.ValidationReject:
			wantRejected++
		case pubsub.ValidationIgnore:
			wantIgnored++
		}
	}
	if st := target.p.Stats(); st.Rejected != wantRejected || st.Ignored != wantIgnored {
		t.Fatalf("counted %d rejected and %d ignored, want %d and %d", st.Rejected, st.Ignored, wantRejected, wantIgnored)
	}
}
