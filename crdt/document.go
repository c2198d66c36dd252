package crdt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// Document is a metadata document: field name to compact JSON value.
type Document map[string]json.RawMessage

// ParseDocument decodes a JSON object into a Document, checking the limits
// and every field name, and putting every value in canonical form (compact,
// object keys sorted, no needless escapes). It fails with
// ErrInvalid if b is not a JSON object.
func ParseDocument(b []byte) (Document, error) {
	if len(b) > MaxDocumentBytes {
		return nil, fmt.Errorf("%w: metadata document is %d bytes, limit %d", ErrTooLarge, len(b), MaxDocumentBytes)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return nil, fmt.Errorf("%w: metadata must be a JSON object", ErrInvalid)
	}
	var raw Document
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%w: metadata: %v", ErrInvalid, err)
	}
	return canonical(raw)
}

// Validate checks the limits, every field name and every value of d. The
// mutators store the canonical form of each value.
func (d Document) Validate() error {
	var arr [16]docField
	_, _, err := canonicalFields(d, arr[:0])
	return err
}

// Canonical returns a validated copy of d with every value in canonical
// form, as ParseDocument returns it; the copy shares no bytes with d. The
// mutators accept any valid document and canonicalize it themselves, but
// check an already canonical one in a single pass over its values, so a
// caller that holds a lock around a mutator can do this work before taking
// it.
func (d Document) Canonical() (Document, error) { return canonical(d) }

// canonicalJSON returns the canonical form of one JSON value: compact,
// object keys sorted, numbers as written, and no escape that is not needed
// (only U+2028 and U+2029 stay escaped, as Go's encoder always writes
// them). Every replica stores values in this form, so a value survives any
// transport that re-encodes JSON byte for byte.
//
// A value that is already canonical is returned as it is (not copied), after
// one linear pass over it.
func canonicalJSON(v []byte) (json.RawMessage, error) {
	if scanCanonical(v) {
		return v, nil
	}
	return decodeCanonical(v)
}

// decodeCanonical is canonicalJSON through encoding/json: decode, then
// encode.
func decodeCanonical(v []byte) (json.RawMessage, error) {
	if len(bytes.TrimSpace(v)) == 0 {
		return nil, fmt.Errorf("empty value")
	}
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	var x any
	if err := dec.Decode(&x); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("data after the value")
	}
	return marshalCanonical(x)
}

// marshalCanonical encodes x without HTML escaping.
func marshalCanonical(x any) (json.RawMessage, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(x); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// isCanonical reports whether v is one JSON value in canonical form. The
// linear check settles the common case; what it is unsure of is decoded.
func isCanonical(v []byte) bool {
	if scanCanonical(v) {
		return true
	}
	c, err := decodeCanonical(v)
	return err == nil && bytes.Equal(c, v)
}

// isNull reports whether a compact JSON value is null.
func isNull(v json.RawMessage) bool { return string(v) == "null" }

// mergePatch applies the RFC 7396 merge patch p to target (either may be
// absent, as nil) and returns the result, or nil when the result removes
// the value.
func mergePatch(target, p json.RawMessage) (json.RawMessage, error) {
	if len(p) == 0 || p[0] != '{' {
		if isNull(p) {
			return nil, nil
		}
		return p, nil
	}
	var patch map[string]json.RawMessage
	if err := json.Unmarshal(p, &patch); err != nil {
		return nil, err
	}
	obj := map[string]json.RawMessage{}
	if len(target) > 0 && target[0] == '{' {
		if err := json.Unmarshal(target, &obj); err != nil {
			return nil, err
		}
	}
	for k, v := range patch {
		nv, err := mergePatch(obj[k], v)
		if err != nil {
			return nil, err
		}
		if nv == nil {
			delete(obj, k)
		} else {
			obj[k] = nv
		}
	}
	return marshalCanonical(obj)
}
