package node

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	ds "github.com/ipfs/go-datastore"
)

// The delta log holds every delta this node joined for the first time —
// local or remote — under a local arrival sequence number, with an index
// by dot. It serves two readers: the pending-delta consumer of the seed's
// API (GetDeltas / ClearDeltas, by sequence) and anti-entropy (DeltasFor,
// by dot). It is trimmed oldest first to MaxLogBytes (and MaxLogEntries,
// if set).

// Pending is a page of logged deltas in arrival order.
type Pending struct {
	Deltas []*crdt.Delta
	// Seqs are the deltas' sequence numbers: a consumer that takes only
	// the first k deltas continues from, or clears to, Seqs[k-1] (and
	// should have the last of them signed, see Attest).
	Seqs []uint64
	// Cursor is the sequence number of the last delta in Deltas (the
	// cursor passed in, if Deltas is empty). Pass it to ClearDeltas or to
	// the next DeltasSince.
	Cursor uint64
	// More reports whether further deltas follow Cursor.
	More bool
}

// durableSeq returns the last sequence number whose log entry is durable.
// Caller holds mu.
func (n *Node) durableSeq() uint64 { return n.durable }

// Log entries are a one-byte origin flag, the delta's proof (crdt's proof
// form) and the encoded delta. Stores written before proofs existed hold
// entries of the legacy flags, without a proof.
//
// A delta of the split chain format is logged as its stub (crdt.Stub): its
// own entries are in its item's record as long as they are live, and
// served reconstructs it from there; once a later write or remove has
// superseded them, the stub is all that is kept and served. So the log
// holds no copy of live values and none of dead ones.
const (
	entryRemoteLegacy byte = 0
	entryLocalLegacy  byte = 1
	entryRemote       byte = 2
	entryLocal        byte = 3
)

// logEntry returns the log entry of d, whose binary encoding is enc.
func logEntry(d *crdt.Delta, enc []byte, local bool) []byte {
	flag := entryRemote
	if local {
		flag = entryLocal
	}
	p := d.Proof
	if p.Split && !d.IsStub() && d.HasOwn() {
		s := crdt.Stub(d)
		if e, err := crdt.EncodeDelta(s); err == nil {
			enc, p = e, s.Proof
		}
	}
	return append(crdt.AppendProof([]byte{flag}, p), enc...)
}

// served returns the delta to send for d, a delta read from the log with
// its encoding enc: for a stub, the whole delta if its item still holds
// its own entries unchanged (read from the durable store), else the stub.
func (n *Node) served(ctx context.Context, d *crdt.Delta, enc []byte) (*crdt.Delta, []byte, error) {
	if !d.IsStub() {
		return d, enc, nil
	}
	b, err := get(ctx, n.store, itemKey(d.Key()))
	if err != nil || b == nil {
		return d, enc, err
	}
	it, err := crdt.DecodeStoredItem(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: item %s: %v", ErrCorrupt, d.Key(), err)
	}
	full, ok := crdt.Complete(d, it)
	if !ok {
		return d, enc, nil
	}
	fenc, err := crdt.EncodeDelta(full)
	if err != nil {
		return nil, nil, err
	}
	return full, fenc, nil
}

// parseLogEntry splits a log entry into its origin flag, the delta's proof
// and its encoding.
func parseLogEntry(b []byte) (local bool, p crdt.Proof, enc []byte, err error) {
	if len(b) < 2 || b[0] > entryLocal {
		return false, p, nil, fmt.Errorf("%w: malformed log entry", ErrCorrupt)
	}
	local = b[0] == entryLocal || b[0] == entryLocalLegacy
	if b[0] <= entryLocalLegacy {
		return local, p, b[1:], nil
	}
	p, n, err := crdt.ParseProof(b[1:])
	if err != nil || len(b) < 2+n {
		return false, p, nil, fmt.Errorf("%w: malformed log entry: %v", ErrCorrupt, err)
	}
	return local, p, b[1+n:], nil
}

