package p2p

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"
)

// connectPeers dials to from from, with a deadline.
func connectPeers(t testing.TB, from, to *testPeer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := from.p.Connect(ctx, tcpAddr(t, to)); err != nil {
		t.Fatal(err)
	}
}

// meshed reports whether x and y forward gossip to each other.
func meshed(x, y *testPeer) bool {
	return x.p.tracer.inMesh(y.p.ID()) && y.p.tracer.inMesh(x.p.ID())
}

// pullsIdle reports whether p has no pull running or scheduled.
func pullsIdle(p *testPeer) bool {
	p.p.mu.Lock()
	defer p.p.mu.Unlock()
	return len(p.p.inflight) == 0
}

// knows reports whether x has pulled from y (or y from x).
func knows(x, y *testPeer) bool {
	x.p.mu.Lock()
	defer x.p.mu.Unlock()
	return x.p.known[y.p.ID()] != nil
}

// connected reports whether x holds a connection to y.
func connected(x, y *testPeer) bool {
	return x.p.h.Network().Connectedness(y.p.ID()) == network.Connected
}

// TestPeer_WritersLimitWhoseDeltasArrive: a's writers list is {b}. b's
// writes reach a; c's writes do not, neither gossiped through b (which
// has no list, accepts them and forwards them) nor pulled from c when a
// is connected to c only, though a still answers c's pulls. Once a's list
// is {b, c}, c's earlier and later writes arrive.
func TestPeer_WritersLimitWhoseDeltasArrive(t *testing.T) {
	// a pulls only on events (a connection, a gap, a list change): a
	// periodic pull from b would bring c's writes, which b holds as any
	// peer without a list does, and hide what gossip did. b's periodic
	// pulls are off too: a answering one finds b ahead (by c's writes),
	// and pulls back from it at once.
	bcfg := testConfig(t)
	bcfg.AntiEntropyInterval = time.Hour
	b := startPeer(t, bcfg, nil)
	c := startPeer(t, testConfig(t), nil)
	acfg := testConfig(t)
	acfg.Writers = []peer.ID{b.p.ID()}
	acfg.AntiEntropyInterval = time.Hour
	a := startPeer(t, acfg, nil)

	// Gossip: c -> b -> a.
	add(t, b, "b1")
	connectPeers(t, a, b)
	connectPeers(t, c, b)
	waitFor(t, 10*time.Second, "a pulls b1 on connecting, and the meshes form", func() bool {
		return has(a.n, "b1") && a.p.Stats().Rounds >= 1 && pullsIdle(a) && meshed(a, b) && meshed(b, c)
	})
	add(t, c, "c1")
	waitFor(t, 10*time.Second, "b forwards c1 and a rejects it", func() bool {
		return has(b.n, "c1") && a.p.Stats().NotWriter >= 1
	})
	add(t, b, "b2") // the same path, after c1
	waitFor(t, 10*time.Second, "b2 reaches a", func() bool { return has(a.n, "b2") })
	if has(a.n, "c1") {
		t.Fatal("c's write reached a through b")
	}
	if !connected(a, b) {
		t.Fatal("a disconnected b for forwarding a non-writer's message")
	}
	if st := a.p.Stats(); st.Rejected != 0 || st.BadPeers != 0 {
		t.Fatalf("a's rejections were counted as garbage: %+v", st)
	}

	// Anti-entropy: a connected to c only. c pulls from a; a does not
	// pull from c.
	add(t, a, "a1")
	if err := a.p.h.Network().ClosePeer(b.p.ID()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a and b disconnected", func() bool { return !connected(a, b) && !connected(b, a) })
	add(t, c, "c2")
	skipped := a.p.Stats().PullsSkipped
	connectPeers(t, a, c)
	waitFor(t, 10*time.Second, "a skips the pull from c, and c pulls a1 from a", func() bool {
		return a.p.Stats().PullsSkipped > skipped && has(c.n, "a1") && knows(c, a)
	})
	waitFor(t, 10*time.Second, "a and c mesh", func() bool { return meshed(a, c) })
	rejected := a.p.Stats().NotWriter
	add(t, c, "c3")
	waitFor(t, 10*time.Second, "a rejects c3 from c", func() bool { return a.p.Stats().NotWriter > rejected })
	for _, id := range []string{"c1", "c2", "c3"} {
		if has(a.n, id) {
			t.Fatalf("c's write %s reached a", id)
		}
	}
	if !connected(a, c) {
		t.Fatal("a disconnected c")
	}

	// c becomes a writer: a pulls its earlier writes at once, and takes
	// its later ones by gossip.
	a.p.SetWriters([]peer.ID{b.p.ID(), c.p.ID()})
	add(t, c, "c4")
	waitFor(t, 10*time.Second, "c's writes reach a", func() bool {
		return has(a.n, "c1") && has(a.n, "c2") && has(a.n, "c3") && has(a.n, "c4")
	})
	if got := a.p.Writers(); len(got) != 2 {
		t.Fatalf("Writers() = %v", got)
	}
}

// forgedMessage returns an encoded gossip message carrying one delta: the
// first of a new replica keyed by owner, with its proof.
func forgedMessage(t testing.TB, network string, owner crypto.PrivKey, id string) []byte {
	t.Helper()
	d, enc := ownDelta(t, owner, id)
	msg, err := encodeGossip(network, [][]byte{enc}, [][]byte{crdt.AppendProof(nil, d.Proof)})
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// signedMessage returns a GossipSub message on topic with origin from,
// signed by key as GossipSub signs (no signature if key is nil).
func signedMessage(t testing.TB, topic string, from peer.ID, key crypto.PrivKey, seqno uint64, data []byte) *pb.Message {
	t.Helper()
	m := &pb.Message{From: []byte(from), Data: data, Seqno: binary.BigEndian.AppendUint64(nil, seqno), Topic: &topic}
	if key == nil {
		return m
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if m.Signature, err = key.Sign(append([]byte(pubsub.SignPrefix), b...)); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestPeer_WritersNeedAValidSignature: the origin a writers list checks
// is the one GossipSub's strict signing authenticates. A host that runs
// no GossipSub of its own writes on one GossipSub stream to the target, in
// this order: a message naming a writer as its origin, unsigned; one
// naming the writer, signed with the host's key; one properly signed by
// the host, which is not a writer; one properly signed by the writer,
// which is not even connected. Only the last is applied, and the host
// stays connected.
func TestPeer_WritersNeedAValidSignature(t *testing.T) {
	ctx := context.Background()
	writerKey, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	writer, err := peer.IDFromPrivateKey(writerKey)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Writers = []peer.ID{writer}
	target := startPeer(t, cfg, nil)

	h := rawHost(t)
	hostKey := h.Peerstore().PrivKey(h.ID())
	connectRaw(t, h, target)
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	s, err := h.NewStream(sctx, target.p.ID(), pubsub.GossipSubID_v11)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	net, topic := target.p.cfg.Network, target.p.cfg.topic()
	msgs := []*pb.Message{
		signedMessage(t, topic, writer, nil, 1, forgedMessage(t, net, writerKey, "unsigned")),
		signedMessage(t, topic, writer, hostKey, 2, forgedMessage(t, net, writerKey, "forged")),
		signedMessage(t, topic, h.ID(), hostKey, 3, forgedMessage(t, net, hostKey, "nonwriter")),
		signedMessage(t, topic, writer, writerKey, 4, forgedMessage(t, net, writerKey, "writer")),
	}
	for _, m := range msgs {
		b, err := proto.Marshal(&pb.RPC{Publish: []*pb.Message{m}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write(append(binary.AppendUvarint(nil, uint64(len(b))), b...)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "the writer's message applied, the host's rejected", func() bool {
		return has(target.n, "writer") && target.p.Stats().NotWriter >= 1
	})
	for _, id := range []string{"unsigned", "forged", "nonwriter"} {
		if has(target.n, id) {
			t.Errorf("the %s message was applied", id)
		}
	}
	if h.Network().Connectedness(target.p.ID()) != network.Connected {
		t.Error("the target disconnected the host")
	}
}

// TestPeer_WritersValidated: Config.Writers must hold valid peer IDs, and
// the peer itself always counts as a writer.
func TestPeer_WritersValidated(t *testing.T) {
	cfg := testConfig(t)
	cfg.Writers = []peer.ID{""}
	if err := cfg.validate(); err == nil {
		t.Fatal("an empty peer ID was accepted")
	}
	other, notListed := newPeerID(t), newPeerID(t)
	cfg = testConfig(t)
	cfg.Listen = []string{}
	p := startPeer(t, cfg, nil)
	if !p.p.isWriter(other) || p.p.Writers() != nil || p.p.Stats().Writers != 0 {
		t.Fatal("without a list, not everyone is a writer")
	}
	p.p.SetWriters([]peer.ID{other})
	if !p.p.isWriter(other) || !p.p.isWriter(p.p.ID()) || p.p.Stats().Writers != 1 {
		t.Fatal("the listed peer or the peer itself is not a writer")
	}
	if err := p.p.Pull(context.Background(), notListed); !errors.Is(err, ErrNotWriter) {
		t.Fatalf("Pull from a non-writer: %v", err)
	}
	p.p.SetWriters(nil)
	if p.p.Writers() != nil {
		t.Fatal("SetWriters(nil) kept a list")
	}
}

// newPeerID returns the ID of a fresh Ed25519 key.
func newPeerID(t testing.TB) peer.ID {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestNotWriterLog_OncePerOriginPerMinute: a rejected origin is logged at
// info level once a minute, and the memory of origins stays bounded.
func TestNotWriterLog_OncePerOriginPerMinute(t *testing.T) {
	var l notWriterLog
	now := time.Now()
	x, y := newPeerID(t), newPeerID(t)
	steps := []struct {
		origin peer.ID
		at     time.Duration
		want   bool
	}{
		{x, 0, true},
		{x, time.Second, false},
		{y, time.Second, true},
		{x, writerLogEvery - time.Millisecond, false},
		{x, writerLogEvery, true},
		{y, writerLogEvery, false},
	}
	for i, s := range steps {
		if got := l.due(s.origin, now.Add(s.at)); got != s.want {
			t.Fatalf("step %d: due = %v, want %v", i, got, s.want)
		}
	}
	for i := range 2 * maxWriterLogPeers {
		l.due(peer.ID(fmt.Sprint(i)), now.Add(writerLogEvery))
	}
	if len(l.last) > maxWriterLogPeers {
		t.Fatalf("%d origins remembered", len(l.last))
	}
	// Past a minute, the old origins make room again.
	if !l.due(newPeerID(t), now.Add(3*writerLogEvery)) {
		t.Fatal("a new origin is not logged once the others are old")
	}
}
