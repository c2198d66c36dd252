package p2p

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/node"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// liveHeap returns the bytes of live heap objects after a collection.
func liveHeap() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestPeer_SyncStreamsCappedAndMemoryBounded: hostile peers open many sync
// streams, each announcing a frame of the largest allowed size and
// sending 1000 bytes of it. Streams over the per-peer limit, then over the
// global one, are refused at once and counted; the streams answered cost
// about the bytes received, so the heap stays near its idle size; and the
// slots are freed when the streams end.
func TestPeer_SyncStreamsCappedAndMemoryBounded(t *testing.T) {
	const perPeer, global, streams = 2, 3, 20
	cfg := testConfig(t)
	cfg.MaxSyncStreamsPerPeer = perPeer
	cfg.MaxSyncStreams = global
	cfg.SyncIdleTimeout = 5 * time.Minute // the held streams stay for the measurement
	victim := startPeer(t, cfg, nil)
	h1, h2 := rawHost(t), rawHost(t)
	connectRaw(t, h1, victim)
	connectRaw(t, h2, victim)
	idle := liveHeap()

	var held []network.Stream
	attack := func(h host.Host) {
		t.Helper()
		for range streams {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			s, err := h.NewStream(ctx, victim.p.ID(), victim.p.proto)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, s)
			// A refused stream may be reset before or during the write.
			_, _ = s.Write(append(binary.AppendUvarint(nil, maxSyncFrame), randomBytes(t, 1000)...))
		}
	}
	waitStreams := func(answered int, refused uint64) {
		t.Helper()
		waitFor(t, 20*time.Second, fmt.Sprintf("%d streams answered, %d refused", answered, refused), func() bool {
			st := victim.p.Stats()
			return st.SyncStreams == answered && st.SyncRefused == refused
		})
	}
	attack(h1)
	waitStreams(perPeer, streams-perPeer)
	attack(h2)
	waitStreams(global, 2*streams-global)

	// The old reader allocated each announced frame whole: 64 MiB for each
	// answered stream (all 40 were answered then).
	bound := 2*idle + 16<<20
	under := liveHeap()
	t.Logf("live heap: %d KiB idle, %d KiB under attack (bound %d KiB); %d streams announcing %d MiB each",
		idle>>10, under>>10, bound>>10, 2*streams, maxSyncFrame>>20)
	if under > bound {
		t.Fatalf("live heap %d bytes under attack, %d idle: want at most %d", under, idle, bound)
	}

	// Refusing a stream is no offence; ending the streams frees the slots.
	if st := victim.p.Stats(); st.BadPeers != 0 || st.SyncRejected != 0 {
		t.Fatalf("refused streams counted against their peers: %+v", st)
	}
	for _, s := range held {
		_ = s.Reset()
	}
	waitFor(t, 20*time.Second, "the slots freed", func() bool { return victim.p.Stats().SyncStreams == 0 })
}

// reconnectRaw connects h to p again once both sides have seen their
// connection closed: dialling while h still holds the closing connection
// would return at once, connecting nothing.
func reconnectRaw(t testing.TB, h host.Host, p *testPeer) {
	t.Helper()
	waitFor(t, 10*time.Second, "both sides to see the connection closed", func() bool {
		return h.Network().Connectedness(p.p.ID()) != network.Connected &&
			p.p.h.Network().Connectedness(h.ID()) != network.Connected
	})
	connectRaw(t, h, p)
	waitFor(t, 10*time.Second, "the connection seen by both sides", func() bool {
		return p.p.h.Network().Connectedness(h.ID()) == network.Connected
	})
}

// staller is a raw host that accepts every pull, reads the request and
// then holds the stream without answering until its connection closes.
type staller struct {
	host.Host
	opened  atomic.Int32 // pulls received
	holding atomic.Int32 // pulls being held now
}

func newStaller(t *testing.T, target *testPeer, opts ...libp2p.Option) *staller {
	st := &staller{Host: rawHost(t, opts...)}
	st.SetStreamHandler(target.p.proto, func(s network.Stream) {
		defer s.Close()
		st.opened.Add(1)
		if _, _, err := readFrame(bufio.NewReader(s), maxSyncFrame); err != nil {
			s.Reset()
			return
		}
		st.holding.Add(1)
		defer st.holding.Add(-1)
		// The puller half-closes after its request, so reading tells
		// nothing more: watch the connection.
		for !s.Conn().IsClosed() {
			time.Sleep(20 * time.Millisecond)
		}
	})
	return st
}

