package p2p

import (
	"bufio"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
	"github.com/libp2p/go-libp2p/core/network"
)

// madeUp returns an add by replica name's first dot, which an unsigned
// node takes from anyone.
func madeUp(t testing.TB, name string) *crdt.Delta {
	t.Helper()
	ts := crdt.MakeTimestamp(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli(), 0)
	d, err := crdt.AddDelta(key(name), nil, crdt.Document{"n": []byte("1")}, crdt.Dot{Replica: crdt.ReplicaID(name), Counter: 1}, ts)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// applyMadeUp applies one add of each of count made-up replicas to n.
func applyMadeUp(t testing.TB, n *node.Node, prefix string, count int) {
	t.Helper()
	var batch []*crdt.Delta
	for i := range count {
		batch = append(batch, madeUp(t, fmt.Sprintf("%s-%05d", prefix, i)))
		if len(batch) == 500 || i == count-1 {
			if res, err := n.ApplyDeltas(context.Background(), batch); err != nil || res.New != len(batch) {
				t.Fatalf("apply: %+v %v", res, err)
			}
			batch = batch[:0]
		}
	}
}

// syncBytes is what p sent and received on sync streams.
func syncBytes(p *testPeer) uint64 {
	st := p.p.Stats()
	return st.SyncBytesSent + st.SyncBytesReceived
}

// pullOnce pulls from to once, with a deadline, and returns the bytes the
// pull moved.
func pullOnce(t *testing.T, from, to *testPeer) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	before := syncBytes(from)
	if err := from.p.Pull(ctx, to.p.ID()); err != nil {
		t.Fatal(err)
	}
	return syncBytes(from) - before
}

// Two peers whose contexts name 5,000 replicas compare them by digest: a
// round between equal peers moves a root hash each way, and a round that
// finds one replica ahead moves the group hashes, one group's bucket
// hashes and one bucket's entries and delta, not the contexts (about 70 KB
// each way through sync/1).
func TestSync2_RoundBytesGrowWithTheDifference(t *testing.T) {
	cfg := testConfig(t)
	cfg.AntiEntropyInterval = time.Hour // only the pulls at connect, and this test's
	a := startUnsignedPeer(t, cfg, nil)
	cfg = testConfig(t)
	cfg.AntiEntropyInterval = time.Hour
	b := startUnsignedPeer(t, cfg, nil)
	applyMadeUp(t, a.n, "r", 5000)
	applyMadeUp(t, b.n, "r", 5000)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.p.Connect(ctx, tcpAddr(t, a)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the pulls at connect", func() bool {
		return a.p.Stats().Rounds >= 1 && b.p.Stats().Rounds >= 1
	})

	if n := pullOnce(t, b, a); n > 256 {
		t.Fatalf("a round between equal peers moved %d bytes", n)
	}
	if _, err := a.n.ApplyDeltas(context.Background(), []*crdt.Delta{madeUp(t, "late")}); err != nil {
		t.Fatal(err)
	}
	n := pullOnce(t, b, a)
	if !has(b.n, "late") {
		t.Fatal("the pull did not bring the delta that differs")
	}
	if n > 4_000 {
		t.Fatalf("a round that found one replica ahead moved %d bytes", n)
	}
	t.Logf("5,000 replicas: %d bytes for one differing replica", n)
	if ps := b.p.Peers(); len(ps) != 1 || !ps[0].Known || ps[0].Ahead != 0 || ps[0].Behind != 0 {
		t.Fatalf("status after the round: %+v", ps)
	}
	if n := pullOnce(t, b, a); n > 256 {
		t.Fatalf("a round between peers equal again moved %d bytes", n)
	}
}

// A peer that speaks only sync/1 (a release before the digest exchange)
// is pulled from with it, and its writes arrive.
func TestSync2_OlderPeerIsPulledWithSync1(t *testing.T) {
	old := startPeer(t, testConfig(t), nil)
	old.p.h.RemoveStreamHandler(old.p.proto2)
	add(t, old, "from-old")
	cfg := testConfig(t)
	cfg.Bootstrap = old.p.Addrs()[:1]
	cur := startPeer(t, cfg, nil)
	add(t, cur, "from-new")
	waitFor(t, 20*time.Second, "both writes on both peers", func() bool {
		return has(cur.n, "from-old") && has(cur.n, "from-new") && has(old.n, "from-new") && has(old.n, "from-old")
	})
	if s := cur.p.Stats(); s.SyncRejected != 0 || s.BadPeers != 0 {
		t.Fatalf("the older peer counted as bad: %+v", s)
	}
}

