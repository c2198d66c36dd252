package p2p

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/node"
	leveldb "github.com/ipfs/go-ds-leveldb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
)

// intruderState returns the full-state stream of a node that exists
// nowhere else, holding items intruder-0..n-1, split into its frames
// (header, items, trailer), each with its length prefix.
func intruderState(t testing.TB, n int) [][]byte {
	t.Helper()
	ctx := context.Background()
	store, err := leveldb.NewDatastore("", nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := node.DefaultConfig()
	cfg.Logger = quietLogger()
	src, err := node.Open(ctx, store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	for i := range n {
		if _, err := src.Add(ctx, key(fmt.Sprint("intruder-", i)), doc(t, `{"evil":true}`)); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := src.ExportState(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	var frames [][]byte
	for b := buf.Bytes(); len(b) > 0; {
		size, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < size {
			t.Fatal("the export does not split into frames")
		}
		frames = append(frames, b[:k+int(size)])
		b = b[k+int(size):]
	}
	if len(frames) != n+2 {
		t.Fatalf("%d frames for %d items", len(frames), n)
	}
	return frames
}

// fullStateHost is a raw host that answers every pull with a full-state
// frame followed by the bytes of the case at hand, then closes the stream
// (or resets it). A packed one also serves the packed sync protocol,
// which the target offers first: it answers with a packed full state,
// the case's bytes packed (or, with asIs, as they are).
type fullStateHost struct {
	host.Host
	answer atomic.Pointer[[]byte]
	reset  atomic.Bool
	asIs   atomic.Bool
}

func newFullStateHost(t *testing.T, target *testPeer) *fullStateHost {
	return newFullStateHostPacked(t, target, false)
}

func newFullStateHostPacked(t *testing.T, target *testPeer, packed bool) *fullStateHost {
	fh := &fullStateHost{Host: rawHost(t)}
	plainProto, packedProto := target.p.proto, target.p.packedSyncProto()
	handler := func(s network.Stream) {
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := readFrame(bufio.NewReader(s), maxSyncFrame); err != nil {
			s.Reset()
			return
		}
		kind, body := uint(frameFull), *fh.answer.Load()
		if s.Protocol() == packedProto {
			kind = frameFullPacked
			if !fh.asIs.Load() {
				var z bytes.Buffer
				w := packer(&z)
				if _, err := w.Write(body); err != nil || w.Close() != nil {
					s.Reset()
					return
				}
				body = z.Bytes()
			}
		}
		var full bytes.Buffer
		if _, err := writeFrame(&full, &syncFrame{Kind: kind}); err != nil {
			s.Reset()
			return
		}
		if _, err := s.Write(append(full.Bytes(), body...)); err != nil {
			s.Reset()
			return
		}
		if fh.reset.Load() {
			s.Reset()
		}
	}
	fh.SetStreamHandler(plainProto, handler)
	if packed {
		fh.SetStreamHandler(packedProto, handler)
	}
	target.p.h.Peerstore().AddAddrs(fh.ID(), fh.Addrs(), peerstore.PermanentAddrTTL)
	return fh
}

// pull runs one pull of target from id, with a deadline.
func pull(target *testPeer, id peer.ID) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return target.p.Pull(ctx, id)
}

// TestPeer_FullStateCutShortIsNotGarbage: a full state that ends early —
// the answering peer closed its stream or reset it midway — is a sync
// failure: nothing is applied, the pull fails, SyncFailures grows, and the
// peer stays connected. A full state with garbage after valid items is
// rejected whole: nothing of it is applied (not even the valid items
// before the garbage), SyncRejected grows and the peer is disconnected. A
// full state over the node's own size limit is not garbage either, but
// its sender is disconnected and backed off as a bad peer. The
// same stream whole imports, which shows the cut ones were cut, not
// malformed.
func TestPeer_FullStateCutShortIsNotGarbage(t *testing.T) {
	target := startPeer(t, testConfig(t), nil)
	gcfg := testConfig(t)
	gcfg.Bootstrap = target.p.Addrs()[:1]
	good := startPeer(t, gcfg, nil)
	add(t, good, "before")
	waitFor(t, 10*time.Second, "target and good converge", func() bool { return converged(t, target, good) })

	fs := intruderState(t, 12)
	hdr, items, trailer := fs[0], fs[1:len(fs)-1], fs[len(fs)-1]
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	valid := join(append([][]byte{hdr}, items[:6]...)...) // a header and six items
	whole := join(fs...)

	fh := newFullStateHost(t, target)
	before := takeSnapshot(t, target)
	noIntruder := func(t *testing.T) {
		t.Helper()
		before.check(t, target)
		for i := range len(items) {
			if has(target.n, fmt.Sprint("intruder-", i)) {
				t.Fatalf("intruder-%d was applied", i)
			}
		}
	}

	cut := []struct {
		what   string
		answer []byte
		reset  bool
	}{
		{"cut mid-frame, stream closed", join(valid, items[6][:len(items[6])/2]), false},
		{"cut between frames, stream closed", valid, false},
		{"cut in the trailer, stream closed", whole[:len(whole)-1], false},
		{"cut right after the full-state frame, stream closed", nil, false},
		{"cut mid-frame, stream reset", join(valid, items[6][:len(items[6])/2]), true},
	}
	for _, c := range cut {
		t.Run(c.what, func(t *testing.T) {
			fh.answer.Store(&c.answer)
			fh.reset.Store(c.reset)
			st := target.p.Stats()
			err := pull(target, fh.ID())
			if err == nil {
				t.Fatal("the pull succeeded")
			}
			if isGarbage(err) {
				t.Fatalf("a stream cut short counted as garbage: %v", err)
			}
			if !c.reset && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("error %v, want one wrapping io.ErrUnexpectedEOF", err)
			}
			now := target.p.Stats()
			if now.SyncFailures <= st.SyncFailures {
				t.Fatal("not counted as a sync failure")
			}
			if target.p.stateRetryWait(fh.ID()) == 0 {
				t.Fatal("a failed full state did not put off the next pull from its sender")
			}
			if now.SyncRejected != st.SyncRejected || now.FullStatesReceived != st.FullStatesReceived {
				t.Fatalf("counted as rejected (%d -> %d) or received (%d -> %d)",
					st.SyncRejected, now.SyncRejected, st.FullStatesReceived, now.FullStatesReceived)
			}
			// Time passes (the target also pulls from the raw host on its
			// own, and gets the same answer): the peer stays connected.
			waitRounds(t, 2, target, good)
			if c := target.p.h.Network().Connectedness(fh.ID()); c != network.Connected {
				t.Fatalf("the peer that sent a stream cut short is %v", c)
			}
			if now := target.p.Stats(); now.SyncRejected != st.SyncRejected {
				t.Fatal("a later pull counted the cut stream as garbage")
			}
			noIntruder(t)
		})
	}

	garbage := []struct {
		what   string
		answer []byte
	}{
		{"valid items then a frame of garbage", join(valid, []byte{0x05, 0xff, 0xff, 0xff, 0xff, 0xff}, items[6])},
		{"valid items then an item out of order", join(valid, items[2], trailer)},
		{"all items and a trailer with the wrong count", join(join(fs[:len(fs)-1]...), trailerWithCount(t, len(items)+1))},
	}
	for _, g := range garbage {
		t.Run(g.what, func(t *testing.T) {
			fh.answer.Store(&g.answer)
			fh.reset.Store(false)
			st := target.p.Stats()
			// The pull dials the raw host; on connecting, the target may
			// also start a pull of its own, which gets the same garbage
			// and may be the one that disconnects it.
			if err := pull(target, fh.ID()); err == nil {
				t.Fatal("the pull succeeded")
			}
			waitFor(t, 10*time.Second, "counted as garbage", func() bool {
				return target.p.Stats().SyncRejected > st.SyncRejected
			})
			waitFor(t, 10*time.Second, "the garbage sender disconnected", func() bool {
				return target.p.h.Network().Connectedness(fh.ID()) != network.Connected
			})
			waitRounds(t, 2, target, good)
			if target.p.h.Network().Connectedness(fh.ID()) == network.Connected {
				t.Fatal("the garbage sender was reconnected")
			}
			if now := target.p.Stats(); now.FullStatesReceived != st.FullStatesReceived {
				t.Fatal("counted as a full state received")
			}
			noIntruder(t)
		})
	}

	// Over the node's limit: not garbage, but a bad peer all the same
	// (see TestPeer_EndlessFullStateIsBackedOff).
	t.Run("over the node's limit", func(t *testing.T) {
		ncfg := node.DefaultConfig()
		ncfg.MaxStateBytes = int64(len(whole) - 1)
		small := startPeer(t, testConfig(t), &ncfg)
		sh := newFullStateHost(t, small)
		sh.answer.Store(&whole)
		sbefore := takeSnapshot(t, small)
		// The pull dials the raw host; the pull the target starts on
		// connecting gets the same state and may be the one that
		// disconnects it, cutting this one short.
		if err := pull(small, sh.ID()); err == nil || isGarbage(err) {
			t.Fatalf("error %v, want node.ErrStateTooLarge or a stream cut short, not garbage", err)
		}
		waitFor(t, 10*time.Second, "the sender disconnected and backed off", func() bool {
			st := small.p.Stats()
			return st.BadPeers > 0 && st.BackedOffPeers == 1 &&
				small.p.h.Network().Connectedness(sh.ID()) != network.Connected
		})
		if st := small.p.Stats(); st.SyncRejected != 0 || st.SyncFailures == 0 {
			t.Fatalf("stats %+v: want a failure, no rejection", st)
		}
		sbefore.check(t, small)
	})

	// The whole stream imports.
	fh.answer.Store(&whole)
	st := target.p.Stats()
	if err := pull(target, fh.ID()); err != nil {
		t.Fatalf("the whole stream: %v", err)
	}
	// (The pull redials the raw host, and the target's own pull on
	// connecting may import it too.)
	if now := target.p.Stats(); now.FullStatesReceived <= st.FullStatesReceived {
		t.Fatal("the whole stream was not counted as a full state received")
	}
	for i := range len(items) {
		if !has(target.n, fmt.Sprint("intruder-", i)) {
			t.Fatalf("intruder-%d is missing after the whole stream", i)
		}
	}
	stillHealthy(t, target, good, "after-full-states")
}

// trailerWithCount returns a trailer frame claiming count items.
func trailerWithCount(t testing.TB, count int) []byte {
	t.Helper()
	// {1: 3 (the trailer's kind), 9: count}
	b := []byte{0xa2, 0x01, 0x03, 0x09}
	switch {
	case count < 24:
		b = append(b, byte(count))
	case count < 256:
		b = append(b, 0x18, byte(count))
	default:
		t.Fatalf("count %d too large for this helper", count)
	}
	return append(binary.AppendUvarint(nil, uint64(len(b))), b...)
}

// TestPeer_FullStateRetryGrowsAndResets: each full-state failure in a row
// doubles the wait before the next scheduled pull from that peer, up to
// the cap; a successful pull resets it; other peers are not affected.
func TestPeer_FullStateRetryGrowsAndResets(t *testing.T) {
	p := &Peer{retries: map[peer.ID]*backoff{}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	p.cfg.FullStateRetry, p.cfg.MaxFullStateRetry = time.Minute, 5*time.Minute
	const id, other = peer.ID("a"), peer.ID("b")
	for i, want := range []time.Duration{1, 2, 4, 5, 5} {
		p.stateFailed(id, 100, io.ErrUnexpectedEOF)
		if w := p.stateRetryWait(id); w <= want*time.Minute-time.Second || w > want*time.Minute {
			t.Fatalf("failure %d: waits %v, want %v", i+1, w, want*time.Minute)
		}
	}
	if w := p.stateRetryWait(other); w != 0 {
		t.Fatalf("another peer waits %v", w)
	}
	p.stateSucceeded(id)
	if w := p.stateRetryWait(id); w != 0 {
		t.Fatalf("after a success: waits %v", w)
	}
	p.stateFailed(id, 100, io.ErrUnexpectedEOF)
	if w := p.stateRetryWait(id); w > time.Minute {
		t.Fatalf("the first failure after a success waits %v, want 1m", w)
	}
}

// TestPeer_PackedFullState: a requester offers the packed sync protocol
// first; a full state packed with snappy that is cut short is a sync
// failure, not garbage, and changes nothing; bytes that do not unpack are
// garbage (rejected, the sender disconnected); the whole packed stream
// imports, with fewer bytes on the wire than the plain stream.
func TestPeer_PackedFullState(t *testing.T) {
	target := startPeer(t, testConfig(t), nil)
	fs := intruderState(t, 200)
	whole := bytes.Join(fs, nil)
	fh := newFullStateHostPacked(t, target, true)
	before := takeSnapshot(t, target)

	var z bytes.Buffer
	w := packer(&z)
	if _, err := w.Write(whole); err != nil || w.Close() != nil {
		t.Fatal("pack")
	}
	cut := z.Bytes()[:z.Len()/2]
	fh.answer.Store(&cut)
	fh.asIs.Store(true)
	err := pull(target, fh.ID())
	if err == nil || isGarbage(err) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a packed stream cut mid-chunk: %v, want a stream cut short, not garbage", err)
	}
	before.check(t, target)

	garbage := append([]byte{0xff, 0x06, 0x00, 0x00}, []byte("sNaPpY")...) // snappy's stream identifier
	garbage = append(garbage, 0x00, 0x10, 0x00, 0x00)                      // a compressed chunk of 16 bytes...
	garbage = append(garbage, bytes.Repeat([]byte{0xfe}, 16)...)           // ...that are not snappy
	fh.answer.Store(&garbage)
	st := target.p.Stats()
	// The target's own pull on connecting may be the one that gets the
	// garbage first and disconnects the sender, cutting this one short.
	if err := pull(target, fh.ID()); err == nil {
		t.Fatal("packed garbage imported")
	}
	waitFor(t, 10*time.Second, "counted as garbage, the sender disconnected", func() bool {
		return target.p.Stats().SyncRejected > st.SyncRejected && target.p.h.Network().Connectedness(fh.ID()) != network.Connected
	})
	before.check(t, target)

	fh.answer.Store(&whole)
	fh.asIs.Store(false)
	st = target.p.Stats()
	if err := pull(target, fh.ID()); err != nil {
		t.Fatalf("the whole packed stream: %v", err)
	}
	now := target.p.Stats()
	if now.FullStatesReceived <= st.FullStatesReceived {
		t.Fatal("not counted as a full state received")
	}
	if got := now.SyncBytesReceived - st.SyncBytesReceived; got >= uint64(len(whole)) {
		t.Fatalf("%d bytes received for a plain stream of %d", got, len(whole))
	}
	for i := range 200 {
		if !has(target.n, fmt.Sprint("intruder-", i)) {
			t.Fatalf("intruder-%d is missing after the whole stream", i)
		}
	}
}
