package node

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/fxamacker/cbor/v2"
)

// A full-state transfer is a stream of frames, each a uvarint length and a
// CBOR record: one header (format version, the sender's replica, its two
// causal contexts and the signed chain heads of the keyed replicas they
// name), then every stored item in key order, then a trailer
// with the item count, so a cut stream is detected. The trailer ends the
// stream. Export works item by item, in constant memory; import reads the
// stream twice, checking all of it before applying any of it, also in
// constant memory (see ImportState).

const (
	frameHeader = 1
	frameItem   = 2
	frameEnd    = 3

	maxFrameBytes = 2*crdt.MaxContextBytes + maxReplicasLimit*maxStateHeadBytes + 4096
	importChunk   = 1000     // items per commit during an import
	stateBuffer   = 64 << 10 // read and write buffer of a state stream
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

// readFrame reads one frame and, if spool is not nil, copies it there.
//
// Its errors fall into three classes, which callers tell apart with
// errors.Is: a stream that ends before the frame does wraps
// io.ErrUnexpectedEOF (every stream ends with its trailer, so an end even
// between two frames is a cut); bytes that do not make a frame wrap
// crdt.ErrInvalid, or crdt.ErrTooLarge for a length over the limit; any
// other error is the reader's (a deadline, a reset stream) or the spool's,
// wrapped as it is.
func readFrame(r *bufio.Reader, spool io.Writer) (*stateFrame, error) {
	size, err := readUvarint(r)
	if err != nil {
		return nil, err
	}
	if size > maxFrameBytes {
		return nil, fmt.Errorf("%w: frame of %d bytes, limit %d", crdt.ErrTooLarge, size, uint64(maxFrameBytes))
	}
	// Read what is there rather than allocate what the length claims: a
	// stream cut short costs no more memory than it carried.
	b, err := io.ReadAll(io.LimitReader(r, int64(size)))
	if err != nil {
		return nil, err
	}
	if uint64(len(b)) < size {
		return nil, fmt.Errorf("cut short %d bytes into a frame of %d: %w", len(b), size, io.ErrUnexpectedEOF)
	}
	var f stateFrame
	if err := cbor.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%w: frame: %v", crdt.ErrInvalid, err)
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
	return &f, nil
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
	lastKey string                  // store key of the last item read
	items   int                     // items read
}

// stateItem is one item of a state stream.
type stateItem struct {
	key  string // its store key
	k    crdt.Key
	item *crdt.Item
}

// openState reads and checks the header of a state stream.
func openState(r *bufio.Reader, spool io.Writer) (*stateReader, error) {
	h, err := readFrame(r, spool)
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
	seen, err := crdt.DecodeContext(h.Seen)
	if err != nil {
		return nil, fmt.Errorf("state stream: header: seen: %w", err)
	}
	applied, err := crdt.DecodeContext(h.Applied)
	if err != nil {
		return nil, fmt.Errorf("state stream: header: applied: %w", err)
	}
	heads, err := decodeStateHeads(h.Heads)
	if err != nil {
		return nil, fmt.Errorf("state stream: header: %w", err)
	}
	return &stateReader{r: r, spool: spool, seen: seen, applied: applied, heads: heads}, nil
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
	f, err := readFrame(sr.r, sr.spool)
	if err != nil {
		return nil, fmt.Errorf("state stream: after %d items: %w", sr.items, err)
	}
	switch f.Kind {
	case frameEnd:
		if f.Count != uint64(sr.items) {
			return nil, fmt.Errorf("%w: state stream: trailer says %d items, got %d", crdt.ErrInvalid, f.Count, sr.items)
		}
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
	it, err := crdt.DecodeItem(f.Item)
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
	return &stateItem{key: key, k: k, item: it}, nil
}

// checkState reads the whole stream from r and checks every frame as the
// import would, copying the frames to spool if it is not nil. It touches
// no state.
func checkState(ctx context.Context, r *bufio.Reader, spool io.Writer) error {
	_, err := checkItems(ctx, r, spool)
	return err
}

// checkItems is checkState returning the number of items.
func checkItems(ctx context.Context, r *bufio.Reader, spool io.Writer) (int, error) {
	sr, err := openState(r, spool)
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
	items, err := checkItems(ctx, br, nil)
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
	n             *Node
}

// BeginExport takes the causal contexts of a full-state export as of the
// call, once every write staged before it is durable, and returns the
// export, for Stream to write.
func (n *Node) BeginExport(ctx context.Context) (*StateExport, error) {
	var seen, applied *crdt.Context
	var cursor uint64
	var heads map[crdt.ReplicaID]head
	err := n.readBarrier(ctx, func() {
		seen, applied, cursor, heads = n.seen.Clone(), n.applied.Clone(), n.meta.Seq, n.signedHeads()
	})
	if err != nil {
		return nil, err
	}
	e := &StateExport{Cursor: cursor, replica: n.replica, seenCtx: seen, heads: encodeStateHeads(heads), n: n}
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
	if err := writeFrame(bw, &stateFrame{Kind: frameHeader, Version: crdt.FormatVersion, Replica: string(e.replica), Seen: e.seen, Applied: e.applied, Heads: e.heads}); err != nil {
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
// Nothing is applied unless the whole stream is good. A first pass reads
// all of it and checks every frame exactly as the join will (format
// version, frame kinds, item keys and their order, every item record, the
// contexts, the trailer's count, the end of the stream) without touching
// the node; only then does a second pass join it. If r is an io.Seeker
// (an *os.File, a *bytes.Reader), both passes read r, which is sought back
// to where it started in between. Any other reader (a network stream, a
// request body) is copied during the first pass into a temporary file in
// Config.TempDir, at most Config.MaxStateBytes of it, and the second pass
// reads the file, which is removed before ImportState returns. Writes
// continue during the first pass and wait during the second.
//
// A stream that fails the first pass leaves the node exactly as it was.
// Its error tells why, for errors.Is:
//   - crdt.ErrInvalid: bytes that are not a valid state stream (garbage);
//     crdt.ErrTooLarge: a frame or record over the format's limits;
//     crdt.ErrVersion: a stream of an unknown format version.
//   - io.ErrUnexpectedEOF: the stream ended before its trailer (the sender
//     died, the connection closed): not garbage, just incomplete.
//   - ErrStateTooLarge: a spooled stream longer than Config.MaxStateBytes.
//   - any other error: r's own (a deadline, a reset stream), ctx's, or
//     the temporary file's, wrapped as it is.
//
// Once the stream has passed, the join runs to its end even if ctx ends
// meanwhile, committing items in chunks and the contexts last. Only a
// failure of the node itself (a store error, or a crash) can stop it
// midway; the items joined until then stay, valid but without the
// sender's contexts, and a later import or anti-entropy round completes
// them.
//
// With Config.StateDir set, the checked stream is kept there, synced,
// until the join has committed, and Open finishes a join that a crash cut
// short; a crash before the stream is checked leaves the node as it was,
// and the import is redone only if its sender sends it again (a peer's
// next pull does).
func (n *Node) ImportState(ctx context.Context, r io.Reader) (ImportResult, error) {
	if n.cfg.StateDir != "" {
		return n.importDurably(ctx, r)
	}
	src, release, err := n.checkStream(ctx, r)
	if err != nil {
		return ImportResult{}, err
	}
	defer release()
	res, err := n.applyState(context.WithoutCancel(ctx), bufio.NewReaderSize(src, stateBuffer))
	if err != nil && res.Changed > 0 {
		n.log.Error("full-state import stopped midway after its stream was checked; the items joined so far are kept",
			"changed", res.Changed, "err", err)
	}
	return res, err
}

// checkStream is the first pass of ImportState: it checks the whole of r
// and returns a reader of the same stream for the second pass, with a
// function that releases it.
func (n *Node) checkStream(ctx context.Context, r io.Reader) (io.Reader, func(), error) {
	if rs, ok := r.(io.ReadSeeker); ok {
		if start, err := rs.Seek(0, io.SeekCurrent); err == nil {
			if err := checkState(ctx, bufio.NewReaderSize(rs, stateBuffer), nil); err != nil {
				return nil, nil, err
			}
			if _, err := rs.Seek(start, io.SeekStart); err != nil {
				return nil, nil, fmt.Errorf("state stream: seek back: %w", err)
			}
			return rs, func() {}, nil
		}
		// Not seekable after all (a pipe, say): spool it.
	}
	return n.spool(ctx, r)
}

// spool copies r into a temporary file, checking it on the way, and
// returns the file positioned at its start.
func (n *Node) spool(ctx context.Context, r io.Reader) (io.Reader, func(), error) {
	f, err := os.CreateTemp(n.cfg.TempDir, "crdt-catalog-state-*")
	if err != nil {
		return nil, nil, fmt.Errorf("spool state stream: %w", err)
	}
	// Unlink the file at once where the system allows it, so that a crash
	// leaves nothing behind; otherwise when done.
	unlinked := os.Remove(f.Name()) == nil
	release := func() {
		_ = f.Close()
		if !unlinked {
			_ = os.Remove(f.Name())
		}
	}
	if err := n.copyChecked(ctx, r, f); err != nil {
		release()
		return nil, nil, err
	}
	return f, release, nil
}

// copyChecked copies r into f, checking it on the way (at most
// Config.MaxStateBytes), and leaves f positioned at its start.
func (n *Node) copyChecked(ctx context.Context, r io.Reader, f *os.File) error {
	w := bufio.NewWriterSize(f, stateBuffer)
	lr := &limitReader{r: r, left: n.cfg.MaxStateBytes, limit: n.cfg.MaxStateBytes}
	err := checkState(ctx, bufio.NewReaderSize(lr, stateBuffer), w)
	if err == nil {
		if err = w.Flush(); err != nil {
			err = fmt.Errorf("spool state stream: %w", err)
		}
	}
	if err == nil {
		if _, err = f.Seek(0, io.SeekStart); err != nil {
			err = fmt.Errorf("spool state stream: %w", err)
		}
	}
	return err
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

// applyState is the second pass of ImportState: it joins a checked stream.
func (n *Node) applyState(ctx context.Context, r *bufio.Reader) (ImportResult, error) {
	var res ImportResult
	sr, err := openState(r, nil)
	if err != nil {
		return res, err
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

	n.mu.Lock()
	err = n.admitContexts(sr.seen, sr.applied)
	if err == nil {
		err = n.admitHeads(sr)
	}
	n.mu.Unlock()
	if err != nil {
		return res, err
	}

	in := &importer{n: n, sr: sr}
	if err := in.next(); err != nil {
		return res, err
	}
	err = scan(ctx, n.store, itemsPrefix, "", func(key string, _ []byte) (bool, error) {
		for in.cur != nil && in.cur.key < key {
			if err := in.join(ctx, in.cur.key, in.cur.item); err != nil {
				return false, err
			}
			if err := in.next(); err != nil {
				return false, err
			}
		}
		var theirs *crdt.Item
		if in.cur != nil && in.cur.key == key {
			theirs = in.cur.item
			if err := in.next(); err != nil {
				return false, err
			}
		}
		return true, in.join(ctx, key, theirs)
	})
	for err == nil && in.cur != nil {
		if err = in.join(ctx, in.cur.key, in.cur.item); err == nil {
			err = in.next()
		}
	}
	res = ImportResult{Items: sr.items, Changed: in.changed}
	if err != nil {
		_ = in.commit(ctx) // what was joined so far is valid; keep it
		return res, err
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
	pending int // items staged since the last commit
	g       *group
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

// join joins the incoming item (nil: the sender holds nothing under key)
// into the local one.
func (in *importer) join(ctx context.Context, key string, theirs *crdt.Item) error {
	k, ok := parseItemKey(key)
	if !ok {
		return fmt.Errorf("%w: item key %q", ErrCorrupt, key)
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
	post := crdt.JoinItem(cur, n.seen, theirs, in.sr.seen)
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
	n.stageIndexes(g, k, cur, post)
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
		if err == nil {
			hook("chunk")
		}
		n.mu.Lock()
		return err
	}
	return nil
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
	in.g = g
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
