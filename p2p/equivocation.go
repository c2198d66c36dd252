package p2p

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Equivocation over the sync protocol (see node/equivocation.go for what a
// node does with a proof).
//
// It rides on sync/2 (see wire.go), which only releases that know it
// speak: every digest request carries the requester's head root (a
// SHA-256 of its head sums) and the equivocators it holds proofs
// against, and every done frame answers whether the responder's head
// root differs, the proofs the requester lacks, and the responder's ban
// stamp — also when the contexts are equal, which is when two histories
// under the same dots hide. If the roots differ, the requester then
// sends its head sums on a sync/2 stream of its own (frameHeads) and
// gets the responder's signed heads in the buckets that differ; for the
// heads that contradict its own chains it asks, on another
// (frameChains), for the responder's runs of those chains, and checks
// them. A proof found or received is durable before the exchange ends.
//
// A node that holds a proof pulls a peer's full state (on a stream of its
// own, frameState) once per ban stamp the peer shows: the two histories'
// removals reach each honest node only in full states. A peer gets at
// most one full state a minute for asking.

// Bounds of one exchange: the chain runs asked for in one frameChains
// request, and the proofs a done frame carries.
const (
	maxChainsPerPull = 4
	maxForksPerFrame = 8
	// maxForkFrameBytes bounds the proofs of one done frame, so that with
	// the most context entries it carries (maxEntriesBytes) it stays
	// within maxDigestFrame.
	maxForkFrameBytes = 2 << 20
)

// histories is a peer's equivocation bookkeeping, per remote peer.
type histories struct {
	mu     sync.Mutex
	stamps map[peer.ID]uint64   // the ban stamp each peer showed last
	pulled map[peer.ID]uint64   // the ban stamp of the last full state pulled from each
	served map[served]time.Time // when each was last answered a side request of each kind
}

// served names a peer's side requests of one kind.
type served struct {
	id   peer.ID
	kind uint
}

// chainRange is one run of a replica's chain asked for on the wire.
type chainRange struct {
	Replica string `cbor:"1,keyasint"`
	From    uint64 `cbor:"2,keyasint"`
	To      uint64 `cbor:"3,keyasint"`
}

// fillRequest adds to a pull request what lets the responder compare
// histories: this node's head root and equivocators.
func (p *Peer) fillRequest(f *syncFrame) {
	f.HeadRoot = p.headRoot()
	for _, e := range p.cat.Equivocators() {
		if f.Equivocators == nil {
			f.Equivocators = map[string]uint64{}
		}
		f.Equivocators[string(e.Replica)] = e.From
	}
}

// afterPull runs once a pull's stream is closed: if id's chain heads
// differ from this node's, it compares histories with id, then, if this
// node holds a proof of equivocation
// and id showed a ban stamp whose full state it has not joined, pulls
// that full state.
func (p *Peer) afterPull(ctx context.Context, id peer.ID, headsDiffer bool) {
	if headsDiffer {
		if err := p.compareHistories(ctx, id); err != nil {
			p.log.Debug("comparing histories", "peer", id, "err", err)
		}
	}
	if len(p.cat.Equivocators()) == 0 {
		return
	}
	p.hist.mu.Lock()
	stamp, ok := p.hist.stamps[id]
	want := ok && stamp != 0 && stamp != p.hist.pulled[id]
	p.hist.mu.Unlock()
	if want {
		if err := p.pullState(ctx, id); err != nil {
			p.log.Debug("pulling a full state after a proof of equivocation", "peer", id, "err", err)
		}
	}
}

// pullState asks id for its full state and joins it.
func (p *Peer) pullState(ctx context.Context, id peer.ID) error {
	sctx, cancel := context.WithTimeout(ctx, p.cfg.FullStateTimeout)
	defer cancel()
	s, br, f, err := p.sideStream(sctx, id, &syncFrame{Kind: frameState}, p.cfg.FullStateTimeout)
	if s != nil {
		defer s.Close()
	}
	switch {
	case err != nil:
		return err
	case f.Kind == frameDone:
		return nil // asked too soon: the next pull asks again
	case f.Kind != frameFullPacked:
		return p.misbehaved(s, id, fmt.Errorf("%w: frame of kind %d in answer to a state request", ErrBadMessage, f.Kind))
	}
	cr := &countingReader{r: br}
	res, err := p.cat.ImportState(sctx, newUnpacker(cr))
	p.stats.syncBytesReceived.Add(uint64(cr.n))
	if err != nil {
		return p.misbehaved(s, id, err)
	}
	p.noteStamp(id, f.Stamp, true)
	p.stats.fullReceived.Add(1)
	p.log.Info("anti-entropy: joined a full state after a proof of equivocation", "peer", id,
		"items", res.Items, "changed", res.Changed, "bytes", cr.n)
	return nil
}

// serveState answers a frameState request: at most once per Config.fullGap
// per peer, a full state, packed (the requester speaks sync/2), and
// otherwise done.
func (p *Peer) serveState(s network.Stream, timed *idleStream, id peer.ID) {
	timed.setEnd(p.cfg.FullStateTimeout)
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.FullStateTimeout)
	defer cancel()
	bw := bufio.NewWriterSize(timed, 64<<10)
	cw := &countingWriter{w: bw}
	var err error
	if !p.mayServe(id, frameState, p.cfg.fullGap) {
		_, err = writeFrame(cw, &syncFrame{Kind: frameDone})
	} else if _, err = writeFrame(cw, &syncFrame{Kind: frameFullPacked, Stamp: p.cat.BanStamp()}); err == nil {
		if err = bw.Flush(); err == nil {
			z := packer(cw)
			if err = p.cat.ExportState(ctx, z); err == nil {
				err = z.Close()
			}
		}
		if err == nil {
			p.stats.fullSent.Add(1)
		}
	}
	if err == nil {
		err = bw.Flush()
	}
	p.stats.syncBytesSent.Add(uint64(cw.n))
	if err != nil {
		p.stats.syncFailures.Add(1)
		s.Reset()
	}
}

