package p2p

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/fxamacker/cbor/v2"
)

// wireVersion is the version of the messages below. Version 2 added the
// deltas' proofs of origin (crdt.Proof), version 3 the split chain format
// and stubs (proof tags 3 to 6, which version 2 refuses); a peer ignores
// messages of any other version, as a newer or older release's, rather
// than holding them against their sender. Later additions came as new
// protocols (sync/2, sync-packed), which older releases do not offer, so
// their frames keep this version.
const wireVersion = 3

// ErrBadMessage marks a gossip message or sync frame that does not decode,
// is too large, or belongs to another network.
var ErrBadMessage = errors.New("bad message")

// gossipMsg is one message on the delta topic: deltas in their binary
// encoding, each with its own dot, and beside each its proof (crdt's proof
// form).
type gossipMsg struct {
	Version uint     `cbor:"1,keyasint"`
	Network string   `cbor:"2,keyasint"`
	Deltas  [][]byte `cbor:"3,keyasint"`
	Proofs  [][]byte `cbor:"4,keyasint"`
}

var decMode = func() cbor.DecMode {
	m, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		MaxNestedLevels:   4,
		MaxArrayElements:  1 << 16,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return m
}()

func encodeGossip(network string, deltas, proofs [][]byte) ([]byte, error) {
	return cbor.Marshal(&gossipMsg{Version: wireVersion, Network: network, Deltas: deltas, Proofs: proofs})
}

// otherVersion returns an error wrapping crdt.ErrVersion if v is a wire
// version other than the one this peer speaks, and nil if it is that one
// or unknown (0).
func otherVersion(what string, v uint) error {
	if v == 0 || v == wireVersion {
		return nil
	}
	return fmt.Errorf("%s: %w %d (this peer speaks %d)", what, crdt.ErrVersion, v, wireVersion)
}

// peekVersion returns the unsigned integer under key of the CBOR map b, or
// 0: the version of a message that the strict decoder refused.
func peekVersion(b []byte, key uint64) uint {
	var m map[uint64]cbor.RawMessage
	var v uint
	if cbor.Unmarshal(b, &m) != nil || cbor.Unmarshal(m[key], &v) != nil {
		return 0
	}
	return v
}

// decodeGossip decodes and validates a gossip message of network.
func decodeGossip(b []byte, network string, maxBytes int) ([]*crdt.Sealed, error) {
	if len(b) > maxBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrBadMessage, len(b), maxBytes)
	}
	var m gossipMsg
	if err := decMode.Unmarshal(b, &m); err != nil {
		// A later wire version may add fields this one does not know.
		if err := otherVersion("gossip message", peekVersion(b, 1)); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	if err := otherVersion("gossip message", m.Version); err != nil {
		return nil, err
	}
	if m.Version != wireVersion {
		return nil, fmt.Errorf("%w: version %d", ErrBadMessage, m.Version)
	}
	if m.Network != network {
		return nil, fmt.Errorf("%w: network %q, want %q", ErrBadMessage, m.Network, network)
	}
	if len(m.Deltas) == 0 {
		return nil, fmt.Errorf("%w: no deltas", ErrBadMessage)
	}
	out, err := decodeDeltas(m.Deltas, m.Proofs)
	if err != nil {
		return nil, fmt.Errorf("gossip message: %w", err)
	}
	return out, nil
}

// decodeDeltas decodes and seals deltas and their proofs, two lists of
// one length: each is validated here, once, and keeps its encoding, so
// the node neither validates nor encodes it again. An error wraps
// crdt.ErrVersion for a delta of another format version, else
// ErrBadMessage.
func decodeDeltas(deltas, proofs [][]byte) ([]*crdt.Sealed, error) {
	if len(proofs) != len(deltas) {
		return nil, fmt.Errorf("%w: %d deltas, %d proofs", ErrBadMessage, len(deltas), len(proofs))
	}
	out := make([]*crdt.Sealed, len(deltas))
	for i, enc := range deltas {
		p, perr := crdt.DecodeProof(proofs[i])
		s, err := crdt.DecodeSealed(enc, p)
		if errors.Is(err, crdt.ErrVersion) {
			return nil, fmt.Errorf("delta %d: %w", i, err)
		}
		if err == nil {
			err = perr
		}
		if err != nil {
			return nil, fmt.Errorf("%w: delta %d: %v", ErrBadMessage, i, err)
		}
		out[i] = s
	}
	return out, nil
}

// appendDelta appends a delta's encoding and proof to the lists that
// decodeDeltas reads.
func appendDelta(deltas, proofs [][]byte, d *crdt.Delta, enc []byte) ([][]byte, [][]byte) {
	return append(deltas, enc), append(proofs, crdt.AppendProof(nil, d.Proof))
}

