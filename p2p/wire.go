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

// wireVersion is the version of the messages below.
const wireVersion = 1

// ErrBadMessage marks a gossip message or sync frame that does not decode,
// is too large, or belongs to another network.
var ErrBadMessage = errors.New("bad message")

// gossipMsg is one message on the delta topic: deltas in their binary
// encoding, each with its own dot.
type gossipMsg struct {
	Version uint     `cbor:"1,keyasint"`
	Network string   `cbor:"2,keyasint"`
	Deltas  [][]byte `cbor:"3,keyasint"`
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

func encodeGossip(network string, deltas [][]byte) ([]byte, error) {
	return cbor.Marshal(&gossipMsg{Version: wireVersion, Network: network, Deltas: deltas})
}

// decodeGossip decodes and validates a gossip message of network.
func decodeGossip(b []byte, network string, maxBytes int) ([]*crdt.Delta, error) {
	if len(b) > maxBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrBadMessage, len(b), maxBytes)
	}
	var m gossipMsg
	if err := decMode.Unmarshal(b, &m); err != nil {
		// A later wire version may add fields this one does not know.
		var v struct {
			Version uint `cbor:"1,keyasint"`
		}
		if cbor.Unmarshal(b, &v) == nil && v.Version > wireVersion {
			return nil, fmt.Errorf("gossip message: %w %d (this peer speaks %d)", crdt.ErrVersion, v.Version, wireVersion)
		}
		return nil, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	if m.Version > wireVersion {
		return nil, fmt.Errorf("gossip message: %w %d (this peer speaks %d)", crdt.ErrVersion, m.Version, wireVersion)
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
	out := make([]*crdt.Delta, len(m.Deltas))
	for i, enc := range m.Deltas {
		d, err := crdt.DecodeDelta(enc)
		if errors.Is(err, crdt.ErrVersion) {
			return nil, fmt.Errorf("gossip message: delta %d: %w", i, err)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: delta %d: %v", ErrBadMessage, i, err)
		}
		out[i] = d
	}
	return out, nil
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

func readFrame(r *bufio.Reader) (*syncFrame, int, error) {
	size, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, 0, fmt.Errorf("sync frame length: %w", err)
	}
	if size > maxSyncFrame {
		return nil, 0, fmt.Errorf("%w: frame of %d bytes", ErrBadMessage, size)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, 0, fmt.Errorf("sync frame cut short: %w", err)
	}
	var f syncFrame
	if err := decMode.Unmarshal(b, &f); err != nil {
		// A later wire version may add fields this one does not know.
		var v struct {
			Version uint `cbor:"2,keyasint"`
		}
		if cbor.Unmarshal(b, &v) == nil && v.Version > wireVersion {
			return nil, 0, fmt.Errorf("sync frame: %w %d (this peer speaks %d)", crdt.ErrVersion, v.Version, wireVersion)
		}
		return nil, 0, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	return &f, int(size) + binary.PutUvarint(make([]byte, binary.MaxVarintLen64), size), nil
}
