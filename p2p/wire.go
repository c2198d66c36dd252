package p2p

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/fxamacker/cbor/v2"
)

// wireVersion is the version of the messages below. Version 2 added the
// deltas' proofs of origin (crdt.Proof), version 3 the split chain format
// and stubs (proof tags 3 to 6, which version 2 refuses); a peer ignores
// messages of any other version, as a newer or older release's, rather
// than holding them against their sender. Version 4 added the comparison
// of histories (head sums and signed heads, chain runs, proofs of
// equivocation and ban stamps; see equivocation.go) to the sync protocol.
const wireVersion = 4

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

// Sync frames. A request carries the requester's applied context; the
// response is any number of delta chunks, then either done (with the
// responder's applied context, for status) or full, which the responder's
// full-state export follows on the same stream.
const (
	frameRequest = 1
	frameDeltas  = 2
	frameDone    = 3
	frameFull    = 4
	// frameChains asks for runs of chains (Ranges), on a stream of its
	// own; frameChain answers with them (Chains). frameState asks, on a
	// stream of its own, for a full state (see equivocation.go): the
	// answer is full and the state, or done if refused.
	frameChains = 5
	frameChain  = 6
	frameState  = 7

	// chunkBytes bounds the deltas of one response frame.
	chunkBytes = 256 << 10
	// maxSyncFrame bounds one frame: a context or a chunk of deltas.
	maxSyncFrame = crdt.MaxContextBytes + 1024
)

type syncFrame struct {
	Kind    uint     `cbor:"1,keyasint"`
	Version uint     `cbor:"2,keyasint,omitempty"`
	Network string   `cbor:"3,keyasint,omitempty"`
	Context []byte   `cbor:"4,keyasint,omitempty"`
	Deltas  [][]byte `cbor:"5,keyasint,omitempty"`
	Proofs  [][]byte `cbor:"6,keyasint,omitempty"` // one per delta

	// Comparing histories (see equivocation.go). A request carries the
	// requester's head sums and its equivocators; done the responder's
	// signed heads where the sums differ, the proofs the requester lacks,
	// and its ban stamp, which full carries too.
	HeadSums     []byte            `cbor:"7,keyasint,omitempty"`
	Equivocators map[string]uint64 `cbor:"8,keyasint,omitempty"`
	Heads        []byte            `cbor:"10,keyasint,omitempty"`
	Forks        [][]byte          `cbor:"11,keyasint,omitempty"`
	Stamp        uint64            `cbor:"12,keyasint,omitempty"`
	Ranges       []chainRange      `cbor:"13,keyasint,omitempty"`
	Chains       [][]byte          `cbor:"14,keyasint,omitempty"`
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

// readFrame reads one length-prefixed sync frame of at most maxSyncFrame
// bytes. The announced length is checked first; the frame's buffer then
// grows with the bytes actually received (as node's state frames do), so a
// peer that announces a large frame and sends little of it costs little
// memory.
func readFrame(r *bufio.Reader) (*syncFrame, int, error) {
	size, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, 0, fmt.Errorf("sync frame length: %w", err)
	}
	if size > maxSyncFrame {
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
