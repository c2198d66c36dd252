package query

import (
	"encoding/binary"
	"encoding/json"
	"time"
)

// Index encoding.
//
// AppendIndexValue maps a field's JSON value to bytes whose byte-wise order
// follows the order the ordering operators use: numbers numerically,
// strings that are RFC 3339 times chronologically, other strings
// byte-wise. Each kind of value has its own section, told apart by the
// first byte, because the language never orders a number against a
// string with the same rule it orders two numbers:
//
//	0x01 number   sign (0x40 negative, 0x80 zero, 0xC0 positive), then for
//	              a positive number the decimal point position (8 bytes,
//	              big-endian, biased by 2^62) and the significant digits
//	              ending in 0x00 (0x01 if cut, see below); a negative number
//	              has the bitwise complement of its magnitude's bytes
//	0x02 time     the instant: Unix seconds (8 bytes, big-endian, biased
//	              by 2^63) and nanoseconds (4 bytes), then the string as
//	              in a string section, so that distinct strings of one
//	              instant stay distinct for =
//	0x03 string   the decoded string with 0x00 written as 0x00 0xFF,
//	              ending in 0x00 0x01 (0x00 0x02 if cut)
//	0x04 other    true, false, null, objects and arrays: their JSON text
//	              (compact), encoded as a string
//
// Encodings are prefix-free, so an index key made of the encoding followed
// by an item id sorts by value and then by id. A string (or JSON text)
// longer than MaxIndexedBytes and a number with more significant digits
// than that are cut to that length and marked cut: every value that
// shares the cut prefix then has one encoding. The encoding is therefore
// monotone rather than strictly increasing: x ≤ y implies
// enc(x) ≤ enc(y), which is all a range over it needs, since the query's
// full predicate decides each item it reads.
const (
	tagNumber byte = 0x01
	tagTime   byte = 0x02
	tagString byte = 0x03
	tagOther  byte = 0x04
)

// MaxIndexedBytes is how much of a value (bytes of a string or JSON text,
// significant digits of a number) its index encoding keeps.
const MaxIndexedBytes = 128

const (
	signNeg  byte = 0x40
	signZero byte = 0x80
	signPos  byte = 0xC0
)

// AppendIndexValue appends the index encoding of a field's JSON value (as
// Match classifies it) to dst.
func AppendIndexValue(dst []byte, raw json.RawMessage) []byte {
	var scratch [128]byte
	v := classify(raw, scratch[:0])
	switch v.kind {
	case kNumber:
		return appendNumber(dst, &v.num)
	case kString:
		if maybeTime(v.text) {
			if tm, err := time.Parse(time.RFC3339Nano, string(v.text)); err == nil {
				return appendTime(dst, tm, v.text)
			}
		}
		return appendString(append(dst, tagString), v.text)
	}
	return appendString(append(dst, tagOther), v.text)
}

func appendNumber(dst []byte, d *decimal) []byte {
	dst = append(dst, tagNumber)
	switch d.sign {
	case 0:
		return append(dst, signZero)
	case 1:
		return appendMagnitude(append(dst, signPos), d)
	}
	dst = append(dst, signNeg)
	start := len(dst)
	dst = appendMagnitude(dst, d)
	for i := start; i < len(dst); i++ {
		dst[i] = ^dst[i]
	}
	return dst
}

// appendMagnitude appends the point and the digits of a non-zero d.
func appendMagnitude(dst []byte, d *decimal) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(d.point+1<<62))
	n := len(d.hi) + len(d.lo)
	for i := 0; i < n && i < MaxIndexedBytes; i++ {
		dst = append(dst, d.digit(i))
	}
	if n > MaxIndexedBytes {
		return append(dst, 0x01)
	}
	return append(dst, 0x00)
}

func appendTime(dst []byte, tm time.Time, text []byte) []byte {
	dst = appendInstant(append(dst, tagTime), tm)
	return appendString(dst, text)
}

func appendInstant(dst []byte, tm time.Time) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(tm.Unix())+1<<63)
	return binary.BigEndian.AppendUint32(dst, uint32(tm.Nanosecond()))
}

func appendString(dst, s []byte) []byte {
	cut := len(s) > MaxIndexedBytes
	if cut {
		s = s[:MaxIndexedBytes]
	}
	for _, c := range s {
		if c == 0 {
			dst = append(dst, 0, 0xFF)
		} else {
			dst = append(dst, c)
		}
	}
	if cut {
		return append(dst, 0, 0x02)
	}
	return append(dst, 0, 0x01)
}

// Span is a range of index encodings: From ≤ enc < To, where a nil To
// means the end of every section.
type Span struct {
	From, To []byte
}

// IndexTerm is what an index on Field can contribute to a query: every
// item that matches the query has its value of Field encoded within one of
// Spans. With Eq (an equality term) each span is one value's encodings,
// whose entries an index holds in id order; otherwise entries come in
// value order.
type IndexTerm struct {
	Field string
	Eq    bool
	Spans []Span
}

