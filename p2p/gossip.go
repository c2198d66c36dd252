package p2p

import (
	"context"
	"errors"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"
)

const (
	// maxBatchDeltas and maxBatchBytes bound the deltas one gossip message
	// carries when local writes arrive faster than they are published.
	maxBatchDeltas = 256
	maxBatchBytes  = 512 << 10
	// subBuffer is the node subscription's buffer, in changes.
	subBuffer = 8192
	// peerQueue is GossipSub's per-peer send queue, in RPCs (default 32);
	// an RPC that finds it full is dropped and left to repair.
	peerQueue = 256
)

// gossipParams tunes GossipSub for a catalog, where every peer wants every
// message and anti-entropy repairs what gossip misses. GossipSub's
// defaults (D = 6, IHAVE for three heartbeats to six peers) aim at large
// open networks; in a 5-peer cluster they, with flood publishing, sent each
// message to every peer about four times (docs/BENCHMARKS.md). Here:
//   - a peer grafts d peers into its mesh and keeps at least d-1, so a
//     receiver forwards a message to about d-1 others, and the publisher
//     sends its own messages to its mesh only (no flood publishing);
//   - the mesh accepts grafts up to max(12, 2d) peers, so a peer that others
//     know only as their bootstrap peer still forwards to all of them;
//   - IHAVE gossip, the mesh's lazy repair, names each message once
//     (HistoryGossip 1) to two peers outside the mesh (Dlazy 2).
//
// d = 6 gives GossipSub's default mesh bounds.
func gossipParams(d int, heartbeat time.Duration) pubsub.GossipSubParams {
	params := pubsub.DefaultGossipSubParams()
	params.D, params.Dlo, params.Dhi = d, d-1, max(12, 2*d)
	params.Dout = max(0, min(params.Dout, d/2-1)) // must be < d/2 and < Dlo
	params.Dscore = min(params.Dscore, d)
	params.Dlazy = 2
	params.HistoryGossip = 1
	params.HeartbeatInterval = heartbeat
	params.HeartbeatInitialDelay = heartbeat / 2
	return params
}

// messageID names a gossip message by the last 8 bytes of its origin's
// peer ID and its 8-byte sequence number: unique like GossipSub's default
// (the whole peer ID, 38 bytes for Ed25519), but 16 bytes in every IHAVE
// and IWANT. Strict signing authenticates both fields. Peers must agree on
// this function; one that did not would only see more duplicates, which
// the node drops.
func messageID(m *pb.Message) string {
	from := m.GetFrom()
	if len(from) > 8 {
		from = from[len(from)-8:]
	}
	return string(from) + string(m.GetSeqno())
}

// startGossip joins the delta topic with a validator that rejects what does
// not decode, then starts the publish and receive loops.
func (p *Peer) startGossip() error {
	ps, err := pubsub.NewGossipSub(p.ctx, p.h,
		pubsub.WithGossipSubParams(gossipParams(p.cfg.MeshDegree, p.cfg.HeartbeatInterval)),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictSign),
		pubsub.WithMaxMessageSize(p.cfg.MaxMessageBytes),
		pubsub.WithMessageIdFn(messageID),
		pubsub.WithFloodPublish(false),
		pubsub.WithPeerOutboundQueueSize(peerQueue),
		pubsub.WithRawTracer(&p.tracer),
	)
	if err != nil {
		return err
	}
	p.ps = ps
	topic := p.cfg.topic()
	if err := ps.RegisterTopicValidator(topic, p.validate); err != nil {
		return err
	}
	if p.topic, err = ps.Join(topic); err != nil {
		return err
	}
	// The router joins the mesh at the first Subscribe, not at Join.
	if p.sub, err = p.topic.Subscribe(); err != nil {
		return err
	}
	local := p.cat.Subscribe(subBuffer)
	p.goRun(func() { p.publishLoop(local) })
	p.goRun(p.receiveLoop)
	return nil
}

