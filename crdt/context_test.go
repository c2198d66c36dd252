package crdt

import (
	"encoding/binary"
	"errors"
	"maps"
	"math"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// dotModel is the obvious reference for a Context: a plain set of dots.
type dotModel map[Dot]bool

func (m dotModel) sorted() []Dot {
	return sortDots(slices.Collect(maps.Keys(m)))
}

// minus returns the dots of m that o lacks, sorted.
func (m dotModel) minus(o dotModel) []Dot {
	var out []Dot
	for d := range m {
		if !o[d] {
			out = append(out, d)
		}
	}
	return sortDots(out)
}

// failer is the part of testing.TB that *rapid.T also has, so one helper
// serves plain tests and property tests.
type failer interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

var ctxReplicas = []ReplicaID{"a", "b", "c"}

const ctxMaxCounter = 30

// genDots draws up to 60 random dots, duplicates allowed, in random order.
func genDots(t *rapid.T, label string) []Dot {
	return rapid.SliceOfN(rapid.Custom(func(t *rapid.T) Dot {
		return Dot{
			rapid.SampledFrom(ctxReplicas).Draw(t, "replica"),
			rapid.Uint64Range(1, ctxMaxCounter).Draw(t, "counter"),
		}
	}), 0, 60).Draw(t, label)
}

// buildContext makes a Context and its model from ds: some dots through
// Add, the rest through Merge of a second context, checking Add's report of
// newness on the way.
func buildContext(t *rapid.T, ds []Dot, label string) (*Context, dotModel) {
	c, other := NewContext(), NewContext()
	m, om := dotModel{}, dotModel{}
	for _, d := range ds {
		if rapid.Bool().Draw(t, label+"-via-merge") {
			if got := other.Add(d); got == om[d] {
				t.Fatalf("Add(%s) reported new=%v on a context that holds=%v", d, got, om[d])
			}
			om[d] = true
			continue
		}
		if got := c.Add(d); got == m[d] {
			t.Fatalf("Add(%s) reported new=%v on a context that holds=%v", d, got, m[d])
		}
		m[d] = true
	}
	c.Merge(other)
	maps.Copy(m, om)
	requireCanonical(t, c)
	return c, m
}

// requireCanonical checks the representation invariants: no zero vector
// entry, no cloud dot the vector covers or could absorb, no empty cloud.
func requireCanonical(t failer, c *Context) {
	t.Helper()
	for r, n := range c.vv {
		if n == 0 {
			t.Fatalf("zero vector entry for %s", r)
		}
	}
	for r, cl := range c.cloud {
		if len(cl) == 0 {
			t.Fatalf("empty cloud kept for %s", r)
		}
		for k := range cl {
			if k <= c.vv[r] || k-c.vv[r] == 1 {
				t.Fatalf("cloud dot %s:%d not folded into vector entry %d", r, k, c.vv[r])
			}
		}
	}
}

// requireMatches checks every query of c against its model.
func requireMatches(t failer, c *Context, m dotModel) {
	t.Helper()
	for _, r := range ctxReplicas {
		var hi uint64
		for k := uint64(1); k <= ctxMaxCounter+1; k++ {
			d := Dot{r, k}
			if c.Contains(d) != m[d] {
				t.Fatalf("Contains(%s) = %v, model says %v", d, !m[d], m[d])
			}
			if m[d] {
				hi = k
			}
		}
		if got := c.Max(r); got != hi {
			t.Fatalf("Max(%s) = %d, want %d", r, got, hi)
		}
	}
	if got := c.Len(); got != uint64(len(m)) {
		t.Fatalf("Len = %d, want %d", got, len(m))
	}
	var rs []ReplicaID
	for d := range m {
		if !slices.Contains(rs, d.Replica) {
			rs = append(rs, d.Replica)
		}
	}
	slices.Sort(rs)
	if got := c.Replicas(); !slices.Equal(got, rs) {
		t.Fatalf("Replicas = %v, want %v", got, rs)
	}
	// Version and Cloud together describe exactly the model.
	got := dotModel{}
	for r, n := range c.Version() {
		for k := uint64(1); k <= n; k++ {
			got[Dot{r, k}] = true
		}
	}
	for _, d := range c.Cloud() {
		if got[d] {
			t.Fatalf("cloud dot %s is also covered by the vector", d)
		}
		got[d] = true
	}
	if !maps.Equal(got, m) {
		t.Fatalf("Version+Cloud = %v, want %v", got.sorted(), m.sorted())
	}
}

func missing(c, o *Context) []Dot {
	var out []Dot
	c.Missing(o, func(d Dot) bool { out = append(out, d); return true })
	return out
}

func TestContext_MatchesSetModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c, cm := buildContext(t, genDots(t, "c"), "c")
		o, om := buildContext(t, genDots(t, "o"), "o")
		requireMatches(t, c, cm)
		requireMatches(t, o, om)

		if got, want := missing(c, o), cm.minus(om); !slices.Equal(got, want) {
			t.Fatalf("c.Missing(o) = %v, want %v", got, want)
		}
		if got, want := missing(o, c), om.minus(cm); !slices.Equal(got, want) {
			t.Fatalf("o.Missing(c) = %v, want %v", got, want)
		}
		ahead, behind := c.Compare(o)
		if ahead != uint64(len(cm.minus(om))) || behind != uint64(len(om.minus(cm))) {
			t.Fatalf("Compare = (%d, %d), want (%d, %d)", ahead, behind, len(cm.minus(om)), len(om.minus(cm)))
		}
		if got, want := c.Equal(o), maps.Equal(cm, om); got != want || o.Equal(c) != want {
			t.Fatalf("Equal = %v, models equal = %v", got, want)
		}

		cBefore, oBefore := c.Clone(), o.Clone()
		u := c.Clone()
		u.Merge(o)
		requireCanonical(t, u)
		union := maps.Clone(cm)
		maps.Copy(union, om)
		requireMatches(t, u, union)
		if !c.Equal(cBefore) || !o.Equal(oBefore) {
			t.Fatal("Merge into a clone changed an input")
		}
		u2 := o.Clone()
		u2.Merge(c)
		if !u.Equal(u2) {
			t.Fatal("Merge is not commutative")
		}
		again := u.Clone()
		again.Merge(o)
		again.Merge(u)
		if !again.Equal(u) {
			t.Fatal("Merge is not idempotent")
		}
		if len(missing(o, u)) != 0 || len(missing(c, u)) != 0 {
			t.Fatal("the union lacks a dot of an input")
		}
	})
}