// TestPeer_StallingResponderDoesNotBlockPulls: a peer that accepts a pull
// and never answers delays no pull from another peer: an honest peer's
// writes arrive by anti-entropy while the staller holds its stream. The
// staller is dropped after the idle timeout, counted, disconnected, and,
// when it comes back, not pulled from during its backoff.
func TestPeer_StallingResponderDoesNotBlockPulls(t *testing.T) {
	const idle = 5 * time.Second
	cfg := testConfig(t)
	cfg.SyncIdleTimeout = idle
	// The staller answers pings; on a loaded machine the answer may take
	// longer than the default bound, and the stall would pass for a
	// partition (not backed off, and pulled again).
	cfg.stallPing = 30 * time.Second
	target := startPeer(t, cfg, nil)
	st := newStaller(t, target)
	start := time.Now()
	connectRaw(t, st, target) // the target pulls from it at once
	waitFor(t, 10*time.Second, "the staller holding a pull", func() bool { return st.holding.Load() == 1 })

	// Written before the honest peer connects, these reach the target by
	// a pull only: gossip published with no peer goes nowhere.
	honest := startPeer(t, testConfig(t), nil)
	for i := range 3 {
		add(t, honest, fmt.Sprint("honest-", i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := honest.p.Connect(ctx, tcpAddr(t, target)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the honest writes pulled", func() bool {
		return has(target.n, "honest-0") && has(target.n, "honest-1") && has(target.n, "honest-2")
	})
	if st.holding.Load() != 1 {
		t.Fatalf("the staller no longer holds its stream (after %v): the honest pull did not overlap it", time.Since(start))
	}

	waitFor(t, idle+10*time.Second, "the staller dropped, disconnected and backed off", func() bool {
		s := target.p.Stats()
		return s.SyncStalled > 0 && s.BadPeers > 0 && s.BackedOffPeers == 1 &&
			target.p.h.Network().Connectedness(st.ID()) != network.Connected
	})
	t.Logf("the staller was dropped %v after it connected (idle timeout %v)", time.Since(start).Round(time.Millisecond), idle)
	if s := target.p.Stats(); s.SyncRejected != 0 {
		t.Fatalf("a stall counted as garbage: %+v", s)
	}

	// Back again, it is not pulled from while the target keeps pulling
	// from the honest peer.
	reconnectRaw(t, st, target)
	waitRounds(t, 3, target, honest)
	if n := st.opened.Load(); n != 1 {
		t.Fatalf("the staller was pulled from %d times, once expected before its backoff", n)
	}
	if target.p.h.Network().Connectedness(st.ID()) != network.Connected {
		t.Fatal("the staller's new connection was closed: backoff only stops pulls")
	}
}

// TestPeer_StallWithoutPingIsNotAnOffence: a peer that stalls a pull and
// does not answer a ping either looks like what a partition does to every
// stream: the stream is dropped and counted, but the peer is neither
// disconnected nor backed off, so that it is pulled from again as soon as
// the network heals.
func TestPeer_StallWithoutPingIsNotAnOffence(t *testing.T) {
	cfg := testConfig(t)
	cfg.SyncIdleTimeout = time.Second
	// The stall is counted before the ping that decides whether it is an
	// offence: wait for the decision, or the checks below would run before
	// any backoff could have happened.
	decided := &countingHandler{msg: "sync stream stalled and the peer does not answer a ping: the network, not the peer; not backed off"}
	cfg.Logger = slog.New(decided)
	target := startPeer(t, cfg, nil)
	st := newStaller(t, target, libp2p.Ping(false))
	connectRaw(t, st, target) // the target pulls from it at once
	waitFor(t, 20*time.Second, "the stall counted and found the network's doing", func() bool {
		return target.p.Stats().SyncStalled > 0 && decided.count.Load() > 0
	})
	if s := target.p.Stats(); s.BadPeers != 0 || s.BackedOffPeers != 0 {
		t.Fatalf("a stall without ping answers was taken for an offence: %+v", s)
	}
	if target.p.h.Network().Connectedness(st.ID()) != network.Connected {
		t.Fatal("the peer was disconnected")
	}
}

// TestPeer_EndlessFullStateIsBackedOff: a peer answering pulls with a full
// state that never ends (valid items, past the node's MaxStateBytes, the
// stream held open) is disconnected as a bad peer, not as a garbage
// sender; nothing of the state is applied; and when it comes back it is
// not pulled from during its backoff, so it cannot make the node spool
// MaxStateBytes again and again.
func TestPeer_EndlessFullStateIsBackedOff(t *testing.T) {
	const maxState = 16 << 10
	ncfg := node.DefaultConfig()
	ncfg.MaxStateBytes = maxState
	target := startPeer(t, testConfig(t), &ncfg)
	gcfg := testConfig(t)
	gcfg.Bootstrap = target.p.Addrs()[:1]
	good := startPeer(t, gcfg, nil)
	add(t, good, "before")
	waitFor(t, 10*time.Second, "target and good converge", func() bool { return converged(t, target, good) })

	fs := intruderState(t, 1000)
	var answer bytes.Buffer
	if _, err := writeFrame(&answer, &syncFrame{Kind: frameFull}); err != nil {
		t.Fatal(err)
	}
	answer.Write(bytes.Join(fs[:len(fs)-1], nil)) // a header and items, no trailer
	if answer.Len() < 2*maxState {
		t.Fatalf("the state is %d bytes, want over %d", answer.Len(), 2*maxState)
	}
	h := rawHost(t)
	var served atomic.Int32
	h.SetStreamHandler(target.p.proto, func(s network.Stream) {
		defer s.Close()
		served.Add(1)
		_ = s.SetDeadline(time.Now().Add(30 * time.Second))
		if _, _, err := readFrame(bufio.NewReader(s), maxSyncFrame); err != nil {
			s.Reset()
			return
		}
		if _, err := s.Write(answer.Bytes()); err != nil {
			s.Reset()
			return
		}
		for !s.Conn().IsClosed() { // never the end of it
			time.Sleep(20 * time.Millisecond)
		}
	})
	before := takeSnapshot(t, target)
	connectRaw(t, h, target) // the target pulls from it at once
	waitFor(t, 20*time.Second, "the sender disconnected and backed off", func() bool {
		s := target.p.Stats()
		return s.BadPeers > 0 && s.BackedOffPeers == 1 &&
			target.p.h.Network().Connectedness(h.ID()) != network.Connected
	})
	if s := target.p.Stats(); s.SyncRejected != 0 || s.FullStatesReceived != 0 || s.SyncBytesReceived < maxState {
		t.Fatalf("stats %+v: want no rejection, no state received, at least %d bytes received", s, maxState)
	}
	before.check(t, target)

	reconnectRaw(t, h, target)
	waitRounds(t, 3, target, good)
	if n := served.Load(); n != 1 {
		t.Fatalf("the endless state was pulled %d times, once expected before the backoff", n)
	}
	stillHealthy(t, target, good, "after-endless-state")
}

// TestPeer_BadPeerBackoffDoublesAndCaps: each offence after a backoff has
// ended doubles the next one, up to the cap; an offence during a backoff
// does not lengthen it; a peer that behaves for the cap starts again from
// the bottom.
func TestPeer_BadPeerBackoffDoublesAndCaps(t *testing.T) {
	p := &Peer{backoffs: map[peer.ID]*backoff{}}
	p.cfg.BadPeerBackoff, p.cfg.MaxBadPeerBackoff = time.Minute, 5*time.Minute
	const id = peer.ID("bad")
	end := func(ago time.Duration) { p.backoffs[id].until = time.Now().Add(-ago) }
	for i, want := range []time.Duration{1, 2, 4, 5, 5} {
		d, again := p.backOff(id)
		if d != want*time.Minute || again {
			t.Fatalf("offence %d: backoff %v (again %v), want %v", i+1, d, again, want*time.Minute)
		}
		if !p.backedOff(id) || p.backedOffPeers() != 1 {
			t.Fatalf("offence %d: not backed off", i+1)
		}
		if d, again := p.backOff(id); !again || d > want*time.Minute {
			t.Fatalf("offence %d again during the backoff: %v (again %v)", i+1, d, again)
		}
		end(time.Second)
		if p.backedOff(id) || p.backedOffPeers() != 0 {
			t.Fatalf("offence %d: still backed off after its end", i+1)
		}
	}
	end(5*time.Minute + time.Second)
	if d, _ := p.backOff(id); d != time.Minute {
		t.Fatalf("after behaving for the cap: backoff %v, want 1m", d)
	}
}