// IndexTerms returns the terms of the query that an index on their field
// can answer: each = term, and for each field its ordering terms (<, <=,
// >, >=), a lower and an upper bound of one kind joined into one range.
// Any item the query matches lies within the spans of each of them; the
// spans may hold items it does not match, which the query's Match then
// rejects. !=, ~, bare words and id terms are not among them.
func (q *Query) IndexTerms() []IndexTerm {
	if q == nil {
		return nil
	}
	var out []IndexTerm
	type bounds struct{ lo, hi *term }
	ranges := map[string]*[3]bounds{} // field -> bounds by class: number, time, other
	var order []string
	for i := range q.terms {
		t := &q.terms[i]
		if t.isID || t.op == opBare {
			continue
		}
		switch {
		case t.op == opEq:
			out = append(out, IndexTerm{Field: t.field, Eq: true, Spans: t.eqSpans()})
		case t.op.ordering():
			r, ok := ranges[t.field]
			if !ok {
				r = new([3]bounds)
				ranges[t.field] = r
				order = append(order, t.field)
			}
			b := &r[t.class()]
			if t.op == opGt || t.op == opGe {
				if b.lo == nil {
					b.lo = t
				}
			} else if b.hi == nil {
				b.hi = t
			}
		}
	}
	for _, f := range order {
		for _, b := range ranges[f] {
			if b.lo != nil || b.hi != nil {
				out = append(out, IndexTerm{Field: f, Spans: rangeSpans(b.lo, b.hi)})
			}
		}
	}
	return out
}

// class is the kind of bound an ordering term is: 0 a number, 1 a time,
// 2 any other string.
func (t *term) class() int {
	switch {
	case t.isNum:
		return 0
	case t.isTime:
		return 1
	}
	return 2
}

// eqSpans returns the encodings a field = t.value can have: a string equal
// to the value, and a number equal to it if it is one, else a non-string
// whose JSON text is the value.
func (t *term) eqSpans() []Span {
	var str []byte
	if tm, err := time.Parse(time.RFC3339Nano, t.value); err == nil && maybeTime(t.vb) {
		str = appendTime(nil, tm, t.vb)
	} else {
		str = appendString([]byte{tagString}, t.vb)
	}
	var other []byte
	if t.isNum {
		other = appendNumber(nil, &t.num)
	} else {
		other = appendString([]byte{tagOther}, t.vb)
	}
	return []Span{prefixSpan(str), prefixSpan(other)}
}

// rangeSpans returns the spans of a range between bounds of one class
// (either may be nil).
func rangeSpans(lo, hi *term) []Span {
	cls := lo
	if cls == nil {
		cls = hi
	}
	// Strings that are not times compare byte-wise with the value in
	// every class.
	spans := []Span{section(tagString, lo, hi, func(dst []byte, t *term) []byte { return appendString(dst, t.vb) })}
	switch cls.class() {
	case 0:
		spans = append(spans, section(tagNumber, lo, hi, func(dst []byte, t *term) []byte { return appendNumber(dst[:len(dst)-1], &t.num) }))
	case 1:
		spans = append(spans, section(tagTime, lo, hi, func(dst []byte, t *term) []byte { return appendInstant(dst, t.tm) }))
		return spans
	}
	// Times compare byte-wise with a value that is not a time: the whole
	// time section.
	return append(spans, Span{From: []byte{tagTime}, To: []byte{tagTime + 1}})
}

// section returns the span of section tag between lo and hi (either may
// be nil: the section's start or end), enc appending a bound's encoding
// after the tag.
func section(tag byte, lo, hi *term, enc func(dst []byte, t *term) []byte) Span {
	s := Span{From: []byte{tag}, To: []byte{tag + 1}}
	if lo != nil {
		s.From = enc([]byte{tag}, lo)
	}
	if hi != nil {
		s.To = PrefixEnd(enc([]byte{tag}, hi))
	}
	return s
}

func prefixSpan(p []byte) Span { return Span{From: p, To: PrefixEnd(p)} }

// PrefixEnd returns the least byte string greater than every string with
// prefix p, nil if there is none (p is empty or all 0xFF).
func PrefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xFF {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// ValidateField reports whether f is a field name a term can name: 1 or
// more of the characters A-Z a-z 0-9 . _ : -.
func ValidateField(f string) error {
	if f == "" {
		return errAt(0, "empty field name")
	}
	for i := 0; i < len(f); i++ {
		if !isFieldChar(f[i]) {
			return errAt(i, "invalid character %q in field name", f[i:i+1])
		}
	}
	return nil
}

// CountTerm returns the query's term when an index on its field answers
// the whole query exactly, from its entries alone: the query is one =
// term on a field other than id, whose value the encoding keeps whole
// (at most MaxIndexedBytes bytes). An item then matches exactly when its
// entry lies within the term's spans. A longer value's spans also hold
// the items whose values only share its cut prefix, which only Match can
// tell apart.
func (q *Query) CountTerm() (IndexTerm, bool) {
	if q == nil || len(q.terms) != 1 {
		return IndexTerm{}, false
	}
	t := &q.terms[0]
	if t.isID || t.op != opEq || len(t.vb) > MaxIndexedBytes {
		return IndexTerm{}, false
	}
	return IndexTerm{Field: t.field, Eq: true, Spans: t.eqSpans()}, true
}
