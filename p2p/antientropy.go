package p2p

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/ping"
)

// minWantGap spaces the pulls that waiting readers ask for (see
// antiEntropyLoop): reads naming writes that do not exist cost at most
// one extra pull per gap, however many arrive.
const minWantGap = 250 * time.Millisecond

// antiEntropyLoop pulls from one random catalog peer every interval; with
// a writers list, from one random writer. It also pulls at once when a
// reader waits for writes the node has not applied (Catalog.Wants: a read
// with a causal token), at most once per minWantGap: one asked for
// sooner is put off to the end of the gap, not dropped.
func (p *Peer) antiEntropyLoop() {
	t := time.NewTicker(p.cfg.AntiEntropyInterval)
	defer t.Stop()
	var (
		lastWant time.Time
		deferred <-chan time.Time // a wanted pull put off to the end of the gap
	)
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		case <-p.cat.Wants():
			if wait := minWantGap - time.Since(lastWant); wait > 0 {
				if deferred == nil {
					deferred = time.After(wait)
				}
				continue
			}
			lastWant = time.Now()
		case <-deferred:
			deferred, lastWant = nil, time.Now()
		}
		var catalogPeers []peer.ID
		for _, id := range p.h.Network().Peers() {
			if ok, _ := p.h.Peerstore().SupportsProtocols(id, p.proto); len(ok) > 0 && p.isWriter(id) {
				catalogPeers = append(catalogPeers, id)
			}
		}
		if len(catalogPeers) > 0 {
			p.requestPull(catalogPeers[rand.IntN(len(catalogPeers))])
		}
	}
}

// requestPull schedules a pull from id, unless id is backed off as a bad
// peer or is not a writer (then the pull is counted as skipped). Requests for a peer already being pulled from are coalesced into
// one more pull after the current one. Pulls from different peers run in
// parallel, at most Config.MaxPulls at once.
func (p *Peer) requestPull(id peer.ID) {
	if id == p.h.ID() || p.ctx.Err() != nil {
		return
	}
	if p.backedOff(id) {
		p.log.Debug("anti-entropy: not pulling from a backed-off peer", "peer", id)
		return
	}
	if w := p.stateRetryWait(id); w > 0 {
		p.log.Debug("anti-entropy: not pulling yet from a peer whose full state failed", "peer", id, "retry_in", w)
		return
	}
	if !p.isWriter(id) {
		p.skipPull(id)
		return
	}
	p.mu.Lock()
	if p.inflight[id] {
		p.again[id] = true
		p.mu.Unlock()
		return
	}
	p.inflight[id] = true
	p.mu.Unlock()
	p.goRun(func() {
		// Anti-entropy talks to connected peers only: redialling here
		// would reconnect a peer just disconnected for sending garbage,
		// or one the connection manager trimmed.
		ctx := network.WithNoDial(p.ctx, "anti-entropy pulls from connected peers only")
		for {
			select {
			case p.pullSem <- struct{}{}:
			case <-p.ctx.Done():
				p.mu.Lock()
				delete(p.inflight, id)
				p.mu.Unlock()
				return
			}
			// The peer may have been backed off meanwhile, by the pull
			// before this one or by a stream it opened, or dropped from
			// the writers list.
			if !p.isWriter(id) {
				p.skipPull(id)
			} else if !p.backedOff(id) && p.stateRetryWait(id) == 0 {
				if err := p.Pull(ctx, id); err != nil && p.ctx.Err() == nil {
					p.log.Debug("anti-entropy pull", "peer", id, "err", err)
				}
			}
			<-p.pullSem
			p.mu.Lock()
			if p.again[id] && p.ctx.Err() == nil {
				delete(p.again, id)
				p.mu.Unlock()
				continue
			}
			delete(p.inflight, id)
			p.mu.Unlock()
			return
		}
	})
}

// skipPull counts a pull from id not made because id is not a writer.
func (p *Peer) skipPull(id peer.ID) {
	p.stats.pullsSkipped.Add(1)
	p.log.Debug("anti-entropy: not pulling from a peer that is not on the writers list", "peer", id)
}

// errNotCatalog means the peer does not speak this catalog's sync protocol.
var errNotCatalog = errors.New("peer does not speak the sync protocol")

