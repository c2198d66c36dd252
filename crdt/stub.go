package crdt

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
)

// Stubs.
//
// A delta's own entries are those tagged with its own dot: the values the
// operation wrote (and an add's presence). Once no state holds them any
// more — a later write or remove, whose context names the delta's dot,
// superseded every one — a replica need not keep them: it keeps and serves
// the delta's stub instead, the delta without its own entries and with
// their digest (Proof.Elided). Everything else stays: the dot, timestamp,
// key and context (so a stub still removes what the delta removed) and
// the entries of other dots the delta carried (an add's presence that a
// replace keeps, say). The chain of a split-format delta hashes
// SplitDigest, whose two parts a stub still yields, so a stub is checked
// against its replica's signatures like the whole delta.
//
// As a state, a stub is the delta restricted to the dots of its context
// but its own: JoinCovers leaves its own dot out, so joining a stub neither
// adds its entries nor removes them. Joined together with a delta whose
// context names the stub's dot (one that superseded it, or any later one
// that did), it gives exactly the state the whole delta gives: whether an
// entry of that dot survives is decided by the deltas that name it, all
// of which but the stub carry it if it survives, so the stub's entries add
// nothing. Joined alone it would lose them: a receiver joins a stub only
// together with, or after, a delta that names its dot (node/causal.go).

// IsStub reports whether d is a stub: a delta whose own entries were left
// out, with their digest in d.Proof.Elided.
func (d *Delta) IsStub() bool { return !d.Proof.Elided.IsZero() }

// JoinCovers returns the dots that d covers as a state: its context, less
// its own dot for a stub, whose own entries are absent rather than removed.
func (d *Delta) JoinCovers() DotSet {
	if !d.IsStub() {
		return d.Covers()
	}
	return stubCovers{dotList(d.Context), d.Dot}
}

type stubCovers struct {
	ctx DotSet
	own Dot
}

func (s stubCovers) Contains(d Dot) bool { return d != s.own && s.ctx.Contains(d) }

// validateStub checks what a stub must hold beyond any delta: the split
// format, and none of its own entries.
func (d *Delta) validateStub() error {
	if !d.IsStub() {
		return nil
	}
	if !d.Proof.Split {
		return fmt.Errorf("%w: stub %s is not of the split format", ErrInvalid, d.Dot)
	}
	if slices.Contains(d.Item.Presence, d.Dot) {
		return fmt.Errorf("%w: stub %s holds its own presence", ErrInvalid, d.Dot)
	}
	for f, es := range d.Item.Fields {
		for _, e := range es {
			if e.Dot == d.Dot {
				return fmt.Errorf("%w: stub %s holds its own entry of field %q", ErrInvalid, d.Dot, f)
			}
		}
	}
	return nil
}

// HasOwn reports whether d holds entries of its own dot.
func (d *Delta) HasOwn() bool {
	if slices.Contains(d.Item.Presence, d.Dot) {
		return true
	}
	for _, es := range d.Item.Fields {
		for _, e := range es {
			if e.Dot == d.Dot {
				return true
			}
		}
	}
	return false
}

// Stub returns the stub of d, a delta of the split format with its own
// entries: a copy without them, their digest in Proof.Elided and no
// signature (a signature vouches for a chain head, which the stub still
// reaches; the caller may copy it). A stub, and a delta that is not of the
// split format, is returned as it is.
func Stub(d *Delta) *Delta {
	if d.IsStub() || !d.Proof.Split {
		return d
	}
	_, own := SplitDigest(d)
	s := *d
	s.Item = withoutDot(&d.Item, d.Dot)
	s.Proof = Proof{Prev: d.Proof.Prev, Sig: d.Proof.Sig, Split: true, Elided: own}
	return &s
}

// Complete returns the whole delta of stub s, taking its own entries from
// it, an item that holds them (a replica's current state of s's item), if
// they are all there unchanged: their digest must be s.Proof.Elided. It
// reports false if they are not (a later write or remove superseded some:
// the stub is all that can be sent). s must be a valid stub.
func Complete(s *Delta, it *Item) (*Delta, bool) {
	if !s.IsStub() || it == nil {
		return nil, false
	}
	d := *s
	d.Proof.Elided = Hash{}
	d.Item = Item{Presence: s.Item.Presence}
	if slices.Contains(it.Presence, s.Dot) {
		d.Item.Presence = sortDots(append(slices.Clone(s.Item.Presence), s.Dot))
	}
	for f, es := range it.Fields {
		for _, e := range es {
			if e.Dot != s.Dot {
				continue
			}
			if d.Item.Fields == nil {
				d.Item.Fields = make(map[string][]Entry, len(s.Item.Fields)+len(it.Fields))
			}
			list := append(slices.Clone(s.Item.Fields[f]), e)
			slices.SortFunc(list, func(a, b Entry) int { return compareDots(a.Dot, b.Dot) })
			d.Item.Fields[f] = list
		}
	}
	for f, es := range s.Item.Fields {
		if _, done := d.Item.Fields[f]; !done {
			if d.Item.Fields == nil {
				d.Item.Fields = make(map[string][]Entry, len(s.Item.Fields))
			}
			d.Item.Fields[f] = es
		}
	}
	if _, own := SplitDigest(&d); own != s.Proof.Elided {
		return nil, false
	}
	return &d, true
}