// A requester that sends garbage in the digest exchange (groups out of
// range or order, entries outside the buckets they claim, buckets out of
// order, frames of the wrong kind) is refused as garbage, and the
// answering node keeps serving.
func TestSync2_GarbageEntriesAreRefused(t *testing.T) {
	target := startUnsignedPeer(t, testConfig(t), nil)
	applyMadeUp(t, target.n, "r", 50)
	wrongBucket := (crdt.BucketOf("intruder") + 1) % crdt.DigestBuckets
	entry := func() []byte {
		c := crdt.NewContext()
		c.Add(crdt.Dot{Replica: "intruder", Counter: 1})
		return c.AppendEntry(nil, "intruder")
	}()
	for _, tc := range []struct {
		name   string
		groups *syncFrame // sent instead of the honest groups frame, if set
		f      *syncFrame
	}{
		{"group out of range", &syncFrame{Kind: frameGroups, Buckets: []uint64{crdt.DigestGroups}}, nil},
		{"groups out of order", &syncFrame{Kind: frameGroups, Buckets: []uint64{5, 2}}, nil},
		{"entries instead of groups", &syncFrame{Kind: frameEntries}, nil},
		{"entry outside its bucket", nil, &syncFrame{Kind: frameEntries, Buckets: []uint64{uint64(wrongBucket)}, Replicas: []string{"intruder"}, Entries: [][]byte{entry}}},
		{"buckets out of order", nil, &syncFrame{Kind: frameEntries, Buckets: []uint64{9, 3}}},
		{"bucket out of range", nil, &syncFrame{Kind: frameEntries, Buckets: []uint64{crdt.DigestBuckets}}},
		{"entry that does not decode", nil, &syncFrame{Kind: frameEntries, Buckets: []uint64{uint64(crdt.BucketOf("intruder"))}, Replicas: []string{"intruder"}, Entries: [][]byte{{1, 0, 0}}}},
		{"fewer entries than replicas", nil, &syncFrame{Kind: frameEntries, Buckets: []uint64{uint64(crdt.BucketOf("intruder"))}, Replicas: []string{"intruder"}}},
		{"bucket hashes instead of entries", nil, &syncFrame{Kind: frameBuckets, Digests: make([]byte, 8*crdt.DigestBuckets)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := rawHost(t)
			connectRaw(t, h, target)
			before := target.p.Stats().SyncRejected
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := h.NewStream(ctx, target.p.ID(), target.p.proto2)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			_ = s.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := writeFrame(s, &syncFrame{Kind: frameDigest, Version: wireVersion, Network: target.p.cfg.Network, Root: make([]byte, crdt.HashSize)}); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(s)
			f, _, err := readFrame(br, maxDigestFrame)
			if err != nil || f.Kind != frameBuckets {
				t.Fatalf("answer to a digest: %+v, %v", f, err)
			}
			if _, err := decodeBucketHashes(f.Digests, crdt.DigestGroups); err != nil {
				t.Fatal(err)
			}
			groups := tc.groups
			if groups == nil {
				groups = &syncFrame{Kind: frameGroups, Buckets: []uint64{3, uint64(crdt.GroupOf(crdt.BucketOf("intruder")))}}
				slices.Sort(groups.Buckets)
				groups.Buckets = slices.Compact(groups.Buckets)
			}
			if _, err := writeFrame(s, groups); err != nil {
				t.Fatal(err)
			}
			if tc.f != nil {
				f, _, err := readFrame(br, maxDigestFrame)
				if err != nil || f.Kind != frameBuckets || !slices.Equal(f.Buckets, groups.Buckets) {
					t.Fatalf("answer to groups %v: %+v, %v", groups.Buckets, f, err)
				}
				if _, err := decodeBucketHashes(f.Digests, len(groups.Buckets)*crdt.DigestBuckets/crdt.DigestGroups); err != nil {
					t.Fatal(err)
				}
				if _, err := writeFrame(s, tc.f); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, 10*time.Second, "the garbage refused", func() bool { return target.p.Stats().SyncRejected > before })
			waitFor(t, 10*time.Second, "the sender disconnected", func() bool {
				return target.p.h.Network().Connectedness(h.ID()) != network.Connected
			})
		})
	}
	// An honest peer still syncs with it.
	cfg := testConfig(t)
	cfg.Bootstrap = target.p.Addrs()[:1]
	honest := startUnsignedPeer(t, cfg, nil)
	add(t, honest, "honest")
	waitFor(t, 20*time.Second, "the honest write pulled", func() bool { return has(target.n, "honest") })
}

// A responder that answers a digest with bucket hashes of the wrong size
// is a bad peer for the puller: its pull at connect is refused as garbage
// and the responder is backed off.
func TestSync2_BadBucketHashesAreRefused(t *testing.T) {
	puller := startPeer(t, testConfig(t), nil)
	h := rawHost(t)
	h.SetStreamHandler(puller.p.proto2, func(s network.Stream) {
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := readFrame(bufio.NewReader(s), maxDigestFrame); err != nil {
			s.Reset()
			return
		}
		_, _ = writeFrame(s, &syncFrame{Kind: frameBuckets, Digests: make([]byte, 12)})
	})
	connectRaw(t, h, puller) // the puller pulls from it at once
	waitFor(t, 10*time.Second, "the responder refused and backed off", func() bool {
		s := puller.p.Stats()
		return s.SyncRejected == 1 && s.BackedOffPeers == 1
	})
}