// Pull runs one anti-entropy exchange with id and joins what the peer
// answers, deltas or a full state. It blocks until the exchange ends, ctx
// is done, or the peer stalls.
//
// With a peer that speaks sync/2 (this release and later) the two compare
// their applied contexts by digest (see wire.go): equal roots end the
// exchange at once; otherwise only the context entries of the digest
// buckets that differ cross, and the peer answers with what this node
// lacks there. What crosses grows with the difference, not with the
// number of replicas either has seen. When the differing buckets'
// entries do not fit one frame, the rest wait for another pull,
// scheduled at once. With an older peer (sync/1 only) it sends its
// whole applied context, as older releases do; such a peer cannot sync
// with a node whose context is over maxSyncFrame (about 900,000
// replicas), and that pull fails without blaming the peer.
//
// Time limits: Config.SyncTimeout bounds the exchange until the peer's
// done frame or its full-state frame; a full state then has
// Config.FullStateTimeout. Within either, a stream on which no byte
// arrives for Config.SyncIdleTimeout is dropped, so a peer that accepts a
// pull and never answers costs at most that long.
//
// A peer that answers with garbage, stalls, or sends a full state over
// the node's MaxStateBytes or past FullStateTimeout is a bad peer: it is
// disconnected and backed off (no scheduled pull from it for a while; a
// direct call of Pull is not refused). Nothing undecodable it sent is
// applied: each chunk of deltas is checked whole before it is joined, and
// a full state is checked whole before any of it is. An answer cut short
// (the peer closed or died, or a phase deadline passed while deltas kept
// coming) is a sync failure, not misbehaviour: the peer stays connected.
//
// With a writers list, Pull refuses a peer that is not a writer
// (ErrNotWriter): its answer, deltas or a full state, is content that
// only it vouches for.
func (p *Peer) Pull(ctx context.Context, id peer.ID) (err error) {
	if !p.isWriter(id) {
		return fmt.Errorf("pull from %s: %w", id, ErrNotWriter)
	}
	sctx, cancel := context.WithTimeout(ctx, p.cfg.SyncTimeout)
	defer cancel()
	// sync/2 first (which packs full states too), then the plain
	// protocol with packed full states, then the plain one of older
	// releases.
	s, err := p.h.NewStream(network.WithAllowLimitedConn(sctx, "sync"), id, p.proto2, p.packedSyncProto(), p.proto)
	if err != nil {
		return fmt.Errorf("%w: %v", errNotCatalog, err)
	}
	// Whether the peer's chain heads differ from this node's: compared
	// once this stream is closed.
	var headsDiffer bool
	defer func() { p.afterPull(ctx, id, headsDiffer) }()
	defer s.Close()
	// The stream's deadlines bound each read and write; ctx ending resets
	// it, which ends whichever is blocked.
	defer context.AfterFunc(ctx, func() { _ = s.Reset() })()
	timed := newIdleStream(s, p.cfg.SyncIdleTimeout, p.cfg.SyncTimeout)
	br := bufio.NewReaderSize(timed, 64<<10)
	received, bytes := 0, 0 // deltas and bytes received by this pull
	limit := uint64(maxSyncFrame)
	if s.Protocol() == p.proto2 {
		limit = maxDigestFrame
		done, complete, n, err := p.compareDigests(timed, br)
		bytes += n
		if err == nil && done != nil {
			headsDiffer, err = p.takeDone(sctx, id, done)
		}
		if err != nil {
			return p.misbehaved(s, id, err)
		}
		if !complete {
			defer func() {
				if err == nil {
					p.requestPull(id) // for the buckets left out of this one
				}
			}()
		}
		if done != nil {
			_, applied := p.cat.Contexts()
			p.remember(id, applied)
			p.stateSucceeded(id)
			p.stats.rounds.Add(1)
			p.rounds.observe(0, bytes)
			p.log.Debug("anti-entropy round: contexts equal", "peer", id, "bytes", bytes)
			return nil
		}
	} else {
		_, applied := p.cat.Contexts()
		enc, err := crdt.EncodeContext(applied)
		if err == nil && len(enc) > maxSyncFrame-1024 {
			err = fmt.Errorf("this node's applied context takes %d bytes, more than sync/1 carries: %s needs a release that speaks sync/2", len(enc), id)
		}
		if err != nil {
			s.Reset()
			p.stats.syncFailures.Add(1)
			return err
		}
		n, err := writeFrame(timed, &syncFrame{Kind: frameRequest, Version: wireVersion, Network: p.cfg.Network, Context: enc})
		if err != nil {
			return p.misbehaved(s, id, err)
		}
		p.stats.syncBytesSent.Add(uint64(n))
	}
	if err := s.CloseWrite(); err != nil {
		// The peer may have answered and reset the stream already: a
		// broken stream, counted like any other.
		return p.misbehaved(s, id, err)
	}
	for {
		f, n, err := readFrame(br, limit)
		if err != nil {
			return p.misbehaved(s, id, err)
		}
		p.stats.syncBytesReceived.Add(uint64(n))
		bytes += n
		switch f.Kind {
		case frameDeltas:
			ds, err := decodeDeltas(f.Deltas, f.Proofs)
			if err != nil {
				return p.misbehaved(s, id, err)
			}
			if _, err := p.cat.ApplySealed(sctx, ds); err != nil {
				return p.misbehaved(s, id, err)
			}
			received += len(ds)
			p.stats.syncDeltasReceived.Add(uint64(len(ds)))
		case frameDone:
			var theirs *crdt.Context
			if limit == maxDigestFrame {
				var buckets []int
				var entries map[crdt.ReplicaID][]byte
				if buckets, entries, err = decodeEntries(f); err == nil {
					theirs, err = p.cat.PeerApplied(buckets, entries)
				}
			} else {
				theirs, err = crdt.DecodeContextMax(f.Context, p.cat.ReplicaLimit())
			}
			if err != nil {
				return p.misbehaved(s, id, fmt.Errorf("%w: context: %w", ErrBadMessage, err))
			}
			if limit == maxDigestFrame {
				if headsDiffer, err = p.takeDone(sctx, id, f); err != nil {
					return p.misbehaved(s, id, err)
				}
			}
			p.remember(id, theirs)
			p.stateSucceeded(id)
			p.stats.rounds.Add(1)
			p.rounds.observe(received, bytes)
			p.log.Debug("anti-entropy round", "peer", id, "deltas", received, "bytes", bytes)
			return nil
		case frameFull, frameFullPacked:
			// The node checks each piece of the stream before it applies
			// any of it, so neither garbage nor a stream cut short
			// changes more than the pieces before it. A state that keeps
			// arriving has FullStateTimeout, not what is left of
			// SyncTimeout.
			timed.setEnd(p.cfg.FullStateTimeout)
			fstart := time.Now()
			fctx, fcancel := context.WithTimeout(ctx, p.cfg.FullStateTimeout)
			cr := &countingReader{r: br}
			var state io.Reader = cr
			if f.Kind == frameFullPacked {
				state = newUnpacker(cr)
			}
			res, err := p.cat.ImportState(fctx, state)
			fcancel()
			p.stats.syncBytesReceived.Add(uint64(cr.n))
			if err != nil {
				if errors.Is(err, errPastDeadline) || (errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil) {
					err = fmt.Errorf("%w within %v: %w", errSlowState, p.cfg.FullStateTimeout, err)
				}
				if !isGarbage(err) && !isBad(err) && p.ctx.Err() == nil {
					// Not an offence, but the peer would answer the next
					// pull with the same state: wait before it, longer
					// with each failure in a row.
					p.stateFailed(id, cr.n, err)
				}
				return p.misbehaved(s, id, err)
			}
			p.stateSucceeded(id)
			p.stats.fullReceived.Add(1)
			p.stats.rounds.Add(1)
			p.rounds.observe(res.Items, bytes+cr.n)
			p.log.Info("anti-entropy: joined a full state", "peer", id, "items", res.Items, "changed", res.Changed,
				"bytes", cr.n, "took", time.Since(fstart).Round(time.Millisecond))
			return nil
		default:
			return p.misbehaved(s, id, fmt.Errorf("%w: unexpected frame kind %d", ErrBadMessage, f.Kind))
		}
	}
}

