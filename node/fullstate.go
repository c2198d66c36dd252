package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/fxamacker/cbor/v2"
	leveldb "github.com/ipfs/go-ds-leveldb"
	gleveldb "github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"
)

// A full-state transfer is a stream of frames, each a uvarint length and a
// CBOR record: one header (format version, the sender's replica, its two
// causal contexts and the signed chain heads of the keyed replicas they
// name), then every stored item in key order, then a trailer
// with the item count, so a cut stream is detected. The trailer ends the
// stream. Export works item by item, in constant memory; import checks
// each piece of the stream before it joins any of it, also in constant
// memory (see ImportState).
//
// Two more kinds occur only in the copies an import makes of its pieces,
// never in a stream from elsewhere: a piece frame after the header (the
// number of items and the store key of the last item before the piece)
// and, in place of the trailer of a piece that is not the last, a
// piece-end frame (the number of items up to its end).

const (
	frameHeader   = 1
	frameItem     = 2
	frameEnd      = 3
	framePiece    = 4
	framePieceEnd = 5

	// maxBodyFrameBytes bounds a frame after the header: an item, with
	// its key, or a piece's or the trailer's bookkeeping.
	maxBodyFrameBytes = crdt.MaxItemBytes + 4096
	importChunk       = 1000     // items per commit during an import
	stateBuffer       = 64 << 10 // read and write buffer of a state stream
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
	Heads      []byte `cbor:"10,keyasint,omitempty"` // see encodeStateHeads
	From       string `cbor:"11,keyasint,omitempty"` // a piece frame's: the store key before the piece
	// Forks are the sender's proofs of equivocation (crdt.EncodeFork): a
	// receiver takes them before the contexts, which name the banned
	// dots without a head to vouch for them.
	Forks [][]byte `cbor:"12,keyasint,omitempty"`
}

func writeFrame(w io.Writer, f *stateFrame) error {
	var b []byte
	if f.Kind == frameItem && f.Collection != "" && f.ID != "" && len(f.Item) > 0 {
		b = appendItemFrame(make([]byte, 0, 16+len(f.Collection)+len(f.ID)+len(f.Item)), f)
	} else {
		var err error
		if b, err = cbor.Marshal(f); err != nil {
			return err
		}
	}
	var hdr [binary.MaxVarintLen64]byte
	if _, err := w.Write(hdr[:binary.PutUvarint(hdr[:], uint64(len(b)))]); err != nil {
		return err
	}
	_, err := w.Write(b)
	return err
}

// readFrame reads one frame and, if spool is not nil, copies it there.
//
// Its errors fall into three classes, which callers tell apart with
// errors.Is: a stream that ends before the frame does wraps
// io.ErrUnexpectedEOF (every stream ends with its trailer, so an end even
// between two frames is a cut); bytes that do not make a frame wrap
// crdt.ErrInvalid, or crdt.ErrTooLarge for a length over the limit; any
// other error is the reader's (a deadline, a reset stream) or the spool's,
// wrapped as it is.
func readFrame(r *bufio.Reader, spool io.Writer, limit uint64) (*stateFrame, error) {
	size, err := readUvarint(r)
	if err != nil {
		return nil, err
	}
	if size > limit {
		return nil, fmt.Errorf("%w: frame of %d bytes, limit %d", crdt.ErrTooLarge, size, limit)
	}
	// Read what is there rather than allocate what the length claims: a
	// stream cut short costs no more memory than it carried. A frame
	// that fits the read buffer (an item, usually) is allocated once.
	var b []byte
	if size <= uint64(r.Size()) {
		b = make([]byte, size)
		if k, err := io.ReadFull(r, b); err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return nil, fmt.Errorf("cut short %d bytes into a frame of %d: %w", k, size, io.ErrUnexpectedEOF)
			}
			return nil, err
		}
	} else {
		if b, err = io.ReadAll(io.LimitReader(r, int64(size))); err != nil {
			return nil, err
		}
		if uint64(len(b)) < size {
			return nil, fmt.Errorf("cut short %d bytes into a frame of %d: %w", len(b), size, io.ErrUnexpectedEOF)
		}
	}
	f, ok := decodeItemFrame(b)
	if !ok {
		f = &stateFrame{}
		if err := cbor.Unmarshal(b, f); err != nil {
			return nil, fmt.Errorf("%w: frame: %v", crdt.ErrInvalid, err)
		}
	}
	if spool != nil {
		var hdr [binary.MaxVarintLen64]byte
		if _, err := spool.Write(hdr[:binary.PutUvarint(hdr[:], size)]); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		if _, err := spool.Write(b); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
	}
	return f, nil
}

// decodeItemFrame decodes b if it is an item frame as writeFrame writes
// it (a map of kind 2, collection, ID and item, in that order), without
// the reflection of the generic decoder; ok is false for anything else,
// which the generic decoder then decodes or rejects. It never fails
// otherwise: what it accepts the generic decoder decodes alike.
func decodeItemFrame(b []byte) (f *stateFrame, ok bool) {
	if len(b) < 3 || b[0] != 0xa4 || b[1] != 0x01 || b[2] != frameItem {
		return nil, false
	}
	b = b[3:]
	var parts [3][]byte
	for i, want := range [3]byte{0x06, 0x07, 0x08} {
		if len(b) == 0 || b[0] != want {
			return nil, false
		}
		major := byte(0x60) // text
		if want == 0x08 {
			major = 0x40 // bytes
		}
		v, rest, ok := cborString(b[1:], major)
		if !ok {
			return nil, false
		}
		parts[i], b = v, rest
	}
	if len(b) != 0 || !utf8.Valid(parts[0]) || !utf8.Valid(parts[1]) {
		return nil, false
	}
	return &stateFrame{Kind: frameItem, Collection: string(parts[0]), ID: string(parts[1]), Item: parts[2]}, true
}

// appendItemFrame appends the CBOR of an item frame (non-empty
// collection, ID and item) to b as cbor.Marshal writes it, without its
// reflection: decodeItemFrame's form.
func appendItemFrame(b []byte, f *stateFrame) []byte {
	b = append(b, 0xa4, 0x01, frameItem, 0x06)
	b = append(appendCBORHead(b, 0x60, len(f.Collection)), f.Collection...)
	b = append(b, 0x07)
	b = append(appendCBORHead(b, 0x60, len(f.ID)), f.ID...)
	b = append(b, 0x08)
	return append(appendCBORHead(b, 0x40, len(f.Item)), f.Item...)
}

