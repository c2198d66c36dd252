package p2p

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
	"github.com/fxamacker/cbor/v2"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// newSwarmKey returns a fresh libp2p pre-shared key file.
func newSwarmKey(t testing.TB) []byte {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Appendf(nil, "/key/swarm/psk/1.0.0/\n/base16/\n%x\n", b)
}

// tcpAddr returns p's first TCP address.
func tcpAddr(t testing.TB, p *testPeer) string {
	t.Helper()
	for _, a := range p.p.Addrs() {
		if strings.Contains(a, "/tcp/") {
			return a
		}
	}
	t.Fatalf("no TCP address in %v", p.p.Addrs())
	return ""
}

// has reports whether n holds the item id.
func has(n *node.Node, id string) bool {
	_, err := n.Get(context.Background(), key(id))
	return err == nil
}

// add writes the item id on p.
func add(t testing.TB, p *testPeer, id string) {
	t.Helper()
	if _, err := p.n.Add(context.Background(), key(id), doc(t, `{"n":1}`)); err != nil {
		t.Fatal(err)
	}
}

// waitRounds waits until each peer has completed at least n more
// anti-entropy rounds than now: a measure of time passing that also shows
// the peers kept exchanging with their legitimate partners.
func waitRounds(t testing.TB, n uint64, ps ...*testPeer) {
	t.Helper()
	base := make([]uint64, len(ps))
	for i, p := range ps {
		base[i] = p.p.Stats().Rounds
	}
	waitFor(t, 20*time.Second, fmt.Sprintf("%d more anti-entropy rounds", n), func() bool {
		for i, p := range ps {
			if p.p.Stats().Rounds < base[i]+n {
				return false
			}
		}
		return true
	})
}

// TestPeer_SwarmKeyRefusesOthers: peers sharing a swarm key connect and
// replicate; a peer with another key, or with none, can neither connect
// to them nor be connected to, and never sees their writes (nor they its).
// With a swarm key, a QUIC listen address is dropped.
func TestPeer_SwarmKeyRefusesOthers(t *testing.T) {
	ctx := context.Background()
	swarmKey := newSwarmKey(t)
	keyed := func(psk []byte, listen ...string) Config {
		cfg := testConfig(t)
		cfg.SwarmKey = psk
		cfg.Listen = listen
		return cfg
	}
	a := startPeer(t, keyed(swarmKey, "/ip4/127.0.0.1/tcp/0"), nil)
	// b also asks for QUIC, which a private network cannot carry.
	b := startPeer(t, keyed(swarmKey, "/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"), nil)
	for _, p := range []*testPeer{a, b} {
		if len(p.p.Addrs()) == 0 {
			t.Fatal("a keyed peer listens nowhere")
		}
		for _, s := range p.p.Addrs() {
			if strings.Contains(s, "/quic") || strings.Contains(s, "/udp/") {
				t.Fatalf("a keyed peer listens on %s", s)
			}
		}
	}
	other := startPeer(t, keyed(newSwarmKey(t), "/ip4/127.0.0.1/tcp/0"), nil)
	open := startPeer(t, testConfig(t), nil) // no key; TCP and QUIC

	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := b.p.Connect(cctx, tcpAddr(t, a))
	cancel()
	if err != nil {
		t.Fatalf("peers with the same key: %v", err)
	}
	add(t, a, "from-a")
	add(t, b, "from-b")
	add(t, other, "from-other")
	add(t, open, "from-open")
	waitFor(t, 10*time.Second, "a and b replicate", func() bool {
		return has(a.n, "from-b") && has(b.n, "from-a") && converged(t, a, b)
	})

	// A peer with a missing or wrong key fails fast or hangs until its
	// deadline: always dial with a timeout. Both directions, every pair,
	// all at once.
	var wg sync.WaitGroup
	refused := func(from, to *testPeer, what string) {
		addr := tcpAddr(t, to)
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			if err := from.p.Connect(cctx, addr); err == nil {
				t.Errorf("%s: connected", what)
			}
		})
	}
	for _, k := range []*testPeer{a, b} {
		refused(other, k, "other key -> swarm key")
		refused(k, other, "swarm key -> other key")
		refused(open, k, "no key -> swarm key")
		refused(k, open, "swarm key -> no key")
	}
	wg.Wait()

	// Time passes (the keyed peers keep syncing with each other), and no
	// write crosses between the networks.
	waitRounds(t, 3, a, b)
	for _, k := range []*testPeer{a, b} {
		if has(k.n, "from-other") || has(k.n, "from-open") {
			t.Error("an outsider's write reached a keyed peer")
		}
		for _, o := range []*testPeer{other, open} {
			if c := k.p.h.Network().Connectedness(o.p.ID()); c == network.Connected {
				t.Error("a keyed peer is connected to an outsider")
			}
		}
	}
	for _, o := range []*testPeer{other, open} {
		if has(o.n, "from-a") || has(o.n, "from-b") {
			t.Error("a keyed peer's write reached an outsider")
		}
		if st := o.p.Stats(); st.Rounds != 0 || st.Received != 0 || st.Peers != 0 {
			t.Errorf("an outsider exchanged with someone: %+v", st)
		}
	}
}

