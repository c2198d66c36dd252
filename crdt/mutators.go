package crdt

import (
	"encoding/json"
	"fmt"
)

// Key names an item: its collection and id.
type Key struct {
	Collection string
	ID         string
}

// String formats k as "collection:id", as the seed's transcript does.
func (k Key) String() string { return k.Collection + ":" + k.ID }

// Validate checks the collection name and the id.
func (k Key) Validate() error {
	if err := ValidateCollection(k.Collection); err != nil {
		return err
	}
	return ValidateID(k.ID)
}

// The delta-mutators. Each takes the item's current state (nil when the
// store holds nothing for it), the operation's fresh dot and timestamp, and
// returns the delta of the operation. None of them modifies cur. Joining
// the delta into the state that cur came from gives the state after the
// operation: m(X) = X ⊔ mδ(X).

// AddDelta adds the item with metadata doc: the item becomes present (even
// if it was already) and its metadata becomes exactly doc, superseding every
// observed write.
func AddDelta(k Key, cur *Item, doc Document, dot Dot, ts Timestamp) (*Delta, error) {
	if err := checkOp(k, dot, ts); err != nil {
		return nil, err
	}
	fields, err := entriesOf(doc, dot, ts)
	if err != nil {
		return nil, err
	}
	// Every entry of the post-state carries the operation's own dot, so the
	// post-state is already restricted to the delta's context.
	return &Delta{
		Dot: dot, TS: ts, Op: OpAdd, Collection: k.Collection, ID: k.ID,
		Context: sortDots(append(cur.Dots(), dot)),
		Item:    Item{Presence: []Dot{dot}, Fields: fields},
	}, nil
}

// RemoveDelta removes the item: every observed dot of it, presence and
// metadata alike. It fails with ErrNotFound if the item is not present.
func RemoveDelta(k Key, cur *Item, dot Dot, ts Timestamp) (*Delta, error) {
	if err := checkOp(k, dot, ts); err != nil {
		return nil, err
	}
	if !cur.Visible() {
		return nil, fmt.Errorf("remove %s: %w", k, ErrNotFound)
	}
	return newDelta(k, OpRemove, cur.Dots(), &Item{}, dot, ts), nil
}

// ReplaceDelta replaces the item's metadata with doc (PUT semantics: fields
// absent from doc are removed). It fails with ErrNotFound if the item is not
// present: a metadata write never makes an item present.
func ReplaceDelta(k Key, cur *Item, doc Document, dot Dot, ts Timestamp) (*Delta, error) {
	if err := checkOp(k, dot, ts); err != nil {
		return nil, err
	}
	if !cur.Visible() {
		return nil, fmt.Errorf("replace metadata of %s: %w", k, ErrNotFound)
	}
	fields, err := entriesOf(doc, dot, ts)
	if err != nil {
		return nil, err
	}
	var removed []Dot
	for _, es := range cur.Fields {
		for _, e := range es {
			removed = append(removed, e.Dot)
		}
	}
	post := &Item{Presence: cur.Presence, Fields: fields}
	return newDelta(k, OpReplace, removed, post, dot, ts), nil
}

// PatchDelta applies the JSON merge patch (RFC 7396) p to the item's
// metadata: a null value removes the field, an object value is merged into
// the field's current value, any other value replaces it. Fields absent
// from p are untouched. It fails with ErrNotFound if the item is not present.
func PatchDelta(k Key, cur *Item, p Document, dot Dot, ts Timestamp) (*Delta, error) {
	if err := checkOp(k, dot, ts); err != nil {
		return nil, err
	}
	if !cur.Visible() {
		return nil, fmt.Errorf("patch metadata of %s: %w", k, ErrNotFound)
	}
	p, err := canonical(p)
	if err != nil {
		return nil, err
	}
	post := cur.Clone()
	if post.Fields == nil {
		post.Fields = map[string][]Entry{}
	}
	var removed []Dot
	size := 0
	for f, pv := range p {
		var curVal json.RawMessage
		if w, ok := cur.Field(f); ok {
			curVal = w.Value
		}
		nv, err := mergePatch(curVal, pv)
		if err != nil {
			return nil, fmt.Errorf("%w: field %q: %v", ErrInvalid, f, err)
		}
		for _, e := range cur.Fields[f] {
			removed = append(removed, e.Dot)
		}
		delete(post.Fields, f)
		if nv != nil {
			post.Fields[f] = []Entry{{Dot: dot, TS: ts, Value: nv}}
		}
	}
	for f, es := range post.Fields {
		if len(es) > 0 {
			size += len(f) + len(es[0].Value)
		}
	}
	if len(post.Fields) > MaxFields || size > MaxDocumentBytes {
		return nil, fmt.Errorf("%w: patched metadata has %d fields and %d bytes", ErrTooLarge, len(post.Fields), size)
	}
	return newDelta(k, OpPatch, removed, post, dot, ts), nil
}