// decodeLogEntry decodes the delta of a log entry, with its proof.
func decodeLogEntry(b []byte) (local bool, d *crdt.Delta, enc []byte, err error) {
	local, p, enc, err := parseLogEntry(b)
	if err != nil {
		return false, nil, nil, err
	}
	if d, err = crdt.DecodeDelta(enc); err != nil {
		return false, nil, nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	d.Proof = p
	return local, d, enc, nil
}

// DeltasSince returns up to limit durable deltas logged after cursor (0:
// from the start): with localOnly, only the deltas of this node's own
// operations, else also the remote deltas it joined. If the log was trimmed
// past cursor, deltas after it are gone: it returns ErrCursorExpired, and
// the consumer must take a full-state export before continuing from the
// current cursor.
func (n *Node) DeltasSince(ctx context.Context, cursor uint64, limit int, localOnly bool) (Pending, error) {
	if limit <= 0 {
		return Pending{}, fmt.Errorf("%w: limit must be positive, got %d", crdt.ErrInvalid, limit)
	}
	n.mu.Lock()
	first, last := n.meta.First, n.durableSeq()
	n.mu.Unlock()
	if cursor > last {
		return Pending{}, fmt.Errorf("%w: cursor %d is beyond the log's end %d", crdt.ErrInvalid, cursor, last)
	}
	if cursor+1 < first {
		return Pending{}, fmt.Errorf("%w: deltas %d..%d were dropped from the log", ErrCursorExpired, cursor+1, first-1)
	}
	p := Pending{Cursor: cursor}
	next := cursor + 1
	var lastOwn *crdt.Delta
	err := scan(ctx, n.store, "/l/s", logSeqKey(next).String(), func(key string, val []byte) (bool, error) {
		seq, err := strconv.ParseUint(strings.TrimPrefix(key, "/l/s/"), 16, 64)
		if err != nil {
			return false, fmt.Errorf("%w: log key %q", ErrCorrupt, key)
		}
		if seq != next {
			// Trimmed while we read.
			return false, fmt.Errorf("%w: delta %d was dropped from the log", ErrCursorExpired, next)
		}
		if seq > last || len(p.Deltas) == limit {
			return false, nil
		}
		next++
		local, _, _, err := parseLogEntry(val)
		if err != nil {
			return false, fmt.Errorf("log entry %d: %w", seq, err)
		}
		p.Cursor = seq
		if localOnly && !local {
			return true, nil
		}
		_, d, enc, err := decodeLogEntry(val)
		if err == nil {
			d, _, err = n.served(ctx, d, enc)
		}
		if err != nil {
			return false, fmt.Errorf("log entry %d: %w", seq, err)
		}
		p.Deltas, p.Seqs = append(p.Deltas, d), append(p.Seqs, seq)
		if d.Dot.Replica == n.replica {
			lastOwn = d
		}
		return true, nil
	})
	if err != nil {
		return Pending{}, err
	}
	// The page's deltas of this replica are consecutive: one signature of
	// the last proves them all to whoever the page is handed to.
	if err := n.Attest(lastOwn); err != nil {
		return Pending{}, err
	}
	p.More = p.Cursor < last
	return p, nil
}

// GetDeltas returns up to limit pending deltas: those of this node's own
// operations logged after the cursor last passed to ClearDeltas. It is the
// seed's GetDeltas: received deltas are not pending, since their origin
// sends them. See DeltasSince for ErrCursorExpired.
func (n *Node) GetDeltas(ctx context.Context, limit int) (Pending, error) {
	n.mu.Lock()
	cleared := n.meta.Cleared
	n.mu.Unlock()
	return n.DeltasSince(ctx, cleared, limit, true)
}

// ClearDeltas marks the pending deltas up to cursor as processed; deltas
// logged after cursor stay pending. A cursor behind the current one changes
// nothing. It returns once the new cursor is durable.
func (n *Node) ClearDeltas(ctx context.Context, cursor uint64) error {
	g, err := n.begin()
	if err != nil {
		return err
	}
	if last := n.durableSeq(); cursor > last {
		return n.abort(g, fmt.Errorf("%w: cursor %d is beyond the log's end %d", crdt.ErrInvalid, cursor, last))
	}
	n.meta.Cleared = max(n.meta.Cleared, cursor)
	return n.end(ctx, g, true)
}

// ClearAllDeltas marks every durable delta as processed and returns the
// cursor it cleared to.
func (n *Node) ClearAllDeltas(ctx context.Context) (uint64, error) {
	g, err := n.begin()
	if err != nil {
		return 0, err
	}
	cursor := n.durableSeq()
	n.meta.Cleared = max(n.meta.Cleared, cursor)
	return cursor, n.end(ctx, g, true)
}

// trimLog stages the deletion of the oldest log entries while the log is
// over its bounds. Caller holds mu.
func (n *Node) trimLog(g *group) {
	for n.meta.First <= n.meta.Seq && (n.meta.Bytes > n.cfg.MaxLogBytes ||
		n.cfg.MaxLogEntries > 0 && n.meta.Seq-n.meta.First+1 > uint64(n.cfg.MaxLogEntries)) {
		k := logSeqKey(n.meta.First)
		b, err := n.read(context.Background(), k)
		if err != nil {
			n.log.Error("trim delta log: read failed; retrying at the next commit", "seq", n.meta.First, "err", err)
			return
		}
		_, d, _, err := decodeLogEntry(b)
		if err == nil {
			n.put(g, logDotKey(d.Dot), nil)
		}
		if err != nil {
			n.log.Error("trim delta log: undecodable entry dropped", "seq", n.meta.First, "err", err)
		}
		n.put(g, k, nil)
		n.meta.Bytes -= int64(len(b))
		n.meta.First++
	}
}

// Contexts returns copies of the node's causal contexts: seen (every dot
// observed, including removed ones) and applied (the dots of the deltas
// whose effects this node holds). Peers compare applied contexts to find
// what to send each other.
func (n *Node) Contexts() (seen, applied *crdt.Context) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.seen.Clone(), n.applied.Clone()
}