// appendCBORHead appends the shortest CBOR head of major type major (the
// high three bits) and argument n.
func appendCBORHead(b []byte, major byte, n int) []byte {
	switch {
	case n < 24:
		return append(b, major|byte(n))
	case n <= 0xff:
		return append(b, major|24, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, major|25), uint16(n))
	default:
		return binary.BigEndian.AppendUint32(append(b, major|26), uint32(n))
	}
}

// cborString splits a definite-length CBOR string of the given major
// type (0x40 bytes, 0x60 text) in its shortest length form off b.
func cborString(b []byte, major byte) (v, rest []byte, ok bool) {
	if len(b) == 0 || b[0]&0xe0 != major {
		return nil, nil, false
	}
	n, ai := uint64(0), b[0]&0x1f
	switch {
	case ai < 24:
		n, b = uint64(ai), b[1:]
	case ai == 24 && len(b) >= 2 && b[1] >= 24:
		n, b = uint64(b[1]), b[2:]
	case ai == 25 && len(b) >= 3 && binary.BigEndian.Uint16(b[1:]) > 0xff:
		n, b = uint64(binary.BigEndian.Uint16(b[1:])), b[3:]
	case ai == 26 && len(b) >= 5 && binary.BigEndian.Uint32(b[1:]) > 0xffff:
		n, b = uint64(binary.BigEndian.Uint32(b[1:])), b[5:]
	default:
		return nil, nil, false
	}
	if n == 0 || n > uint64(len(b)) {
		return nil, nil, false
	}
	return b[:n], b[n:], true
}

// readUvarint reads a frame length. Unlike binary.ReadUvarint, it tells an
// overlong length (garbage) from an error of the reader.
func readUvarint(r *bufio.Reader) (uint64, error) {
	var x uint64
	var s uint
	for i := range binary.MaxVarintLen64 {
		c, err := r.ReadByte()
		if err == io.EOF {
			return 0, fmt.Errorf("cut short: the stream ends before its trailer: %w", io.ErrUnexpectedEOF)
		}
		if err != nil {
			return 0, err
		}
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				break
			}
			return x | uint64(c)<<s, nil
		}
		x |= uint64(c&0x7f) << s
		s += 7
	}
	return 0, fmt.Errorf("%w: frame length overflows 64 bits", crdt.ErrInvalid)
}

// stateReader reads a full-state stream and checks it as it goes: the
// header (openState), then each item, in key order, down to the trailer,
// its count and the end of the stream (next). Both passes of an import
// read through it, so the first checks exactly what the second applies.
type stateReader struct {
	r       *bufio.Reader
	spool   io.Writer     // where every frame read is copied; nil: nowhere
	seen    *crdt.Context // the sender's, from the header
	applied *crdt.Context
	heads   map[crdt.ReplicaID]head // signed chain heads, from the header
	forks   []forkRec               // proofs of equivocation, from the header
	changed *int                    // the items the import changed so far, all its pieces together
	lastKey string                  // store key of the last item read
	items   int                     // items read (with those of the pieces before)

	local bool   // a copy this node made: piece frames allowed, values not checked again
	from  string // store key after which the piece starts ("": the stream's start)
	more  bool   // read a piece-end frame: more pieces follow

	// A reader of a piece held in memory (see piece.reader) returns
	// queue's items instead of reading r.
	queued bool
	queue  []*stateItem
}

// stateItem is one item of a state stream.
type stateItem struct {
	key  string // its store key
	k    crdt.Key
	item *crdt.Item
	raw  []byte // its record, as received
}

// openState reads and checks the header of a state stream.
func openState(r *bufio.Reader, spool io.Writer, maxReplicas int) (*stateReader, error) {
	h, err := readFrame(r, spool, headerBytes(maxReplicas))
	if err != nil {
		// Garbage fails here, often as a frame "cut short": say first
		// that the body is not a state stream at all.
		return nil, fmt.Errorf("not a state stream (the format of GET /crdt/state): its first frame, the header, does not decode: %w", err)
	}
	if h.Kind != frameHeader {
		return nil, fmt.Errorf("%w: not a state stream (the format of GET /crdt/state): its first frame is of kind %d, not a header", crdt.ErrInvalid, h.Kind)
	}
	if h.Version != crdt.FormatVersion {
		return nil, fmt.Errorf("state stream: %w %d", crdt.ErrVersion, h.Version)
	}
	seen, err := crdt.DecodeContextMax(h.Seen, maxReplicas)
	if err != nil {
		return nil, fmt.Errorf("state stream: header: seen: %w", err)
	}
	applied, err := crdt.DecodeContextMax(h.Applied, maxReplicas)
	if err != nil {
		return nil, fmt.Errorf("state stream: header: applied: %w", err)
	}
	heads, err := decodeStateHeads(h.Heads)
	if err != nil {
		return nil, fmt.Errorf("state stream: header: %w", err)
	}
	if len(h.Forks) > maxStateForks {
		return nil, fmt.Errorf("%w: state stream: header: %d proofs of equivocation (at most %d)", crdt.ErrTooLarge, len(h.Forks), maxStateForks)
	}
	forks := make([]forkRec, len(h.Forks))
	for i, enc := range h.Forks {
		f, err := crdt.DecodeFork(enc)
		if err != nil {
			return nil, fmt.Errorf("state stream: header: %w", err)
		}
		forks[i] = forkRec{f, enc}
	}
	return &stateReader{r: r, spool: spool, seen: seen, applied: applied, heads: heads, forks: forks, changed: new(int)}, nil
}

// maxStateForks bounds the proofs of equivocation a state header carries,
// and maxForkBytes one of them (two chains of crdt.MaxChainSteps).
const (
	maxStateForks = 16
	maxForkBytes  = 2 * (crdt.MaxChainSteps*2*crdt.HashSize + crdt.MaxReplicaIDLen + crdt.HashSize + crdt.SigSize + 32)
)

