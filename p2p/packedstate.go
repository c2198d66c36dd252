package p2p

import (
	"errors"
	"fmt"
	"io"

	"github.com/golang/snappy"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Packed full states. A full state is mostly repetition (field names,
// replica IDs, timestamps a few apart): snappy's framing format packs a
// catalog of 200-byte documents to about a sixth, for about 1 µs of CPU
// per item on the sender and less on the receiver, and the smaller stream
// costs less to encrypt and carry. A node that reads packed states opens
// its pull streams offering packedSyncProto first, then the plain sync
// protocol; both run the same exchange, except that a node answering on
// packedSyncProto with a full state packs it, announced by
// frameFullPacked instead of frameFull. Releases that know only the plain
// protocol negotiate it and get what they always got, either way round.

// frameFullPacked announces a full state in snappy's framing format. Far
// from the kinds of wire.go (1 to 6 so far), which may grow.
const frameFullPacked = 16

// packedSyncProto is the sync protocol of a requester that reads packed
// full states.
func (p *Peer) packedSyncProto() protocol.ID {
	return protocol.ID("/crdt-catalog/" + p.cfg.Network + "/sync-packed/1.0.0")
}

// servePacked answers pulls on packedSyncProto.
func (p *Peer) servePacked() {
	p.h.SetStreamHandler(p.packedSyncProto(), p.handleSync)
}

// unpacker reads a packed full state from src. A packed stream that does
// not decode is ErrBadMessage (garbage), unless src itself ended or failed
// under it: then the error is src's (a stream cut short wraps
// io.ErrUnexpectedEOF), as for a plain state. snappy's reader holds one
// chunk, at most 64 KiB decoded, at a time.
type unpacker struct {
	src *countingReader
	z   *snappy.Reader
}

func newUnpacker(src *countingReader) *unpacker {
	return &unpacker{src: src, z: snappy.NewReader(src)}
}

func (u *unpacker) Read(b []byte) (int, error) {
	n, err := u.z.Read(b)
	switch {
	case err == nil || err == io.EOF:
		return n, err
	case errors.Is(u.src.err, io.EOF):
		return n, fmt.Errorf("packed full state cut short: %w", io.ErrUnexpectedEOF)
	case u.src.err != nil:
		return n, u.src.err
	}
	return n, fmt.Errorf("%w: packed full state: %v", ErrBadMessage, err)
}

// packer packs a full state for a requester that reads packed states;
// Close writes what it holds.
func packer(w io.Writer) *snappy.Writer { return snappy.NewBufferedWriter(w) }