// Gap reports whether this node lacks some delta of dot's replica older
// than dot, or holds the delta of dot waiting for a delta it depends on: a
// sign that gossip missed something, which anti-entropy should repair.
func (n *Node) Gap(dot crdt.Dot) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.applied.Base(dot.Replica)+1 < dot.Counter || n.parked.byDot[dot] != nil
}

// DeltasFor calls fn, in (replica, counter) order, with every logged delta
// whose dot is in this node's applied context but not in have — what a
// peer whose applied context is have lacks. It first makes everything
// staged durable, so that what it reads is what it claims. If some delta
// the peer lacks is not in the log (trimmed, or learned through a full-state
// transfer, or logged without the proof of origin that a signed node
// requires) it returns ErrLogGap, possibly after some calls to fn: the
// deltas sent are still valid, and the peer needs a full-state transfer for
// the rest. Each replica's run of deltas ends with its origin's signature
// (see crdt.Proof). Its cost grows with what the peer lacks, not with the
// catalog.
func (n *Node) DeltasFor(ctx context.Context, have *crdt.Context, fn func(d *crdt.Delta, enc []byte) error) (sent int, err error) {
	var mine *crdt.Context
	if err := n.readBarrier(ctx, func() { mine = n.applied.Clone() }); err != nil {
		return 0, err
	}
	// Each run of one replica's deltas ends with a signature of its
	// origin: the one logged with it, or, for this node's own replica, one
	// made now.
	var prev *crdt.Delta
	var prevEnc []byte
	emit := func(runEnd bool) error {
		if runEnd && prev.Dot.Replica == n.replica {
			n.sign(prev, prevEnc)
		}
		sent++
		return fn(prev, prevEnc)
	}
	var bans map[crdt.ReplicaID]uint64
	for _, e := range n.Equivocators() {
		if bans == nil {
			bans = map[crdt.ReplicaID]uint64{}
		}
		bans[e.Replica] = e.From
	}
	mine.Missing(have, func(dot crdt.Dot) bool {
		if from, ok := bans[dot.Replica]; ok && dot.Counter >= from {
			return true // an equivocator's: refused everywhere its proof is
		}
		var b []byte
		if b, err = n.logged(ctx, dot); err != nil {
			return false
		}
		var d *crdt.Delta
		var enc []byte
		if _, d, enc, err = decodeLogEntry(b); err == nil {
			d, enc, err = n.served(ctx, d, enc)
		}
		if err != nil {
			err = fmt.Errorf("log entry of %s: %w", dot, err)
			return false
		}
		if n.cfg.Key != nil && d.Proof.Prev.IsZero() {
			// A delta without proof (from before proofs, or of a replica
			// that is not keyed): signed peers refuse it, so it moves only
			// in a full state.
			err = fmt.Errorf("%w: %s has no proof of origin", ErrLogGap, dot)
			return false
		}
		if prev != nil {
			if err = emit(prev.Dot.Replica != dot.Replica || prev.Dot.Counter+1 != dot.Counter); err != nil {
				return false
			}
		}
		prev, prevEnc = d, enc
		return true
	})
	if err == nil && prev != nil {
		err = emit(true)
	}
	return sent, err
}

