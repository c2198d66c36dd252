package crdt

import (
	"encoding/json"
	"maps"
	"slices"
	"sort"
)

// Entry is one write of one metadata field: the value, the dot of the
// operation that wrote it and that operation's timestamp. Value is compact
// JSON.
type Entry struct {
	Dot   Dot
	TS    Timestamp
	Value json.RawMessage
}

// beats reports whether e wins over o in last-writer-wins order: the greater
// (TS, replica) wins; the counter settles the impossible case of two entries
// of one replica with one timestamp, so the order is total.
func (e Entry) beats(o Entry) bool {
	if e.TS != o.TS {
		return e.TS > o.TS
	}
	if e.Dot.Replica != o.Dot.Replica {
		return e.Dot.Replica > o.Dot.Replica
	}
	return e.Dot.Counter > o.Dot.Counter
}

// Item is the replicated state of one catalog item: the dots of the adds
// that make it present (an add-wins set membership), and for each metadata
// field the entries of its dotted LWW register. An item is visible while it
// has a presence dot. Slices are kept sorted by dot; an Item is a value that
// the functions of this package never modify in place.
type Item struct {
	Presence []Dot
	Fields   map[string][]Entry
}

// Visible reports whether the item is present in its collection. The
// read methods of Item accept a nil *Item as the empty item.
func (it *Item) Visible() bool { return it != nil && len(it.Presence) > 0 }

// Empty reports whether the item holds no entry at all, so it need not be
// stored.
func (it *Item) Empty() bool { return it == nil || (len(it.Presence) == 0 && len(it.Fields) == 0) }

// Field returns the winning entry of field f: the greatest (TS, replica).
func (it *Item) Field(f string) (Entry, bool) {
	if it == nil {
		return Entry{}, false
	}
	es := it.Fields[f]
	if len(es) == 0 {
		return Entry{}, false
	}
	w := es[0]
	for _, e := range es[1:] {
		if e.beats(w) {
			w = e
		}
	}
	return w, true
}

// Metadata returns the resolved document: each field's winning value. The
// caller owns the map; the values alias the item's.
func (it *Item) Metadata() map[string]json.RawMessage {
	if it == nil {
		return map[string]json.RawMessage{}
	}
	m := make(map[string]json.RawMessage, len(it.Fields))
	for f := range it.Fields {
		w, _ := it.Field(f)
		m[f] = w.Value
	}
	return m
}

// Conflicts returns, for each field with concurrent writes, the losing
// entries, greatest first. Fields without conflict are absent.
func (it *Item) Conflicts() map[string][]Entry {
	var out map[string][]Entry
	if it == nil {
		return nil
	}
	for f, es := range it.Fields {
		if len(es) < 2 {
			continue
		}
		s := slices.Clone(es)
		sort.Slice(s, func(i, j int) bool { return s[i].beats(s[j]) })
		if out == nil {
			out = map[string][]Entry{}
		}
		out[f] = s[1:]
	}
	return out
}

// Dots returns every dot the item holds (presence and fields), sorted and
// without duplicates.
func (it *Item) Dots() []Dot {
	if it == nil {
		return nil
	}
	ds := slices.Clone(it.Presence)
	for _, es := range it.Fields {
		for _, e := range es {
			ds = append(ds, e.Dot)
		}
	}
	return sortDots(ds)
}

// Clone returns a copy of it that shares only the immutable value bytes.
func (it *Item) Clone() *Item {
	if it == nil {
		return &Item{}
	}
	n := &Item{Presence: slices.Clone(it.Presence)}
	if len(it.Fields) > 0 {
		n.Fields = make(map[string][]Entry, len(it.Fields))
		for f, es := range it.Fields {
			n.Fields[f] = slices.Clone(es)
		}
	}
	return n
}

// Equal reports whether two items hold the same entries.
func (it *Item) Equal(o *Item) bool {
	if it.Empty() || o.Empty() {
		return it.Empty() && o.Empty()
	}
	return slices.Equal(it.Presence, o.Presence) && maps.EqualFunc(it.Fields, o.Fields, func(a, b []Entry) bool {
		return slices.EqualFunc(a, b, func(x, y Entry) bool {
			return x.Dot == y.Dot && x.TS == y.TS && string(x.Value) == string(y.Value)
		})
	})
}

// Within returns it if every dot it holds is in ds, and otherwise a copy
// holding only the entries whose dots are (possibly empty).
func (it *Item) Within(ds DotSet) *Item {
	if it == nil {
		return nil
	}
	for _, d := range it.Dots() {
		if !ds.Contains(d) {
			return it.restrict(ds)
		}
	}
	return it
}