// fillDone adds to the done frame answering req what the requester needs
// to compare histories: this node's signed heads where their head sums
// differ, the proofs it lacks, and this node's ban stamp.
func (p *Peer) fillDone(req, f *syncFrame) error {
	f.Stamp = p.cat.BanStamp()
	if req.HeadRoot != nil {
		if len(req.HeadRoot) != sha256.Size {
			return fmt.Errorf("%w: head root of %d bytes", ErrBadMessage, len(req.HeadRoot))
		}
		f.HeadsDiffer = string(p.headRoot()) != string(req.HeadRoot)
	}
	known := make(map[crdt.ReplicaID]uint64, len(req.Equivocators))
	for r, c := range req.Equivocators {
		known[crdt.ReplicaID(r)] = c
	}
	size := 0
	for _, enc := range p.cat.Forks(known) {
		if len(f.Forks) == maxForksPerFrame || size+len(enc) > maxForkFrameBytes {
			break // the rest go in the next exchange
		}
		f.Forks, size = append(f.Forks, enc), size+len(enc)
	}
	return nil
}

// mayServe reports whether id, asking for a side request of kind, gets
// an answer now (none of that kind within gap before), and if so notes
// it. A side request costs the responder reads under the node's lock (a
// chain run, every head) or a whole export: a peer may not ask for them
// in a loop.
func (p *Peer) mayServe(id peer.ID, kind uint, gap time.Duration) bool {
	p.hist.mu.Lock()
	defer p.hist.mu.Unlock()
	k := served{id, kind}
	if last, ok := p.hist.served[k]; ok && time.Since(last) < gap {
		return false
	}
	if p.hist.served == nil {
		p.hist.served = map[served]time.Time{}
	}
	p.hist.served[k] = time.Now()
	return true
}

// noteStamp records the ban stamp id showed; with full, that this node
// has joined its full state at that stamp.
func (p *Peer) noteStamp(id peer.ID, stamp uint64, full bool) {
	p.hist.mu.Lock()
	defer p.hist.mu.Unlock()
	if p.hist.stamps == nil {
		p.hist.stamps, p.hist.pulled = map[peer.ID]uint64{}, map[peer.ID]uint64{}
	}
	p.hist.stamps[id] = stamp
	if full {
		p.hist.pulled[id] = stamp
	}
}

