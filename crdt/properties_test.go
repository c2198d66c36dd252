package crdt

import (
	"maps"
	"testing"

	"pgregory.net/rapid"
)

func TestState_JoinLaws(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rs, _ := history(t, 3)
		a, b, c := rs[0].st, rs[1].st, rs[2].st
		join := func(x, y *State) *State { z := x.Clone(); z.Join(y); return z }
		if !join(a, b).Equal(join(b, a)) {
			t.Fatal("join is not commutative")
		}
		if !join(join(a, b), c).Equal(join(a, join(b, c))) {
			t.Fatal("join is not associative")
		}
		if !join(a, a).Equal(a) {
			t.Fatal("join is not idempotent")
		}
	})
}

// TestDelta_MutatorIsJoinOfDelta checks m(X) = X ⊔ mδ(X): the mutator's
// delta, joined into the state it was computed from, gives exactly the
// state that the operation describes, and joining it again changes nothing.
func TestDelta_MutatorIsJoinOfDelta(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rs, _ := history(t, 2)
		r := rs[0]
		before := r.st.Clone()
		d, doc := genOpDoc(t, r, 1_800_000_000_000)
		after := r.st
		k := d.Key()
		// The state the operation describes, built without the join.
		want := before.Clone()
		it := want.Items[k].Clone()
		switch d.Op {
		case OpAdd:
			it = &Item{Presence: []Dot{d.Dot}, Fields: fieldsOf(doc, d.Dot, d.TS)}
		case OpRemove:
			it = &Item{}
		case OpReplace:
			it.Fields = fieldsOf(doc, d.Dot, d.TS)
		case OpPatch:
			if it.Fields == nil {
				it.Fields = map[string][]Entry{}
			}
			for f, pv := range doc {
				var cur []byte
				if w, ok := before.Items[k].Field(f); ok {
					cur = w.Value
				}
				nv, err := mergePatch(cur, pv)
				if err != nil {
					t.Fatal(err)
				}
				delete(it.Fields, f)
				if nv != nil {
					it.Fields[f] = []Entry{{d.Dot, d.TS, nv}}
				}
			}
		}
		if it.Empty() {
			delete(want.Items, k)
		} else {
			want.Items[k] = normalizeItem(it)
		}
		for _, c := range d.Context {
			want.Seen.Add(c)
		}
		want.Applied.Add(d.Dot)
		if !after.Equal(want) {
			t.Fatalf("X ⊔ mδ(X) = %+v\nwant m(X) = %+v", after.Items[k], want.Items[k])
		}
		again := after.Clone()
		again.Applied = NewContext() // force the join rather than the duplicate check
		again.Apply(d)
		if !maps.EqualFunc(again.Items, after.Items, func(a, b *Item) bool { return a.Equal(b) }) {
			t.Fatal("joining a delta twice changed the state")
		}
	})
}

// normalizeItem drops empty field maps so Equal compares like with like.
func normalizeItem(it *Item) *Item {
	if len(it.Fields) == 0 {
		it.Fields = nil
	}
	return it
}

// TestState_Convergence: 3–5 replicas make random operations; their deltas
// reach the others in random order, some twice, some never; then every pair
// exchanges full state. All replicas end with identical items and contexts.
func TestState_Convergence(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(3, 5).Draw(t, "replicas")
		rs, all := history(t, n)
		for _, r := range rs {
			order := rapid.Permutation(all).Draw(t, "order")
			for _, d := range order {
				switch rapid.IntRange(0, 9).Draw(t, "fate") {
				case 0: // dropped
				case 1: // duplicated
					r.apply(d, 0)
					r.apply(d, 0)
				default:
					r.apply(d, 0)
				}
			}
		}
		for _, a := range rs {
			for _, b := range rs {
				a.st.Join(b.st)
			}
		}
		for _, r := range rs[1:] {
			if !r.st.Equal(rs[0].st) {
				t.Fatalf("replica %s diverged:\n%v\nvs\n%v", r.id, visibleDocs(r.st), visibleDocs(rs[0].st))
			}
		}
	})
}

