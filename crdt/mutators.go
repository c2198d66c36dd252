package crdt

import (
	"encoding/json"
	"fmt"
	"maps"
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
	doc, err := canonical(doc)
	if err != nil {
		return nil, err
	}
	post := &Item{Presence: []Dot{dot}, Fields: fieldsOf(doc, dot, ts)}
	return newDelta(k, OpAdd, cur.Dots(), post, dot, ts), nil
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
	doc, err := canonical(doc)
	if err != nil {
		return nil, err
	}
	var removed []Dot
	for _, es := range cur.Fields {
		for _, e := range es {
			removed = append(removed, e.Dot)
		}
	}
	post := &Item{Presence: cur.Presence, Fields: fieldsOf(doc, dot, ts)}
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

// canonical returns a validated copy of doc with canonical values.
func canonical(doc Document) (Document, error) {
	c := maps.Clone(doc)
	if err := c.normalize(); err != nil {
		return nil, err
	}
	return c, nil
}

// fieldsOf makes one entry per field of a canonical doc, all tagged with
// dot.
func fieldsOf(doc Document, dot Dot, ts Timestamp) map[string][]Entry {
	if len(doc) == 0 {
		return nil
	}
	fs := make(map[string][]Entry, len(doc))
	for f, v := range doc {
		fs[f] = []Entry{{Dot: dot, TS: ts, Value: v}}
	}
	return fs
}

// newDelta builds the delta of an operation that removed the entries with
// dots in removed and left the item as post: its context is the removed dots
// plus its own, and it carries every entry of post under that context.
func newDelta(k Key, op Op, removed []Dot, post *Item, dot Dot, ts Timestamp) *Delta {
	ctx := sortDots(append(removed, dot))
	return &Delta{Dot: dot, TS: ts, Op: op, Collection: k.Collection, ID: k.ID, Context: ctx, Item: *post.restrict(dotList(ctx))}
}