// compareDigests is a sync/2 pull's first part: it sends this node's
// digest root (with its head sums and equivocators, see fillRequest); if
// the peer's differs, it reads the peer's group hashes, asks for the
// bucket hashes of the groups that differ, and sends this node's entries
// of the buckets that differ. It returns the peer's done frame if the
// roots were equal (the exchange is then over), whether every differing
// bucket was sent, and the bytes it received.
func (p *Peer) compareDigests(w io.Writer, br *bufio.Reader) (done *syncFrame, complete bool, bytes int, err error) {
	root, mine := p.cat.AppliedDigest(true)
	req := &syncFrame{Kind: frameDigest, Version: wireVersion, Network: p.cfg.Network, Root: root[:]}
	p.fillRequest(req)
	n, err := writeFrame(w, req)
	p.stats.syncBytesSent.Add(uint64(n))
	if err != nil {
		return nil, false, bytes, err
	}
	f, n, err := readFrame(br, maxDigestFrame)
	if err != nil {
		return nil, false, bytes, err
	}
	p.stats.syncBytesReceived.Add(uint64(n))
	bytes += n
	switch f.Kind {
	case frameDone:
		return f, true, bytes, nil
	case frameBuckets:
	default:
		return nil, false, bytes, fmt.Errorf("%w: frame of kind %d in answer to a digest", ErrBadMessage, f.Kind)
	}
	theirs, err := decodeBucketHashes(f.Digests, crdt.DigestGroups)
	if err != nil {
		return nil, false, bytes, err
	}
	ask := &syncFrame{Kind: frameGroups}
	for g, h := range crdt.GroupHashes(mine) {
		if h != theirs[g] {
			ask.Buckets = append(ask.Buckets, uint64(g))
		}
	}
	n, err = writeFrame(w, ask)
	p.stats.syncBytesSent.Add(uint64(n))
	if err != nil {
		return nil, false, bytes, err
	}
	if f, n, err = readFrame(br, maxDigestFrame); err != nil {
		return nil, false, bytes, err
	}
	p.stats.syncBytesReceived.Add(uint64(n))
	bytes += n
	if f.Kind != frameBuckets || !slices.Equal(f.Buckets, ask.Buckets) {
		return nil, false, bytes, fmt.Errorf("%w: frame of kind %d for groups %v in answer to groups %v", ErrBadMessage, f.Kind, f.Buckets, ask.Buckets)
	}
	per := crdt.DigestBuckets / crdt.DigestGroups
	if theirs, err = decodeBucketHashes(f.Digests, per*len(ask.Buckets)); err != nil {
		return nil, false, bytes, err
	}
	var diff []int
	for i, g := range ask.Buckets {
		first, end := crdt.GroupBuckets(int(g))
		for b := first; b < end; b++ {
			if mine[b] != theirs[i*per+b-first] {
				diff = append(diff, b)
			}
		}
	}
	out := &syncFrame{Kind: frameEntries}
	complete = putEntries(out, diff, p.cat.AppliedEntries)
	n, err = writeFrame(w, out)
	p.stats.syncBytesSent.Add(uint64(n))
	return nil, complete, bytes, err
}

