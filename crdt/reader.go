package crdt

import (
	"bytes"
	"encoding/json"
)

// MetadataReader resolves item records of this process's own store (the
// records DecodeStoredItem is for) to their metadata without building an
// Item, reusing its memory from one record to the next, so that a scan over
// many records allocates almost nothing for the records it only looks at.
// The zero value is ready to use. A MetadataReader is not safe for
// concurrent use.
type MetadataReader struct {
	raw   rawRecord
	doc   map[string]json.RawMessage
	last  []string          // the field names of the last record, in record order
	names map[string]string // field names seen, so each is allocated once
}

// maxInternedNames bounds the field names a MetadataReader remembers.
const maxInternedNames = 4096

// Read decodes the item record b and reports whether the item is visible;
// if it is, doc maps each field to its winning value, as Item.Metadata
// does. doc belongs to r and is valid only until the next call to Read, and
// its values alias b: copy what must outlive either. Read checks b as
// DecodeStoredItem does and returns the error DecodeStoredItem would.
func (r *MetadataReader) Read(b []byte) (doc map[string]json.RawMessage, visible bool, err error) {
	raw := &r.raw
	if raw.outsized() {
		*raw = rawRecord{} // do not keep the memory of an outsized record
	}
	raw.reset()
	if len(b) > MaxItemBytes || !parseItem(b, raw) || !raw.checkItem(b, false, r.last) {
		// Not canonical, or not valid: the generic path decides.
		it, err := DecodeStoredItem(b)
		if err != nil || !it.Visible() {
			return nil, false, err
		}
		r.reset()
		for f := range it.Fields {
			w, _ := it.Field(f)
			r.doc[f] = w.Value
		}
		return r.doc, true, nil
	}
	if len(raw.presence) == 0 {
		return nil, false, nil
	}
	r.reset()
	for k, f := range raw.fields {
		w := &raw.entries[f.first]
		for i := f.first + 1; i < f.end; i++ {
			if e := &raw.entries[i]; raw.rawBeats(b, e, w) {
				w = e
			}
		}
		// Records of one collection mostly share their field names, in
		// the same order: compare with the last record's before hashing.
		name := b[f.name.start:f.name.end]
		var s string
		if k < len(r.last) && r.last[k] == string(name) {
			s = r.last[k]
		} else {
			s = r.intern(name)
			if k < len(r.last) {
				r.last[k] = s
			} else if k < maxInternedNames {
				r.last = append(r.last, s)
			}
		}
		r.doc[s] = b[w.val.start:w.val.end:w.val.end]
	}
	return r.doc, true, nil
}

func (r *MetadataReader) reset() {
	if r.doc == nil || len(r.doc) > 64 {
		// A map that an outsized record grew would make every clear slow.
		r.doc = make(map[string]json.RawMessage, 16)
		return
	}
	clear(r.doc)
}

func (r *MetadataReader) intern(name []byte) string {
	if s, ok := r.names[string(name)]; ok {
		return s
	}
	s := string(name)
	if r.names == nil {
		r.names = make(map[string]string)
	}
	if len(r.names) < maxInternedNames {
		r.names[s] = s
	}
	return s
}

// rawBeats is Entry.beats on the checked entries of a parsed record.
func (raw *rawRecord) rawBeats(b []byte, e, o *rawEntry) bool {
	if e.ts != o.ts {
		return e.ts > o.ts
	}
	x, y := raw.table[e.ri], raw.table[o.ri]
	if c := bytes.Compare(b[x.start:x.end], b[y.start:y.end]); c != 0 {
		return c > 0
	}
	return e.counter > o.counter
}
