package crdt

import (
	"encoding/json"
	"errors"
	"testing"
)

// TestPatchDelta_CanonicalizesPatchValues: a Document built in Go rather
// than by ParseDocument may hold valid JSON with white space, which
// Document.Validate accepts. AddDelta and ReplaceDelta canonicalize such
// values; PatchDelta canonicalizes only the merge result, after mergePatch
// has looked at the raw bytes: " null" is then stored as a null value
// instead of removing the field, and ` {"b": 2}` replaces the field's
// object instead of being merged into it.
func TestPatchDelta_CanonicalizesPatchValues(t *testing.T) {
	n1, n2 := newReplica("node1"), newReplica("node2")
	add := n1.do(t, snap1, t0, addOp(snap1, doc("size", "1024", "status", `"running"`, "tags", `{"a":1}`)))
	send(t, n2, add)

	p := Document{
		"status": json.RawMessage(" null"),
		"layers": json.RawMessage("[1, 2]"),
		"tags":   json.RawMessage(` {"b": 2}`),
	}
	if err := p.Validate(); err != nil {
		t.Fatalf("setup: %v", err)
	}
	dot, ts := n1.tick(t0 + 1)
	d, err := PatchDelta(snap1, n1.st.Items[snap1], p, dot, ts)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Validate(); err != nil {
		t.Errorf("PatchDelta made a delta that does not validate: %v", err)
	}
	want := map[string]string{"size": `1024`, "layers": `[1,2]`, "tags": `{"a":1,"b":2}`}
	it := JoinItem(n1.st.Items[snap1], n1.st.Seen, &d.Item, d.Covers())
	got := it.Metadata()
	if len(got) != len(want) {
		t.Errorf("metadata %q, want %q", got, want)
	}
	for f, v := range want {
		if string(got[f]) != v {
			t.Errorf("field %q = %q, want %q", f, got[f], v)
		}
	}
}

// TestAddDelta_CompactsDocumentValues: the same white space through the
// mutators that compact.
func TestAddDelta_CompactsDocumentValues(t *testing.T) {
	d := Document{"layers": json.RawMessage("[1, 2]"), "tags": json.RawMessage(` { "b" : 2 } `)}
	add, err := AddDelta(snap1, nil, d, Dot{"node1", 1}, MakeTimestamp(t0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := add.Validate(); err != nil {
		t.Fatal(err)
	}
	it := JoinItem(nil, NewContext(), &add.Item, add.Covers())
	put, err := ReplaceDelta(snap1, it, d, Dot{"node1", 2}, MakeTimestamp(t0+1, 0))
	if err != nil {
		t.Fatal(err)
	}
	if err := put.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, x := range []*Delta{add, put} {
		if v := string(x.Item.Fields["tags"][0].Value); v != `{"b":2}` {
			t.Fatalf("%s: tags = %q", x.Op, v)
		}
		if string(d["tags"]) != ` { "b" : 2 } ` {
			t.Fatalf("%s changed its input document", x.Op)
		}
	}
}

func TestMutators_RejectBadArguments(t *testing.T) {
	it := &Item{Presence: []Dot{{"node1", 1}}}
	good := doc("size", "1")
	ts := MakeTimestamp(t0, 0)
	tooMany := Document{}
	for i := range MaxFields + 1 {
		tooMany[string(rune('a'+i%26))+string(rune('0'+i/26%10))+string(rune('A'+i/260))] = json.RawMessage("1")
	}
	if len(tooMany) != MaxFields+1 {
		t.Fatalf("setup: %d fields", len(tooMany))
	}
	for _, tc := range []struct {
		name string
		m    func() (*Delta, error)
		want error
	}{
		{"add-bad-collection", func() (*Delta, error) { return AddDelta(Key{"", "a"}, nil, good, Dot{"n", 1}, ts) }, ErrInvalid},
		{"add-bad-id", func() (*Delta, error) { return AddDelta(Key{"snapshots", "a b"}, nil, good, Dot{"n", 1}, ts) }, ErrInvalid},
		{"add-zero-dot", func() (*Delta, error) { return AddDelta(snap1, nil, good, Dot{"n", 0}, ts) }, ErrInvalid},
		{"add-bad-replica", func() (*Delta, error) { return AddDelta(snap1, nil, good, Dot{"n n", 1}, ts) }, ErrInvalid},
		{"add-zero-timestamp", func() (*Delta, error) { return AddDelta(snap1, nil, good, Dot{"n", 1}, 0) }, ErrInvalid},
		{"add-bad-value", func() (*Delta, error) { return AddDelta(snap1, nil, doc("a", "{"), Dot{"n", 1}, ts) }, ErrInvalid},
		{"add-bad-field", func() (*Delta, error) { return AddDelta(snap1, nil, doc("", "1"), Dot{"n", 1}, ts) }, ErrInvalid},
		{"add-too-many-fields", func() (*Delta, error) { return AddDelta(snap1, nil, tooMany, Dot{"n", 1}, ts) }, ErrTooLarge},
		{"replace-bad-value", func() (*Delta, error) { return ReplaceDelta(snap1, it, doc("a", "x"), Dot{"n", 2}, ts) }, ErrInvalid},
		{"replace-too-many-fields", func() (*Delta, error) { return ReplaceDelta(snap1, it, tooMany, Dot{"n", 2}, ts) }, ErrTooLarge},
		{"patch-bad-value", func() (*Delta, error) { return PatchDelta(snap1, it, doc("a", "nul"), Dot{"n", 2}, ts) }, ErrInvalid},
		{"patch-too-many-fields", func() (*Delta, error) { return PatchDelta(snap1, it, tooMany, Dot{"n", 2}, ts) }, ErrTooLarge},
		{"remove-zero-timestamp", func() (*Delta, error) { return RemoveDelta(snap1, it, Dot{"n", 2}, 0) }, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := tc.m()
			if !errors.Is(err, tc.want) || d != nil {
				t.Fatalf("got %+v, %v; want %v", d, err, tc.want)
			}
		})
	}
}

func TestOp_StringRoundTrip(t *testing.T) {
	for _, o := range []Op{OpAdd, OpRemove, OpReplace, OpPatch} {
		got, err := ParseOp(o.String())
		if err != nil || got != o {
			t.Fatalf("ParseOp(%q) = %v, %v", o.String(), got, err)
		}
	}
	if _, err := ParseOp("upsert"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("ParseOp(upsert): %v", err)
	}
	if s := Op(9).String(); s != "op(9)" {
		t.Fatalf("Op(9).String() = %q", s)
	}
	kinds := map[Op]string{OpAdd: "orset", OpRemove: "orset", OpReplace: "lww", OpPatch: "lww"}
	for o, want := range kinds {
		if got := (&Delta{Op: o}).Kind(); got != want {
			t.Fatalf("%s.Kind() = %q, want %q", o, got, want)
		}
	}
}