// handleSync answers a sync/1 pull: see serveSync.
func (p *Peer) handleSync(s network.Stream) {
	p.serveSync(s, func(id peer.ID, br *bufio.Reader, w io.Writer) (*crdt.Context, []int, *syncFrame, error) {
		f, n, err := readFrame(br, maxSyncFrame)
		if err != nil {
			return nil, nil, nil, err
		}
		p.stats.syncBytesReceived.Add(uint64(n))
		if err := otherVersion("sync request", f.Version); f.Kind == frameRequest && err != nil {
			return nil, nil, nil, err
		}
		if f.Kind != frameRequest || f.Version != wireVersion || f.Network != p.cfg.Network {
			return nil, nil, nil, fmt.Errorf("%w: request of kind %d, version %d, network %q", ErrBadMessage, f.Kind, f.Version, f.Network)
		}
		have, err := crdt.DecodeContextMax(f.Context, p.cat.ReplicaLimit())
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%w: context: %v", ErrBadMessage, err)
		}
		return have, nil, nil, nil
	})
}

// handleSync2 answers a sync/2 pull: it compares digests with the
// requester (root, group hashes, bucket hashes of the groups that differ:
// see wire.go) and, if they differ, rebuilds the requester's
// applied context from this node's and the requester's entries of the
// buckets that differ; then see serveSync.
func (p *Peer) handleSync2(s network.Stream) {
	p.serveSync(s, func(id peer.ID, br *bufio.Reader, w io.Writer) (*crdt.Context, []int, *syncFrame, error) {
		f, n, err := readFrame(br, maxDigestFrame)
		if err != nil {
			return nil, nil, nil, err
		}
		p.stats.syncBytesReceived.Add(uint64(n))
		if err := otherVersion("sync request", f.Version); (f.Kind == frameDigest || f.Kind == frameChains || f.Kind == frameState || f.Kind == frameHeads) && err != nil {
			return nil, nil, nil, err
		}
		if (f.Kind == frameChains || f.Kind == frameState || f.Kind == frameHeads) && f.Version == wireVersion && f.Network == p.cfg.Network {
			return nil, nil, f, errAside // see equivocation.go
		}
		req := f
		if f.Kind != frameDigest || f.Version != wireVersion || f.Network != p.cfg.Network {
			return nil, nil, nil, fmt.Errorf("%w: digest request of kind %d, version %d, network %q", ErrBadMessage, f.Kind, f.Version, f.Network)
		}
		root, mine := p.cat.AppliedDigest(true)
		if string(f.Root) == string(root[:]) {
			return nil, nil, req, errEqual
		}
		if len(f.Root) != len(root) {
			return nil, nil, nil, fmt.Errorf("%w: digest root of %d bytes", ErrBadMessage, len(f.Root))
		}
		if _, err := writeFrame(w, &syncFrame{Kind: frameBuckets, Digests: encodeBucketHashes(crdt.GroupHashes(mine))}); err != nil {
			return nil, nil, nil, err
		}
		if f, n, err = readFrame(br, maxDigestFrame); err != nil {
			return nil, nil, nil, err
		}
		p.stats.syncBytesReceived.Add(uint64(n))
		if f.Kind != frameGroups {
			return nil, nil, nil, fmt.Errorf("%w: frame of kind %d in answer to group hashes", ErrBadMessage, f.Kind)
		}
		groups, err := decodeGroups(f)
		if err != nil {
			return nil, nil, nil, err
		}
		var hs []uint64
		for _, g := range groups {
			first, end := crdt.GroupBuckets(g)
			hs = append(hs, mine[first:end]...)
		}
		if _, err := writeFrame(w, &syncFrame{Kind: frameBuckets, Buckets: f.Buckets, Digests: encodeBucketHashes(hs)}); err != nil {
			return nil, nil, nil, err
		}
		if f, n, err = readFrame(br, maxDigestFrame); err != nil {
			return nil, nil, nil, err
		}
		p.stats.syncBytesReceived.Add(uint64(n))
		if f.Kind != frameEntries {
			return nil, nil, nil, fmt.Errorf("%w: frame of kind %d in answer to bucket hashes", ErrBadMessage, f.Kind)
		}
		buckets, entries, err := decodeEntries(f)
		if err != nil {
			return nil, nil, nil, err
		}
		have, err := p.cat.PeerApplied(buckets, entries)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%w: entries: %w", ErrBadMessage, err)
		}
		return have, buckets, req, nil
	})
}

