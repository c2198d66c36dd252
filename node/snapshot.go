package node

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/fxamacker/cbor/v2"
)

// A full-state transfer is a stream of frames, each a uvarint length and a
// CBOR record: one header (format version, the sender's replica and its two
// causal contexts), then every stored item in key order, then a trailer
// with the item count, so a cut stream is detected. Export and import both
// work item by item, in constant memory.

const (
	frameHeader = 1
	frameItem   = 2
	frameEnd    = 3

	maxFrameBytes = 2*crdt.MaxContextBytes + 4096
	importChunk   = 1000 // items per commit during an import
)

type stateFrame struct {
	Kind       uint   `cbor:"1,keyasint"`
	Version    uint   `cbor:"2,keyasint,omitempty"`
	Replica    string `cbor:"3,keyasint,omitempty"`
	Seen       []byte `cbor:"4,keyasint,omitempty"`
	Applied    []byte `cbor:"5,keyasint,omitempty"`
	Collection string `cbor:"6,keyasint,omitempty"`
	ID         string `cbor:"7,keyasint,omitempty"`
	Item       []byte `cbor:"8,keyasint,omitempty"`
	Count      uint64 `cbor:"9,keyasint,omitempty"`
}

func writeFrame(w io.Writer, f *stateFrame) error {
	b, err := cbor.Marshal(f)
	if err != nil {
		return err
	}
	var hdr [binary.MaxVarintLen64]byte
	if _, err := w.Write(hdr[:binary.PutUvarint(hdr[:], uint64(len(b)))]); err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func readFrame(r *bufio.Reader) (*stateFrame, error) {
	size, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, fmt.Errorf("%w: state stream: frame length: %v", crdt.ErrInvalid, err)
	}
	if size > maxFrameBytes {
		return nil, fmt.Errorf("%w: state stream: frame of %d bytes", crdt.ErrTooLarge, size)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("%w: state stream: cut short: %v", crdt.ErrInvalid, err)
	}
	var f stateFrame
	if err := cbor.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%w: state stream: %v", crdt.ErrInvalid, err)
	}
	return &f, nil
}