// withoutDot returns a copy of it without the entries of dot.
func withoutDot(it *Item, dot Dot) Item {
	others := len(it.Presence) > 1 || (len(it.Presence) == 1 && it.Presence[0] != dot)
	for _, es := range it.Fields {
		others = others || len(es) > 1 || es[0].Dot != dot
	}
	if !others { // an add or write of new fields: nothing else
		return Item{}
	}
	out := Item{Presence: slices.DeleteFunc(slices.Clone(it.Presence), func(p Dot) bool { return p == dot })}
	if len(out.Presence) == 0 {
		out.Presence = nil
	}
	for f, es := range it.Fields {
		kept := slices.DeleteFunc(slices.Clone(es), func(e Entry) bool { return e.Dot == dot })
		if len(kept) == 0 {
			continue
		}
		if out.Fields == nil {
			out.Fields = make(map[string][]Entry, len(it.Fields))
		}
		out.Fields[f] = kept
	}
	return out
}

// SplitDigest returns the two digests that the chain of a split-format
// delta hashes (see ChainNextSplit): head, of everything in d but its own
// entries, and own, of its own entries — for a stub, d.Proof.Elided. A
// delta and its stub have the same SplitDigest. The proof is not digested.
func SplitDigest(d *Delta) (head, own Hash) {
	bp := digestBufs.Get().(*[]byte)
	b := (*bp)[:0]
	b = append(b, "crdt-catalog delta head v2\x00"...)
	b = appendDigestDot(b, d.Dot)
	b = binary.BigEndian.AppendUint64(b, uint64(d.TS))
	b = append(b, byte(d.Op))
	b = appendDigestString(b, d.Collection)
	b = appendDigestString(b, d.ID)
	b = binary.AppendUvarint(b, uint64(len(d.Context)))
	for _, c := range d.Context {
		b = appendDigestDot(b, c)
	}
	nOwn := 0
	for _, p := range d.Item.Presence {
		if p == d.Dot {
			nOwn++
		}
	}
	b = binary.AppendUvarint(b, uint64(len(d.Item.Presence)-nOwn))
	for _, p := range d.Item.Presence {
		if p != d.Dot {
			b = appendDigestDot(b, p)
		}
	}
	fields := make([]string, 0, 16) // on the stack for most deltas
	for f := range d.Item.Fields {
		fields = append(fields, f)
	}
	slices.Sort(fields)
	// Fields with entries of other dots, then own entries (at most one per
	// field: entries of one field have distinct dots).
	others := 0
	for _, f := range fields {
		for _, e := range d.Item.Fields[f] {
			if e.Dot != d.Dot {
				others++
				break
			}
		}
	}
	b = binary.AppendUvarint(b, uint64(others))
	for _, f := range fields {
		es := d.Item.Fields[f]
		n := 0
		for _, e := range es {
			if e.Dot != d.Dot {
				n++
			}
		}
		if n == 0 {
			continue
		}
		b = appendDigestString(b, f)
		b = binary.AppendUvarint(b, uint64(n))
		for _, e := range es {
			if e.Dot != d.Dot {
				b = appendDigestDot(b, e.Dot)
				b = binary.BigEndian.AppendUint64(b, uint64(e.TS))
				b = appendDigestString(b, string(e.Value))
			}
		}
	}
	head = sha256.Sum256(b)
	if d.IsStub() {
		own = d.Proof.Elided
	} else {
		b = append(b[:0], "crdt-catalog delta own v2\x00"...)
		b = append(b, byte(nOwn))
		for _, f := range fields {
			for _, e := range d.Item.Fields[f] {
				if e.Dot == d.Dot {
					b = appendDigestString(b, f)
					b = binary.BigEndian.AppendUint64(b, uint64(e.TS))
					b = appendDigestString(b, string(e.Value))
				}
			}
		}
		own = sha256.Sum256(b)
	}
	*bp = b
	digestBufs.Put(bp)
	return head, own
}

// digestBufs holds SplitDigest's buffers.
var digestBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func appendDigestString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendDigestDot(b []byte, d Dot) []byte {
	return binary.BigEndian.AppendUint64(appendDigestString(b, string(d.Replica)), d.Counter)
}