// errEqual ends a sync/2 exchange whose roots are equal; errAside marks
// a sync/2 stream that asks for something else than a pull (a run of
// chains, a full state: see equivocation.go).
var (
	errEqual = errors.New("contexts equal")
	errAside = errors.New("not a pull")
)

// serveSync answers a pull: request reads the request, and, for sync/2,
// compares digests, writing to w (flushed before request's next read);
// it returns the requester's applied context and, for sync/2, the
// digest buckets whose entries its done frame carries (nil for sync/1,
// whose done carries the whole context). Then it sends the logged deltas
// the requester lacks, in chunks, then done; or, when the log does not
// cover the gap, a full state. It answers every peer, writer or not: an
// answer sends, never accepts. A peer gets at most
// Config.MaxSyncStreamsPerPeer answered at once, all peers together
// Config.MaxSyncStreams; a stream over either is reset at once. The
// answer has the time limits Pull describes; a requester that sends no
// request within SyncIdleTimeout is a bad peer, one that stops reading
// the answer only fails the exchange.
func (p *Peer) serveSync(s network.Stream, request func(id peer.ID, br *bufio.Reader, w io.Writer) (*crdt.Context, []int, *syncFrame, error)) {
	id := s.Conn().RemotePeer()
	if !p.admitSync(id) {
		s.Reset()
		p.stats.syncRefused.Add(1)
		p.log.Debug("sync stream refused: too many at once", "peer", id)
		return
	}
	defer p.releaseSync(id)
	defer s.Close()
	timed := newIdleStream(s, p.cfg.SyncIdleTimeout, p.cfg.SyncTimeout)
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.SyncTimeout)
	defer cancel()
	bw := bufio.NewWriterSize(timed, 64<<10)
	cw := &countingWriter{w: bw}
	br := bufio.NewReader(&flushingReader{r: timed, w: bw})
	have, buckets, req, err := request(id, br, cw)
	if errors.Is(err, errAside) {
		switch req.Kind {
		case frameHeads:
			p.serveHeads(s, timed, id, req)
		case frameChains:
			p.serveChains(ctx, s, timed, id, req)
		case frameState:
			p.serveState(s, timed, id)
		}
		return
	}
	if errors.Is(err, errEqual) {
		_, applied := p.cat.Contexts()
		p.remember(id, applied)
		done := &syncFrame{Kind: frameDone}
		if err = p.fillDone(req, done); err != nil {
			p.misbehaved(s, id, err)
			return
		}
		if _, err = writeFrame(cw, done); err == nil {
			err = bw.Flush()
		}
		p.stats.syncBytesSent.Add(uint64(cw.n))
		if err != nil {
			p.stats.syncFailures.Add(1)
			s.Reset()
		}
		return
	}
	if err != nil {
		p.stats.syncBytesSent.Add(uint64(cw.n))
		p.misbehaved(s, id, err)
		return
	}
	p.remember(id, have)
	// Pull back: a requester that holds deltas this peer lacks (it wrote
	// while the two were apart, say) is pulled from at once, instead of
	// when a random round happens to pick it. After a partition heals,
	// the first exchange in either direction so brings both sides up to
	// date; once equal, nothing more is scheduled.
	if _, mine := p.cat.Contexts(); p.isWriter(id) {
		if _, behind := mine.Compare(have); behind > 0 {
			p.requestPull(id)
		}
	}
	var chunk, proofs [][]byte
	size := 0
	flush := func() error {
		if len(chunk) == 0 {
			return nil
		}
		_, err := writeFrame(cw, &syncFrame{Kind: frameDeltas, Deltas: chunk, Proofs: proofs})
		p.stats.syncDeltasSent.Add(uint64(len(chunk)))
		chunk, proofs, size = nil, nil, 0
		return err
	}
	_, err = p.cat.DeltasFor(ctx, have, func(d *crdt.Delta, enc []byte) error {
		chunk, proofs = appendDelta(chunk, proofs, d, enc)
		if size += len(enc); size >= chunkBytes {
			return flush()
		}
		return nil
	})
	if ferr := flush(); err == nil {
		err = ferr
	}
	switch {
	case errors.Is(err, node.ErrLogGap):
		timed.setEnd(p.cfg.FullStateTimeout)
		fstart, before := time.Now(), cw.n
		fctx, fcancel := context.WithTimeout(p.ctx, p.cfg.FullStateTimeout)
		defer fcancel()
		// The announcement goes out at once: the puller's idle timeout
		// runs while the export starts.
		// Every release that speaks sync/2 reads packed states too.
		kind, packed := frameFull, s.Protocol() == p.packedSyncProto() || s.Protocol() == p.proto2
		if packed {
			kind = frameFullPacked
		}
		if _, err = writeFrame(cw, &syncFrame{Kind: uint(kind)}); err == nil {
			err = bw.Flush()
		}
		if err == nil && packed {
			z := packer(cw)
			if err = p.cat.ExportState(fctx, z); err == nil {
				err = z.Close()
			}
		} else if err == nil {
			err = p.cat.ExportState(fctx, cw)
		}
		if err == nil {
			p.stats.fullSent.Add(1)
			p.log.Info("anti-entropy: sent a full state (the delta log does not cover the peer's gap)", "peer", id,
				"bytes", cw.n-before, "took", time.Since(fstart).Round(time.Millisecond))
		}
	case err == nil && buckets != nil:
		done := &syncFrame{Kind: frameDone}
		putEntries(done, buckets, p.cat.AppliedEntries)
		if err = p.fillDone(req, done); err != nil {
			p.misbehaved(s, id, err)
			return
		}
		_, err = writeFrame(cw, done)
	case err == nil:
		var enc []byte
		_, mine := p.cat.Contexts()
		if enc, err = crdt.EncodeContext(mine); err == nil {
			_, err = writeFrame(cw, &syncFrame{Kind: frameDone, Context: enc})
		}
	}
	if err == nil {
		err = bw.Flush()
	}
	p.stats.syncBytesSent.Add(uint64(cw.n))
	if err != nil {
		if errors.Is(err, ErrStalled) {
			p.stats.syncStalled.Add(1)
		}
		p.stats.syncFailures.Add(1)
		p.log.Debug("answering a pull", "peer", id, "err", err)
		s.Reset()
	}
}