// headerBytes bounds the header of a state stream for a receiver that
// takes at most maxReplicas replicas: two contexts and the chain heads of
// that many, and the proofs of equivocation. A header over it is refused
// before it is read, so a hostile sender cannot make a node buffer more
// than its own limits allow.
func headerBytes(maxReplicas int) uint64 {
	entry := uint64(crdt.MaxContextBytes / crdt.MaxContextReplicas) // the longest context entry
	return uint64(maxReplicas)*(2*entry+maxStateHeadBytes) + maxStateForks*maxForkBytes + 4096
}

// maxStateHeadBytes bounds one chain head in a state header.
const maxStateHeadBytes = 1 + crdt.MaxReplicaIDLen + 8 + crdt.HashSize + crdt.SigSize

// encodeStateHeads encodes chain heads, each signed, in replica order: for
// each, the replica ID's length (one byte) and bytes, the counter (8
// bytes, big-endian), the chain hash and the signature.
func encodeStateHeads(heads map[crdt.ReplicaID]head) []byte {
	var b []byte
	for _, r := range slices.Sorted(maps.Keys(heads)) {
		h := heads[r]
		b = append(append(b, byte(len(r))), r...)
		b = binary.BigEndian.AppendUint64(b, h.Counter)
		b = append(append(b, h.Hash[:]...), h.Sig...)
	}
	return b
}

// decodeStateHeads decodes what encodeStateHeads wrote. It checks the
// form (valid, keyed and ordered replica IDs, a signature each); whether
// the signatures verify is admitContexts' business, for the heads it
// needs.
func decodeStateHeads(b []byte) (map[crdt.ReplicaID]head, error) {
	heads := map[crdt.ReplicaID]head{}
	var last crdt.ReplicaID
	for len(b) > 0 {
		n := int(b[0])
		if len(b) < 1+n+8+crdt.HashSize+crdt.SigSize {
			return nil, fmt.Errorf("%w: chain heads cut short", crdt.ErrInvalid)
		}
		r := crdt.ReplicaID(b[1 : 1+n])
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("chain head: %w", err)
		}
		if _, ok := r.PublicKey(); !ok {
			return nil, fmt.Errorf("%w: chain head of %s, a replica that names no key", crdt.ErrInvalid, r)
		}
		if len(heads) > 0 && r <= last {
			return nil, fmt.Errorf("%w: chain heads out of order at %s", crdt.ErrInvalid, r)
		}
		b = b[1+n:]
		h := head{Counter: binary.BigEndian.Uint64(b)}
		b = b[8:]
		b = b[copy(h.Hash[:], b):]
		h.Sig = slices.Clone(b[:crdt.SigSize])
		b = b[crdt.SigSize:]
		heads[r], last = h, r
	}
	return heads, nil
}

// next returns the next item of the stream, decoded and checked; nil once
// it has read the trailer, checked its count and that the stream ends
// there.
func (sr *stateReader) next() (*stateItem, error) {
	if sr.queued {
		if len(sr.queue) == 0 {
			return nil, nil
		}
		it := sr.queue[0]
		sr.queue[0], sr.queue = nil, sr.queue[1:]
		return it, nil
	}
	f, err := readFrame(sr.r, sr.spool, maxBodyFrameBytes)
	if err != nil {
		return nil, fmt.Errorf("state stream: after %d items: %w", sr.items, err)
	}
	if sr.local && f.Kind == framePiece && sr.items == 0 && sr.lastKey == "" {
		sr.items, sr.lastKey, sr.from = int(f.Count), f.From, f.From
		if f, err = readFrame(sr.r, sr.spool, maxBodyFrameBytes); err != nil {
			return nil, fmt.Errorf("state stream: after %d items: %w", sr.items, err)
		}
	}
	switch f.Kind {
	case frameEnd, framePieceEnd:
		if f.Kind == framePieceEnd && !sr.local {
			return nil, fmt.Errorf("%w: state stream: after %d items: unexpected frame kind %d", crdt.ErrInvalid, sr.items, f.Kind)
		}
		if f.Count != uint64(sr.items) {
			return nil, fmt.Errorf("%w: state stream: trailer says %d items, got %d", crdt.ErrInvalid, f.Count, sr.items)
		}
		sr.more = f.Kind == framePieceEnd
		switch _, err := sr.r.ReadByte(); err {
		case io.EOF:
			return nil, nil
		case nil:
			return nil, fmt.Errorf("%w: state stream: data after the trailer", crdt.ErrInvalid)
		default:
			return nil, fmt.Errorf("state stream: after the trailer: %w", err)
		}
	case frameItem:
	default:
		return nil, fmt.Errorf("%w: state stream: after %d items: unexpected frame kind %d", crdt.ErrInvalid, sr.items, f.Kind)
	}
	k := crdt.Key{Collection: f.Collection, ID: f.ID}
	if err := k.Validate(); err != nil {
		return nil, fmt.Errorf("state stream: item %d: %w", sr.items+1, err)
	}
	key := itemKey(k).String()
	if sr.items > 0 && key <= sr.lastKey {
		return nil, fmt.Errorf("%w: state stream: item %s out of order", crdt.ErrInvalid, k)
	}
	decode := crdt.DecodeItem
	if sr.local {
		decode = crdt.DecodeStoredItem
	}
	it, err := decode(f.Item)
	if err != nil {
		return nil, fmt.Errorf("state stream: item %s: %w", k, err)
	}
	// Every entry a state holds came from a delta it joined, so its dot is
	// in the state's seen context; an entry beyond it would claim an
	// operation the state does not account for (admitContexts bounds
	// what the contexts themselves may claim).
	for _, d := range it.Presence {
		if !sr.seen.Contains(d) {
			return nil, fmt.Errorf("%w: state stream: item %s holds dot %s outside the state's seen context", crdt.ErrInvalid, k, d)
		}
	}
	for f, es := range it.Fields {
		for _, e := range es {
			if !sr.seen.Contains(e.Dot) {
				return nil, fmt.Errorf("%w: state stream: item %s field %q holds dot %s outside the state's seen context", crdt.ErrInvalid, k, f, e.Dot)
			}
		}
	}
	sr.lastKey = key
	sr.items++
	return &stateItem{key: key, k: k, item: it, raw: f.Item}, nil
}