// restrict returns the entries of it whose dots are in ds, in new slices.
func (it *Item) restrict(ds DotSet) *Item {
	n := &Item{}
	for _, d := range it.Presence {
		if ds.Contains(d) {
			n.Presence = append(n.Presence, d)
		}
	}
	// One backing array for the kept entries, cut into a slice per field
	// whose capacity ends where the next field's entries begin.
	total := 0
	for _, es := range it.Fields {
		total += len(es)
	}
	var buf []Entry
	for f, es := range it.Fields {
		start := len(buf)
		for _, e := range es {
			if ds.Contains(e.Dot) {
				if buf == nil {
					buf = make([]Entry, 0, total)
				}
				buf = append(buf, e)
			}
		}
		if len(buf) > start {
			if n.Fields == nil {
				n.Fields = make(map[string][]Entry, len(it.Fields))
			}
			n.Fields[f] = buf[start:len(buf):len(buf)]
		}
	}
	return n
}

// JoinItem returns the join of item a, whose causal context is actx, with
// item b, whose causal context is bctx: an entry survives if both hold it,
// or if one holds it and the other's context lacks its dot (so the other has
// not yet seen it, rather than removed it). Either item may be nil. Neither
// input is modified; when one is empty and the other's context lacks every
// dot of the other, the result is that other item itself (items are
// values, never modified in place), which is the common case of a delta
// joined into an item the store does not hold.
func JoinItem(a *Item, actx DotSet, b *Item, bctx DotSet) *Item {
	if a == nil {
		a = &emptyItem
	}
	if b == nil {
		b = &emptyItem
	}
	switch {
	case a.Empty() && b != &emptyItem && noneIn(b, actx):
		return b
	case b.Empty() && a != &emptyItem && noneIn(a, bctx):
		return a
	}
	out := &Item{Presence: joinDots(a.Presence, actx, b.Presence, bctx)}
	if len(a.Fields)+len(b.Fields) == 0 {
		return out
	}
	// The joined entries share one backing array (sized for the common
	// case of one entry per field; append grows it), cut into a slice per
	// field whose capacity ends where the next field's entries begin.
	buf := make([]Entry, 0, len(a.Fields)+len(b.Fields))
	for f, es := range a.Fields {
		start := len(buf)
		buf = joinEntries(buf, es, actx, b.Fields[f], bctx)
		if len(buf) > start {
			if out.Fields == nil {
				out.Fields = make(map[string][]Entry, max(len(a.Fields), len(b.Fields)))
			}
			out.Fields[f] = buf[start:len(buf):len(buf)]
		}
	}
	for f, es := range b.Fields {
		if _, done := a.Fields[f]; done {
			continue
		}
		start := len(buf)
		buf = joinEntries(buf, nil, actx, es, bctx)
		if len(buf) > start {
			if out.Fields == nil {
				out.Fields = make(map[string][]Entry, max(len(a.Fields), len(b.Fields)))
			}
			out.Fields[f] = buf[start:len(buf):len(buf)]
		}
	}
	return out
}

// emptyItem stands for a nil item in JoinItem; it is never modified.
var emptyItem Item

// noneIn reports whether ds holds no dot of it. The dots of an item
// written by one operation are mostly one dot, looked up once.
func noneIn(it *Item, ds DotSet) bool {
	var last Dot
	looked := false
	in := func(d Dot) bool {
		if looked && d == last {
			return false
		}
		last, looked = d, true
		return ds.Contains(d)
	}
	for _, d := range it.Presence {
		if in(d) {
			return false
		}
	}
	for _, es := range it.Fields {
		for _, e := range es {
			if in(e.Dot) {
				return false
			}
		}
	}
	return true
}

// joinDots merges two sorted dot lists by the join rule.
func joinDots(a []Dot, actx DotSet, b []Dot, bctx DotSet) []Dot {
	var out []Dot
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && a[i].Less(b[j])):
			if !bctx.Contains(a[i]) {
				out = append(out, a[i])
			}
			i++
		case i == len(a) || b[j].Less(a[i]):
			if !actx.Contains(b[j]) {
				out = append(out, b[j])
			}
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	return out
}

// joinEntries merges two entry lists sorted by dot by the join rule, and
// appends the result to out. Two equal entries with one dot are one write,
// so either copy serves. Two different ones are the two histories of a
// replica that signed both (see Fork): each side's context covers the
// other's entry without holding it, so neither survives, which keeps the
// join commutative and associative (an entry survives exactly where every
// state whose context covers its dot holds that same entry).
func joinEntries(out []Entry, a []Entry, actx DotSet, b []Entry, bctx DotSet) []Entry {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && a[i].Dot.Less(b[j].Dot)):
			if !bctx.Contains(a[i].Dot) {
				out = append(out, a[i])
			}
			i++
		case i == len(a) || b[j].Dot.Less(a[i].Dot):
			if !actx.Contains(b[j].Dot) {
				out = append(out, b[j])
			}
			j++
		default:
			if a[i].TS == b[j].TS && string(a[i].Value) == string(b[j].Value) {
				out = append(out, a[i])
			}
			i++
			j++
		}
	}
	return out
}