// flushingReader flushes w before each read from r: what a sync/2
// responder wrote must reach the requester before it waits for the
// answer.
type flushingReader struct {
	r io.Reader
	w *bufio.Writer
}

func (f *flushingReader) Read(b []byte) (int, error) {
	if err := f.w.Flush(); err != nil {
		return 0, err
	}
	return f.r.Read(b)
}

// misbehaved ends a pull or an answer that failed: the stream, if any
// (nil once it is closed), is reset.
// A peer that sent something that does not decode (isGarbage) is counted
// as rejected; one that stalled or sent a full state over the limits
// (isBad) is counted as a failure, and stalls as stalled. Either kind is a
// bad peer: logged, disconnected and backed off. A stream that broke or
// was cut short, or a newer format, only counts as a sync failure.
func (p *Peer) misbehaved(s network.Stream, id peer.ID, err error) error {
	if s != nil {
		s.Reset()
	}
	if p.ctx.Err() != nil {
		return err
	}
	switch {
	case errors.Is(err, crdt.ErrVersion):
		p.stats.syncFailures.Add(1) // a newer peer, not a bad one
		p.warnVersion(id, err)
	case isGarbage(err):
		p.stats.syncRejected.Add(1)
		p.badPeer(id, "peer sent garbage on the sync stream", err)
	case isBad(err):
		p.stats.syncFailures.Add(1)
		msg := "peer sent a full state over this node's limits"
		if errors.Is(err, ErrStalled) {
			p.stats.syncStalled.Add(1)
			msg = "peer stalled a sync stream"
			if !p.answersPing(id) {
				// A partition stalls every stream at once; the peer is
				// not to blame, and backing it off would keep it from
				// being pulled for a minute after the network heals.
				p.log.Info("sync stream stalled and the peer does not answer a ping: the network, not the peer; not backed off", "peer", id)
				return err
			}
		}
		p.badPeer(id, msg, err)
	default:
		p.stats.syncFailures.Add(1) // a broken stream, not a bad peer
	}
	return err
}

