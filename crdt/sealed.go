package crdt

import (
	"bytes"
	"fmt"
)

// Sealed is a delta that cannot change, kept with its binary encoding: a
// validated Delta, with its proof, and the exact bytes EncodeDelta writes
// for it. The two agree by construction: a Sealed is made only by
// DecodeSealed, which validates a record once and keeps the bytes it read
// (re-encoding only a record that was not in canonical form), and by
// Seal, which validates and encodes a Delta once. Whoever joins it can
// trust both without checking or encoding it again. Its fields are
// unexported, so code outside this package cannot make one whose bytes and
// delta disagree; the delta and bytes it hands out are shared, read-only
// views (Go has no const; copying them for every reader would cost what
// sealing saves). The zero Sealed holds no delta (Delta returns nil), and
// node rejects it. A Sealed is safe for concurrent use.
type Sealed struct {
	d   *Delta
	enc []byte
}

// DecodeSealed decodes and validates a delta record, as DecodeDelta does,
// with the proof p that travels beside it, and seals them. It keeps its own
// copy of b. It returns an error wrapping ErrInvalid, ErrTooLarge or
// ErrVersion on any bad input, and never panics.
func DecodeSealed(b []byte, p Proof) (*Sealed, error) {
	if len(b) > MaxDeltaBytes {
		return nil, fmt.Errorf("decode delta: %w: %d bytes, limit %d", ErrTooLarge, len(b), MaxDeltaBytes)
	}
	if v, ok := peekVersion(b); ok && v != FormatVersion {
		return nil, fmt.Errorf("decode delta: %w %d", ErrVersion, v)
	}
	raw := getRaw()
	defer putRaw(raw)
	d, own := decodeDeltaRaw(b, raw)
	canonical := d != nil
	if d == nil {
		var err error
		if d, err = decodeDeltaGeneric(b); err != nil {
			return nil, err
		}
	} else if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("decode delta: %w", err)
	}
	d.Proof = p
	err := d.checkProof()
	if err == nil {
		err = d.checkSealed()
	}
	if err != nil {
		return nil, fmt.Errorf("decode delta: %w", err)
	}
	if canonical && raw.canonicalDelta(b) {
		if own == nil {
			own = bytes.Clone(b)
		}
		// The values alias own, which is b's bytes: one copy serves both.
		return &Sealed{d: d, enc: own}, nil
	}
	enc, err := EncodeDelta(d)
	if err != nil {
		return nil, err
	}
	return &Sealed{d: d, enc: enc}, nil
}

// Seal validates d and encodes it, and returns it sealed with its
// encoding. The Sealed holds its own copy of d (and of its proof): later
// changes to d do not reach it.
func Seal(d *Delta) (*Sealed, error) {
	err := d.Validate()
	if err == nil {
		err = d.checkSealed()
	}
	if err != nil {
		return nil, err
	}
	enc, err := EncodeDelta(d)
	if err != nil {
		return nil, err
	}
	// The copy is the encoding decoded, so it is what the bytes say.
	raw := getRaw()
	defer putRaw(raw)
	c, _ := decodeDeltaRaw(enc, raw)
	if c == nil {
		return nil, fmt.Errorf("seal delta %s: %w: its encoding does not decode", d.Dot, ErrInvalid)
	}
	c.Proof = d.Proof
	c.Proof.Sig = bytes.Clone(d.Proof.Sig)
	return &Sealed{d: c, enc: enc}, nil
}

// Delta returns the sealed delta, with its proof, or nil for the zero
// Sealed. It is shared by every holder of s: callers must not modify it
// (copy it to change its proof).
func (s *Sealed) Delta() *Delta { return s.d }

// Bytes returns the delta's binary encoding, as EncodeDelta writes it. It
// is shared by every holder of s: callers must not modify it.
func (s *Sealed) Bytes() []byte { return s.enc }

// Dot returns the delta's dot; the zero Dot for the zero Sealed.
func (s *Sealed) Dot() Dot {
	if s.d == nil {
		return Dot{}
	}
	return s.d.Dot
}