// TestContext_MissingStopsEarly: Missing stops as soon as fn returns
// false and has reported a prefix of the full list.
func TestContext_MissingStopsEarly(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c, cm := buildContext(t, genDots(t, "c"), "c")
		o, om := buildContext(t, genDots(t, "o"), "o")
		want := cm.minus(om)
		if len(want) == 0 {
			return
		}
		n := rapid.IntRange(1, len(want)).Draw(t, "stop-after")
		var got []Dot
		c.Missing(o, func(d Dot) bool { got = append(got, d); return len(got) < n })
		if !slices.Equal(got, want[:n]) {
			t.Fatalf("stopping after %d reported %v, want %v", n, got, want[:n])
		}
	})
}

func TestContext_AddFoldsCloudIntoVector(t *testing.T) {
	c := NewContext()
	for _, k := range []uint64{3, 5, 2} {
		c.Add(Dot{"a", k})
	}
	if v := c.Version(); len(v) != 0 {
		t.Fatalf("vector %v before dot 1 arrived", v)
	}
	if got, want := c.Cloud(), []Dot{{"a", 2}, {"a", 3}, {"a", 5}}; !slices.Equal(got, want) {
		t.Fatalf("cloud %v, want %v", got, want)
	}
	if !c.Add(Dot{"a", 1}) {
		t.Fatal("Add of a new dot reported false")
	}
	if got := c.Version(); !maps.Equal(got, map[ReplicaID]uint64{"a": 3}) {
		t.Fatalf("vector %v, want a:3", got)
	}
	if got, want := c.Cloud(), []Dot{{"a", 5}}; !slices.Equal(got, want) {
		t.Fatalf("cloud %v, want %v", got, want)
	}
	c.Add(Dot{"a", 4})
	if got := c.Version(); !maps.Equal(got, map[ReplicaID]uint64{"a": 5}) || len(c.Cloud()) != 0 {
		t.Fatalf("vector %v cloud %v, want a:5 and no cloud", got, c.Cloud())
	}
	if c.Add(Dot{"a", 4}) {
		t.Fatal("Add of a held dot reported true")
	}
}

func TestContext_AddIgnoresZeroCounter(t *testing.T) {
	c := NewContext()
	if c.Add(Dot{"a", 0}) {
		t.Fatal("Add of a zero dot reported true")
	}
	if c.Len() != 0 || len(c.Replicas()) != 0 {
		t.Fatalf("zero dot changed the context: len %d, replicas %v", c.Len(), c.Replicas())
	}
}

