package query

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"
)

// Match reports whether an item with this id and these resolved metadata
// fields matches every term of the query. fields maps a field name to the
// field's JSON value (compact JSON bytes). Match never panics, including on
// invalid JSON bytes, which are treated as a non-string text value. A nil
// *Query matches everything.
func (q *Query) Match(id string, fields map[string]json.RawMessage) bool {
	if q == nil {
		return true
	}
	var scratch [128]byte
	for i := range q.terms {
		if !q.terms[i].match(id, fields, scratch[:0]) {
			return false
		}
	}
	return true
}

func (t *term) match(id string, fields map[string]json.RawMessage, buf []byte) bool {
	if t.op == opBare {
		if id == t.value {
			return true
		}
		for _, raw := range fields {
			if v := classify(raw, buf); string(v.text) == t.value {
				return true
			}
		}
		return false
	}
	if t.isID {
		switch t.op {
		case opEq:
			return id == t.value
		case opNe:
			return id != t.value
		case opSub:
			return strings.Contains(id, t.value)
		default:
			return orderOK(t.op, strings.Compare(id, t.value))
		}
	}
	raw, ok := fields[t.field]
	if !ok {
		return t.op == opNe
	}
	v := classify(raw, buf)
	switch t.op {
	case opEq:
		return t.equal(&v)
	case opNe:
		return !t.equal(&v)
	case opSub:
		return bytes.Contains(v.text, t.vb)
	}
	// Ordering comparison.
	switch v.kind {
	case kNumber:
		if t.isNum {
			return orderOK(t.op, compareDecimal(&v.num, &t.num))
		}
		return false
	case kString:
		if t.isTime && maybeTime(v.text) {
			if ft, err := time.Parse(time.RFC3339Nano, string(v.text)); err == nil {
				return orderOK(t.op, ft.Compare(t.tm))
			}
		}
		return orderOK(t.op, bytes.Compare(v.text, t.vb))
	}
	return false
}

// equal implements = for a present field.
func (t *term) equal(v *value) bool {
	if v.kind == kNumber && t.isNum {
		return compareDecimal(&v.num, &t.num) == 0
	}
	return string(v.text) == t.value
}

// maybeTime is a cheap necessary condition for time.Parse(RFC3339Nano, b)
// to succeed, used to skip the parse (and its allocation) for other strings.
func maybeTime(b []byte) bool {
	return len(b) >= len("2006-01-02T15:04:05Z") && b[4] == '-' && b[7] == '-' && b[10] == 'T'
}

// orderOK reports whether comparison result c satisfies ordering operator o.
func orderOK(o op, c int) bool {
	switch o {
	case opGt:
		return c > 0
	case opGe:
		return c >= 0
	case opLt:
		return c < 0
	case opLe:
		return c <= 0
	}
	return false
}