// takeForks joins the proofs of equivocation a done frame carried. A
// proof that does not verify is garbage from its sender.
func (p *Peer) takeForks(ctx context.Context, id peer.ID, forks [][]byte) error {
	if len(forks) > maxForksPerFrame {
		return fmt.Errorf("%w: %d proofs of equivocation in one frame", ErrBadMessage, len(forks))
	}
	for _, enc := range forks {
		added, err := p.cat.AddFork(ctx, enc)
		if err != nil {
			return fmt.Errorf("proof of equivocation: %w", err)
		}
		if added {
			p.log.Warn("anti-entropy: received proof that a replica signed two histories", "peer", id)
		}
	}
	return nil
}

// takeDone acts on what a done frame carries besides the context: the
// proofs of equivocation are joined, the ban stamp noted, and the runs of
// chains to ask for (whose signed heads contradict this node's) returned.
// It fails, wrapping ErrBadMessage, if the peer sent garbage.
func (p *Peer) takeDone(ctx context.Context, id peer.ID, f *syncFrame) (headsDiffer bool, err error) {
	if err := p.takeForks(ctx, id, f.Forks); err != nil {
		return false, err
	}
	p.noteStamp(id, f.Stamp, false)
	return f.HeadsDiffer, nil
}

// headRoot returns a SHA-256 of this node's head sums: what a digest
// request carries, 32 bytes whatever the number of replicas.
func (p *Peer) headRoot() []byte {
	h := sha256.Sum256(p.cat.HeadSums())
	return h[:]
}

// compareHistories runs after a pull whose done frame said that id's
// chain heads differ from this node's: on a sync/2 stream of its own
// (frameHeads) it sends its head sums and gets id's signed heads in the
// buckets that differ; for those that contradict this node's chains, on
// another (frameChains), it gets id's runs of those chains and checks
// them.
func (p *Peer) compareHistories(ctx context.Context, id peer.ID) error {
	f, err := p.sideRequest(ctx, id, &syncFrame{Kind: frameHeads, HeadSums: p.cat.HeadSums()}, frameHeadsAnswer)
	if err != nil || len(f.Heads) == 0 {
		return err
	}
	ranges, err := p.cat.Contradictions(ctx, f.Heads)
	if errors.Is(err, crdt.ErrInvalid) {
		return p.misbehaved(nil, id, fmt.Errorf("%w: chain heads: %v", ErrBadMessage, err))
	}
	if err != nil {
		return err // this node's own failure, not the peer's
	}
	if len(ranges) == 0 {
		return nil
	}
	ranges = ranges[:min(len(ranges), maxChainsPerPull)]
	req := &syncFrame{Kind: frameChains}
	for _, rg := range ranges {
		req.Ranges = append(req.Ranges, chainRange{string(rg.Replica), rg.From, rg.To})
	}
	if f, err = p.sideRequest(ctx, id, req, frameChain); err != nil {
		return err
	}
	if len(f.Chains) > len(ranges) {
		return p.misbehaved(nil, id, fmt.Errorf("%w: %d chains in answer to %d runs", ErrBadMessage, len(f.Chains), len(ranges)))
	}
	for _, enc := range f.Chains {
		if len(enc) == 0 {
			continue // the peer does not hold that run
		}
		added, err := p.cat.CheckChain(ctx, enc)
		if errors.Is(err, crdt.ErrInvalid) || errors.Is(err, crdt.ErrTooLarge) || errors.Is(err, crdt.ErrVersion) {
			return p.misbehaved(nil, id, fmt.Errorf("%w: chain: %v", ErrBadMessage, err))
		}
		if err != nil {
			return err
		}
		if added {
			p.log.Warn("anti-entropy: a peer's chain proved that a replica signed two histories", "peer", id)
		}
	}
	return nil
}