func TestContext_MergeFoldsAcrossVectorAndCloud(t *testing.T) {
	c := NewContext()
	for _, k := range []uint64{1, 3, 5, 8} {
		c.Add(Dot{"a", k})
	}
	o := NewContext()
	for _, k := range []uint64{1, 2, 3, 4, 7} {
		o.Add(Dot{"a", k})
	}
	o.Add(Dot{"b", 2})
	c.Merge(o)
	requireCanonical(t, c)
	if got := c.Version(); !maps.Equal(got, map[ReplicaID]uint64{"a": 5}) {
		t.Fatalf("vector %v, want a:5", got)
	}
	if got, want := c.Cloud(), []Dot{{"a", 7}, {"a", 8}, {"b", 2}}; !slices.Equal(got, want) {
		t.Fatalf("cloud %v, want %v", got, want)
	}
	c.Add(Dot{"a", 6})
	if got := c.Version()["a"]; got != 8 || len(c.Cloud()) != 1 {
		t.Fatalf("after filling the gap: a:%d, cloud %v", got, c.Cloud())
	}
}

func TestContext_EqualIgnoresHistory(t *testing.T) {
	a, b := NewContext(), NewContext()
	for _, k := range []uint64{1, 2, 3, 4} {
		a.Add(Dot{"r", k})
	}
	for _, k := range []uint64{4, 2, 3, 1} {
		b.Add(Dot{"r", k})
	}
	if !a.Equal(b) || !b.Equal(a) {
		t.Fatal("contexts with the same dots are not Equal")
	}
	b.Add(Dot{"s", 2})
	if a.Equal(b) || b.Equal(a) {
		t.Fatal("contexts that differ by a cloud dot are Equal")
	}
	a.Add(Dot{"s", 3})
	if a.Equal(b) {
		t.Fatal("contexts with different cloud dots of one replica are Equal")
	}
}

func TestContext_CloneIsIndependent(t *testing.T) {
	c := NewContext()
	c.Add(Dot{"a", 1})
	c.Add(Dot{"a", 3})
	n := c.Clone()
	n.Add(Dot{"a", 2})
	n.Add(Dot{"b", 5})
	if c.Contains(Dot{"a", 2}) || c.Contains(Dot{"b", 5}) || c.Len() != 2 {
		t.Fatalf("changing a clone changed the original: %v %v", c.Version(), c.Cloud())
	}
}

func TestContext_CompareCountsBothWays(t *testing.T) {
	c, o := NewContext(), NewContext()
	for k := uint64(1); k <= 10; k++ {
		c.Add(Dot{"a", k})
	}
	c.Add(Dot{"b", 4})
	o.Add(Dot{"a", 1})
	o.Add(Dot{"a", 7})
	o.Add(Dot{"c", 1})
	o.Add(Dot{"c", 2})
	ahead, behind := c.Compare(o)
	if ahead != 9 || behind != 2 {
		t.Fatalf("Compare = (%d, %d), want (9, 2)", ahead, behind)
	}
	if got, want := missing(c, o), []Dot{{"a", 2}, {"a", 3}, {"a", 4}, {"a", 5}, {"a", 6}, {"a", 8}, {"a", 9}, {"a", 10}, {"b", 4}}; !slices.Equal(got, want) {
		t.Fatalf("Missing = %v, want %v", got, want)
	}
}

// TestContext_EntriesRoundTrip: a context rebuilt from the entries of its
// replicas (AppendEntry, SetEntry) holds the same dots, and an entry set
// over another replaces it.
func TestContext_EntriesRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c, _ := buildContext(t, genDots(t, "c"), "c")
		o, _ := buildContext(t, genDots(t, "o"), "o")
		for _, r := range ctxReplicas {
			enc := c.AppendEntry(nil, r)
			if (len(enc) == 0) != (c.Max(r) == 0) {
				t.Fatalf("entry of %s is %x, but c's highest counter of it is %d", r, enc, c.Max(r))
			}
			if len(enc) == 0 {
				continue
			}
			if err := o.SetEntry(r, enc); err != nil {
				t.Fatalf("SetEntry(%s, %x): %v", r, enc, err)
			}
		}
		// o now holds c's entries, and its own for replicas c lacks.
		for _, r := range ctxReplicas {
			if c.Max(r) == 0 {
				continue
			}
			if got, want := o.AppendEntry(nil, r), c.AppendEntry(nil, r); !slices.Equal(got, want) {
				t.Fatalf("entry of %s after SetEntry: %x, want %x", r, got, want)
			}
		}
		requireCanonical(t, o)
		rebuilt := NewContext()
		for _, r := range c.Replicas() {
			if err := rebuilt.SetEntry(r, c.AppendEntry(nil, r)); err != nil {
				t.Fatal(err)
			}
		}
		if !rebuilt.Equal(c) {
			t.Fatalf("rebuilt from entries: %v %v, want %v %v", rebuilt.Version(), rebuilt.Cloud(), c.Version(), c.Cloud())
		}
	})
}