// checkState reads the whole stream from r and checks every frame as the
// import would, copying the frames to spool if it is not nil. It touches
// no state.
func checkState(ctx context.Context, r *bufio.Reader, spool io.Writer, maxReplicas int) error {
	_, err := checkItems(ctx, r, spool, maxReplicas)
	return err
}

// checkItems is checkState returning the number of items.
func checkItems(ctx context.Context, r *bufio.Reader, spool io.Writer, maxReplicas int) (int, error) {
	sr, err := openState(r, spool, maxReplicas)
	if err != nil {
		return 0, err
	}
	for {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		it, err := sr.next()
		if err != nil {
			return 0, err
		}
		if it == nil {
			return sr.items, nil
		}
	}
}

// CheckState reads a full-state stream (the format of ExportState) to its
// end and checks it as the first pass of ImportState does, joining
// nothing: its frames, format version, contexts and signed heads, every
// item (its key, its order, and that it lies within the state's context)
// and the trailer, after which the stream must end. It returns the number
// of items. It holds one frame in memory at a time. Its errors are those
// of ImportState's first pass.
func CheckState(ctx context.Context, r io.Reader) (int, error) {
	br := bufio.NewReaderSize(r, stateBuffer)
	items, err := checkItems(ctx, br, nil, maxReplicasLimit)
	if err != nil {
		return 0, err
	}
	if _, err := br.ReadByte(); err == nil {
		return 0, fmt.Errorf("%w: data after the trailer", crdt.ErrInvalid)
	} else if err != io.EOF {
		return 0, err
	}
	return items, nil
}

// StateExport is a full-state export whose causal contexts are taken;
// Stream writes it. BeginExport starts one. It lets a caller learn Cursor,
// or fail cleanly, before the first byte is written.
type StateExport struct {
	// Cursor is the delta-log cursor the export covers: the effect of
	// every delta logged up to it is part of the state. A consumer of
	// GetDeltas that delivers this state instead of the pending deltas may
	// then ClearDeltas(Cursor), as it would after delivering the deltas.
	Cursor uint64

	replica       crdt.ReplicaID
	seen, applied []byte
	seenCtx       *crdt.Context
	heads         []byte
	forks         [][]byte
	n             *Node
}

// BeginExport takes the causal contexts of a full-state export as of the
// call, once every write staged before it is durable, and returns the
// export, for Stream to write.
func (n *Node) BeginExport(ctx context.Context) (*StateExport, error) {
	var seen, applied *crdt.Context
	var cursor uint64
	var heads map[crdt.ReplicaID]head
	var forks [][]byte
	err := n.readBarrier(ctx, func() {
		seen, applied, cursor, heads = n.seen.Clone(), n.applied.Clone(), n.meta.Seq, n.signedHeads()
		for _, f := range n.bans {
			if len(forks) < maxStateForks {
				forks = append(forks, f.enc)
			}
		}
	})
	if err != nil {
		return nil, err
	}
	e := &StateExport{Cursor: cursor, replica: n.replica, seenCtx: seen, heads: encodeStateHeads(heads), forks: forks, n: n}
	if e.seen, err = crdt.EncodeContext(seen); err != nil {
		return nil, fmt.Errorf("export state: %w", err)
	}
	if e.applied, err = crdt.EncodeContext(applied); err != nil {
		return nil, fmt.Errorf("export state: %w", err)
	}
	return e, nil
}