// Attest signs d, a delta of this node's replica from its log, if it
// carries no signature yet, so that it proves every earlier delta of the
// replica to whoever receives them: for a consumer of DeltasSince or
// GetDeltas that passes on only part of a page. It does nothing for a
// delta of another replica or on a node without Config.Key.
func (n *Node) Attest(d *crdt.Delta) error {
	if d == nil || d.Dot.Replica != n.replica || n.cfg.Key == nil || d.Proof.Sig != nil {
		return nil
	}
	enc, err := crdt.EncodeDelta(d)
	if err != nil {
		return err
	}
	n.sign(d, enc)
	return nil
}

// sign signs the chain head after d, a delta of this node's replica whose
// encoding is enc, if the node has a key and d carries a chain hash but no
// signature. A nil d is ignored.
func (n *Node) sign(d *crdt.Delta, enc []byte) {
	if d == nil || n.cfg.Key == nil || d.Proof.Prev.IsZero() || d.Proof.Sig != nil {
		return
	}
	d.Proof.Sig = crdt.SignHead(n.cfg.Key, d.Dot.Replica, d.Dot.Counter, d.Proof.Next(d, enc))
}

// logged returns the log entry of dot, or ErrLogGap.
func (n *Node) logged(ctx context.Context, dot crdt.Dot) ([]byte, error) {
	b, err := n.store.Get(ctx, logDotKey(dot))
	if errors.Is(err, ds.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrLogGap, dot)
	}
	if err != nil {
		return nil, err
	}
	seq, err := decodeSeq(b)
	if err != nil {
		return nil, err
	}
	b, err = n.store.Get(ctx, logSeqKey(seq))
	if errors.Is(err, ds.ErrNotFound) {
		return nil, fmt.Errorf("%w: %s", ErrLogGap, dot)
	}
	return b, err
}

// AppliedDigest returns the digest of the applied context (crdt.Digest)
// as of the last commit: its root, and with buckets its bucket hashes.
// Two nodes compare roots first, then buckets, then the entries of the
// buckets that differ (AppliedEntries, PeerApplied), so that what they
// exchange grows with the difference, not with the number of replicas.
// It reads no store; the cost is hashing the buckets that changed since
// the last call.
func (n *Node) AppliedDigest(buckets bool) (crdt.Hash, []uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var bs []uint64
	if buckets {
		bs = n.digest.Buckets()
	}
	return n.digest.Root(), bs
}

// AppliedEntries returns the applied context's entries
// (crdt.Context.AppendEntry) of the replicas of digest bucket b, by
// replica.
func (n *Node) AppliedEntries(b int) map[crdt.ReplicaID][]byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := map[crdt.ReplicaID][]byte{}
	if b < 0 || b >= crdt.DigestBuckets {
		return out
	}
	for _, r := range n.digest.Members(b) {
		if e := n.applied.AppendEntry(nil, r); len(e) > 0 {
			out[r] = e
		}
	}
	return out
}

// PeerApplied returns a peer's applied context as this node can tell it
// from the peer's entries of the digest buckets where the two differ:
// this node's applied context with the replicas of those buckets replaced
// by entries (crdt.Context.Patch). An error wraps crdt.ErrInvalid for an
// entry that does not decode or lies outside buckets; a bucket out of
// range is crdt.ErrInvalid too. It costs a copy of the applied context
// plus the entries.
func (n *Node) PeerApplied(buckets []int, entries map[crdt.ReplicaID][]byte) (*crdt.Context, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	var drop []crdt.ReplicaID
	for _, b := range buckets {
		if b < 0 || b >= crdt.DigestBuckets {
			return nil, fmt.Errorf("%w: digest bucket %d out of range", crdt.ErrInvalid, b)
		}
		drop = append(drop, n.digest.Members(b)...)
	}
	c := n.applied.Clone()
	if err := c.Patch(buckets, drop, entries); err != nil {
		return nil, err
	}
	return c, nil
}

// loggedOrStaged returns the log entry of dot, staged or durable, or
// ErrLogGap. Caller holds mu.
func (n *Node) loggedOrStaged(ctx context.Context, dot crdt.Dot) ([]byte, error) {
	if s, ok := n.overlay[logDotKey(dot).String()]; ok {
		seq, err := decodeSeq(s.val)
		if err != nil {
			return nil, err
		}
		if e, ok := n.overlay[logSeqKey(seq).String()]; ok {
			return e.val, nil
		}
		return get(ctx, n.store, logSeqKey(seq))
	}
	return n.logged(ctx, dot)
}
