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
	if len(b) <= MaxItemBytes {
		if visible, ok := r.readStored(b); ok {
			return r.doc, visible, nil
		}
	}
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

// readStored is Read's fast path, for a visible item's record in the very
// form EncodeItem writes (a table of at most 8 replicas, values shorter
// than 256 bytes, fewer than 24 entries per field): it parses, checks —
// everything checkItem checks — and resolves the record in one pass,
// filling r.doc. For any other record, or one that fails a check, it
// returns ok false (r.doc then holds garbage), and Read takes the general
// path, which decides.
func (r *MetadataReader) readStored(b []byte) (visible, ok bool) {
	rd := cborReader{b: b, ok: true}
	if rd.head(cborArray) != 4 || rd.uint() != FormatVersion || rd.null() {
		return false, false // a record without replicas has no presence
	}
	var tableArr [8]span
	nt := rd.count(cborArray, uint64(len(tableArr)))
	table := tableArr[:nt]
	for j := range table {
		s, e := rd.str(cborText)
		if !rd.ok || !validReplicaID(b[s:e]) {
			return false, false
		}
		table[j] = span{s, e}
	}
	np := rd.count(cborArray, maxArrayItems)
	if nt == 0 || np == 0 || np%2 != 0 {
		return false, false
	}
	var pri, pctr uint64
	for j := 0; j < np; j += 2 {
		ri, ctr := rd.uint(), rd.uint()
		if !rd.ok || ri >= uint64(nt) || ctr == 0 || (j > 0 && !dotLessIn(b, table, pri, pctr, ri, ctr)) {
			return false, false
		}
		pri, pctr = ri, ctr
	}
	r.reset()
	if rd.null() {
		return true, rd.ok && rd.i == len(b)
	}
	nf := rd.count(cborMap, MaxFields*16)
	prev := span{-1, -1}
	for k := 0; k < nf; k++ {
		var name span
		var short bool
		if name.start, name.end, short = rd.shortStr(cborText); !short {
			name.start, name.end = rd.str(cborText)
		}
		if !rd.ok || (prev.start >= 0 && cborKeyCompareBytes(b[prev.start:prev.end], b[name.start:name.end]) >= 0) {
			return false, false
		}
		prev = name
		nb := b[name.start:name.end]
		var s string
		if k < len(r.last) && r.last[k] == string(nb) {
			s = r.last[k]
		} else {
			if !validFieldName(nb) {
				return false, false
			}
			s = r.intern(nb)
			if k < len(r.last) {
				r.last[k] = s
			} else if k < maxInternedNames {
				r.last = append(r.last, s)
			}
		}
		m, small := rd.small(cborArray)
		if !small || m == 0 {
			return false, false
		}
		var w, p, e rawEntry // the winner, the previous entry, this one
		for j := uint64(0); j < m; j++ {
			if !rd.storedEntry(&e) || !rd.ok || e.ri >= uint64(nt) || e.counter == 0 || e.ts == 0 ||
				Timestamp(e.ts).Wall() > MaxWallMillis || e.val.end == e.val.start ||
				(j > 0 && !dotLessIn(b, table, p.ri, p.counter, e.ri, e.counter)) {
				return false, false
			}
			if j == 0 || beatsIn(b, table, &e, &w) {
				w = e
			}
			p = e
		}
		r.doc[s] = b[w.val.start:w.val.end:w.val.end]
	}
	return true, rd.ok && rd.i == len(b)
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
	return beatsIn(b, raw.table, e, o)
}

// beatsIn is Entry.beats on entries whose replica indexes are in table.
func beatsIn(b []byte, table []span, e, o *rawEntry) bool {
	if e.ts != o.ts {
		return e.ts > o.ts
	}
	x, y := table[e.ri], table[o.ri]
	if c := bytes.Compare(b[x.start:x.end], b[y.start:y.end]); c != 0 {
		return c > 0
	}
	return e.counter > o.counter
}