// Sync frames. Two protocols share them (see Pull):
//
//   - sync/1, the whole-context exchange: a request carries the
//     requester's applied context; the response is any number of delta
//     chunks, then either done (with the responder's applied context, for
//     status) or full, which the responder's full-state export follows on
//     the same stream.
//   - sync/2, the digest exchange: the requester sends digest (the root
//     of its applied context's crdt.Digest); the responder answers done
//     at once if its root is the same, else buckets with its 64 group
//     hashes (crdt.GroupHashes); the requester answers groups, the groups
//     whose hashes differ; the responder answers buckets with the 64
//     bucket hashes of each of those groups; the requester answers
//     entries (its context entries of the buckets that differ); the
//     response then goes on as in sync/1, its done carrying the
//     responder's entries of those buckets instead of a whole context.
//     What crosses grows with the difference, not with the number of
//     replicas.
const (
	frameRequest = 1
	frameDeltas  = 2
	frameDone    = 3
	frameFull    = 4
	// sync/2's kinds and fields start at 20, clear of those sync/1 may
	// add.
	frameDigest  = 20
	frameBuckets = 21
	frameEntries = 22
	frameGroups  = 23
	// Comparing histories, on sync/2 only (see equivocation.go):
	// frameChains asks for runs of chains (Ranges), on a stream of its
	// own; frameChain answers with them (Chains). frameState asks, on a
	// stream of its own, for a full state: the answer is full and the
	// state, or done if refused.
	frameChains      = 30
	frameChain       = 31
	frameState       = 32
	frameHeads       = 33 // a request with the requester's HeadSums, on a stream of its own
	frameHeadsAnswer = 34 // its answer: Heads

	// chunkBytes bounds the deltas of one response frame.
	chunkBytes = 256 << 10
	// maxSyncFrame bounds one sync/1 frame: a whole context or a chunk
	// of deltas. It is what releases before sync/2 accept, so sync/1
	// carries contexts of up to about 900,000 replicas; sync/2 has no
	// such limit.
	maxSyncFrame = 64<<20 + 1024
	// maxDigestFrame bounds one sync/2 frame: bucket hashes, entries
	// (at most maxEntriesBytes) or a chunk of deltas (chunkBytes plus one
	// delta of up to crdt.MaxDeltaBytes).
	maxDigestFrame = 8 << 20
	// maxEntriesBytes and maxEntries bound the context entries of one
	// frame; buckets that do not fit wait for the next exchange.
	maxEntriesBytes = 4 << 20
	maxEntries      = 1 << 15
)

type syncFrame struct {
	Kind    uint     `cbor:"1,keyasint"`
	Version uint     `cbor:"2,keyasint,omitempty"`
	Network string   `cbor:"3,keyasint,omitempty"`
	Context []byte   `cbor:"4,keyasint,omitempty"`
	Deltas  [][]byte `cbor:"5,keyasint,omitempty"`
	Proofs  [][]byte `cbor:"6,keyasint,omitempty"` // one per delta
	// sync/2 only.
	Root     []byte   `cbor:"20,keyasint,omitempty"` // crdt.Digest root
	Digests  []byte   `cbor:"21,keyasint,omitempty"` // group or bucket hashes, 8 bytes each, big-endian
	Buckets  []uint64 `cbor:"22,keyasint,omitempty"` // digest buckets (groups in groups and buckets frames), ascending
	Replicas []string `cbor:"23,keyasint,omitempty"` // the replicas of those buckets the sender's context names
	Entries  [][]byte `cbor:"24,keyasint,omitempty"` // their entries (crdt.Context.AppendEntry), one per replica

	// Comparing histories, sync/2 only (see equivocation.go). A digest
	// request carries the requester's head root and its equivocators;
	// done whether the responder's head root differs, the proofs the
	// requester lacks, and its ban stamp, which full carries too. A heads
	// request carries head sums, its answer signed heads.
	HeadRoot     []byte            `cbor:"37,keyasint,omitempty"`
	HeadsDiffer  bool              `cbor:"38,keyasint,omitempty"`
	HeadSums     []byte            `cbor:"30,keyasint,omitempty"`
	Equivocators map[string]uint64 `cbor:"31,keyasint,omitempty"`
	Heads        []byte            `cbor:"32,keyasint,omitempty"`
	Forks        [][]byte          `cbor:"33,keyasint,omitempty"`
	Stamp        uint64            `cbor:"34,keyasint,omitempty"`
	Ranges       []chainRange      `cbor:"35,keyasint,omitempty"`
	Chains       [][]byte          `cbor:"36,keyasint,omitempty"`
}

// encodeBucketHashes packs bucket hashes for a buckets frame.
func encodeBucketHashes(hs []uint64) []byte {
	b := make([]byte, 0, 8*len(hs))
	for _, h := range hs {
		b = binary.BigEndian.AppendUint64(b, h)
	}
	return b
}

// decodeBucketHashes unpacks a buckets frame's n hashes.
func decodeBucketHashes(b []byte, n int) ([]uint64, error) {
	if len(b) != 8*n {
		return nil, fmt.Errorf("%w: %d bytes of digest hashes, want %d", ErrBadMessage, len(b), 8*n)
	}
	hs := make([]uint64, n)
	for i := range hs {
		hs[i] = binary.BigEndian.Uint64(b[8*i:])
	}
	return hs, nil
}

