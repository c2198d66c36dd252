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
// by dot). It is trimmed oldest first to MaxLogEntries and MaxLogBytes.

// Pending is a page of logged deltas in arrival order.
type Pending struct {
	Deltas []*crdt.Delta
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

// Log entries are a one-byte origin flag followed by the encoded delta.
const (
	entryRemote byte = 0
	entryLocal  byte = 1
)

func logEntry(enc []byte, local bool) []byte {
	flag := entryRemote
	if local {
		flag = entryLocal
	}
	return append([]byte{flag}, enc...)
}

// parseLogEntry splits a log entry into its origin flag and encoded delta.
func parseLogEntry(b []byte) (local bool, enc []byte, err error) {
	if len(b) < 2 || b[0] > entryLocal {
		return false, nil, fmt.Errorf("%w: malformed log entry", ErrCorrupt)
	}
	return b[0] == entryLocal, b[1:], nil
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
		local, enc, err := parseLogEntry(val)
		if err != nil {
			return false, fmt.Errorf("log entry %d: %w", seq, err)
		}
		p.Cursor = seq
		if localOnly && !local {
			return true, nil
		}
		d, err := crdt.DecodeDelta(enc)
		if err != nil {
			return false, fmt.Errorf("%w: log entry %d: %v", ErrCorrupt, seq, err)
		}
		p.Deltas = append(p.Deltas, d)
		return true, nil
	})
	if err != nil {
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
	for n.meta.First <= n.meta.Seq &&
		(n.meta.Seq-n.meta.First+1 > uint64(n.cfg.MaxLogEntries) || n.meta.Bytes > n.cfg.MaxLogBytes) {
		k := logSeqKey(n.meta.First)
		b, err := n.read(context.Background(), k)
		if err != nil {
			n.log.Error("trim delta log: read failed; retrying at the next commit", "seq", n.meta.First, "err", err)
			return
		}
		_, enc, err := parseLogEntry(b)
		if err == nil {
			var d *crdt.Delta
			if d, err = crdt.DecodeDelta(enc); err == nil {
				n.put(g, logDotKey(d.Dot), nil)
			}
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
// transfer) it returns ErrLogGap, possibly after some calls to fn: the
// deltas sent are still valid, and the peer needs a full-state transfer for
// the rest. Its cost grows with what the peer lacks, not with the catalog.
func (n *Node) DeltasFor(ctx context.Context, have *crdt.Context, fn func(d *crdt.Delta, enc []byte) error) (sent int, err error) {
	g, err := n.begin()
	if err != nil {
		return 0, err
	}
	mine := n.applied.Clone()
	if err := n.end(ctx, g, true); err != nil {
		return 0, err
	}
	mine.Missing(have, func(dot crdt.Dot) bool {
		var enc []byte
		enc, err = n.logged(ctx, dot)
		if err != nil {
			return false
		}
		var d *crdt.Delta
		if d, err = crdt.DecodeDelta(enc); err != nil {
			err = fmt.Errorf("%w: log entry of %s: %v", ErrCorrupt, dot, err)
			return false
		}
		if err = fn(d, enc); err != nil {
			return false
		}
		sent++
		return true
	})
	return sent, err
}

// logged returns the encoded delta of dot from the log, or ErrLogGap.
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
	if err != nil {
		return nil, err
	}
	_, enc, err := parseLogEntry(b)
	return enc, err
}