// TestState_DeltasAloneConverge: when every delta reaches every replica (in
// any order, with duplicates), no full-state exchange is needed.
func TestState_DeltasAloneConverge(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rs, all := history(t, 3)
		for _, r := range rs {
			for _, d := range rapid.Permutation(all).Draw(t, "order") {
				r.apply(d, 0)
			}
		}
		for _, r := range rs[1:] {
			if !r.st.Equal(rs[0].st) {
				t.Fatalf("replica %s diverged: %v vs %v", r.id, visibleDocs(r.st), visibleDocs(rs[0].st))
			}
		}
	})
}

// orsetModel is the textbook OR-Set with tombstones: every add leaves a
// tag, every remove tombstones the tags it observed, and nothing is ever
// forgotten.
type orsetModel struct {
	tags       map[Key]map[Dot]bool
	tombstones map[Dot]bool
}

func (m *orsetModel) visible(k Key) bool {
	for tag := range m.tags[k] {
		if !m.tombstones[tag] {
			return true
		}
	}
	return false
}

// TestState_MembershipMatchesTombstoneORSet compares the membership of the
// δ-CRDT with the naive model, after every replica has received every delta
// in a random order.
func TestState_MembershipMatchesTombstoneORSet(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rs, all := history(t, 3)
		// The model's operations: an add tags; a remove (and an add, which
		// supersedes earlier tags) tombstones the presence dots it observed.
		model := &orsetModel{tags: map[Key]map[Dot]bool{}, tombstones: map[Dot]bool{}}
		for _, d := range all {
			k := d.Key()
			if d.Op == OpAdd {
				if model.tags[k] == nil {
					model.tags[k] = map[Dot]bool{}
				}
				model.tags[k][d.Dot] = true
			}
			if d.Op == OpAdd || d.Op == OpRemove {
				for _, c := range d.Context {
					if c != d.Dot {
						model.tombstones[c] = true
					}
				}
			}
		}
		for _, r := range rs {
			for _, d := range rapid.Permutation(all).Draw(t, "order") {
				r.apply(d, 0)
			}
			for _, k := range testKeys {
				if got, want := r.st.Items[k].Visible(), model.visible(k); got != want {
					t.Fatalf("replica %s, %s: visible=%v, tombstone OR-Set says %v", r.id, k, got, want)
				}
			}
		}
	})
}

// TestDelta_JoinIntoIsJoinItem: Delta.JoinInto, with its shortcut for a
// delta that brings a new item, gives what JoinItem gives for any delta
// delivered to any replica state, and on an absent item both keep exactly
// the delta's entries that the state has not seen.
func TestDelta_JoinIntoIsJoinItem(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rs, all := history(t, 3)
		for _, r := range rs {
			for _, d := range all {
				cur := r.st.Items[d.Key()]
				got := d.JoinInto(cur, r.st.Seen)
				if want := JoinItem(cur, r.st.Seen, &d.Item, d.Covers()); !got.Equal(want) {
					t.Fatalf("delta %s on %s: JoinInto %+v, JoinItem %+v", d.Dot, r.id, got, want)
				}
				// Where both take a shortcut, the reference: the
				// delta's entries whose dots seen lacks.
				if cur.Empty() {
					want := &Item{}
					for _, p := range d.Item.Presence {
						if !r.st.Seen.Contains(p) {
							want.Presence = append(want.Presence, p)
						}
					}
					for f, es := range d.Item.Fields {
						for _, e := range es {
							if !r.st.Seen.Contains(e.Dot) {
								if want.Fields == nil {
									want.Fields = map[string][]Entry{}
								}
								want.Fields[f] = append(want.Fields[f], e)
							}
						}
					}
					if !got.Equal(want) {
						t.Fatalf("delta %s on %s (no item): got %+v, want %+v", d.Dot, r.id, got, want)
					}
				}
			}
		}
	})
}