// validate runs before a message is delivered or forwarded; from is the
// peer that forwarded it. With a writers list, a message whose origin is
// not a writer is rejected, and its forwarder stays connected. The origin
// is m.GetFrom(), which strict signing authenticates: GossipSub drops an
// unsigned message, or one whose signature does not match its From
// field, before any validator runs. A message in a later wire or delta
// version is ignored (not forwarded, not held against the peer: it may
// simply run a newer release). Anything else that does not decode, is too
// large or belongs to another network is rejected, and the peer that sent
// it is disconnected: an honest peer validates every message before
// forwarding it, so it never sends one that fails here.
func (p *Peer) validate(_ context.Context, from peer.ID, m *pubsub.Message) pubsub.ValidationResult {
	if from == p.h.ID() {
		return pubsub.ValidationAccept // our own message: receiveLoop drops it
	}
	if p.writers.Load() != nil && (m.Signature == nil || !p.isWriter(m.GetFrom())) {
		// The signature test restates StrictSign's guarantee, in case
		// the policy is ever loosened: an unsigned origin proves nothing.
		p.rejectNotWriter(m.GetFrom(), from)
		return pubsub.ValidationReject
	}
	ds, err := decodeGossip(m.Data, p.cfg.Network, p.cfg.MaxMessageBytes)
	switch {
	case errors.Is(err, crdt.ErrVersion):
		p.stats.ignored.Add(1)
		p.warnVersion(from, err)
		return pubsub.ValidationIgnore
	case err != nil:
		p.stats.rejected.Add(1)
		p.log.Warn("rejected gossip message; disconnecting the peer that sent it", "peer", from, "err", err)
		p.goRun(func() { _ = p.h.Network().ClosePeer(from) })
		return pubsub.ValidationReject
	}
	var checked crdt.ReplicaID // a message's deltas are usually of one replica
	for _, s := range ds {
		dot := s.Dot()
		if dot.Replica == checked {
			continue
		}
		checked = dot.Replica
		// A peer publishes only its own writes: a delta of a replica
		// keyed by another peer is a forgery, whatever its proof says.
		if owner := dot.Replica.Peer(); owner != "" && owner != m.GetFrom().String() {
			p.stats.rejected.Add(1)
			p.log.Warn("rejected gossip message: a delta of another peer's replica; disconnecting the peer that sent it",
				"peer", from, "origin", m.GetFrom(), "dot", dot)
			p.goRun(func() { _ = p.h.Network().ClosePeer(from) })
			return pubsub.ValidationReject
		}
	}
	m.ValidatorData = ds
	return pubsub.ValidationAccept
}

// warnVersion logs, once per run of this peer, that a peer sent a message
// in a newer format than this one reads.
func (p *Peer) warnVersion(from peer.ID, err error) {
	if p.versionWarned.CompareAndSwap(false, true) {
		p.log.Warn("a peer speaks a newer format; its messages are ignored until this peer is upgraded (logged once)", "peer", from, "err", err)
	}
}

// publishLoop publishes every local delta as it becomes durable, batching
// the ones that arrive together. If it falls behind the node's
// subscription, it resubscribes and republishes what it missed from the
// delta log.
func (p *Peer) publishLoop(sub *node.Subscription) {
	var last uint64 // sequence number of the last change handled
	for {
		select {
		case <-p.ctx.Done():
			sub.Close()
			return
		case c, ok := <-sub.C:
			if !ok {
				if !errors.Is(sub.Err(), node.ErrLagged) {
					return
				}
				p.log.Warn("gossip publisher fell behind; republishing from the delta log", "after_seq", last)
				sub = p.cat.Subscribe(subBuffer)
				p.republish(last)
				continue
			}
			var b gossipBatch
			b.add(c)
			b.collect(sub.C, p.ctx.Done())
			last = b.last
			p.publish(b.deltas, b.proofs)
		}
	}
}

// gossipBatch is the local deltas of one gossip message, with their
// proofs.
type gossipBatch struct {
	deltas, proofs [][]byte
	size           int
	last           uint64 // sequence number of the last change taken
	// open reports that the batch ends with a local delta whose signature
	// comes with a later change of its commit group (the node signs each
	// group's last local delta), which is on its way.
	open bool
}

func (b *gossipBatch) add(c node.Change) {
	b.last = c.Seq
	if c.Local {
		b.deltas, b.proofs = appendDelta(b.deltas, b.proofs, c.Delta, c.Encoded)
		b.size += len(c.Encoded)
		b.open = !c.Delta.Proof.Prev.IsZero() && c.Delta.Proof.Sig == nil
	}
}

// collect adds the changes waiting in changes, and waits for the rest of
// an open commit group, so that a message ends with a signed delta:
// receivers then join it whole, rather than holding an unproven tail until
// the next message and pulling meanwhile. The size bound wins over that.
// It stops early if changes closes (its caller sees that at its next
// receive) or done does.
func (b *gossipBatch) collect(changes <-chan node.Change, done <-chan struct{}) {
	for b.size < maxBatchBytes && (len(b.deltas) < maxBatchDeltas || b.open) {
		var c node.Change
		var ok bool
		if b.open {
			select {
			case c, ok = <-changes:
			case <-done:
				return
			}
		} else {
			select {
			case c, ok = <-changes:
			default:
				return
			}
		}
		if !ok {
			return
		}
		b.add(c)
	}
}