// answersPing reports whether id answers a libp2p ping within
// Config.stallPing over an existing connection (it dials none). A peer
// that stalls a sync stream but answers pings stalls on purpose, or is
// overloaded; one that does not is cut off by the network.
func (p *Peer) answersPing(id peer.ID) bool {
	ctx, cancel := context.WithTimeout(network.WithNoDial(p.ctx, "stall check"), p.cfg.stallPing)
	defer cancel()
	select {
	case r := <-ping.Ping(ctx, p.h, id):
		return r.Error == nil
	case <-ctx.Done():
		return false
	}
}

// isGarbage reports whether err means the peer sent bytes that do not
// decode or validate, as opposed to a stream that broke: an error of the
// stream (deadline, reset), one wrapping io.ErrUnexpectedEOF (the peer
// closed or died before the end, as node.ImportState reports a full state
// cut short), or a local failure. A full state over this node's own size
// limit (node.ErrStateTooLarge) is not garbage either: the limit is ours;
// nor is a newer format (crdt.ErrVersion): the peer runs a later release.
func isGarbage(err error) bool {
	if errors.Is(err, node.ErrStateTooLarge) || errors.Is(err, crdt.ErrVersion) {
		return false
	}
	return errors.Is(err, ErrBadMessage) || errors.Is(err, crdt.ErrInvalid) ||
		errors.Is(err, crdt.ErrTooLarge)
}

// remember records a peer's applied context for status.
func (p *Peer) remember(id peer.ID, c *crdt.Context) {
	p.mu.Lock()
	p.known[id] = c
	p.mu.Unlock()
}

// countingReader counts the bytes read through it and keeps the first
// error of its reader.
type countingReader struct {
	r   io.Reader
	n   int
	err error
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += n
	if err != nil && c.err == nil {
		c.err = err
	}
	return n, err
}

type countingWriter struct {
	w io.Writer
	n int
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += n
	return n, err
}