// ExportState writes the node's whole durable state to w: the causal
// contexts as of the call, then every item. Items may include writes
// made after the contexts were taken; joining such a state is still exact,
// because an entry whose dot the contexts lack is only ever added, never
// used to remove. Concurrent writes continue during the export.
func (n *Node) ExportState(ctx context.Context, w io.Writer) error {
	g, err := n.begin()
	if err != nil {
		return err
	}
	seen, applied := n.seen.Clone(), n.applied.Clone()
	if err := n.end(ctx, g, true); err != nil {
		return err
	}
	seenB, err := crdt.EncodeContext(seen)
	if err != nil {
		return err
	}
	appliedB, err := crdt.EncodeContext(applied)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	if err := writeFrame(bw, &stateFrame{Kind: frameHeader, Version: crdt.FormatVersion, Replica: string(n.replica), Seen: seenB, Applied: appliedB}); err != nil {
		return fmt.Errorf("export state: %w", err)
	}
	var count uint64
	err = scan(ctx, n.store, itemsPrefix, "", func(key string, val []byte) (bool, error) {
		k, ok := parseItemKey(key)
		if !ok {
			return false, fmt.Errorf("%w: item key %q", ErrCorrupt, key)
		}
		count++
		return true, writeFrame(bw, &stateFrame{Kind: frameItem, Collection: k.Collection, ID: k.ID, Item: val})
	})
	if err != nil {
		return fmt.Errorf("export state: %w", err)
	}
	if err := writeFrame(bw, &stateFrame{Kind: frameEnd, Count: count}); err != nil {
		return fmt.Errorf("export state: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("export state: %w", err)
	}
	return nil
}

// ImportResult says what ImportState did.
type ImportResult struct {
	Items   int // items received
	Changed int // local items the join changed
}

// ImportState joins a full state written by ExportState into this node.
// Other writes wait until it finishes. Items are committed in chunks; the
// contexts are joined in the last commit, so an import cut short (bad
// stream, crash) leaves a state that a later import or anti-entropy round
// completes. A stream that does not decode, is out of order or is cut
// short returns an error wrapping crdt.ErrInvalid.
func (n *Node) ImportState(ctx context.Context, r io.Reader) (ImportResult, error) {
	var res ImportResult
	br := bufio.NewReader(r)
	h, err := readFrame(br)
	if err != nil {
		return res, err
	}
	if h.Kind != frameHeader {
		return res, fmt.Errorf("%w: state stream: first frame is kind %d, want a header", crdt.ErrInvalid, h.Kind)
	}
	if h.Version != crdt.FormatVersion {
		return res, fmt.Errorf("state stream: %w %d", crdt.ErrVersion, h.Version)
	}
	theirSeen, err := crdt.DecodeContext(h.Seen)
	if err != nil {
		return res, fmt.Errorf("state stream: %w", err)
	}
	theirApplied, err := crdt.DecodeContext(h.Applied)
	if err != nil {
		return res, fmt.Errorf("state stream: %w", err)
	}

	n.gate.Lock()
	defer n.gate.Unlock()
	// Make every write staged before the import durable, so the scan of
	// local items below sees all of them.
	g, err := n.stage()
	if err != nil {
		return res, err
	}
	n.mu.Unlock()
	if err := n.wait(ctx, g, true); err != nil {
		return res, err
	}

	in := &importer{n: n, r: br, seen: theirSeen}
	if err := in.next(); err != nil {
		return res, err
	}
	err = scan(ctx, n.store, itemsPrefix, "", func(key string, _ []byte) (bool, error) {
		for in.cur != nil && in.curKey < key {
			if err := in.join(ctx, in.curKey, in.cur); err != nil {
				return false, err
			}
			if err := in.next(); err != nil {
				return false, err
			}
		}
		var theirs *stateFrame
		if in.cur != nil && in.curKey == key {
			theirs = in.cur
			if err := in.next(); err != nil {
				return false, err
			}
		}
		return true, in.join(ctx, key, theirs)
	})
	for err == nil && in.cur != nil {
		if err = in.join(ctx, in.curKey, in.cur); err == nil {
			err = in.next()
		}
	}
	if err == nil && in.count != uint64(in.received) {
		err = fmt.Errorf("%w: state stream: trailer says %d items, got %d", crdt.ErrInvalid, in.count, in.received)
	}
	if err != nil {
		in.commit(ctx) // what was joined so far is valid; keep it
		return ImportResult{Items: in.received, Changed: in.changed}, err
	}
	if _, err := n.stage(); err != nil {
		return res, err
	}
	in.stageContexts(theirApplied)
	n.mu.Unlock()
	return ImportResult{Items: in.received, Changed: in.changed}, in.commit(ctx)
}

// importer walks a state stream in step with the local items.
type importer struct {
	n        *Node
	r        *bufio.Reader
	seen     *crdt.Context
	cur      *stateFrame // next incoming item; nil at the end
	curKey   string
	count    uint64 // from the trailer
	received int
	changed  int
	pending  int // items staged since the last commit
	g        *group
}

// next reads the next item frame (or the trailer).
func (in *importer) next() error {
	f, err := readFrame(in.r)
	if err != nil {
		return err
	}
	switch f.Kind {
	case frameEnd:
		in.cur, in.count = nil, f.Count
		return nil
	case frameItem:
	default:
		return fmt.Errorf("%w: state stream: unexpected frame kind %d", crdt.ErrInvalid, f.Kind)
	}
	k := crdt.Key{Collection: f.Collection, ID: f.ID}
	if err := k.Validate(); err != nil {
		return fmt.Errorf("state stream: %w", err)
	}
	key := itemKey(k).String()
	if in.cur != nil && key <= in.curKey {
		return fmt.Errorf("%w: state stream: item %s out of order", crdt.ErrInvalid, k)
	}
	in.cur, in.curKey = f, key
	in.received++
	return nil
}

// join joins the incoming item (nil: the sender holds nothing under key)
// into the local one.
func (in *importer) join(ctx context.Context, key string, f *stateFrame) error {
	k, ok := parseItemKey(key)
	if !ok {
		return fmt.Errorf("%w: item key %q", ErrCorrupt, key)
	}
	var theirs *crdt.Item
	if f != nil {
		var err error
		if theirs, err = crdt.DecodeItem(f.Item); err != nil {
			return fmt.Errorf("state stream: item %s: %w", k, err)
		}
	}
	n := in.n
	g, err := n.stage()
	if err != nil {
		return err
	}
	in.g = g
	defer n.mu.Unlock()
	cur, err := n.readItem(ctx, k)
	if err != nil {
		return err
	}
	post := crdt.JoinItem(cur, n.seen, theirs, in.seen)
	if post.Equal(cur) {
		return nil
	}
	if theirs != nil {
		for _, es := range theirs.Fields {
			for _, e := range es {
				n.clock.Observe(e.TS, n.now())
			}
		}
	}
	if post.Empty() {
		n.put(g, itemKey(k), nil)
	} else {
		b, err := crdt.EncodeItem(post)
		if err != nil {
			return err
		}
		n.put(g, itemKey(k), b)
	}
	if was, is := cur.Visible(), post.Visible(); was != is {
		if is {
			n.meta.Visible[k.Collection]++
		} else {
			n.meta.Visible[k.Collection]--
		}
	}
	in.changed++
	in.pending++
	if in.pending >= importChunk {
		n.mu.Unlock()
		err := in.commit(ctx)
		n.mu.Lock()
		return err
	}
	return nil
}

// stageContexts joins the sender's contexts. Caller holds mu.
func (in *importer) stageContexts(applied *crdt.Context) {
	n := in.n
	n.seen.Merge(in.seen)
	n.applied.Merge(applied)
	n.meta.Counter = max(n.meta.Counter, n.applied.Max(n.replica))
	in.g = n.filling
}

// commit waits until everything staged is durable.
func (in *importer) commit(ctx context.Context) error {
	in.pending = 0
	if in.g == nil {
		return nil
	}
	g := in.g
	in.g = nil
	return in.n.wait(ctx, g, true)
}
