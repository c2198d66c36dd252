package crdt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
)

// Document is a metadata document: field name to compact JSON value.
type Document map[string]json.RawMessage

// ParseDocument decodes a JSON object into a Document, checking the limits
// and every field name, and compacting every value. It fails with
// ErrInvalid if b is not a JSON object.
func ParseDocument(b []byte) (Document, error) {
	if len(b) > MaxDocumentBytes {
		return nil, fmt.Errorf("%w: metadata document is %d bytes, limit %d", ErrTooLarge, len(b), MaxDocumentBytes)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return nil, fmt.Errorf("%w: metadata must be a JSON object", ErrInvalid)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%w: metadata: %v", ErrInvalid, err)
	}
	doc := make(Document, len(raw))
	for f, v := range raw {
		doc[f] = v
	}
	if err := doc.normalize(); err != nil {
		return nil, err
	}
	return doc, nil
}

// Validate checks the limits, every field name and every value of d.
func (d Document) Validate() error {
	return maps.Clone(d).normalize()
}

// normalize validates d and compacts its values in place.
func (d Document) normalize() error {
	if len(d) > MaxFields {
		return fmt.Errorf("%w: metadata has %d fields, limit %d", ErrTooLarge, len(d), MaxFields)
	}
	size := 0
	for f, v := range d {
		if err := ValidateFieldName(f); err != nil {
			return err
		}
		c, err := compactJSON(v)
		if err != nil {
			return fmt.Errorf("%w: field %q: %v", ErrInvalid, f, err)
		}
		d[f] = c
		size += len(f) + len(c)
	}
	if size > MaxDocumentBytes {
		return fmt.Errorf("%w: metadata document is %d bytes, limit %d", ErrTooLarge, size, MaxDocumentBytes)
	}
	return nil
}

// compactJSON returns v without insignificant white space, or an error if v
// is not one valid JSON value.
func compactJSON(v []byte) (json.RawMessage, error) {
	if len(v) == 0 {
		return nil, fmt.Errorf("empty value")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, v); err != nil {
		return nil, err
	}
	if buf.Len() == len(v) {
		return json.RawMessage(v), nil
	}
	return json.RawMessage(buf.Bytes()), nil
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
	return json.Marshal(obj)
}