// TestPeer_OtherNetworkNeverMixes: peers of two catalog networks connected
// to each other share connections but neither writes nor protocols.
func TestPeer_OtherNetworkNeverMixes(t *testing.T) {
	ctx := context.Background()
	onNetwork := func(name string) Config {
		cfg := testConfig(t)
		cfg.Network = name
		return cfg
	}
	a1 := startPeer(t, onNetwork("alpha"), nil)
	a2 := startPeer(t, onNetwork("alpha"), nil)
	b1 := startPeer(t, onNetwork("beta"), nil)
	connect := func(from, to *testPeer) {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := from.p.Connect(cctx, to.p.Addrs()[0]); err != nil {
			t.Fatal(err)
		}
	}
	connect(a2, a1)
	connect(b1, a1)
	connect(b1, a2)
	add(t, a1, "alpha-1")
	add(t, a2, "alpha-2")
	add(t, b1, "beta-1")

	waitFor(t, 10*time.Second, "the alpha peers converge", func() bool {
		return has(a1.n, "alpha-2") && has(a2.n, "alpha-1") && converged(t, a1, a2)
	})
	// Identification is done: each side knows which protocols the other
	// speaks, so the checks below are not vacuous.
	alphaProto, betaProto := a1.p.proto, b1.p.proto
	waitFor(t, 10*time.Second, "identify between the networks", func() bool {
		for _, a := range []*testPeer{a1, a2} {
			theirs, _ := a.p.h.Peerstore().SupportsProtocols(b1.p.ID(), betaProto)
			mine, _ := b1.p.h.Peerstore().SupportsProtocols(a.p.ID(), alphaProto)
			if len(theirs) == 0 || len(mine) == 0 {
				return false
			}
		}
		return true
	})
	waitRounds(t, 3, a1, a2)

	for _, a := range []*testPeer{a1, a2} {
		if has(a.n, "beta-1") {
			t.Error("a beta write reached an alpha peer")
		}
		if c := a.p.h.Network().Connectedness(b1.p.ID()); c != network.Connected {
			t.Errorf("alpha and beta peers got disconnected: %v", c)
		}
		if ok, _ := a.p.h.Peerstore().SupportsProtocols(b1.p.ID(), alphaProto); len(ok) != 0 {
			t.Error("the beta peer speaks alpha's sync protocol")
		}
		if ok, _ := b1.p.h.Peerstore().SupportsProtocols(a.p.ID(), betaProto); len(ok) != 0 {
			t.Error("an alpha peer speaks beta's sync protocol")
		}
		if err := a.p.Pull(ctx, b1.p.ID()); !errors.Is(err, errNotCatalog) {
			t.Errorf("alpha pulling from beta: %v, want errNotCatalog", err)
		}
		// Status lists the other alpha peer only, known.
		if ps := a.p.Peers(); len(ps) != 1 || ps[0].ID == b1.p.ID().String() || !ps[0].Known {
			t.Errorf("an alpha peer's status: %+v", ps)
		}
		if st := a.p.Stats(); st.Rejected != 0 || st.SyncRejected != 0 || st.Peers != 1 {
			t.Errorf("an alpha peer saw the other network's traffic, or counts its peer: %+v", st)
		}
	}
	if has(b1.n, "alpha-1") || has(b1.n, "alpha-2") {
		t.Error("an alpha write reached the beta peer")
	}
	if ps := b1.p.Peers(); len(ps) != 0 {
		t.Errorf("the beta peer's status lists alpha peers: %+v", ps)
	}
	if err := b1.p.Pull(ctx, a1.p.ID()); !errors.Is(err, errNotCatalog) {
		t.Errorf("beta pulling from alpha: %v, want errNotCatalog", err)
	}
	if st := b1.p.Stats(); st.Rounds != 0 || st.Received != 0 || st.Rejected != 0 || st.SyncRejected != 0 || st.Peers != 0 {
		t.Errorf("the beta peer exchanged with the alpha network: %+v", st)
	}
}