// Stream writes the export to w: the header with the contexts BeginExport
// took, then every item stored now, then the trailer. Items may include
// writes made after the contexts were taken; joining such a state is still
// exact, because an entry whose dot the contexts lack is only ever added,
// never used to remove. Concurrent writes continue during the export. If
// Stream fails, what it wrote is a stream cut short, which ImportState
// rejects as such.
func (e *StateExport) Stream(ctx context.Context, w io.Writer) error {
	bw := bufio.NewWriterSize(w, stateBuffer)
	if err := writeFrame(bw, &stateFrame{Kind: frameHeader, Version: crdt.FormatVersion, Replica: string(e.replica), Seen: e.seen, Applied: e.applied, Heads: e.heads, Forks: e.forks}); err != nil {
		return fmt.Errorf("export state: %w", err)
	}
	var count uint64
	err := scan(ctx, e.n.store, itemsPrefix, "", func(key string, val []byte) (bool, error) {
		k, ok := parseItemKey(key)
		if !ok {
			return false, fmt.Errorf("%w: item key %q", ErrCorrupt, key)
		}
		val, err := e.within(k, val)
		if err != nil || val == nil {
			return err == nil, err
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

// signedHeads returns the signed chain heads of the keyed replicas, at
// what this node applied of each: the proof a full state gives of the
// dots it claims. This node's own head is signed now if it is not yet; a
// replica whose head this node holds unsigned (its last run was cut before
// its signature) is left out, and a receiver that lacks its dots refuses
// the state until the replica's next signed delta arrives here. Caller
// holds mu.
func (n *Node) signedHeads() map[crdt.ReplicaID]head {
	out := make(map[crdt.ReplicaID]head, len(n.heads))
	for r, h := range n.heads {
		if h.Counter != n.applied.Max(r) {
			continue
		}
		if h.Sig == nil && r == n.replica && n.cfg.Key != nil {
			h.Sig = crdt.SignHead(n.cfg.Key, r, h.Counter, h.Hash)
		}
		if h.Sig != nil {
			out[r] = h
		}
	}
	return out
}

// within returns the stored item record val of k as the export's
// contexts account for it: as it is, unless it holds entries of writes
// made after the contexts were taken, which are left out (the receiver
// gets them by their deltas, whose dots it lacks); nil if nothing is left.
// A receiver refuses an entry its sender's seen context does not name.
func (e *StateExport) within(k crdt.Key, val []byte) ([]byte, error) {
	it, err := crdt.DecodeStoredItem(val)
	if err != nil {
		return nil, fmt.Errorf("%w: item %s: %v", ErrCorrupt, k, err)
	}
	kept := it.Within(e.seenCtx)
	switch {
	case kept == it:
		return val, nil
	case kept.Empty():
		return nil, nil
	}
	return crdt.EncodeItem(kept)
}

// ExportState writes the node's whole durable state to w: BeginExport,
// then Stream.
func (n *Node) ExportState(ctx context.Context, w io.Writer) error {
	e, err := n.BeginExport(ctx)
	if err != nil {
		return err
	}
	return e.Stream(ctx, w)
}

// ImportResult says what ImportState did.
type ImportResult struct {
	Items   int // items received
	Changed int // local items the join changed
}

// ImportState joins a full state written by ExportState into this node.
// r must hold exactly one such stream: it is read to its end.
//
// The stream is joined in checked pieces: each piece is read whole, held
// decoded, and every frame of it checked (format version, frame kinds,
// item keys and their order, every item record, the contexts) before any
// of it is joined. A piece is at most importPieceBytes (1 MiB) of item
// records, about 2,500 items of 200 bytes. While one piece is joined the
// next is received and checked. The sender's contexts are joined with the
// last piece, after its trailer's count and the end of the stream were
// checked. A stream of one piece is so checked whole before any of it is
// joined; a longer one that turns out bad midway leaves the pieces before
// the bad one joined: valid items, each a join of the sender's item as a
// complete state would give it, without the sender's contexts (a later
// import or anti-entropy round completes them).
//
// If r is an io.Seeker (an *os.File, a *bytes.Reader) and there is no
// StateDir, the whole of r is checked first, then sought back and joined,
// without a copy and without a size limit: such a stream is all or
// nothing.
//
// Size: with Config.MaxStateBytes set, a stream longer than that is
// refused with ErrStateTooLarge. Without it (the default) and with a
// StateDir, a stream may be as long as the StateDir's disk allows: before
// each piece, the import stops with ErrStateTooLarge if that disk would
// have less than minFreeDisk (1 GiB) left. So a node joins any catalog it
// has disk for, and a peer that sends a state that never ends is cut off
// before the disk is full (and, in p2p, backed off). Without either, the
// bound is noDirStateBytes (1 GiB).
//
// A stream that fails leaves the node as it was, except for the pieces
// joined before the failure. Its error tells why, for errors.Is:
//   - crdt.ErrInvalid: bytes that are not a valid state stream (garbage);
//     crdt.ErrTooLarge: a frame or record over the format's limits;
//     crdt.ErrVersion: a stream of an unknown format version.
//   - io.ErrUnexpectedEOF: the stream ended before its trailer (the sender
//     died, the connection closed): not garbage, just incomplete.
//   - ErrStateTooLarge: a stream longer than Config.MaxStateBytes or than
//     the disk allows.
//   - any other error: r's own (a deadline, a reset stream), ctx's, the
//     copy's, or the node's (a store failure).
//
// Once a piece has passed its check, its join runs to its end even if ctx
// ends meanwhile. Writes wait while a piece is joined, and go on between
// pieces and while a piece is received.
//
// With Config.StateDir set, a checked piece is kept there under a
// "pending" name until its join has committed, and Open finishes the join
// of a piece a crash cut short. A crash during an import of several pieces
// leaves the pieces joined so far without the sender's contexts: the node
// does not claim the sender's deltas, so its next anti-entropy pull from
// the sender pulls the state again (and an HTTP client sees its request
// fail and sends it again).
func (n *Node) ImportState(ctx context.Context, r io.Reader) (ImportResult, error) {
	if n.cfg.StateDir == "" {
		if rs, ok := r.(io.ReadSeeker); ok {
			if start, err := rs.Seek(0, io.SeekCurrent); err == nil {
				return n.importSeekable(ctx, rs, start)
			}
			// Not seekable after all (a pipe, say): copy it.
		}
	}
	return n.importPieces(ctx, r)
}

// importSeekable checks the whole of rs, seeks back to start and joins it.
func (n *Node) importSeekable(ctx context.Context, rs io.ReadSeeker, start int64) (ImportResult, error) {
	if err := checkState(ctx, bufio.NewReaderSize(rs, stateBuffer), nil, n.cfg.MaxReplicas); err != nil {
		return ImportResult{}, err
	}
	if _, err := rs.Seek(start, io.SeekStart); err != nil {
		return ImportResult{}, fmt.Errorf("state stream: seek back: %w", err)
	}
	sr, err := openState(bufio.NewReaderSize(rs, stateBuffer), nil, n.cfg.MaxReplicas)
	if err != nil {
		return ImportResult{}, err
	}
	res, err := n.applyState(context.WithoutCancel(ctx), sr)
	if err != nil && res.Changed > 0 {
		n.log.Error("full-state import stopped midway after its stream was checked; the items joined so far are kept",
			"changed", res.Changed, "err", err)
	}
	return res, err
}

// importPieceBytes bounds a piece of an import: the part of the stream
// checked whole before any of it is joined, held decoded in memory
// meanwhile (several times its size; two pieces at a time). 1 MiB: about
// 2,500 items of 200 bytes. A variable for tests.
var importPieceBytes = 1 << 20

// minFreeDisk is the disk space an import into a node with a StateDir and
// without Config.MaxStateBytes leaves free: it stops before a piece would
// leave less.
const minFreeDisk = 1 << 30

// noDirStateBytes bounds the stream of an import into a node without a
// StateDir or Config.MaxStateBytes: such a node knows no disk to measure.
const noDirStateBytes = 1 << 30

// checkDisk fails with ErrStateTooLarge if the file system of dir has
// less than a piece and minFreeDisk available: an import into a node with
// a StateDir and without Config.MaxStateBytes stops there.
func checkDisk(dir string) error {
	free, err := diskFree(dir)
	if err != nil {
		return fmt.Errorf("copy state stream: free space of %s: %w", dir, err)
	}
	if free >= 0 && free < int64(importPieceBytes)+minFreeDisk {
		return fmt.Errorf("%w: %s has %d MiB free, and an import leaves at least %d MiB", ErrStateTooLarge, dir, free>>20, minFreeDisk>>20)
	}
	return nil
}

// piece is a checked piece of a state stream, held decoded, and with a
// StateDir copied to a file there.
type piece struct {
	items []*stateItem
	from  string // store key of the last item before the piece
	first int    // items before the piece
	final bool   // the piece ends with the stream's trailer
	f     *os.File
	path  string // the copy's name while it is to be removed; "" once kept
}

// reader returns a reader of p's items, with the header of sr.
func (p *piece) reader(sr *stateReader) *stateReader {
	last := p.from
	if len(p.items) > 0 {
		last = p.items[len(p.items)-1].key
	}
	return &stateReader{seen: sr.seen, applied: sr.applied, heads: sr.heads, forks: sr.forks, changed: sr.changed, lastKey: last,
		items: p.first + len(p.items), from: p.from, more: !p.final, queued: true, queue: p.items}
}

// release closes the piece's copy and removes it unless it is kept.
func (p *piece) release() {
	if p.f == nil {
		return
	}
	_ = p.f.Close()
	if p.path != "" {
		_ = os.Remove(p.path)
	}
}

// importPieces is ImportState for a stream read once: it reads and checks
// one piece while the previous one is joined.
func (n *Node) importPieces(ctx context.Context, r io.Reader) (ImportResult, error) {
	var res ImportResult
	limit := n.cfg.MaxStateBytes
	if limit == 0 && n.cfg.StateDir == "" {
		limit = noDirStateBytes
	}
	if limit > 0 {
		r = &limitReader{r: r, left: limit, limit: limit}
	}
	var hdr bytes.Buffer
	sr, err := openState(bufio.NewReaderSize(r, stateBuffer), &hdr, n.cfg.MaxReplicas)
	if err != nil {
		return res, err
	}
	type joined struct {
		res ImportResult
		err error
	}
	var joining chan joined // the join of the previous piece
	wait := func() error {
		if joining == nil {
			return nil
		}
		j := <-joining
		joining = nil
		res.Changed += j.res.Changed
		if j.err != nil && res.Changed > 0 {
			n.log.Error("full-state import stopped midway after a piece was checked; the items joined so far are kept",
				"changed", res.Changed, "err", j.err)
		}
		return j.err
	}
	defer func() { _ = wait() }()
	for {
		p, err := n.readPiece(ctx, sr, hdr.Bytes())
		if werr := wait(); werr != nil {
			if p != nil {
				p.release()
			}
			return res, werr
		}
		if err != nil {
			return res, err
		}
		hook("spooled")
		if err := n.makePending(p); err != nil {
			p.release()
			return res, err
		}
		hook("pending")
		joining = make(chan joined, 1)
		go func() {
			defer p.release()
			r, err := n.applyState(context.WithoutCancel(ctx), p.reader(sr))
			if err != nil && (r.Changed > 0 || errors.Is(err, ErrFailed)) {
				// Keep the checked piece: the next start finishes it.
				p.path = ""
			}
			if err == nil {
				hook("joined")
			}
			joining <- joined{r, err}
		}()
		if p.final {
			if err := wait(); err != nil {
				return res, err
			}
			res.Items = sr.items
			return res, nil
		}
	}
}

// readPiece reads and checks the next piece of sr: items up to
// importPieceBytes, or to the stream's trailer (a final piece). With a
// StateDir it copies the piece there as it reads it: the header (hdr, as
// received), a piece frame, the items' frames and either the trailer or a
// piece-end frame.
func (n *Node) readPiece(ctx context.Context, sr *stateReader, hdr []byte) (*piece, error) {
	p := &piece{from: sr.lastKey, first: sr.items}
	var w *bufio.Writer
	if dir := n.cfg.StateDir; dir != "" {
		if n.cfg.MaxStateBytes == 0 {
			if err := checkDisk(dir); err != nil {
				return nil, err
			}
		}
		f, err := os.CreateTemp(dir, importPrefix+"*"+importTmp)
		if err != nil {
			return nil, fmt.Errorf("copy state stream: %w", err)
		}
		p.f, p.path = f, f.Name()
		w = bufio.NewWriterSize(f, stateBuffer)
		_, err = w.Write(hdr)
		if err == nil {
			err = writeFrame(w, &stateFrame{Kind: framePiece, Count: uint64(p.first), From: p.from})
		}
		if err != nil {
			p.release()
			return nil, fmt.Errorf("copy state stream: %w", err)
		}
		sr.spool = w
		defer func() { sr.spool = nil }()
	}
	size := 0
	for {
		if err := ctx.Err(); err != nil {
			p.release()
			return nil, err
		}
		it, err := sr.next()
		if err != nil {
			p.release()
			return nil, err
		}
		if it == nil {
			p.final = true
			break
		}
		p.items = append(p.items, it)
		if size += len(it.key) + len(it.raw); size >= importPieceBytes {
			if w != nil {
				err = writeFrame(w, &stateFrame{Kind: framePieceEnd, Count: uint64(sr.items)})
			}
			if err != nil {
				p.release()
				return nil, fmt.Errorf("copy state stream: %w", err)
			}
			break
		}
	}
	if w != nil {
		if err := w.Flush(); err != nil {
			p.release()
			return nil, fmt.Errorf("copy state stream: %w", err)
		}
	}
	return p, nil
}

// makePending renames a piece's copy in the StateDir to its pending name,
// which Open finishes after a crash. Pieces are made pending one at a
// time, each once the one before it is joined.
//
// Neither the copy nor the rename is synced: a kill -9 keeps both (the
// page cache survives the process), and after a machine crash a torn or
// lost copy is harmless: a pending file that does not check is dropped
// after joining the items before its damage (as valid as any prefix of a
// piece), and the node, not holding the sender's contexts, pulls the
// state again.
func (n *Node) makePending(p *piece) error {
	if p.f == nil {
		return nil
	}
	pending := strings.TrimSuffix(p.path, importTmp) + importPending
	if err := os.Rename(p.path, pending); err != nil {
		return fmt.Errorf("copy state stream: %w", err)
	}
	p.path = pending
	return nil
}

// limitReader reads at most limit bytes of r; past them it fails with
// ErrStateTooLarge.
type limitReader struct {
	r     io.Reader
	left  int64
	limit int64
	over  bool
}

func (l *limitReader) Read(b []byte) (int, error) {
	if l.over {
		return 0, l.tooLarge()
	}
	// Read one byte more than is left, to tell a stream of exactly limit
	// bytes from a longer one.
	if int64(len(b))-1 > l.left {
		b = b[:l.left+1]
	}
	n, err := l.r.Read(b)
	if int64(n) > l.left {
		n, l.left, l.over = int(l.left), 0, true
		return n, l.tooLarge()
	}
	l.left -= int64(n)
	return n, err
}

func (l *limitReader) tooLarge() error {
	return fmt.Errorf("%w: the stream is longer than %d bytes", ErrStateTooLarge, l.limit)
}

// applyState joins a checked stream, or one piece of it (see
// ImportState), read through sr once its header is read: the items it
// holds and, for the local items in the key range it spans, the sender's
// absence; then, if it ends with the stream's trailer, the sender's
// contexts.
func (n *Node) applyState(ctx context.Context, sr *stateReader) (ImportResult, error) {
	var res ImportResult
	n.gate.Lock()
	defer n.gate.Unlock()
	// Make every write staged before the import durable, so the scan of
	// local items below sees all of them. Nothing staged (the pieces
	// after the first, usually): no commit, so no sync, per piece.
	if err := n.readBarrier(ctx, func() {}); err != nil {
		return res, err
	}

	n.mu.Lock()
	err := n.admitContexts(sr.seen, sr.applied)
	if err == nil {
		err = n.admitHeads(sr)
	}
	n.mu.Unlock()
	if err == nil && len(sr.forks) > 0 {
		err = n.installForks(ctx, sr.forks)
	}
	if err != nil {
		return res, err
	}

	in := &importer{n: n, sr: sr}
	if err := in.next(); err != nil {
		return res, err
	}
	// The local items from the piece's start on, in step with the
	// incoming ones; an item the sender does not hold is joined with
	// nothing, up to the piece's last key if more pieces follow.
	from := sr.from
	err = scan(ctx, n.store, itemsPrefix, from, func(key string, val []byte) (bool, error) {
		if from != "" && key <= from {
			return true, nil
		}
		for in.cur != nil && in.cur.key < key {
			if err := in.join(ctx, in.cur, nil); err != nil {
				return false, err
			}
			if err := in.next(); err != nil {
				return false, err
			}
		}
		if in.cur == nil && sr.more && key > sr.lastKey {
			return false, nil
		}
		theirs := &stateItem{key: key} // the sender holds nothing under key
		if in.cur != nil && in.cur.key == key {
			theirs = in.cur
			if err := in.next(); err != nil {
				return false, err
			}
		}
		return true, in.join(ctx, theirs, val)
	})
	for err == nil && in.cur != nil {
		if err = in.join(ctx, in.cur, nil); err == nil {
			err = in.next()
		}
	}
	res = ImportResult{Items: sr.items, Changed: in.changed}
	if err != nil {
		_ = in.commit(ctx) // what was joined so far is valid; keep it
		return res, err
	}
	if sr.more {
		return res, in.commit(ctx)
	}
	if _, err := n.stage(); err != nil {
		return res, err
	}
	in.stageContexts(sr.applied)
	// Deltas that waited for dots the state brought can join now.
	rel, err := n.releaseAll(ctx, in.g)
	n.mu.Unlock()
	n.stats.deltasNew.Add(uint64(rel.New))
	if err != nil {
		_ = in.commit(ctx)
		return res, err
	}
	return res, in.commit(ctx)
}

// admitContexts checks the causal contexts of a full state before any of
// it is joined: they may not claim dots of this node's own replica beyond
// the ones it wrote (only a fork or a forger can have those), and joined
// with this node's they must stay within Config.MaxReplicas and
// crdt.MaxContextBytes. Caller holds mu.
func (n *Node) admitContexts(seen, applied *crdt.Context) error {
	for _, c := range []struct {
		name string
		ours *crdt.Context
		them *crdt.Context
	}{{"seen", n.seen, seen}, {"applied", n.applied, applied}} {
		if top := c.them.Max(n.replica); top > n.meta.Counter {
			dot := crdt.Dot{Replica: n.replica, Counter: top}
			n.suspectFork(dot, "a full state claims operations of this node's own replica that it never wrote")
			return fmt.Errorf("%w: the state's %s context names %s, but this replica has written up to %d",
				ErrForkSuspected, c.name, dot, n.meta.Counter)
		}
		joined := c.ours.Clone()
		joined.Merge(c.them)
		if k := joined.NumReplicas(); k > n.cfg.MaxReplicas {
			return fmt.Errorf("%w: the state's %s context would make this node know of %d replicas, limit %d (MaxReplicas)",
				crdt.ErrTooLarge, c.name, k, n.cfg.MaxReplicas)
		}
		if _, err := crdt.EncodeContext(joined); err != nil {
			return fmt.Errorf("the state's %s context joined with this node's: %w", c.name, err)
		}
	}
	return nil
}

// admitHeads checks that a full state claims no dot of a keyed replica
// that the replica did not sign: for each keyed replica its contexts name
// beyond what this node applied, the state must carry the replica's chain
// head at or past that dot, signed with the replica's key. Otherwise a
// crafted state could claim a replica's future operations, and this node
// would drop them as already seen when they come. Caller holds mu.
func (n *Node) admitHeads(sr *stateReader) error {
	for _, r := range sr.seen.Replicas() {
		claim := max(sr.seen.Max(r), sr.applied.Max(r))
		if from := sr.bannedFrom(n, r); from > 0 {
			// An equivocator's dots from the fork on are refused and
			// covered here anyway: only those before it need a head.
			claim = min(claim, from-1)
		}
		if claim <= n.applied.Max(r) {
			continue
		}
		if _, keyed := r.PublicKey(); !keyed {
			continue
		}
		h, ok := sr.heads[r]
		if !ok || h.Counter < claim {
			return fmt.Errorf("%w: the state claims %s up to %d, but carries no head that %s signed there", crdt.ErrInvalid, r, claim, r)
		}
		if err := crdt.VerifyHead(r, h.Counter, h.Hash, h.Sig); err != nil {
			return fmt.Errorf("state stream: %w", err)
		}
	}
	return nil
}

// importer walks a checked state stream in step with the local items.
type importer struct {
	n       *Node
	sr      *stateReader
	cur     *stateItem // next incoming item; nil after the trailer
	changed int
	pending int    // items staged since the last commit
	g       *group // the group the staged items are in
	prev    *group // the chunk before, possibly still being written
}

// next reads the next incoming item (nil at the trailer).
func (in *importer) next() error {
	it, err := in.sr.next()
	if err != nil {
		return err
	}
	in.cur = it
	return nil
}

// join joins the incoming item in (in.item nil: the sender holds
// nothing under in.key) into the local one, whose stored record is local
// (nil: none).
func (in *importer) join(ctx context.Context, it *stateItem, local []byte) error {
	key, theirs := it.key, it.item
	k, ok := parseItemKey(key)
	if !ok {
		return fmt.Errorf("%w: item key %q", ErrCorrupt, key)
	}
	var cur *crdt.Item
	if local != nil {
		var err error
		if cur, err = crdt.DecodeStoredItem(local); err != nil {
			return fmt.Errorf("%w: item %s: %v", ErrCorrupt, k, err)
		}
	}
	n := in.n
	g, err := n.stage()
	if err != nil {
		return err
	}
	in.g, g.lazy = g, true
	defer n.mu.Unlock()
	var post *crdt.Item
	var rec []byte                  // post's record, if known
	kept := n.withoutBanned(theirs) // an equivocator's entries are dropped
	if cur == nil && kept == theirs && !theirs.Empty() && !anySeen(theirs, n.seen) {
		// A new item, none of whose entries this node removed: the join
		// is the sender's item, and its record the one received.
		post, rec = theirs, it.raw
	} else if post = crdt.JoinItem(cur, n.seen, kept, in.sr.seen); post.Equal(cur) {
		return nil
	}
	if theirs != nil {
		for _, es := range theirs.Fields {
			for _, e := range es {
				n.clock.Observe(e.TS, n.now())
			}
		}
	}
	n.stageIndexes(g, k, cur, post)
	switch {
	case post.Empty():
		n.put(g, itemKey(k), nil)
	case rec != nil:
		n.put(g, itemKey(k), rec)
	default:
		if rec, err = crdt.EncodeItem(post); err != nil {
			return err
		}
		n.put(g, itemKey(k), rec)
	}
	if *in.sr.changed < n.cfg.ChangeHistory {
		// local may be the store iterator's buffer: the change keeps a
		// copy.
		n.stageChange(g, k, cur, post, slices.Clone(local), rec, ViaState, crdt.Dot{})
	} else {
		n.skipChange(g, cur, post) // more than the history holds
	}
	n.countVisible(k, cur, post)
	in.changed++
	*in.sr.changed++
	n.touchBans()
	in.pending++
	if in.pending >= importChunk {
		n.mu.Unlock()
		err := in.flush(ctx)
		n.mu.Lock()
		return err
	}
	return nil
}

// flush hands the staged chunk to the commit goroutine and waits for the
// chunk before it: one chunk is written while the next is staged.
func (in *importer) flush(ctx context.Context) error {
	in.pending = 0
	prev := in.prev
	in.prev, in.g = in.g, nil
	select {
	case in.n.kick <- struct{}{}:
	default:
	}
	if prev == nil || prev == in.prev {
		return nil
	}
	if err := in.n.wait(ctx, prev, true); err != nil {
		return err
	}
	hook("chunk")
	return nil
}

// anySeen reports whether seen holds a dot of an entry of it.
func anySeen(it *crdt.Item, seen *crdt.Context) bool {
	for _, d := range it.Presence {
		if seen.Contains(d) {
			return true
		}
	}
	for _, es := range it.Fields {
		for _, e := range es {
			if seen.Contains(e.Dot) {
				return true
			}
		}
	}
	return false
}

// stageContexts joins the sender's contexts, and takes its chain heads
// for the keyed replicas where the state brought this node further, so
// that the deltas that follow are checked against them. Caller holds mu.
func (in *importer) stageContexts(applied *crdt.Context) {
	n := in.n
	g := n.filling
	for r, h := range in.sr.heads {
		if h.Counter > n.applied.Max(r) && h.Counter == applied.Max(r) {
			n.heads[r] = h
			if g.heads == nil {
				g.heads = map[crdt.ReplicaID]bool{}
			}
			g.heads[r] = true
		}
	}
	n.seen.Merge(in.sr.seen)
	n.applied.Merge(applied)
	n.meta.Counter = max(n.meta.Counter, n.applied.Max(n.replica))
	g.lazy = false // the contexts: synced, and with them every chunk before
	in.g = g
}

// writeLazy writes g, a chunk of a full-state import, to a LevelDB store
// without syncing it, and reports whether it did (other stores: no). The
// chunks of an import are its bulk (430 MB for a catalog of 1,000,000
// items) and a sync per chunk of 1,000 made the disk's sync latency, not
// its bandwidth, the import's pace. Nothing is lost: a kill -9 keeps what
// the process wrote, and a machine crash can lose only chunks after the
// last synced write; since LevelDB's journal is written in order, the
// commit that joins the sender's contexts, which is synced, makes every
// chunk before it durable, and without it the node claims none of the
// sender's deltas and pulls the state again. A group is lazy only while
// an import holds the gate, so no other writer's write is in it.
func (n *Node) writeLazy(g *group) (bool, error) {
	l, ok := n.store.(*leveldb.Datastore)
	if !ok {
		return false, nil
	}
	var b gleveldb.Batch
	for k, v := range g.writes {
		if v == nil {
			b.Delete([]byte(k))
		} else {
			b.Put([]byte(k), v)
		}
	}
	return true, l.DB.Write(&b, &opt.WriteOptions{Sync: false})
}

// commit waits until everything staged is durable.
func (in *importer) commit(ctx context.Context) error {
	in.pending = 0
	for _, g := range []*group{in.prev, in.g} {
		if g == nil {
			continue
		}
		if err := in.n.wait(ctx, g, true); err != nil {
			return err
		}
		hook("chunk")
	}
	in.prev, in.g = nil, nil
	return nil
}
