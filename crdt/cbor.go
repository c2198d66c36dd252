package crdt

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"slices"
	"sync"
	"unicode/utf8"
)

// Hand-written CBOR for the two hot record shapes, wireItem and wireDelta.
//
// The encoders write exactly the bytes that encMode writes for the wire
// structs (deterministic core encoding: shortest heads, map keys in the
// order of their encodings, nil slices and maps as null); the tests and
// FuzzRecordCodec compare them byte for byte. The decoders parse only that
// canonical form, and leave anything else — and anything invalid — to the
// generic decoder, which then accepts or rejects it with the same error as
// before. So the fast paths change what is accepted or rejected in no case;
// they only skip reflection and most allocations for well-formed records.

// CBOR major types (shifted into the initial byte) and simple values.
const (
	cborUint  byte = 0 << 5
	cborBytes byte = 2 << 5
	cborText  byte = 3 << 5
	cborArray byte = 4 << 5
	cborMap   byte = 5 << 5
	cborNull  byte = 0xf6
)

// appendHead appends a CBOR head in its shortest form.
func appendHead(b []byte, major byte, n uint64) []byte {
	if n < 24 {
		return append(b, major|byte(n))
	}
	return appendLongHead(b, major, n)
}

func appendLongHead(b []byte, major byte, n uint64) []byte {
	switch {
	case n <= 0xff:
		return append(b, major|24, byte(n))
	case n <= 0xffff:
		return append(b, major|25, byte(n>>8), byte(n))
	case n <= 0xffffffff:
		return append(b, major|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(b, major|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32),
		byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

func appendText(b []byte, s string) []byte {
	return append(appendHead(b, cborText, uint64(len(s))), s...)
}

// encTable is the replica table of one record being encoded: replica IDs
// in order of first use. Small tables are searched linearly.
type encTable struct {
	ids   []ReplicaID
	index map[ReplicaID]uint64 // once ids outgrows a linear search
}

const linearTableMax = 8

func (t *encTable) ref(r ReplicaID) uint64 {
	if t.index != nil {
		if i, ok := t.index[r]; ok {
			return i
		}
	} else {
		for i, id := range t.ids {
			if id == r {
				return uint64(i)
			}
		}
	}
	i := uint64(len(t.ids))
	t.ids = append(t.ids, r)
	switch {
	case t.index != nil:
		t.index[r] = i
	case len(t.ids) > linearTableMax:
		t.index = make(map[ReplicaID]uint64, 2*len(t.ids))
		for j, id := range t.ids {
			t.index[id] = uint64(j)
		}
	}
	return i
}

// has reports whether r is in the table already.
func (t *encTable) has(r ReplicaID) bool {
	if t.index != nil {
		_, ok := t.index[r]
		return ok
	}
	return slices.Contains(t.ids, r)
}

func (t *encTable) refAll(ds []Dot) {
	for _, d := range ds {
		t.ref(d.Replica)
	}
}

// encFields holds the fields of a record being encoded, in the order they
// are written (CBOR key order: shorter names first, then bytewise), and the
// record's size estimate.
type encFields struct {
	list  []encField
	order []int // indexes into list, in writing order (sorted so, not list: no pointers move)
	size  int
}

type encField struct {
	name    string
	entries []Entry
}

// cborKeyCompareBytes orders text-string map keys as their encodings sort:
// shorter first, then bytewise.
func cborKeyCompareBytes(a, b []byte) int {
	if len(a) != len(b) {
		return cmp.Compare(len(a), len(b))
	}
	return bytes.Compare(a, b)
}

// prepareFields puts the replicas of the entries of fs into t in the order
// the records have always used — field names visited bytewise, entries
// whose dot is own skipped (the reference encoders in the tests spell it
// out) — and lists the fields in ef in writing order.
func prepareFields(t *encTable, fs map[string][]Entry, own Dot, ownTS Timestamp, ef *encFields) {
	allKnown := true
	for f, es := range fs {
		ef.list = append(ef.list, encField{f, es})
		ef.size += len(f) + 6
		for _, e := range es {
			ef.size += len(e.Value) + 6
			if e.Dot != own {
				ef.size += 20
				if allKnown && !t.has(e.Dot.Replica) {
					allKnown = false
				}
			}
			if e.TS != ownTS {
				ef.size += 10
			}
		}
	}
	for i := range ef.list {
		ef.order = append(ef.order, i)
	}
	if !allKnown {
		// The table order depends on the bytewise order of the names.
		sortFieldOrder(ef.list, ef.order, false)
		for _, i := range ef.order {
			for _, e := range ef.list[i].entries {
				if e.Dot != own {
					t.ref(e.Dot.Replica)
				}
			}
		}
	}
	sortFieldOrder(ef.list, ef.order, true)
}

// sortFieldOrder sorts the indexes order by the names of list: bytewise,
// or in CBOR key order if cborOrder is set.
func sortFieldOrder(list []encField, order []int, cborOrder bool) {
	less := func(a, b string) bool {
		if cborOrder && len(a) != len(b) {
			return len(a) < len(b)
		}
		return a < b
	}
	if len(order) > 16 {
		slices.SortFunc(order, func(i, j int) int {
			switch {
			case less(list[i].name, list[j].name):
				return -1
			case less(list[j].name, list[i].name):
				return 1
			}
			return 0
		})
		return
	}
	for i := 1; i < len(order); i++ { // insertion sort: the common, short case
		for j := i; j > 0 && less(list[order[j]].name, list[order[j-1]].name); j-- {
			order[j-1], order[j] = order[j], order[j-1]
		}
	}
}

func appendTable(b []byte, t *encTable) []byte {
	if len(t.ids) == 0 {
		return append(b, cborNull)
	}
	b = appendHead(b, cborArray, uint64(len(t.ids)))
	for _, id := range t.ids {
		b = appendText(b, string(id))
	}
	return b
}

func appendPairs(b []byte, t *encTable, ds []Dot) []byte {
	if len(ds) == 0 {
		return append(b, cborNull)
	}
	b = appendHead(b, cborArray, uint64(2*len(ds)))
	for _, d := range ds {
		b = appendHead(b, cborUint, t.ref(d.Replica))
		b = appendHead(b, cborUint, d.Counter)
	}
	return b
}

// appendFields writes fs as encMode wrote the wire structs' field maps.
func appendFields(b []byte, t *encTable, fs map[string][]Entry, ef *encFields, own Dot, ownTS Timestamp) []byte {
	if len(fs) == 0 {
		return append(b, cborNull)
	}
	b = appendHead(b, cborMap, uint64(len(fs)))
	for _, i := range ef.order {
		f, es := ef.list[i].name, ef.list[i].entries
		b = appendText(b, f)
		b = appendHead(b, cborArray, uint64(len(es)))
		for _, e := range es {
			hasDot := e.Dot != own
			hasTS := e.TS != ownTS && e.TS != 0
			n := byte(1)
			if hasDot {
				n++
			}
			if hasTS {
				n++
			}
			b = append(b, cborMap|n, cborUint|1)
			if e.Value == nil {
				b = append(b, cborNull)
			} else {
				b = appendHead(b, cborBytes, uint64(len(e.Value)))
				b = append(b, e.Value...)
			}
			if hasDot {
				b = append(b, cborUint|2, cborArray|2)
				b = appendHead(b, cborUint, t.ref(e.Dot.Replica))
				b = appendHead(b, cborUint, e.Dot.Counter)
			}
			if hasTS {
				b = append(b, cborUint|3)
				b = appendHead(b, cborUint, uint64(e.TS))
			}
		}
	}
	return b
}

// encScratch is the reusable working memory of an encoder.
type encScratch struct {
	t  encTable
	ef encFields
}

var encPool = sync.Pool{New: func() any { return new(encScratch) }}

func getEncScratch() *encScratch { return encPool.Get().(*encScratch) }

func putEncScratch(sc *encScratch) {
	if cap(sc.t.ids) > 64 || cap(sc.ef.list) > 1024 {
		return // do not keep the memory of an outsized record
	}
	clear(sc.t.ids)
	clear(sc.ef.list)
	sc.t.ids, sc.t.index = sc.t.ids[:0], nil
	sc.ef.list, sc.ef.order, sc.ef.size = sc.ef.list[:0], sc.ef.order[:0], 0
	encPool.Put(sc)
}

// encodeItemRecord is EncodeItem's encoding, without the size check.
func encodeItemRecord(it *Item) []byte {
	sc := getEncScratch()
	defer putEncScratch(sc)
	t, ef := &sc.t, &sc.ef
	t.refAll(it.Presence)
	prepareFields(t, it.Fields, Dot{}, 0, ef)
	size := 16 + 12*len(it.Presence) + ef.size
	for _, id := range t.ids {
		size += len(id) + 2
	}
	b := make([]byte, 0, size)
	b = append(b, cborArray|4, cborUint|FormatVersion)
	b = appendTable(b, t)
	b = appendPairs(b, t, it.Presence)
	return appendFields(b, t, it.Fields, ef, Dot{}, 0)
}

// encodeDeltaRecord is EncodeDelta's encoding, without the size check.
func encodeDeltaRecord(d *Delta) []byte {
	sc := getEncScratch()
	defer putEncScratch(sc)
	t, ef := &sc.t, &sc.ef
	t.ref(d.Dot.Replica)
	t.refAll(d.Context)
	t.refAll(d.Item.Presence)
	prepareFields(t, d.Item.Fields, d.Dot, d.TS, ef)
	size := 48 + len(d.Collection) + len(d.ID) + 12*(len(d.Context)+len(d.Item.Presence)) + ef.size
	for _, id := range t.ids {
		size += len(id) + 2
	}
	b := make([]byte, 0, size)
	b = append(b, cborArray|10, cborUint|FormatVersion)
	b = appendTable(b, t)
	b = appendHead(b, cborUint, d.Dot.Counter)
	b = appendHead(b, cborUint, uint64(d.TS))
	b = appendHead(b, cborUint, uint64(d.Op))
	b = appendText(b, d.Collection)
	b = appendText(b, d.ID)
	b = appendPairs(b, t, d.Context)
	b = appendPairs(b, t, d.Item.Presence)
	return appendFields(b, t, d.Item.Fields, ef, d.Dot, d.TS)
}

// cborReader parses canonical CBOR. Once it meets anything else (a long
// head where a short one would do, an indefinite length, a tag, a wrong
// type, truncation) it clears ok and moves to the end of its input, so
// every later read fails at once and a parse that went wrong stops in time
// linear in the input.
type cborReader struct {
	b  []byte
	i  int
	ok bool
	// loose records an empty array or map where the encoders write null
	// (a form the decoders accept but the encoders never write).
	loose bool
}

func (r *cborReader) fail() {
	r.ok = false
	r.i = len(r.b)
}

// head reads a head of the given major type in its shortest form and
// returns its argument.
func (r *cborReader) head(major byte) uint64 {
	b, i := r.b, r.i
	if i < len(b) {
		switch c := b[i] - major; {
		case c < 24:
			r.i = i + 1
			return uint64(c)
		case c == 24:
			if i+1 < len(b) && b[i+1] >= 24 {
				r.i = i + 2
				return uint64(b[i+1])
			}
		case c == 25:
			if i+2 < len(b) {
				if v := uint64(binary.BigEndian.Uint16(b[i+1:])); v > 0xff {
					r.i = i + 3
					return v
				}
			}
		case c == 26:
			if i+4 < len(b) {
				if v := uint64(binary.BigEndian.Uint32(b[i+1:])); v > 0xffff {
					r.i = i + 5
					return v
				}
			}
		case c == 27:
			if i+8 < len(b) {
				if v := binary.BigEndian.Uint64(b[i+1:]); v > 0xffffffff {
					r.i = i + 9
					return v
				}
			}
		}
	}
	r.fail()
	return 0
}

func (r *cborReader) uint() uint64 { return r.head(cborUint) }

// count reads an array or map head and checks it against limit and
// against the input left (every item takes at least a byte).
func (r *cborReader) count(major byte, limit uint64) int {
	n := r.head(major)
	if n > limit || n > uint64(len(r.b)-r.i) {
		r.fail()
		return 0
	}
	return int(n)
}

// str reads a text or byte string and returns its bounds.
func (r *cborReader) str(major byte) (start, end int) {
	n := r.head(major)
	if n > uint64(len(r.b)-r.i) {
		r.fail()
		return 0, 0
	}
	start = r.i
	r.i += int(n)
	return start, r.i
}

// null consumes a CBOR null if one is next.
func (r *cborReader) null() bool {
	if r.i < len(r.b) && r.b[r.i] == cborNull {
		r.i++
		return true
	}
	return false
}

// The decoder's limits (see decMode).
const (
	maxArrayItems = 2 * MaxDeltaDots * 4
	maxMapPairs   = 1 << 20
)

type span struct{ start, end int }

// rawEntry is an entry of a parsed record: offsets into the record.
type rawEntry struct {
	val     span // value bytes; start < 0 if absent or null
	ri      uint64
	counter uint64
	ts      uint64
	hasDot  bool
	hasTS   bool // the timestamp is spelled out (key 3)
}

type rawField struct {
	name       span
	first, end int // entries[first:end]
}

// rawRecord is an item or delta record parsed in place.
type rawRecord struct {
	table    []span
	context  []uint64 // pairs (deltas)
	presence []uint64 // pairs
	fields   []rawField
	entries  []rawEntry
	// Delta header.
	counter, ts, op uint64
	coll, id        span
	// loose: see cborReader.loose.
	loose bool
}

var rawPool = sync.Pool{New: func() any { return new(rawRecord) }}

func getRaw() *rawRecord { return rawPool.Get().(*rawRecord) }

func putRaw(raw *rawRecord) {
	if raw.outsized() {
		return // do not keep the memory of an outsized record
	}
	raw.reset()
	rawPool.Put(raw)
}

func (raw *rawRecord) outsized() bool {
	const limit = 1 << 12
	return cap(raw.entries) > limit || cap(raw.context) > limit || cap(raw.presence) > limit ||
		cap(raw.table) > limit || cap(raw.fields) > limit
}

func (raw *rawRecord) reset() {
	raw.table, raw.context, raw.presence = raw.table[:0], raw.context[:0], raw.presence[:0]
	raw.fields, raw.entries = raw.fields[:0], raw.entries[:0]
	raw.loose = false
}

func (r *cborReader) table(raw *rawRecord) {
	if r.null() {
		return
	}
	n := r.count(cborArray, maxArrayItems)
	r.loose = r.loose || n == 0
	for range n {
		s, e := r.str(cborText)
		raw.table = append(raw.table, span{s, e})
	}
}

func (r *cborReader) pairs(dst []uint64) []uint64 {
	if r.null() {
		return dst
	}
	n := r.count(cborArray, maxArrayItems)
	r.loose = r.loose || n == 0
	for range n {
		dst = append(dst, r.uint())
	}
	return dst
}

// fields parses a field map whose keys are in canonical order.
func (r *cborReader) fields(raw *rawRecord) {
	if r.null() {
		return
	}
	n := r.count(cborMap, maxMapPairs)
	r.loose = r.loose || n == 0
	prev := span{-1, -1}
	for range n {
		var f rawField
		var ok bool
		if f.name.start, f.name.end, ok = r.shortStr(cborText); !ok {
			f.name.start, f.name.end = r.str(cborText)
		}
		if !r.ok {
			return
		}
		if prev.start >= 0 && cborKeyCompareBytes(r.b[prev.start:prev.end], r.b[f.name.start:f.name.end]) >= 0 {
			r.fail() // out of order or duplicated: the generic decoder decides
			return
		}
		prev = f.name
		m, ok := r.small(cborArray)
		if !ok {
			m = uint64(r.count(cborArray, maxArrayItems))
		}
		f.first = len(raw.entries)
		for range m {
			raw.entries = append(raw.entries, rawEntry{})
			if e := &raw.entries[len(raw.entries)-1]; !r.storedEntry(e) {
				r.entry(e)
			}
		}
		f.end = len(raw.entries)
		raw.fields = append(raw.fields, f)
	}
}

// small reads a one-byte head (an argument below 24) of the given major
// type, if one is next.
func (r *cborReader) small(major byte) (uint64, bool) {
	if i := r.i; i < len(r.b) {
		if c := r.b[i] - major; c < 24 {
			r.i = i + 1
			return uint64(c), true
		}
	}
	return 0, false
}

// shortStr reads a string shorter than 24 bytes of the given major type,
// if one is next.
func (r *cborReader) shortStr(major byte) (start, end int, ok bool) {
	if i := r.i; i < len(r.b) {
		if n := int(r.b[i] - major); n < 24 && n < len(r.b)-i {
			r.i = i + 1 + n
			return i + 1, i + 1 + n, true
		}
	}
	return 0, 0, false
}

// storedEntry parses an entry of the shape EncodeItem writes — {1: value,
// 2: [replica index, counter], 3: timestamp} with a value shorter than 256
// bytes and a replica index below 24 — straight through. It returns false,
// having read nothing, if the entry does not start that way.
func (r *cborReader) storedEntry(e *rawEntry) bool {
	b, j := r.b, r.i
	// The shortest such entry with a value, a3 01 41 xx 02 82 ii cc 03 tt,
	// is 10 bytes long; the reads up to the value's length need 4.
	if len(b)-j < 10 || b[j] != cborMap|3 || b[j+1] != cborUint|1 {
		return false
	}
	j += 2
	var n int
	switch c := b[j]; {
	case c >= cborBytes && c < cborBytes|24:
		n = int(c - cborBytes)
		j++
	case c == cborBytes|24 && b[j+1] >= 24:
		n = int(b[j+1])
		j += 2
	default:
		return false
	}
	// After the value: 02 82 <index> <counter> 03 <timestamp>.
	if len(b)-j < n+6 || b[j+n] != cborUint|2 || b[j+n+1] != cborArray|2 || b[j+n+2] >= 24 {
		return false
	}
	*e = rawEntry{val: span{j, j + n}, hasDot: true, hasTS: true, ri: uint64(b[j+n+2])}
	r.i = j + n + 3
	e.counter = r.uint()
	// Three keys in increasing order: the last one can only be 3.
	if r.i >= len(b) || b[r.i] != cborUint|3 {
		r.fail()
		return true
	}
	r.i++
	e.ts = r.uint()
	return true
}

// entry parses an entry map with keys in canonical order into e.
func (r *cborReader) entry(e *rawEntry) {
	*e = rawEntry{val: span{-1, -1}}
	c := r.count(cborMap, 3)
	last := uint64(0)
	for range c {
		k := r.uint()
		if k <= last || k > 3 {
			r.fail()
			return
		}
		last = k
		switch k {
		case 1:
			if !r.null() {
				e.val.start, e.val.end = r.str(cborBytes)
			}
		case 2:
			e.hasDot = true
			if r.count(cborArray, maxArrayItems) != 2 {
				r.fail() // a malformed dot: the generic decoder reports it
				return
			}
			e.ri = r.uint()
			e.counter = r.uint()
		case 3:
			e.hasTS = true
			e.ts = r.uint()
		}
	}
}

// parseItem parses a canonical item record into raw.
func parseItem(b []byte, raw *rawRecord) bool {
	r := cborReader{b: b, ok: true}
	if r.head(cborArray) != 4 || r.uint() != FormatVersion {
		return false
	}
	r.table(raw)
	raw.presence = r.pairs(raw.presence)
	r.fields(raw)
	return r.ok && r.i == len(b)
}

// parseDelta parses a canonical delta record into raw.
func parseDelta(b []byte, raw *rawRecord) bool {
	r := cborReader{b: b, ok: true}
	if r.head(cborArray) != 10 || r.uint() != FormatVersion {
		return false
	}
	r.table(raw)
	raw.counter = r.uint()
	raw.ts = r.uint()
	raw.op = r.uint()
	raw.coll.start, raw.coll.end = r.str(cborText)
	raw.id.start, raw.id.end = r.str(cborText)
	raw.context = r.pairs(raw.context)
	raw.presence = r.pairs(raw.presence)
	r.fields(raw)
	raw.loose = r.loose
	return r.ok && r.i == len(b) && raw.op <= 0xff
}

// validReplicaID is ReplicaID.Validate as a predicate on bytes.
func validReplicaID(b []byte) bool {
	if len(b) == 0 || len(b) > MaxReplicaIDLen {
		return false
	}
	for _, c := range b {
		if !idBytes[c] {
			return false
		}
	}
	return true
}

// validFieldName is ValidateFieldName as a predicate on bytes.
func validFieldName(f []byte) bool {
	if len(f) == 0 || len(f) > MaxFieldNameLen {
		return false
	}
	if printableASCII(f) {
		return true
	}
	if !utf8.Valid(f) {
		return false
	}
	for _, r := range string(f) {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// validUTF8 is utf8.Valid with the all-ASCII case first.
func validUTF8(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return utf8.Valid(b)
		}
	}
	return true
}

// rawDotLess compares two dots of a parsed record by Dot.Less; the replica
// indexes must be in the table.
func (raw *rawRecord) rawDotLess(b []byte, ri, ci, rj, cj uint64) bool {
	return dotLessIn(b, raw.table, ri, ci, rj, cj)
}

// dotLessIn is Dot.Less on dots given as (index into table, counter).
func dotLessIn(b []byte, table []span, ri, ci, rj, cj uint64) bool {
	a, c := table[ri], table[rj]
	if ri != rj {
		if x := bytes.Compare(b[a.start:a.end], b[c.start:c.end]); x != 0 {
			return x < 0
		}
	}
	return ci < cj
}

// checkItem reports whether a parsed item record passes every check of
// DecodeItem — the replica table, the dot lists and indexes, and
// Item.validate; the values' JSON only if values is set. The i-th field
// name need not be checked again if it equals known[i], a name that passed
// before.
func (raw *rawRecord) checkItem(b []byte, values bool, known []string) bool {
	for _, s := range raw.table {
		if !validReplicaID(b[s.start:s.end]) {
			return false
		}
	}
	nt := uint64(len(raw.table))
	ps := raw.presence
	if len(ps)%2 != 0 {
		return false
	}
	for i := 0; i < len(ps); i += 2 {
		if ps[i] >= nt || ps[i+1] == 0 {
			return false
		}
		if i > 0 && !raw.rawDotLess(b, ps[i-2], ps[i-1], ps[i], ps[i+1]) {
			return false
		}
	}
	if len(raw.fields) > MaxFields*16 {
		return false
	}
	for k := range raw.fields {
		f := &raw.fields[k]
		name := b[f.name.start:f.name.end]
		if f.end == f.first || !((k < len(known) && known[k] == string(name)) || validFieldName(name)) {
			return false
		}
		for i := f.first; i < f.end; i++ {
			e := &raw.entries[i]
			if !e.hasDot || e.ri >= nt || e.counter == 0 || e.ts == 0 || Timestamp(e.ts).Wall() > MaxWallMillis {
				return false
			}
			if i > f.first && !raw.rawDotLess(b, raw.entries[i-1].ri, raw.entries[i-1].counter, e.ri, e.counter) {
				return false
			}
			if e.val.start < 0 || e.val.end == e.val.start {
				return false
			}
			if values && !isCanonical(b[e.val.start:e.val.end]) {
				return false
			}
		}
	}
	return true
}

// recordStrings holds the strings and bytes that a decoded record shares:
// one copy of the record as a string (for IDs and names) and one as bytes
// (for values), so that decoding allocates two buffers rather than one per
// string and value.
type recordStrings struct {
	s   string
	b   []byte
	src []byte
}

func newRecordStrings(b []byte, values bool) recordStrings {
	rs := recordStrings{s: string(b), src: b}
	if values {
		rs.b = bytes.Clone(b)
	}
	return rs
}

func (rs *recordStrings) str(s span) string { return rs.s[s.start:s.end] }

func (rs *recordStrings) val(s span) []byte { return rs.b[s.start:s.end:s.end] }

// tableIDs returns the replica IDs of a parsed record; buf is scratch.
func (raw *rawRecord) tableIDs(rs *recordStrings, buf []ReplicaID) []ReplicaID {
	for _, s := range raw.table {
		buf = append(buf, ReplicaID(rs.str(s)))
	}
	return buf
}

func buildDots(table []ReplicaID, ps []uint64) []Dot {
	if len(ps) == 0 {
		return nil
	}
	out := make([]Dot, len(ps)/2)
	for i := range out {
		out[i] = Dot{table[ps[2*i]], ps[2*i+1]}
	}
	return out
}

// buildFields builds the field map of a parsed record whose indexes were
// checked, as unfields does.
func (raw *rawRecord) buildFields(rs *recordStrings, table []ReplicaID, own Dot, ownTS Timestamp) map[string][]Entry {
	if len(raw.fields) == 0 {
		return nil
	}
	out := make(map[string][]Entry, len(raw.fields))
	all := make([]Entry, len(raw.entries))
	for _, f := range raw.fields {
		list := all[f.first:f.end:f.end]
		for i := range list {
			w := &raw.entries[f.first+i]
			e := Entry{Dot: own, TS: ownTS}
			if w.val.start >= 0 {
				e.Value = rs.val(w.val)
			}
			if w.hasDot {
				e.Dot = Dot{table[w.ri], w.counter}
			}
			if w.ts != 0 {
				e.TS = Timestamp(w.ts)
			}
			list[i] = e
		}
		out[rs.str(f.name)] = list
	}
	return out
}

// fastDecodeItem decodes a canonical item record that passes every check,
// or returns nil: the caller then takes the generic path.
func fastDecodeItem(b []byte, values bool) *Item {
	raw := getRaw()
	defer putRaw(raw)
	if !parseItem(b, raw) || !raw.checkItem(b, values, nil) {
		return nil
	}
	rs := newRecordStrings(b, len(raw.entries) > 0)
	var buf [4]ReplicaID
	table := raw.tableIDs(&rs, buf[:0])
	return &Item{Presence: buildDots(table, raw.presence), Fields: raw.buildFields(&rs, table, Dot{}, 0)}
}

// fastDecodeDelta decodes a canonical delta record whose structure and
// table are valid, or returns nil: the caller then takes the generic path.
// The delta is not validated yet.
func fastDecodeDelta(b []byte) *Delta {
	raw := getRaw()
	defer putRaw(raw)
	d, _ := decodeDeltaRaw(b, raw)
	return d
}

// decodeDeltaRaw is fastDecodeDelta with the parsed record left in raw. It
// also returns the copy of b that the delta's values alias, or nil if it
// made none (a delta without entries).
func decodeDeltaRaw(b []byte, raw *rawRecord) (*Delta, []byte) {
	if !parseDelta(b, raw) || len(raw.table) == 0 {
		return nil, nil
	}
	for _, s := range raw.table {
		if !validReplicaID(b[s.start:s.end]) {
			return nil, nil
		}
	}
	nt := uint64(len(raw.table))
	for _, ps := range [][]uint64{raw.context, raw.presence} {
		if len(ps)%2 != 0 {
			return nil, nil
		}
		for i := 0; i < len(ps); i += 2 {
			if ps[i] >= nt {
				return nil, nil
			}
		}
	}
	for _, e := range raw.entries {
		if e.hasDot && e.ri >= nt {
			return nil, nil
		}
	}
	// The generic decoder rejects text that is not UTF-8 before Validate
	// sees it; leave such records to it, so the error stays the same.
	if !validUTF8(b[raw.coll.start:raw.coll.end]) || !validUTF8(b[raw.id.start:raw.id.end]) {
		return nil, nil
	}
	for _, f := range raw.fields {
		if !validUTF8(b[f.name.start:f.name.end]) {
			return nil, nil
		}
	}
	rs := newRecordStrings(b, len(raw.entries) > 0)
	var buf [4]ReplicaID
	table := raw.tableIDs(&rs, buf[:0])
	d := &Delta{
		Dot: Dot{table[0], raw.counter}, TS: Timestamp(raw.ts), Op: Op(raw.op),
		Collection: rs.str(raw.coll), ID: rs.str(raw.id),
		Context: buildDots(table, raw.context),
	}
	d.Item.Presence = buildDots(table, raw.presence)
	d.Item.Fields = raw.buildFields(&rs, table, d.Dot, d.TS)
	return d, rs.b
}

// canonicalDelta reports whether the delta record b, parsed into raw and
// decoded into a delta that passed Validate, is exactly what EncodeDelta
// writes for that delta. The parser has checked the shortest heads and the
// order of map keys; what is left is what the decoders accept in more than
// one spelling: an empty array or map where the encoder writes null, an
// entry's dot or timestamp spelled out although it equals the delta's own,
// and the replica table, which the encoder fills with distinct IDs in order
// of first use (the delta's own replica, the context's, the presence dots',
// then the entries' dots visiting field names bytewise).
func (raw *rawRecord) canonicalDelta(b []byte) bool {
	if raw.loose {
		return false
	}
	next := uint64(1) // the table's first index not used yet; 0 is the own replica
	use := func(ri uint64) bool {
		if ri == next {
			next++
		}
		return ri < next
	}
	for _, ps := range [][]uint64{raw.context, raw.presence} {
		for i := 0; i < len(ps); i += 2 {
			if !use(ps[i]) {
				return false
			}
		}
	}
	allKnown := true
	for i := range raw.entries {
		e := &raw.entries[i]
		if e.val.start < 0 || (e.hasTS && (e.ts == 0 || e.ts == raw.ts)) || (e.hasDot && e.ri == 0 && e.counter == raw.counter) {
			return false
		}
		allKnown = allKnown && (!e.hasDot || e.ri < next)
	}
	if !allKnown {
		order := make([]int, len(raw.fields))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(i, j int) int {
			fi, fj := raw.fields[i].name, raw.fields[j].name
			return bytes.Compare(b[fi.start:fi.end], b[fj.start:fj.end])
		})
		for _, k := range order {
			for _, e := range raw.entries[raw.fields[k].first:raw.fields[k].end] {
				if e.hasDot && !use(e.ri) {
					return false
				}
			}
		}
	}
	if next != uint64(len(raw.table)) {
		return false
	}
	return distinctSpans(b, raw.table)
}

// distinctSpans reports whether the strings at spans of b are distinct.
func distinctSpans(b []byte, spans []span) bool {
	if len(spans) <= linearTableMax {
		for i, s := range spans {
			for _, t := range spans[:i] {
				if bytes.Equal(b[s.start:s.end], b[t.start:t.end]) {
					return false
				}
			}
		}
		return true
	}
	seen := make(map[string]struct{}, len(spans))
	for _, s := range spans {
		k := string(b[s.start:s.end])
		if _, dup := seen[k]; dup {
			return false
		}
		seen[k] = struct{}{}
	}
	return true
}

// encodeNewItem returns encodeItemRecord(&d.Item) for a delta whose item
// is what one operation wrote: every entry under the delta's own dot and
// timestamp, and no presence dot but its own. It writes the record from
// enc, d's encoding, copying field names and values in the order enc
// holds them (CBOR key order, the item record's too), so it neither walks
// d's field map nor sorts it; a lookup per field checks that enc holds
// d's fields and values. It returns nil, for the caller to encode the
// item itself, if d's item has another shape or enc is not d's record.
func encodeNewItem(d *Delta, enc []byte) []byte {
	it := &d.Item
	if len(it.Fields) == 0 || len(it.Presence) > 1 || (len(it.Presence) == 1 && it.Presence[0] != d.Dot) {
		return nil
	}
	raw := getRaw()
	defer putRaw(raw)
	if !parseDelta(enc, raw) || len(raw.table) == 0 || raw.counter != d.Dot.Counter || raw.ts != uint64(d.TS) ||
		len(raw.fields) != len(it.Fields) {
		return nil
	}
	if own := raw.table[0]; string(enc[own.start:own.end]) != string(d.Dot.Replica) {
		return nil
	}
	if len(it.Presence) == 1 {
		if len(raw.presence) != 2 || raw.presence[0] != 0 || raw.presence[1] != d.Dot.Counter {
			return nil
		}
	} else if len(raw.presence) != 0 {
		return nil
	}
	// The field names of enc are distinct (the parser requires them in
	// increasing order) and as many as d's: each found in d, with one
	// entry of d's dot, timestamp and value, makes them d's fields.
	for _, f := range raw.fields {
		if f.end-f.first != 1 {
			return nil
		}
		e := &raw.entries[f.first]
		es := it.Fields[string(enc[f.name.start:f.name.end])]
		if e.hasDot || e.hasTS || e.val.start < 0 || len(es) != 1 || es[0].Dot != d.Dot || es[0].TS != d.TS ||
			string(es[0].Value) != string(enc[e.val.start:e.val.end]) {
			return nil
		}
	}
	// [4, version, [own replica], presence, {name: [{1: value, 2: [0,
	// counter], 3: ts}], ...}]
	var tail [24]byte
	t := append(tail[:0], cborUint|2, cborArray|2, cborUint) // replica index 0
	t = appendHead(t, cborUint, d.Dot.Counter)
	t = append(t, cborUint|3)
	t = appendHead(t, cborUint, uint64(d.TS))
	own := raw.table[0]
	size := 8 + own.end - own.start + 12 + len(enc) + len(raw.fields)*(len(t)+4)
	b := make([]byte, 0, size)
	b = append(b, cborArray|4, cborUint|FormatVersion, cborArray|1)
	b = appendText(b, string(d.Dot.Replica))
	if len(it.Presence) == 0 {
		b = append(b, cborNull)
	} else {
		b = append(b, cborArray|2, cborUint) // replica index 0
		b = appendHead(b, cborUint, d.Dot.Counter)
	}
	b = appendHead(b, cborMap, uint64(len(raw.fields)))
	for _, f := range raw.fields {
		v := raw.entries[f.first].val
		b = appendHead(b, cborText, uint64(f.name.end-f.name.start))
		b = append(b, enc[f.name.start:f.name.end]...)
		b = append(b, cborArray|1, cborMap|3, cborUint|1)
		b = appendHead(b, cborBytes, uint64(v.end-v.start))
		b = append(b, enc[v.start:v.end]...)
		b = append(b, t...)
	}
	return b
}
