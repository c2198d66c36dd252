package crdt

import (
	"maps"
	"slices"
)

// State is a whole catalog held in memory: every item of every collection,
// the causal context of everything observed (Seen), and the dots of the
// deltas whose effects the state includes (Applied).
//
// Seen may run ahead of Applied: a remove's delta covers the dots it removed,
// so a replica learns of those dots without having joined their deltas. Seen
// is what the join consults; Applied is what anti-entropy compares, since
// every state equals the join of the deltas in its Applied set.
//
// The node package keeps the same three parts in a store; State is its pure
// model, used by tests, benchmarks and the example. Not safe for concurrent
// use.
type State struct {
	Seen    *Context
	Applied *Context
	Items   map[Key]*Item // only non-empty items
}

// NewState returns an empty state.
func NewState() *State {
	return &State{Seen: NewContext(), Applied: NewContext(), Items: map[Key]*Item{}}
}

// Apply joins a delta into s and reports whether s changed. A delta whose
// dot is already applied changes nothing. The caller validates d first. A
// stub joins as the state it is (see stub.go): its own dot is neither seen
// nor its entries removed, so it gives the whole delta's result only
// together with a delta that names its dot.
func (s *State) Apply(d *Delta) bool {
	if s.Applied.Contains(d.Dot) {
		return false
	}
	k := d.Key()
	it := JoinItem(s.Items[k], s.Seen, &d.Item, d.JoinCovers())
	if it.Empty() {
		delete(s.Items, k)
	} else {
		s.Items[k] = it
	}
	for _, c := range d.Context {
		if c != d.Dot || !d.IsStub() {
			s.Seen.Add(c)
		}
	}
	s.Applied.Add(d.Dot)
	return true
}

// Join joins the whole state o into s.
func (s *State) Join(o *State) {
	keys := slices.Collect(maps.Keys(s.Items))
	for k := range o.Items {
		if _, ok := s.Items[k]; !ok {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		it := JoinItem(s.Items[k], s.Seen, o.Items[k], o.Seen)
		if it.Empty() {
			delete(s.Items, k)
		} else {
			s.Items[k] = it
		}
	}
	s.Seen.Merge(o.Seen)
	s.Applied.Merge(o.Applied)
}

// Clone returns a deep copy of s.
func (s *State) Clone() *State {
	n := &State{Seen: s.Seen.Clone(), Applied: s.Applied.Clone(), Items: make(map[Key]*Item, len(s.Items))}
	for k, it := range s.Items {
		n.Items[k] = it.Clone()
	}
	return n
}

// Equal reports whether s and o hold the same items and contexts.
func (s *State) Equal(o *State) bool {
	return s.Seen.Equal(o.Seen) && s.Applied.Equal(o.Applied) &&
		maps.EqualFunc(s.Items, o.Items, func(a, b *Item) bool { return a.Equal(b) })
}

// Visible returns the keys of the present items of a collection, sorted by
// id.
func (s *State) Visible(collection string) []Key {
	var ks []Key
	for k, it := range s.Items {
		if k.Collection == collection && it.Visible() {
			ks = append(ks, k)
		}
	}
	slices.SortFunc(ks, func(a, b Key) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return ks
}