// decodeGroups checks a groups frame's digest groups: in range and
// ascending.
func decodeGroups(f *syncFrame) ([]int, error) {
	gs := make([]int, len(f.Buckets))
	for i, g := range f.Buckets {
		if g >= crdt.DigestGroups || (i > 0 && g <= f.Buckets[i-1]) {
			return nil, fmt.Errorf("%w: digest groups not ascending below %d at %d", ErrBadMessage, crdt.DigestGroups, g)
		}
		gs[i] = int(g)
	}
	return gs, nil
}

// putEntries fills f's buckets, replicas and entries with the context
// entries (by get) of the buckets in diff, in order, while they fit in
// maxEntriesBytes and maxEntries. It reports whether every bucket of
// diff is in f. A first bucket that alone does not fit is listed without
// entries: the other side takes it as empty there and sends all of it,
// which costs more but converges.
func putEntries(f *syncFrame, diff []int, get func(b int) map[crdt.ReplicaID][]byte) bool {
	size, count := 0, 0
	for i, b := range diff {
		es := get(b)
		more := 0
		for r, e := range es {
			more += len(r) + len(e) + 8
		}
		fits := size+more <= maxEntriesBytes && count+len(es) <= maxEntries
		if !fits && i > 0 {
			return false
		}
		f.Buckets = append(f.Buckets, uint64(b))
		if !fits {
			continue
		}
		for _, r := range slices.Sorted(maps.Keys(es)) {
			f.Replicas = append(f.Replicas, string(r))
			f.Entries = append(f.Entries, es[r])
		}
		size, count = size+more, count+len(es)
	}
	return true
}

// decodeEntries checks a frame's buckets, replicas and entries: buckets
// in range and ascending, one entry per replica, each replica valid,
// named once and in one of the buckets. The entries themselves are
// decoded by whoever uses them (crdt.Context.Patch).
func decodeEntries(f *syncFrame) ([]int, map[crdt.ReplicaID][]byte, error) {
	if len(f.Replicas) != len(f.Entries) {
		return nil, nil, fmt.Errorf("%w: %d replicas, %d entries", ErrBadMessage, len(f.Replicas), len(f.Entries))
	}
	if len(f.Replicas) > maxEntries {
		return nil, nil, fmt.Errorf("%w: %d context entries in one frame, at most %d", ErrBadMessage, len(f.Replicas), maxEntries)
	}
	buckets := make([]int, len(f.Buckets))
	for i, b := range f.Buckets {
		if b >= crdt.DigestBuckets || (i > 0 && b <= f.Buckets[i-1]) {
			return nil, nil, fmt.Errorf("%w: digest buckets not ascending below %d at %d", ErrBadMessage, crdt.DigestBuckets, b)
		}
		buckets[i] = int(b)
	}
	entries := make(map[crdt.ReplicaID][]byte, len(f.Replicas))
	for i, s := range f.Replicas {
		r := crdt.ReplicaID(s)
		if err := r.Validate(); err != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrBadMessage, err)
		}
		if _, dup := entries[r]; dup {
			return nil, nil, fmt.Errorf("%w: replica %s named twice", ErrBadMessage, r)
		}
		if _, ok := slices.BinarySearch(buckets, crdt.BucketOf(r)); !ok {
			return nil, nil, fmt.Errorf("%w: replica %s is not in a listed bucket", ErrBadMessage, r)
		}
		entries[r] = f.Entries[i]
	}
	return buckets, entries, nil
}

func writeFrame(w io.Writer, f *syncFrame) (int, error) {
	b, err := cbor.Marshal(f)
	if err != nil {
		return 0, err
	}
	var hdr [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(hdr[:], uint64(len(b)))
	if _, err := w.Write(hdr[:n]); err != nil {
		return 0, err
	}
	_, err = w.Write(b)
	return n + len(b), err
}

// readFrame reads one length-prefixed sync frame of at most limit bytes
// (maxSyncFrame or maxDigestFrame). The announced length is checked
// first; the frame's buffer then grows with the bytes actually received
// (as node's state frames do), so a peer that announces a large frame and
// sends little of it costs little memory.
func readFrame(r *bufio.Reader, limit uint64) (*syncFrame, int, error) {
	size, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, 0, fmt.Errorf("sync frame length: %w", err)
	}
	if size > limit {
		return nil, 0, fmt.Errorf("%w: frame of %d bytes", ErrBadMessage, size)
	}
	b, err := io.ReadAll(io.LimitReader(r, int64(size)))
	if err == nil && uint64(len(b)) < size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return nil, 0, fmt.Errorf("sync frame cut short: %w", err)
	}
	var f syncFrame
	if err := decMode.Unmarshal(b, &f); err != nil {
		// A later wire version may add fields this one does not know.
		if err := otherVersion("sync frame", peekVersion(b, 2)); err != nil {
			return nil, 0, err
		}
		return nil, 0, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	return &f, int(size) + len(binary.AppendUvarint(nil, size)), nil
}