// sideRequest sends req on a sync/2 stream of its own and returns the
// answer, which must be of kind want.
func (p *Peer) sideRequest(ctx context.Context, id peer.ID, req *syncFrame, want uint) (*syncFrame, error) {
	sctx, cancel := context.WithTimeout(ctx, p.cfg.SyncTimeout)
	defer cancel()
	s, _, f, err := p.sideStream(sctx, id, req, p.cfg.SyncTimeout)
	if s != nil {
		defer s.Close()
	}
	if err == nil && f.Kind != want {
		err = p.misbehaved(s, id, fmt.Errorf("%w: frame of kind %d in answer to a request of kind %d", ErrBadMessage, f.Kind, req.Kind))
	}
	return f, err
}

// sideStream opens a sync/2 stream of its own to id, sends req, and
// reads the first frame of the answer, all within ctx and phase; the rest
// of the answer follows in br. The caller closes s (nil if it was never
// opened); ctx ending resets it, and after an error it is reset already.
func (p *Peer) sideStream(ctx context.Context, id peer.ID, req *syncFrame, phase time.Duration) (s network.Stream, br *bufio.Reader, f *syncFrame, err error) {
	req.Version, req.Network = wireVersion, p.cfg.Network
	if s, err = p.h.NewStream(network.WithAllowLimitedConn(ctx, "sync"), id, p.proto2); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: %v", errNotCatalog, err)
	}
	context.AfterFunc(ctx, func() { _ = s.Reset() })
	timed := newIdleStream(s, p.cfg.SyncIdleTimeout, phase)
	n, err := writeFrame(timed, req)
	p.stats.syncBytesSent.Add(uint64(n))
	if err == nil {
		err = s.CloseWrite()
	}
	if err != nil {
		return s, nil, nil, p.misbehaved(s, id, err)
	}
	br = bufio.NewReaderSize(timed, 64<<10)
	f, n, err = readFrame(br, maxDigestFrame)
	p.stats.syncBytesReceived.Add(uint64(n))
	if err != nil {
		return s, nil, nil, p.misbehaved(s, id, err)
	}
	return s, br, f, nil
}

// serveHeads answers a frameHeads request: this node's signed heads in
// the buckets where the requester's head sums differ.
func (p *Peer) serveHeads(s network.Stream, w *idleStream, id peer.ID, req *syncFrame) {
	var heads []byte
	if p.mayServe(id, frameHeads, p.cfg.AntiEntropyInterval) {
		var err error
		if heads, err = p.cat.HeadsFor(req.HeadSums, rand.IntN(1<<16)); err != nil {
			p.misbehaved(s, id, fmt.Errorf("%w: %v", ErrBadMessage, err))
			return
		}
	}
	n, err := writeFrame(w, &syncFrame{Kind: frameHeadsAnswer, Heads: heads})
	p.stats.syncBytesSent.Add(uint64(n))
	if err != nil {
		s.Reset()
	}
}

// serveChains answers a frameChains request: this node's run of each
// chain asked for, or an empty one where it holds none.
func (p *Peer) serveChains(ctx context.Context, s network.Stream, w *idleStream, id peer.ID, req *syncFrame) {
	if len(req.Ranges) == 0 || len(req.Ranges) > maxChainsPerPull {
		p.misbehaved(s, id, fmt.Errorf("%w: chain request of %d runs", ErrBadMessage, len(req.Ranges)))
		return
	}
	out := &syncFrame{Kind: frameChain}
	if !p.mayServe(id, frameChains, p.cfg.AntiEntropyInterval) {
		req.Ranges = nil // asked too soon: an empty answer
	}
	for _, rg := range req.Ranges {
		enc, err := p.cat.Chain(ctx, node.ChainRange{Replica: crdt.ReplicaID(rg.Replica), From: rg.From, To: rg.To})
		switch {
		case errors.Is(err, crdt.ErrInvalid):
			p.misbehaved(s, id, fmt.Errorf("%w: chain request: %v", ErrBadMessage, err))
			return
		case err != nil:
			p.log.Debug("not showing a run of a chain", "peer", id, "err", err)
			enc = []byte{}
		}
		out.Chains = append(out.Chains, enc)
	}
	n, err := writeFrame(w, out)
	p.stats.syncBytesSent.Add(uint64(n))
	if err != nil {
		s.Reset()
	}
}