func checkOp(k Key, dot Dot, ts Timestamp) error {
	if err := k.Validate(); err != nil {
		return err
	}
	if err := dot.Validate(); err != nil {
		return err
	}
	return ts.Validate()
}

// docField is a field of a document with its canonical value.
type docField struct {
	name  string
	value json.RawMessage
}

// canonicalFields is the one check of a metadata document: the number of
// fields, every field name, every value (valid JSON, put in canonical
// form) and the total size. It appends the fields with their canonical
// values (which may alias doc's) to fs and returns them with the values'
// total size.
func canonicalFields(doc Document, fs []docField) ([]docField, int, error) {
	if len(doc) > MaxFields {
		return nil, 0, fmt.Errorf("%w: metadata has %d fields, limit %d", ErrTooLarge, len(doc), MaxFields)
	}
	size, values := 0, 0
	for f, v := range doc {
		if err := ValidateFieldName(f); err != nil {
			return nil, 0, err
		}
		c, err := canonicalJSON(v)
		if err != nil {
			return nil, 0, fmt.Errorf("%w: field %q: %v", ErrInvalid, f, err)
		}
		fs = append(fs, docField{f, c})
		size += len(f) + len(c)
		values += len(c)
	}
	if size > MaxDocumentBytes {
		return nil, 0, fmt.Errorf("%w: metadata document is %d bytes, limit %d", ErrTooLarge, size, MaxDocumentBytes)
	}
	return fs, values, nil
}

// canonical returns a validated copy of doc with canonical values. The copy
// shares no bytes with doc: its values are copied into one buffer.
func canonical(doc Document) (Document, error) {
	var arr [16]docField
	fs, values, err := canonicalFields(doc, arr[:0])
	if err != nil || doc == nil {
		return nil, err
	}
	out := make(Document, len(fs))
	buf := make([]byte, 0, values)
	for _, f := range fs {
		start := len(buf)
		buf = append(buf, f.value...)
		out[f.name] = buf[start:len(buf):len(buf)]
	}
	return out, nil
}

// entriesOf validates doc and makes one entry per field, with the field's
// canonical value, all tagged with dot: the fields of a document written
// by one operation. They share no bytes with doc. An empty doc gives nil.
func entriesOf(doc Document, dot Dot, ts Timestamp) (map[string][]Entry, error) {
	var arr [16]docField
	fs, values, err := canonicalFields(doc, arr[:0])
	if err != nil || len(fs) == 0 {
		return nil, err
	}
	out := make(map[string][]Entry, len(fs))
	es := make([]Entry, len(fs))
	buf := make([]byte, 0, values)
	for i, f := range fs {
		start := len(buf)
		buf = append(buf, f.value...)
		es[i] = Entry{Dot: dot, TS: ts, Value: buf[start:len(buf):len(buf)]}
		out[f.name] = es[i : i+1 : i+1]
	}
	return out, nil
}

// newDelta builds the delta of an operation that removed the entries with
// dots in removed and left the item as post: its context is the removed dots
// plus its own, and it carries every entry of post under that context.
func newDelta(k Key, op Op, removed []Dot, post *Item, dot Dot, ts Timestamp) *Delta {
	ctx := sortDots(append(removed, dot))
	return &Delta{Dot: dot, TS: ts, Op: op, Collection: k.Collection, ID: k.ID, Context: ctx, Item: *post.restrict(dotList(ctx))}
}