// rawHost is a bare libp2p host on loopback TCP, for speaking the
// protocols by hand.
func rawHost(t testing.TB, opts ...libp2p.Option) host.Host {
	t.Helper()
	h, err := libp2p.New(append([]libp2p.Option{
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.DisableRelay(),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// connectRaw connects h to p.
func connectRaw(t testing.TB, h host.Host, p *testPeer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.Connect(ctx, peer.AddrInfo{ID: p.p.ID(), Addrs: p.p.h.Addrs()}); err != nil {
		t.Fatal(err)
	}
}

// rawTopic joins h, a host outside the catalog, to target's gossip topic
// (flood publishing, so a message goes straight to target), connects it
// to target, and waits until each sees the other on the topic.
func rawTopic(t testing.TB, h host.Host, target *testPeer, opts ...pubsub.Option) *pubsub.Topic {
	t.Helper()
	ps, err := pubsub.NewGossipSub(context.Background(), h, append([]pubsub.Option{pubsub.WithFloodPublish(true)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join(target.p.cfg.topic())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { topic.Close() })
	sub, err := topic.Subscribe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Cancel)
	connectRaw(t, h, target)
	waitFor(t, 10*time.Second, "the raw host sees the target on the topic", func() bool {
		return slices.Contains(topic.ListPeers(), target.p.ID())
	})
	return topic
}

// validDelta returns a well-formed encoded delta from a replica that
// exists nowhere else, and an undecodable corruption of it.
func validDelta(t testing.TB, id string) (good, bad []byte) {
	t.Helper()
	d, err := crdt.AddDelta(key(id), nil, doc(t, `{"evil":true}`),
		crdt.Dot{Replica: "intruder", Counter: 1}, crdt.MakeTimestamp(time.Now().UnixMilli(), 0))
	if err != nil {
		t.Fatal(err)
	}
	good, err = crdt.EncodeDelta(d)
	if err != nil {
		t.Fatal(err)
	}
	bad = good[:len(good)-3]
	if _, err := crdt.DecodeDelta(bad); err == nil {
		t.Fatal("the corrupted delta decodes")
	}
	return good, bad
}

// randomBytes returns n random bytes.
func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// snapshot is what must not change on a peer attacked with garbage.
type snapshot struct {
	state   string
	applied *crdt.Context
}

func takeSnapshot(t testing.TB, p *testPeer) snapshot {
	_, applied := p.n.Contexts()
	return snapshot{state(t, p.n), applied}
}

func (s snapshot) check(t testing.TB, p *testPeer) {
	t.Helper()
	now := takeSnapshot(t, p)
	if now.state != s.state || !now.applied.Equal(s.applied) {
		t.Fatalf("garbage changed the node:\nbefore %s\nafter  %s", s.state, now.state)
	}
}

// stillHealthy checks that target and good still replicate both ways,
// by gossip and by anti-entropy.
func stillHealthy(t testing.TB, target, good *testPeer, id string) {
	t.Helper()
	add(t, good, id+"-good")
	add(t, target, id+"-target")
	waitFor(t, 10*time.Second, "replication after the garbage", func() bool {
		return has(target.n, id+"-good") && has(good.n, id+"-target") && converged(t, target, good)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := target.p.Pull(ctx, good.p.ID()); err != nil {
		t.Fatalf("pull from a proper peer after the garbage: %v", err)
	}
}

// TestPeer_GarbageOnTopicIsRejected: a host with its own GossipSub
// publishes on the catalog's topic a message in a newer format (ignored,
// the host stays connected), one with a corrupted delta (rejected, the host
// is disconnected) and, back again, an oversized one (dropped by
// GossipSub). The target applies nothing, forwards nothing and keeps
// replicating with a proper peer.
func TestPeer_GarbageOnTopicIsRejected(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t)
	cfg.MaxMessageBytes = minMessageBytes
	target := startPeer(t, cfg, nil)
	gcfg := testConfig(t)
	gcfg.Bootstrap = target.p.Addrs()[:1]
	good := startPeer(t, gcfg, nil)
	add(t, good, "before")
	waitFor(t, 10*time.Second, "target and good converge", func() bool { return converged(t, target, good) })

	h := rawHost(t)
	tracer := &sendTracer{}
	topic := rawTopic(t, h, target,
		pubsub.WithRawTracer(tracer),
		pubsub.WithMaxMessageSize(2*minMessageBytes), // lets this side send an oversized message
	)

	before := takeSnapshot(t, target)
	rejected, ignored := target.p.Stats().Rejected, target.p.Stats().Ignored
	goodDelta, badDelta := validDelta(t, "intruder")
	mustEncode := func(network string, ds ...[]byte) []byte {
		b, err := encodeGossip(network, ds, noProofs(len(ds)))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	netName := target.p.cfg.Network
	connected := func() bool { return h.Network().Connectedness(target.p.ID()) == network.Connected }

	// A later wire version is ignored, and its sender stays connected.
	// (Each kind of garbage is checked against the validator in
	// TestValidate_RejectsGarbageIgnoresNewerFormats.)
	newer, err := cbor.Marshal(&gossipMsg{Version: wireVersion + 1, Network: netName, Deltas: [][]byte{goodDelta}})
	if err != nil {
		t.Fatal(err)
	}
	if err := topic.Publish(ctx, newer); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the newer message ignored", func() bool { return target.p.Stats().Ignored > ignored })
	if !connected() {
		t.Fatal("the target disconnected a peer for a message in a newer format")
	}

	// Garbage is rejected, and its sender disconnected.
	if err := topic.Publish(ctx, mustEncode(netName, goodDelta, badDelta)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the garbage rejected and its sender disconnected", func() bool {
		return target.p.Stats().Rejected == rejected+1 && !connected()
	})
	before.check(t, target)

	// Back, to send an oversized message.
	connectRaw(t, h, target)
	waitFor(t, 10*time.Second, "the raw host sees the target on the topic again", func() bool {
		for _, id := range topic.ListPeers() {
			if id == target.p.ID() {
				return true
			}
		}
		return false
	})

	// Oversized: GossipSub itself drops an RPC over MaxMessageBytes, and
	// resets the stream it came on, before the validator sees it; so this
	// one is not counted. The raw host's GossipSub sees its stream to the
	// target closed right after queuing the message. (It then forgets that
	// the target subscribed to the topic, so it can send nothing more.)
	resets := tracer.closed(target.p.ID())
	big := mustEncode(netName, goodDelta, randomBytes(t, minMessageBytes))
	if err := topic.Publish(ctx, big); err != nil {
		t.Fatalf("publishing an oversized message: %v", err)
	}
	waitFor(t, 10*time.Second, "the target resets the stream that carried the oversized message", func() bool {
		return tracer.queued(target.p.ID(), len(big)) && tracer.closed(target.p.ID()) > resets
	})
	if got := target.p.Stats().Rejected - rejected; got != 1 {
		t.Fatalf("rejected %d messages, sent 1 and an oversized one", got)
	}
	before.check(t, target)
	if has(target.n, "intruder") || has(good.n, "intruder") {
		t.Fatal("the intruder's delta was applied")
	}
	// Nothing was forwarded to the proper peer.
	if st := good.p.Stats(); st.Rejected != 0 {
		t.Fatalf("the target forwarded garbage: good peer rejected %d", st.Rejected)
	}
	stillHealthy(t, target, good, "after-topic-garbage")
}

// sendTracer records the largest message queued for each peer (queued,
// not sent whole: a peer that resets the stream on reading the length of
// an oversized message cuts the write short), and how many times each
// peer's stream was closed.
type sendTracer struct {
	mu      sync.Mutex
	largest map[peer.ID]int
	resets  map[peer.ID]int
}

func (st *sendTracer) OnClosedOutboundStream(p peer.ID) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.resets == nil {
		st.resets = map[peer.ID]int{}
	}
	st.resets[p]++
}

// closed returns how many times p's stream was closed.
func (st *sendTracer) closed(p peer.ID) int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.resets[p]
}

func (st *sendTracer) SendRPC(rpc *pubsub.RPC, p peer.ID) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.largest == nil {
		st.largest = map[peer.ID]int{}
	}
	for _, m := range rpc.GetPublish() {
		st.largest[p] = max(st.largest[p], len(m.GetData()))
	}
}

// queued reports whether a message of at least n bytes was queued for p.
func (st *sendTracer) queued(p peer.ID, n int) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.largest[p] >= n
}

func (*sendTracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (*sendTracer) Join(string)                                          {}
func (*sendTracer) Leave(string)                                         {}
func (*sendTracer) Graft(peer.ID, string)                                {}
func (*sendTracer) Prune(peer.ID, string)                                {}
func (*sendTracer) ValidateMessage(*pubsub.Message)                      {}
func (*sendTracer) DeliverMessage(*pubsub.Message)                       {}
func (*sendTracer) RejectMessage(*pubsub.Message, string)                {}
func (*sendTracer) DuplicateMessage(*pubsub.Message)                     {}
func (*sendTracer) ThrottlePeer(peer.ID)                                 {}
func (*sendTracer) RecvRPC(*pubsub.RPC)                                  {}
func (*sendTracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}
func (*sendTracer) DropRPC(*pubsub.RPC, peer.ID)                         {}
func (*sendTracer) UndeliverableMessage(*pubsub.Message)                 {}

// TestPeer_GarbageOnSyncStreamIsRejected: garbage on the sync protocol, as
// a request to the target or as the answer to the target's pull, is
// rejected: the pull fails, SyncRejected grows, the sender is disconnected
// and stays so, nothing is applied, and the target keeps replicating.
func TestPeer_GarbageOnSyncStreamIsRejected(t *testing.T) {
	setup := func(t *testing.T) (target, good *testPeer) {
		target = startPeer(t, testConfig(t), nil)
		gcfg := testConfig(t)
		gcfg.Bootstrap = target.p.Addrs()[:1]
		good = startPeer(t, gcfg, nil)
		add(t, good, "before")
		waitFor(t, 10*time.Second, "target and good converge", func() bool { return converged(t, target, good) })
		return target, good
	}
	goodDelta, badDelta := validDelta(t, "intruder")
	emptyCtx, err := crdt.EncodeContext(crdt.NewContext())
	if err != nil {
		t.Fatal(err)
	}
	// A context cut short: garbage of a known format version. (Random
	// bytes may start like a later version, which is no offence.)
	full := crdt.NewContext()
	full.Add(crdt.Dot{Replica: "intruder", Counter: 1})
	full.Add(crdt.Dot{Replica: "intruder", Counter: 5})
	garbageCtx, err := crdt.EncodeContext(full)
	if err != nil {
		t.Fatal(err)
	}
	garbageCtx = garbageCtx[:len(garbageCtx)-2]
	if _, err := crdt.DecodeContext(garbageCtx); !errors.Is(err, crdt.ErrInvalid) || errors.Is(err, crdt.ErrVersion) {
		t.Fatalf("the cut context decodes as %v, want garbage", err)
	}
	frame := func(f *syncFrame) []byte {
		var buf bytes.Buffer
		if _, err := writeFrame(&buf, f); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	// Random bytes behind a length prefix the stream can satisfy, so the
	// frame is read whole and fails to decode (a larger prefix would only
	// look like a stream cut short).
	randomFrame := func() []byte {
		b := randomBytes(t, 200)
		b[0] = 100
		return b
	}
	// disconnected waits until target has dropped id, then until target
	// has run two more rounds with its proper peer: id must not have been
	// reconnected meanwhile.
	disconnected := func(t *testing.T, target, good *testPeer, id peer.ID) {
		t.Helper()
		waitFor(t, 10*time.Second, "the garbage sender disconnected", func() bool {
			return target.p.h.Network().Connectedness(id) != network.Connected
		})
		waitRounds(t, 2, target, good)
		if target.p.h.Network().Connectedness(id) == network.Connected {
			t.Fatal("the garbage sender was reconnected")
		}
	}

	t.Run("requests", func(t *testing.T) {
		target, good := setup(t)
		h := rawHost(t)
		netName := target.p.cfg.Network
		cases := []struct {
			what string
			msg  []byte
		}{
			{"random bytes", randomFrame()},
			{"a frame longer than allowed", []byte{0xff, 0xff, 0xff, 0xff, 0x0f}},
			{"a request with a garbage context", frame(&syncFrame{Kind: frameRequest, Version: wireVersion, Network: netName, Context: garbageCtx})},
			{"a request of another network", frame(&syncFrame{Kind: frameRequest, Version: wireVersion, Network: "beta", Context: emptyCtx})},
			{"a request of version 0", frame(&syncFrame{Kind: frameRequest, Version: 0, Network: netName, Context: emptyCtx})},
			{"deltas instead of a request", frame(&syncFrame{Kind: frameDeltas, Deltas: [][]byte{goodDelta}, Proofs: noProofs(1)})},
		}
		before := takeSnapshot(t, target)
		for _, c := range cases {
			rejected := target.p.Stats().SyncRejected
			connectRaw(t, h, target)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			s, err := h.NewStream(ctx, target.p.ID(), target.p.proto)
			cancel()
			if err != nil {
				t.Fatalf("%s: opening the sync stream: %v", c.what, err)
			}
			_ = s.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := s.Write(c.msg); err != nil {
				t.Fatalf("%s: %v", c.what, err)
			}
			_ = s.CloseWrite()
			answer, _ := io.ReadAll(s) // ends when the target resets the stream
			s.Close()
			if len(answer) != 0 {
				t.Errorf("%s: the target answered %d bytes", c.what, len(answer))
			}
			waitFor(t, 10*time.Second, fmt.Sprintf("%s: counted as garbage (the pull said: %v)", c.what, err), func() bool {
				return target.p.Stats().SyncRejected > rejected
			})
			disconnected(t, target, good, h.ID())
			before.check(t, target)
		}

		// A request of a later version (with a field this version does
		// not know) is refused, but its sender, a newer release, stays.
		connectRaw(t, h, target)
		st := target.p.Stats()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := h.NewStream(ctx, target.p.ID(), target.p.proto)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		newer, err := cbor.Marshal(map[int]any{1: frameRequest, 2: wireVersion + 1, 3: netName, 4: emptyCtx, 9: "new"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write(append(binary.AppendUvarint(nil, uint64(len(newer))), newer...)); err != nil {
			t.Fatal(err)
		}
		_ = s.CloseWrite()
		if answer, _ := io.ReadAll(s); len(answer) != 0 {
			t.Errorf("a newer request: the target answered %d bytes", len(answer))
		}
		s.Close()
		waitFor(t, 10*time.Second, "the newer request counted as a sync failure", func() bool {
			return target.p.Stats().SyncFailures > st.SyncFailures
		})
		waitRounds(t, 2, target, good)
		if target.p.h.Network().Connectedness(h.ID()) != network.Connected || target.p.Stats().SyncRejected != st.SyncRejected {
			t.Fatal("the target disconnected, or counted as garbage, a peer of a newer version")
		}
		before.check(t, target)
		stillHealthy(t, target, good, "after-requests")
	})

	t.Run("answers", func(t *testing.T) {
		target, good := setup(t)
		h := rawHost(t)
		// The raw host answers every pull with the garbage of the case at
		// hand, after reading the request like a real peer.
		var answer atomic.Pointer[[]byte]
		h.SetStreamHandler(target.p.proto, func(s network.Stream) {
			defer s.Close()
			_ = s.SetDeadline(time.Now().Add(10 * time.Second))
			if _, _, err := readFrame(bufio.NewReader(s), maxSyncFrame); err != nil {
				s.Reset()
				return
			}
			if _, err := s.Write(*answer.Load()); err != nil {
				s.Reset()
			}
		})
		ctx := context.Background()
		emptyState := func(seen []byte) []byte {
			// A full-state stream header (node's format), then nothing.
			type stateHeader struct {
				Kind    uint   `cbor:"1,keyasint"`
				Version uint   `cbor:"2,keyasint,omitempty"`
				Replica string `cbor:"3,keyasint,omitempty"`
				Seen    []byte `cbor:"4,keyasint,omitempty"`
				Applied []byte `cbor:"5,keyasint,omitempty"`
			}
			b, err := cbor.Marshal(&stateHeader{Kind: 1, Version: crdt.FormatVersion, Replica: "intruder", Seen: seen, Applied: emptyCtx})
			if err != nil {
				t.Fatal(err)
			}
			return append(binary.AppendUvarint(nil, uint64(len(b))), b...)
		}
		cases := []struct {
			what string
			msg  []byte
		}{
			{"random bytes", randomFrame()},
			{"a deltas frame with a corrupted delta", frame(&syncFrame{Kind: frameDeltas, Deltas: [][]byte{goodDelta, badDelta}, Proofs: noProofs(2)})},
			{"a request instead of an answer", frame(&syncFrame{Kind: frameRequest, Version: wireVersion, Network: target.p.cfg.Network, Context: emptyCtx})},
			{"done with a garbage context", frame(&syncFrame{Kind: frameDone, Context: garbageCtx})},
			{"a full state of random bytes", append(frame(&syncFrame{Kind: frameFull}), randomFrame()...)},
			{"a full state with a garbage context", append(frame(&syncFrame{Kind: frameFull}), emptyState(garbageCtx)...)},
		}
		before := takeSnapshot(t, target)
		target.p.h.Peerstore().AddAddrs(h.ID(), h.Addrs(), peerstore.PermanentAddrTTL)
		for _, c := range cases {
			answer.Store(&c.msg)
			st := target.p.Stats()
			// The pull dials the raw host; on connecting, the target may
			// also start a pull of its own, which gets the same garbage.
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := target.p.Pull(pctx, h.ID())
			cancel()
			if err == nil {
				t.Fatalf("%s: the pull succeeded", c.what)
			}
			waitFor(t, 10*time.Second, fmt.Sprintf("%s: counted as garbage (the pull said: %v)", c.what, err), func() bool {
				return target.p.Stats().SyncRejected > st.SyncRejected
			})
			disconnected(t, target, good, h.ID())
			before.check(t, target)
			if now := target.p.Stats(); now.FullStatesReceived != st.FullStatesReceived {
				t.Fatalf("%s: counted as a full state received", c.what)
			}
		}
		// Deltas in a later format: the pull fails, but the sender, a
		// newer release, is neither counted as garbage nor disconnected.
		newerDelta := bytes.Clone(goodDelta)
		newerDelta[1]++ // the format version, the delta array's first element
		newer := frame(&syncFrame{Kind: frameDeltas, Deltas: [][]byte{newerDelta}, Proofs: noProofs(1)})
		answer.Store(&newer)
		st := target.p.Stats()
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := target.p.Pull(pctx, h.ID())
		cancel()
		if !errors.Is(err, crdt.ErrVersion) {
			t.Fatalf("a pull answered with newer deltas: %v, want ErrVersion", err)
		}
		if now := target.p.Stats(); now.SyncRejected != st.SyncRejected || now.SyncFailures == st.SyncFailures ||
			target.p.h.Network().Connectedness(h.ID()) != network.Connected {
			t.Fatalf("newer deltas were treated as garbage: %+v", now)
		}
		before.check(t, target)
		if has(target.n, "intruder") {
			t.Fatal("the intruder's delta was applied")
		}
		stillHealthy(t, target, good, "after-answers")
	})

	// A pull requested while another from the same peer runs is queued
	// behind it; when the first one ends with the peer disconnected for
	// garbage, the queued one must not dial the peer again.
	t.Run("not redialled", func(t *testing.T) {
		target := startPeer(t, testConfig(t), nil)
		h := rawHost(t)
		var streams atomic.Int32
		release := make(chan struct{})
		garbage := randomFrame()
		h.SetStreamHandler(target.p.proto, func(s network.Stream) {
			defer s.Close()
			streams.Add(1)
			_ = s.SetDeadline(time.Now().Add(20 * time.Second))
			if _, _, err := readFrame(bufio.NewReader(s), maxSyncFrame); err != nil {
				s.Reset()
				return
			}
			select {
			case <-release:
			case <-time.After(15 * time.Second):
			}
			_, _ = s.Write(garbage)
		})
		defer func() {
			if t.Failed() {
				t.Logf("the garbage sender was pulled from %d times", streams.Load())
			}
		}()
		connectRaw(t, h, target) // the target pulls at once; the answer waits
		pending := func(m map[peer.ID]bool) func() bool {
			return func() bool {
				target.p.mu.Lock()
				defer target.p.mu.Unlock()
				return m[h.ID()]
			}
		}
		// The raw host is the target's only catalog peer: the next
		// anti-entropy tick queues another pull from it.
		waitFor(t, 10*time.Second, "a second pull queued", pending(target.p.again))
		close(release)
		waitFor(t, 10*time.Second, "the pulls from the garbage sender over", func() bool {
			return !pending(target.p.inflight)()
		})
		if target.p.Stats().SyncRejected == 0 {
			t.Fatal("the garbage was not counted")
		}
		if c := target.p.h.Network().Connectedness(h.ID()); c == network.Connected {
			t.Fatal("the garbage sender is connected")
		}
		if n := streams.Load(); n != 1 {
			t.Fatalf("the garbage sender was pulled from %d times: the queued pull redialled it", n)
		}
	})
}