// republish publishes the local deltas logged after seq.
func (p *Peer) republish(seq uint64) {
	for {
		page, err := p.cat.DeltasSince(p.ctx, seq, maxBatchDeltas, true)
		if err != nil {
			// Trimmed or closing: anti-entropy covers the rest.
			p.log.Warn("republish from the delta log", "err", err)
			return
		}
		var batch, proofs [][]byte
		for _, d := range page.Deltas {
			if enc, err := crdt.EncodeDelta(d); err == nil {
				batch, proofs = appendDelta(batch, proofs, d, enc)
			}
		}
		p.publish(batch, proofs)
		seq = page.Cursor
		if !page.More {
			return
		}
	}
}

// publish sends one message; an empty batch sends nothing. With no peer
// on the topic the message would go nowhere, so it is not even signed:
// peers that join later pull these deltas by anti-entropy on connect.
func (p *Peer) publish(batch, proofs [][]byte) {
	if len(batch) == 0 || len(p.topic.ListPeers()) == 0 {
		return
	}
	msg, err := encodeGossip(p.cfg.Network, batch, proofs)
	if err == nil {
		err = p.topic.Publish(p.ctx, msg)
	}
	if err != nil {
		if p.ctx.Err() == nil {
			p.log.Warn("publish failed; anti-entropy will carry these deltas", "deltas", len(batch), "err", err)
		}
		return
	}
	p.stats.published.Add(1)
	p.stats.publishedDeltas.Add(uint64(len(batch)))
}

// receiveLoop reads the validated messages of other peers and hands them
// to applyLoop, so that messages arriving while a commit is in progress are
// joined together in the next one.
func (p *Peer) receiveLoop() {
	in := make(chan *pubsub.Message, 1024)
	p.goRun(func() { p.applyLoop(in) })
	defer close(in)
	for {
		m, err := p.sub.Next(p.ctx)
		if err != nil {
			return // closed
		}
		if _, ok := m.ValidatorData.([]*crdt.Sealed); !ok || m.ReceivedFrom == p.h.ID() {
			continue
		}
		select {
		case in <- m:
		case <-p.ctx.Done():
			return
		}
	}
}

// maxApplyMessages bounds the gossip messages joined in one ApplyDeltas.
const maxApplyMessages = 64

// applyLoop joins gossiped deltas into the node, every waiting message in
// one call (one durable commit), and checks whether they show that an
// older delta was missed.
func (p *Peer) applyLoop(in <-chan *pubsub.Message) {
	for m := range in {
		msgs := []*pubsub.Message{m}
	drain:
		for len(msgs) < maxApplyMessages {
			select {
			case m, ok := <-in:
				if !ok {
					break drain
				}
				msgs = append(msgs, m)
			default:
				break drain
			}
		}
		type first struct {
			dot  crdt.Dot
			from peer.ID
		}
		var ds []*crdt.Sealed
		lowest := map[crdt.ReplicaID]first{}
		for _, m := range msgs {
			p.stats.received.Add(1)
			for _, s := range m.ValidatorData.([]*crdt.Sealed) {
				ds = append(ds, s)
				dot := s.Dot()
				if l, ok := lowest[dot.Replica]; !ok || dot.Counter < l.dot.Counter {
					lowest[dot.Replica] = first{dot, m.ReceivedFrom}
				}
			}
		}
		var gaps []first
		for _, f := range lowest {
			if p.cat.Gap(f.dot) {
				gaps = append(gaps, f)
			}
		}
		if _, err := p.cat.ApplySealed(p.ctx, ds); err != nil && p.ctx.Err() == nil {
			// Validated deltas fail only if the store fails or an item
			// would overflow; anti-entropy retries what was not joined.
			p.log.Warn("joining gossiped deltas", "messages", len(msgs), "err", err)
		}
		for _, f := range gaps {
			p.checkGapLater(f.from, f.dot)
		}
	}
}

// checkGapLater pulls from a peer if, a couple of heartbeats after a
// delta from it showed a gap (Config.gapCheckDelay), the node still lacks
// some older delta of that replica. Under load the missing delta is
// usually just behind on another mesh path; pulling at once would fetch
// it twice.
func (p *Peer) checkGapLater(from peer.ID, dot crdt.Dot) {
	p.mu.Lock()
	if p.gapWait[from] {
		p.mu.Unlock()
		return
	}
	p.gapWait[from] = true
	p.mu.Unlock()
	p.goRun(func() {
		waited := p.sleep(p.cfg.gapCheckDelay)
		p.mu.Lock()
		delete(p.gapWait, from)
		p.mu.Unlock()
		if waited && p.cat.Gap(dot) {
			p.stats.gaps.Add(1)
			p.requestPull(from)
		}
	})
}