// TestContext_SetEntryRejects: malformed entries are refused with
// ErrInvalid (ErrVersion for another version) and leave c unchanged.
func TestContext_SetEntryRejects(t *testing.T) {
	c := NewContext()
	c.Add(Dot{"a", 1})
	u := func(vs ...uint64) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.AppendUvarint(b, v)
		}
		return b
	}
	cases := map[string]struct {
		r   ReplicaID
		enc []byte
		err error
	}{
		"empty input":         {"a", nil, ErrInvalid},
		"other version":       {"a", u(2, 1, 0), ErrVersion},
		"no dots":             {"a", u(FormatVersion, 0, 0), ErrInvalid},
		"cut short":           {"a", u(FormatVersion, 3), ErrInvalid},
		"cloud cut short":     {"a", u(FormatVersion, 3, 2, 0), ErrInvalid},
		"cloud bigger than b": {"a", u(FormatVersion, 3, 1<<40), ErrInvalid},
		"trailing bytes":      {"a", u(FormatVersion, 3, 0, 7), ErrInvalid},
		"cloud past the top":  {"a", u(FormatVersion, math.MaxUint64-3, 1, 5), ErrInvalid},
		"top with a cloud":    {"a", u(FormatVersion, math.MaxUint64, 1, 0), ErrInvalid},
		"bad replica":         {"a/b", u(FormatVersion, 3, 0), ErrInvalid},
		"overlong uvarint":    {"a", append(u(FormatVersion), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), ErrInvalid},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			before := c.Clone()
			if err := c.SetEntry(tc.r, tc.enc); !errors.Is(err, tc.err) {
				t.Fatalf("SetEntry(%s, %x) = %v, want %v", tc.r, tc.enc, err, tc.err)
			}
			if !c.Equal(before) {
				t.Fatal("a refused entry changed the context")
			}
		})
	}
	// The largest valid entries decode.
	top := NewContext()
	if err := top.SetEntry("a", u(FormatVersion, math.MaxUint64, 0)); err != nil || top.Max("a") != math.MaxUint64 {
		t.Fatalf("vector entry at the top: %v, max %d", err, top.Max("a"))
	}
	if err := top.SetEntry("b", u(FormatVersion, 0, 1, math.MaxUint64-2)); err != nil || top.Max("b") != math.MaxUint64 {
		t.Fatalf("cloud counter at the top: %v, max %d", err, top.Max("b"))
	}
}

// TestContext_TracksTouchedReplicas: a tracking context reports exactly
// the replicas whose entries Add, Merge and SetEntry changed, once.
func TestContext_TracksTouchedReplicas(t *testing.T) {
	c := NewContext()
	c.Add(Dot{"a", 1})
	if got := c.TakeTouched(); got != nil {
		t.Fatalf("an untracked context reports %v", got)
	}
	c.Track()
	c.Add(Dot{"a", 1}) // already held: no change
	c.Add(Dot{"b", 3})
	o := NewContext()
	o.Add(Dot{"a", 1})
	o.Add(Dot{"c", 1})
	o.Add(Dot{"b", 3})
	c.Merge(o)
	if got, want := c.TakeTouched(), []ReplicaID{"b", "c"}; !slices.Equal(got, want) {
		t.Fatalf("touched %v, want %v", got, want)
	}
	if got := c.TakeTouched(); got != nil {
		t.Fatalf("touched again %v, want none", got)
	}
	if err := c.SetEntry("d", o.AppendEntry(nil, "c")); err != nil {
		t.Fatal(err)
	}
	if got, want := c.TakeTouched(), []ReplicaID{"d"}; !slices.Equal(got, want) {
		t.Fatalf("touched %v, want %v", got, want)
	}
	if c.Clone().TakeTouched() != nil {
		t.Fatal("a clone tracks")
	}
}
