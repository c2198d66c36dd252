package crdt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// sampleHistory plays a fixed history on three replicas: adds with
// documents, a PUT, concurrent patches, a remove and a re-add. Its deltas
// name several replicas, remove dots and leave concurrent entries, so they
// exercise every part of the encodings.
func sampleHistory(tb testing.TB) ([]*replica, []*Delta) {
	tb.Helper()
	n1, n2, n3 := newReplica("a1b2c3d4e5f60718"), newReplica("node2"), newReplica("node3")
	snap2, img := Key{"snapshots", "snap2"}, Key{"images", "img-1"}
	var all []*Delta
	keep := func(ds ...*Delta) { all = append(all, ds...) }

	keep(n1.do(tb, snap1, t0, addOp(snap1, doc("size", "1024", "created", `"2023-12-07T10:30:45Z"`, "cluster", `"cluster-a"`))))
	keep(n1.do(tb, snap2, t0+1, addOp(snap2, doc("size", "2048", "cluster", `"cluster-b"`))))
	keep(n2.do(tb, img, t0+2, addOp(img, doc("arch", `"amd64"`, "layers", `[1,2,3]`))))
	send(tb, n2, all[0], all[1])
	send(tb, n3, all...)
	keep(n1.do(tb, snap1, t0+10, replaceOp(snap1, doc("size", "1024", "status", `"completed"`))))
	keep(n2.do(tb, snap1, t0+11, patchOp(snap1, doc("status", `"failed"`, "owner", `{"team":"storage"}`))))
	keep(n3.do(tb, snap1, t0+11, patchOp(snap1, doc("cluster", "null", "note", `"a\"quoted\" \\ value"`))))
	keep(n3.do(tb, snap2, t0+12, removeOp(snap2)))
	keep(n2.do(tb, snap2, t0+13, addOp(snap2, Document{})))
	for _, r := range []*replica{n1, n2, n3} {
		send(tb, r, all...)
	}
	keep(n2.do(tb, snap1, t0+20, patchOp(snap1, doc("owner", `{"region":"eu-west-1"}`))))
	send(tb, n1, all[len(all)-1])
	return []*replica{n1, n2, n3}, all
}

// richDelta returns a delta whose encoding has two replicas in its table,
// an entry with an explicit dot, one with the delta's own dot, and a
// presence dot: node2's patch of an item that node1 added.
func richDelta(tb testing.TB) *Delta {
	tb.Helper()
	n1, n2 := newReplica("node1"), newReplica("node2")
	send(tb, n2, n1.do(tb, snap1, t0, addOp(snap1, doc("size", "1024", "status", `"running"`))))
	d := n2.do(tb, snap1, t0+1, patchOp(snap1, doc("status", `"completed"`)))
	if len(d.Context) != 2 || len(d.Item.Presence) != 1 || d.Item.Fields["size"][0].Dot == d.Dot {
		tb.Fatalf("richDelta lost its shape: %+v", d)
	}
	return d
}

func mustEncodeDelta(tb testing.TB, d *Delta) []byte {
	tb.Helper()
	b, err := EncodeDelta(d)
	if err != nil {
		tb.Fatalf("EncodeDelta(%s): %v", d.Dot, err)
	}
	return b
}

func mustEncodeItem(tb testing.TB, it *Item) []byte {
	tb.Helper()
	b, err := EncodeItem(it)
	if err != nil {
		tb.Fatalf("EncodeItem: %v", err)
	}
	return b
}

func mustEncodeContext(tb testing.TB, c *Context) []byte {
	tb.Helper()
	b, err := EncodeContext(c)
	if err != nil {
		tb.Fatalf("EncodeContext: %v", err)
	}
	return b
}

func TestDelta_BinaryRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		_, all := history(t, 3)
		for _, d := range all {
			b, err := EncodeDelta(d)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeDelta(b)
			if err != nil {
				t.Fatalf("DecodeDelta(EncodeDelta(%+v)): %v", d, err)
			}
			if !reflect.DeepEqual(got, d) {
				t.Fatalf("round trip changed the delta:\n got %+v\nwant %+v", got, d)
			}
			again, err := EncodeDelta(got)
			if err != nil || !bytes.Equal(again, b) {
				t.Fatalf("re-encoding gave other bytes (%v):\n%x\n%x", err, again, b)
			}
		}
	})
}

func TestItem_BinaryRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rs, _ := history(t, 3)
		for _, r := range rs {
			for k, it := range r.st.Items {
				b, err := EncodeItem(it)
				if err != nil {
					t.Fatal(err)
				}
				got, err := DecodeItem(b)
				if err != nil {
					t.Fatalf("DecodeItem(EncodeItem(%s)): %v", k, err)
				}
				if !reflect.DeepEqual(got, it) {
					t.Fatalf("%s: round trip changed the item:\n got %+v\nwant %+v", k, got, it)
				}
			}
		}
	})
}

func TestContext_BinaryRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c, _ := buildContext(t, genDots(t, "dots"), "c")
		cs := []*Context{c, NewContext()}
		rs, _ := history(t, 2)
		for _, r := range rs {
			cs = append(cs, r.st.Seen, r.st.Applied)
		}
		for _, c := range cs {
			b, err := EncodeContext(c)
			if err != nil {
				t.Fatal(err)
			}
			if want := referenceEncodeContext(c); !bytes.Equal(b, want) {
				t.Fatalf("EncodeContext(%v %v):\n got  %x\n want %x", c.Version(), c.Cloud(), b, want)
			}
			got, err := DecodeContext(b)
			if err != nil {
				t.Fatalf("DecodeContext(EncodeContext(%v %v)): %v", c.Version(), c.Cloud(), err)
			}
			if !got.Equal(c) || !reflect.DeepEqual(got, c) {
				t.Fatalf("round trip changed the context: %v %v, want %v %v", got.Version(), got.Cloud(), c.Version(), c.Cloud())
			}
		}
	})
}

func TestDelta_JSONRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		_, all := history(t, 3)
		for _, d := range all {
			b, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			var got Delta
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("Unmarshal(%s): %v", b, err)
			}
			if !reflect.DeepEqual(&got, d) {
				t.Fatalf("JSON round trip changed the delta:\n got %+v\nwant %+v", got, *d)
			}
		}
	})
}

// TestDelta_JSONFormMatchesDocumentation pins the JSON form that the
// comment of json.go documents for POST /crdt/delta.
func TestDelta_JSONFormMatchesDocumentation(t *testing.T) {
	d, err := AddDelta(snap1, nil, doc("size", "1024"), Dot{"a1b2", 7}, MakeTimestamp(t0, 0))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"dot":{"replica":"a1b2","counter":7},"ts":"2023-12-07T10:30:45.000Z/0","op":"add",` +
		`"collection":"snapshots","id":"snap1","context":[{"replica":"a1b2","counter":7}],` +
		`"presence":[{"replica":"a1b2","counter":7}],` +
		`"fields":{"size":[{"dot":{"replica":"a1b2","counter":7},"ts":"2023-12-07T10:30:45.000Z/0","value":1024}]}}`
	if string(b) != want {
		t.Fatalf("JSON form\n got %s\nwant %s", b, want)
	}
	// A person may write dots and entries in any order and values with
	// white space; the decoder sorts and compacts them.
	var got Delta
	in := `{"dot":{"replica":"n1","counter":2},"ts":"2023-12-07T10:30:45.000Z/1","op":"replace",
		"collection":"snapshots","id":"snap1",
		"context":[{"replica":"n1","counter":2},{"replica":"n1","counter":1},{"replica":"n0","counter":4}],
		"presence":[{"replica":"n1","counter":1},{"replica":"n0","counter":4}],
		"fields":{"tags":[{"dot":{"replica":"n1","counter":2},"ts":"2023-12-07T10:30:45.000Z/1","value":[ 1, 2 ]},
		                  {"dot":{"replica":"n0","counter":4},"ts":"2023-12-07T10:30:45.000Z/0","value":{ "a" : 1 }}]}}`
	if err := got.UnmarshalJSON([]byte(in)); err != nil {
		t.Fatal(err)
	}
	if want := []Dot{{"n0", 4}, {"n1", 1}, {"n1", 2}}; !slices.Equal(got.Context, want) {
		t.Fatalf("context %v, want %v", got.Context, want)
	}
	if want := []Dot{{"n0", 4}, {"n1", 1}}; !slices.Equal(got.Item.Presence, want) {
		t.Fatalf("presence %v, want %v", got.Item.Presence, want)
	}
	es := got.Item.Fields["tags"]
	if len(es) != 2 || es[0].Dot != (Dot{"n0", 4}) || string(es[0].Value) != `{"a":1}` || string(es[1].Value) != `[1,2]` {
		t.Fatalf("entries %+v, want sorted by dot with compact values", es)
	}
}

func TestCodec_EncodingIsDeterministic(t *testing.T) {
	rs, all := sampleHistory(t)
	for _, d := range all {
		b := mustEncodeDelta(t, d)
		c := *d
		c.Item = *d.Item.Clone() // new maps: another iteration order
		for range 20 {
			if !bytes.Equal(mustEncodeDelta(t, &c), b) {
				t.Fatalf("delta %s encodes to different bytes", d.Dot)
			}
		}
		j1, _ := json.Marshal(d)
		j2, _ := json.Marshal(&c)
		if !bytes.Equal(j1, j2) {
			t.Fatalf("delta %s: JSON form differs between equal deltas", d.Dot)
		}
	}
	for _, r := range rs {
		for k, it := range r.st.Items {
			b := mustEncodeItem(t, it)
			for range 20 {
				if !bytes.Equal(mustEncodeItem(t, it.Clone()), b) {
					t.Fatalf("%s: item encodes to different bytes", k)
				}
			}
			// Equal items on other replicas encode identically.
			for _, o := range rs {
				if !o.st.Items[k].Equal(it) {
					continue
				}
				if !bytes.Equal(mustEncodeItem(t, o.st.Items[k]), b) {
					t.Fatalf("%s: converged replicas %s and %s encode the item differently", k, r.id, o.id)
				}
			}
		}
	}
	// A context encodes the same whatever the order its dots arrived in.
	dots := []Dot{{"a", 1}, {"a", 2}, {"a", 5}, {"a", 9}, {"b", 3}, {"c", 1}, {"c", 4}, {"c", 7}}
	var want []byte
	for i := range 20 {
		c := NewContext()
		for j := range dots {
			c.Add(dots[(j*7+i)%len(dots)])
		}
		b := mustEncodeContext(t, c)
		if want == nil {
			want = b
		} else if !bytes.Equal(b, want) {
			t.Fatalf("insertion order %d changed the encoding", i)
		}
	}
}

// TestDelta_EncodedAddSize: an add with a realistic ~150-byte document
// costs at most twice the document's JSON plus 64 bytes on the wire.
func TestDelta_EncodedAddSize(t *testing.T) {
	base := `{"size":1024,"created":"2023-01-01T00:00:00Z","cluster":"cluster-a","status":"completed","owner":"team-storage","region":"eu-west-1"}`
	pad := 150 - len(base) - len(`,"note":""`)
	raw := base[:len(base)-1] + `,"note":"` + strings.Repeat("x", pad) + `"}`
	if len(raw) != 150 {
		t.Fatalf("setup: document is %d bytes", len(raw))
	}
	d0, err := ParseDocument([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	const id = ReplicaID("a1b2c3d4e5f60718")
	d, err := AddDelta(snap1, nil, d0, Dot{id, 1_000_000}, MakeTimestamp(t0, 0))
	if err != nil {
		t.Fatal(err)
	}
	b := mustEncodeDelta(t, d)
	j, _ := json.Marshal(d)
	limit := 2*len(raw) + 64
	t.Logf("metadata JSON %d B; add delta: CBOR %d B (limit %d), JSON form %d B", len(raw), len(b), limit, len(j))
	if len(b) > limit {
		t.Fatalf("encoded add is %d bytes, limit %d", len(b), limit)
	}

	// A PUT of the same document over it, by another replica.
	it := JoinItem(nil, NewContext(), &d.Item, d.Covers())
	r, err := ReplaceDelta(snap1, it, d0, Dot{"f0e1d2c3b4a59687", 42}, MakeTimestamp(t0+1, 0))
	if err != nil {
		t.Fatal(err)
	}
	rb := mustEncodeDelta(t, r)
	ib := mustEncodeItem(t, it)
	t.Logf("replace delta over it: CBOR %d B; stored item record: %d B", len(rb), len(ib))
	if len(rb) > limit+32 {
		t.Fatalf("encoded replace is %d bytes, limit %d", len(rb), limit+32)
	}
}

// rejectCase is one malformed input and the sentinel its decoder must wrap.
type rejectCase struct {
	name string
	in   []byte
	want error
}

// wireCase builds a rejectCase by decoding good into a fresh wire value w,
// changing it with edit and encoding it again.
func wireCase[W any](tb testing.TB, name string, good []byte, want error, edit func(w *W)) rejectCase {
	tb.Helper()
	var w W
	if err := decMode.Unmarshal(good, &w); err != nil {
		tb.Fatal(err)
	}
	edit(&w)
	b, err := encMode.Marshal(&w)
	if err != nil {
		tb.Fatal(err)
	}
	return rejectCase{name, b, want}
}

// commonCases are the byte-level malformations that every decoder rejects.
func commonCases(good []byte, limit int) []rejectCase {
	return []rejectCase{
		{"nil", nil, ErrInvalid},
		{"empty-array", []byte{0x80}, ErrInvalid},
		{"map-not-array", []byte{0xa0}, ErrInvalid},
		{"indefinite-array", append(append([]byte{0x9f}, good[1:]...), 0xff), ErrInvalid},
		{"trailing-byte", append(slices.Clone(good), 0x00), ErrInvalid},
		{"twice", append(slices.Clone(good), good...), ErrInvalid},
		{"oversize", append(slices.Clone(good), make([]byte, limit+1-len(good))...), ErrTooLarge},
	}
}

func runRejects(t *testing.T, decode func([]byte) error, good []byte, cases []rejectCase) {
	t.Helper()
	if err := decode(good); err != nil {
		t.Fatalf("the unmodified input is rejected: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := decode(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want an error wrapping %q", err, tc.want)
			}
			t.Log(err)
		})
	}
	// Every proper prefix is incomplete.
	for i := range good {
		if err := decode(good[:i]); !errors.Is(err, ErrInvalid) {
			t.Fatalf("truncated to %d of %d bytes: got %v, want ErrInvalid", i, len(good), err)
		}
	}
}

func TestDelta_DecodeRejectsMalformed(t *testing.T) {
	good := mustEncodeDelta(t, richDelta(t))
	c := func(name string, want error, edit func(w *wireDelta)) rejectCase {
		return wireCase(t, name, good, want, edit)
	}
	// The table is [node2, node1]: index 0 is the delta's own replica.
	cases := append(commonCases(good, MaxDeltaBytes),
		c("version-0", ErrVersion, func(w *wireDelta) { w.Version = 0 }),
		c("version-2", ErrVersion, func(w *wireDelta) { w.Version = 2 }),
		c("empty-table", ErrInvalid, func(w *wireDelta) { w.Replicas = nil }),
		c("bad-replica-id", ErrInvalid, func(w *wireDelta) { w.Replicas[1] = "no spaces" }),
		c("long-replica-id", ErrInvalid, func(w *wireDelta) { w.Replicas[1] = strings.Repeat("r", MaxReplicaIDLen+1) }),
		c("context-index-out-of-table", ErrInvalid, func(w *wireDelta) { w.Context[0] = 2 }),
		c("presence-index-out-of-table", ErrInvalid, func(w *wireDelta) { w.Presence[0] = 7 }),
		c("entry-index-out-of-table", ErrInvalid, func(w *wireDelta) { w.Fields["size"][0].Dot[0] = 2 }),
		c("entry-dot-one-number", ErrInvalid, func(w *wireDelta) { w.Fields["size"][0].Dot = []uint64{1} }),
		c("entry-dot-three-numbers", ErrInvalid, func(w *wireDelta) { w.Fields["size"][0].Dot = []uint64{1, 1, 1} }),
		c("odd-context", ErrInvalid, func(w *wireDelta) { w.Context = w.Context[:len(w.Context)-1] }),
		c("odd-presence", ErrInvalid, func(w *wireDelta) { w.Presence = append(w.Presence, 0) }),
		c("entry-dot-outside-context", ErrInvalid, func(w *wireDelta) { w.Fields["size"][0].Dot = []uint64{1, 99} }),
		c("presence-dot-outside-context", ErrInvalid, func(w *wireDelta) { w.Presence = []uint64{0, 99} }),
		c("context-lacks-own-dot", ErrInvalid, func(w *wireDelta) { w.Counter = 5 }),
		c("unsorted-context", ErrInvalid, func(w *wireDelta) {
			w.Context = []uint64{w.Context[2], w.Context[3], w.Context[0], w.Context[1]}
		}),
		c("duplicate-context-dot", ErrInvalid, func(w *wireDelta) { w.Context = append(w.Context, w.Context[2:]...) }),
		c("duplicate-presence-dot", ErrInvalid, func(w *wireDelta) { w.Presence = append(w.Presence, w.Presence...) }),
		c("unsorted-entries", ErrInvalid, func(w *wireDelta) {
			// node2:1 (own, implicit) before node1:1.
			w.Fields["size"] = []wireEntry{{Value: []byte("1")}, w.Fields["size"][0]}
		}),
		c("field-without-entries", ErrInvalid, func(w *wireDelta) { w.Fields["size"] = []wireEntry{} }),
		c("non-compact-value", ErrInvalid, func(w *wireDelta) { w.Fields["status"][0].Value = []byte(`"completed" `) }),
		c("indented-value", ErrInvalid, func(w *wireDelta) { w.Fields["status"][0].Value = []byte(`{ "a": 1 }`) }),
		c("invalid-json-value", ErrInvalid, func(w *wireDelta) { w.Fields["status"][0].Value = []byte(`{"a":`) }),
		c("two-json-values", ErrInvalid, func(w *wireDelta) { w.Fields["status"][0].Value = []byte(`1 2`) }),
		c("empty-value", ErrInvalid, func(w *wireDelta) { w.Fields["status"][0].Value = []byte{} }),
		c("bad-field-name", ErrInvalid, func(w *wireDelta) { w.Fields["bad\x01"] = w.Fields["status"] }),
		c("empty-field-name", ErrInvalid, func(w *wireDelta) { w.Fields[""] = w.Fields["status"] }),
		c("zero-counter", ErrInvalid, func(w *wireDelta) { w.Counter = 0 }),
		c("zero-timestamp", ErrInvalid, func(w *wireDelta) { w.TS = 0 }),
		c("timestamp-past-9999", ErrInvalid, func(w *wireDelta) { w.TS = uint64(MakeTimestamp(MaxWallMillis+1, 0)) }),
		c("entry-timestamp-past-9999", ErrInvalid, func(w *wireDelta) {
			w.Fields["size"][0].TS = uint64(MakeTimestamp(MaxWallMillis+1, 0))
		}),
		c("unknown-op", ErrInvalid, func(w *wireDelta) { w.Op = 9 }),
		c("zero-op", ErrInvalid, func(w *wireDelta) { w.Op = 0 }),
		c("add-without-own-presence", ErrInvalid, func(w *wireDelta) { w.Op = uint8(OpAdd) }),
		c("bad-collection", ErrInvalid, func(w *wireDelta) { w.Collection = "snap shots" }),
		c("empty-id", ErrInvalid, func(w *wireDelta) { w.ID = "" }),
		c("long-id", ErrInvalid, func(w *wireDelta) { w.ID = strings.Repeat("i", MaxIDLen+1) }),
		c("too-many-dots", ErrTooLarge, func(w *wireDelta) {
			w.Context = w.Context[:0]
			for k := uint64(1); k <= MaxDeltaDots+1; k++ {
				w.Context = append(w.Context, 0, k)
			}
			w.Presence = nil
			w.Fields = map[string][]wireEntry{"status": {{Value: []byte("1")}}}
		}),
	)
	cases = append(cases, rawCases(t, good)...)
	runRejects(t, func(b []byte) error { _, err := DecodeDelta(b); return err }, good, cases)
}

// rawCases are malformations that the wire structs cannot express.
func rawCases(t *testing.T, good []byte) []rejectCase {
	t.Helper()
	// An unknown key in an entry map: {1: value, 9: 0}.
	var w wireDelta
	if err := decMode.Unmarshal(good, &w); err != nil {
		t.Fatal(err)
	}
	type oddEntry struct {
		Value []byte `cbor:"1,keyasint"`
		Extra uint64 `cbor:"9,keyasint"`
	}
	type oddDelta struct {
		_          struct{} `cbor:",toarray"`
		Version    uint
		Replicas   []string
		Counter    uint64
		TS         uint64
		Op         uint8
		Collection string
		ID         string
		Context    []uint64
		Presence   []uint64
		Fields     map[string][]oddEntry
	}
	odd := oddDelta{Version: w.Version, Replicas: w.Replicas, Counter: w.Counter, TS: w.TS, Op: w.Op,
		Collection: w.Collection, ID: w.ID, Context: w.Context, Presence: w.Presence,
		Fields: map[string][]oddEntry{"status": {{Value: []byte(`"x"`), Extra: 1}}}}
	unknown, err := encMode.Marshal(&odd)
	if err != nil {
		t.Fatal(err)
	}
	// One element too many in the top-level array.
	long := slices.Clone(good)
	long[0]++
	long = append(long, 0x00)
	return []rejectCase{
		{"unknown-entry-key", unknown, ErrInvalid},
		{"array-too-long", long, ErrInvalid},
	}
}

func TestItem_DecodeRejectsMalformed(t *testing.T) {
	rs, _ := sampleHistory(t)
	it := rs[0].st.Items[snap1]
	if len(it.Conflicts()) == 0 {
		t.Fatal("setup: the sample item has no concurrent entries")
	}
	good := mustEncodeItem(t, it)
	c := func(name string, want error, edit func(w *wireItem)) rejectCase {
		return wireCase(t, name, good, want, edit)
	}
	anyField := func(w *wireItem) []wireEntry {
		for _, es := range w.Fields {
			return es
		}
		panic("no fields")
	}
	cases := append(commonCases(good, MaxItemBytes),
		c("version-0", ErrVersion, func(w *wireItem) { w.Version = 0 }),
		c("version-2", ErrVersion, func(w *wireItem) { w.Version = 2 }),
		c("bad-replica-id", ErrInvalid, func(w *wireItem) { w.Replicas[0] = "bad/id" }),
		c("empty-replica-id", ErrInvalid, func(w *wireItem) { w.Replicas[0] = "" }),
		c("presence-index-out-of-table", ErrInvalid, func(w *wireItem) { w.Presence[0] = uint64(len(w.Replicas)) }),
		c("entry-index-out-of-table", ErrInvalid, func(w *wireItem) { anyField(w)[0].Dot[0] = 1 << 40 }),
		c("odd-presence", ErrInvalid, func(w *wireItem) { w.Presence = w.Presence[:1] }),
		c("unsorted-presence", ErrInvalid, func(w *wireItem) { w.Presence = []uint64{0, 5, 0, 3} }),
		c("duplicate-presence", ErrInvalid, func(w *wireItem) { w.Presence = []uint64{0, 3, 0, 3} }),
		c("zero-counter", ErrInvalid, func(w *wireItem) { w.Presence = []uint64{0, 0} }),
		c("entry-without-dot", ErrInvalid, func(w *wireItem) { anyField(w)[0].Dot = nil }),
		c("entry-without-timestamp", ErrInvalid, func(w *wireItem) { anyField(w)[0].TS = 0 }),
		c("unsorted-entries", ErrInvalid, func(w *wireItem) { slices.Reverse(w.Fields["status"]) }),
		c("field-without-entries", ErrInvalid, func(w *wireItem) { w.Fields["status"] = nil }),
		c("non-compact-value", ErrInvalid, func(w *wireItem) { anyField(w)[0].Value = []byte(` 1`) }),
		c("invalid-json-value", ErrInvalid, func(w *wireItem) { anyField(w)[0].Value = []byte(`tru`) }),
		c("bad-field-name", ErrInvalid, func(w *wireItem) { w.Fields["\x7f"] = anyField(w) }),
	)
	runRejects(t, func(b []byte) error { _, err := DecodeItem(b); return err }, good, cases)
}

func TestContext_DecodeRejectsMalformed(t *testing.T) {
	ctx := NewContext()
	for _, d := range []Dot{{"a", 1}, {"a", 2}, {"a", 5}, {"a", 7}, {"b", 3}} {
		ctx.Add(d)
	}
	good := mustEncodeContext(t, ctx)
	c := func(name string, want error, edit func(w *wireContext)) rejectCase {
		return wireCase(t, name, good, want, edit)
	}
	// Not the oversize case: a GiB is too much to allocate in a test, and
	// the length check is DecodeContext's first line.
	common := slices.DeleteFunc(commonCases(good, len(good)), func(c rejectCase) bool { return c.name == "oversize" })
	cases := append(common,
		c("version-0", ErrVersion, func(w *wireContext) { w.Version = 0 }),
		c("version-2", ErrVersion, func(w *wireContext) { w.Version = 2 }),
		c("zero-vector-entry", ErrInvalid, func(w *wireContext) { w.VV["c"] = 0 }),
		c("bad-vector-replica", ErrInvalid, func(w *wireContext) { w.VV["c d"] = 1 }),
		c("bad-cloud-replica", ErrInvalid, func(w *wireContext) { w.Cloud[""] = []uint64{4} }),
		c("cloud-covered-by-vector", ErrInvalid, func(w *wireContext) { w.Cloud["a"] = []uint64{2, 5, 7} }),
		c("cloud-next-to-vector", ErrInvalid, func(w *wireContext) { w.Cloud["a"] = []uint64{3, 5, 7} }),
		c("cloud-starting-at-one", ErrInvalid, func(w *wireContext) { w.Cloud["b"] = []uint64{1, 3} }),
		// vv+1 wraps to 0 at the top of the range: the check must not.
		c("cloud-covered-by-max-vector", ErrInvalid, func(w *wireContext) { w.VV["a"] = math.MaxUint64; w.Cloud["a"] = []uint64{5} }),
		c("unsorted-cloud", ErrInvalid, func(w *wireContext) { w.Cloud["a"] = []uint64{7, 5} }),
		c("duplicate-cloud", ErrInvalid, func(w *wireContext) { w.Cloud["a"] = []uint64{5, 5, 7} }),
	)
	runRejects(t, func(b []byte) error { _, err := DecodeContext(b); return err }, good, cases)
}

func TestDelta_UnmarshalJSONRejectsMalformed(t *testing.T) {
	orig := richDelta(t)
	good, err := json.Marshal(orig)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(good, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	entry := func(m map[string]any, f string) map[string]any {
		return m["fields"].(map[string]any)[f].([]any)[0].(map[string]any)
	}
	for _, tc := range []rejectCase{
		{"empty", []byte(``), ErrInvalid},
		{"null", []byte(`null`), ErrInvalid},
		{"array", []byte(`[]`), ErrInvalid},
		{"truncated", good[:len(good)-1], ErrInvalid},
		{"trailing-object", append(slices.Clone(good), `{}`...), ErrInvalid},
		{"trailing-garbage", append(slices.Clone(good), `x`...), ErrInvalid},
		{"oversize", append(slices.Clone(good), bytes.Repeat([]byte(" "), MaxDeltaJSONBytes)...), ErrTooLarge},
		{"unknown-key", edit(func(m map[string]any) { m["kind"] = "orset" }), ErrInvalid},
		{"unknown-entry-key", edit(func(m map[string]any) { entry(m, "size")["extra"] = 1 }), ErrInvalid},
		{"unknown-op", edit(func(m map[string]any) { m["op"] = "upsert" }), ErrInvalid},
		{"numeric-op", edit(func(m map[string]any) { m["op"] = 1 }), ErrInvalid},
		{"bad-timestamp", edit(func(m map[string]any) { m["ts"] = "yesterday" }), ErrInvalid},
		{"numeric-timestamp", edit(func(m map[string]any) { m["ts"] = 123 }), ErrInvalid},
		{"zero-timestamp", edit(func(m map[string]any) { m["ts"] = "1970-01-01T00:00:00.000Z/0" }), ErrInvalid},
		{"bad-replica", edit(func(m map[string]any) { m["dot"].(map[string]any)["replica"] = "x y" }), ErrInvalid},
		{"negative-counter", edit(func(m map[string]any) { m["dot"].(map[string]any)["counter"] = -1 }), ErrInvalid},
		{"zero-counter", edit(func(m map[string]any) { m["dot"].(map[string]any)["counter"] = 0 }), ErrInvalid},
		{"context-lacks-own-dot", edit(func(m map[string]any) { m["context"] = m["context"].([]any)[:1] }), ErrInvalid},
		{"entry-dot-outside-context", edit(func(m map[string]any) {
			entry(m, "size")["dot"] = map[string]any{"replica": "node1", "counter": 9}
		}), ErrInvalid},
		{"duplicate-presence", edit(func(m map[string]any) { m["presence"] = append(m["presence"].([]any), m["presence"].([]any)...) }), ErrInvalid},
		{"value-missing", edit(func(m map[string]any) { delete(entry(m, "size"), "value") }), ErrInvalid},
		{"bad-field-name", edit(func(m map[string]any) { m["fields"].(map[string]any)["a\u0000"] = m["fields"].(map[string]any)["size"] }), ErrInvalid},
		{"field-without-entries", edit(func(m map[string]any) { m["fields"].(map[string]any)["size"] = []any{} }), ErrInvalid},
		{"bad-collection", edit(func(m map[string]any) { m["collection"] = "" }), ErrInvalid},
		{"add-without-presence", edit(func(m map[string]any) { m["op"] = "add"; m["presence"] = []any{} }), ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := *richDelta(t)
			err := got.UnmarshalJSON(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("UnmarshalJSON = %v, want an error wrapping %q", err, tc.want)
			}
			t.Log(err)
			if !reflect.DeepEqual(&got, orig) {
				t.Fatalf("a failed UnmarshalJSON changed its target to %+v", got)
			}
		})
	}
}

// TestDelta_JSONCarriesLargestDeltas: a delta that DecodeDelta accepts
// goes through its JSON form, however many dots and fields it names. Its
// JSON form grows with them much faster than its binary one (a dot of a
// 64-byte replica is 2-10 bytes of CBOR and over 100 of JSON): a cap on
// the JSON of twice MaxDeltaBytes refused this one, a third of
// MaxDeltaBytes in binary form.
func TestDelta_JSONCarriesLargestDeltas(t *testing.T) {
	r := ReplicaID(strings.Repeat("r", MaxReplicaIDLen))
	own := Dot{r, math.MaxUint64}
	d := &Delta{Dot: own, TS: MakeTimestamp(MaxWallMillis, math.MaxUint16), Op: OpAdd, Collection: "snapshots", ID: "s",
		Item: Item{Presence: []Dot{own}, Fields: map[string][]Entry{}}}
	for i := range MaxFields * 16 {
		d.Item.Fields[fmt.Sprintf("\"\\%d\u2028", i)] = []Entry{{Dot: own, TS: d.TS, Value: json.RawMessage(`1`)}}
	}
	for i := range MaxDeltaDots - 1 - len(d.Item.Fields) - len(d.Item.Presence) {
		d.Context = append(d.Context, Dot{r, math.MaxUint64 - 1 - uint64(i)})
	}
	slices.Reverse(d.Context)
	d.Context = append(d.Context, own)
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	b := mustEncodeDelta(t, d)
	j, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var viaJSON Delta
	if err := viaJSON.UnmarshalJSON(j); err != nil {
		t.Fatalf("%d bytes of CBOR, %d of JSON: %v", len(b), len(j), err)
	}
	if !reflect.DeepEqual(&viaJSON, d) {
		t.Fatal("the JSON form changed the delta")
	}
}

// TestDelta_UnmarshalJSONRejectsTrailingBracket: UnmarshalJSON promises
// to reject data after the delta. json.Decoder.More reports false before a
// closing bracket or brace, so a stray one after the object slips through.
func TestDelta_UnmarshalJSONRejectsTrailingBracket(t *testing.T) {
	good, err := json.Marshal(richDelta(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, tail := range []string{"]", "}", " ]]", "}{"} {
		var d Delta
		if err := d.UnmarshalJSON(append(slices.Clone(good), tail...)); !errors.Is(err, ErrInvalid) {
			t.Errorf("delta followed by %q: got %v, want ErrInvalid", tail, err)
		}
	}
}

// TestDelta_JSONRoundTripKeepsValueBytes: a value goes through the JSON
// form byte for byte. MarshalJSON uses json.Marshal, which rewrites <, >, &
// and U+2028/U+2029 inside the json.RawMessage values as \u escapes, so a
// delta relayed through POST /crdt/delta carries other bytes than the
// original under the same dot, and the replicas' states stop being Equal.
func TestDelta_JSONRoundTripKeepsValueBytes(t *testing.T) {
	n1, n2, n3 := newReplica("node1"), newReplica("node2"), newReplica("node3")
	add := n1.do(t, snap1, t0, addOp(snap1, doc("owner", `"R&D <storage>"`, "sep", "\"a\u2028b\"")))
	send(t, n2, add) // binary
	b, err := json.Marshal(add)
	if err != nil {
		t.Fatal(err)
	}
	var viaJSON Delta
	if err := json.Unmarshal(b, &viaJSON); err != nil {
		t.Fatal(err)
	}
	for f, es := range add.Item.Fields {
		if got, want := string(viaJSON.Item.Fields[f][0].Value), string(es[0].Value); got != want {
			t.Errorf("field %q: JSON round trip turned %s into %s", f, want, got)
		}
	}
	n3.apply(&viaJSON, t0)
	if !n3.st.Equal(n2.st) {
		t.Errorf("a replica that got the delta as JSON differs from one that got it as CBOR: %q vs %q",
			n3.st.Items[snap1].Metadata(), n2.st.Items[snap1].Metadata())
	}
}

// TestDelta_DecodeRejectsNonCanonicalValues: replicas store values in
// canonical JSON (sorted keys, no needless escapes, valid UTF-8), and the
// JSON transport canonicalizes what it receives. The binary decoders only
// check that a value is compact, so a peer's delta with a compact but
// non-canonical value is stored as sent by a replica that gets it as CBOR
// and canonicalized by one that gets it as JSON: two copies of one write
// with different bytes, and states that are never Equal.
func TestDelta_DecodeRejectsNonCanonicalValues(t *testing.T) {
	good := mustEncodeDelta(t, richDelta(t))
	for name, v := range map[string]string{
		"unsorted-keys":   `{"b":1,"a":2}`,
		"needless-escape": `"\u0041"`,
		"escaped-slash":   `"a\/b"`,
		"invalid-utf8":    "\"\xff\"",
	} {
		t.Run(name, func(t *testing.T) {
			tc := wireCase(t, name, good, ErrInvalid, func(w *wireDelta) { w.Fields["status"][0].Value = []byte(v) })
			d, err := DecodeDelta(tc.in)
			if err == nil {
				j, _ := json.Marshal(d)
				var viaJSON Delta
				jerr := viaJSON.UnmarshalJSON(j)
				t.Errorf("DecodeDelta accepted the non-canonical value %q; through the JSON form it becomes %q (%v)",
					v, viaJSON.Item.Fields["status"][0].Value, jerr)
			} else if !errors.Is(err, ErrInvalid) {
				t.Errorf("got %v, want ErrInvalid", err)
			}
			ti := mustEncodeItem(t, &Item{Presence: []Dot{{"n", 1}}, Fields: map[string][]Entry{
				"f": {{Dot{"n", 1}, MakeTimestamp(t0, 0), json.RawMessage(v)}}}})
			if _, err := DecodeItem(ti); !errors.Is(err, ErrInvalid) {
				t.Errorf("DecodeItem: got %v, want ErrInvalid", err)
			}
		})
	}
}

// TestCodec_DecodersReportVersionBeforeShape: "Decoders reject any other
// version with ErrVersion." A later format version will likely change the
// record's shape too (one more array element, say), and a node that gets
// such a record should say "unsupported format version", not "invalid":
// the version is the first element, so it can be read before the rest.
func TestCodec_DecodersReportVersionBeforeShape(t *testing.T) {
	delta := mustEncodeDelta(t, richDelta(t))
	rs, _ := sampleHistory(t)
	item := mustEncodeItem(t, rs[0].st.Items[snap1])
	ctx := mustEncodeContext(t, rs[0].st.Seen)
	// nextVersion rewrites the version (the byte after the array head) to 2
	// and appends one more element to the array.
	nextVersion := func(b []byte) []byte {
		b = slices.Clone(b)
		if b[0] < 0x80 || b[0] > 0x96 || b[1] != FormatVersion {
			t.Fatalf("setup: unexpected head % x", b[:2])
		}
		b[0]++
		b[1] = 2
		return append(b, 0xf6) // null
	}
	for _, tc := range []struct {
		name   string
		decode func([]byte) error
		good   []byte
	}{
		{"delta", func(b []byte) error { _, err := DecodeDelta(b); return err }, delta},
		{"item", func(b []byte) error { _, err := DecodeItem(b); return err }, item},
		{"context", func(b []byte) error { _, err := DecodeContext(b); return err }, ctx},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, in := range [][]byte{nextVersion(tc.good), {0x81, 0x02}, {0x82, 0x18, 0x20, 0x60}} {
				if err := tc.decode(in); !errors.Is(err, ErrVersion) {
					t.Errorf("record starting % x: got %v, want ErrVersion", in[:min(4, len(in))], err)
				}
			}
		})
	}
}

// TestContext_MoreThanAMillionReplicas: a context naming more replicas
// than the 1,048,576 map pairs the decoder once allowed encodes, decodes
// and round-trips through per-replica entries.
func TestContext_MoreThanAMillionReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a context of 1.1 million replicas")
	}
	const n = 1<<20 + 50_000
	c := NewContext()
	for i := range n {
		c.Add(Dot{ReplicaID("r" + strconv.Itoa(i)), uint64(i%7 + 1)})
	}
	c.Add(Dot{"r5", 100}) // and a cloud
	b, err := EncodeContext(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeContext(b)
	if err != nil {
		t.Fatalf("decode a context of %d replicas (%d bytes): %v", n, len(b), err)
	}
	if back.NumReplicas() != n || !back.Equal(c) {
		t.Fatalf("decoded %d replicas, want %d, equal %v", back.NumReplicas(), n, back.Equal(c))
	}
	if MaxContextReplicas < 10_000_000 {
		t.Fatalf("MaxContextReplicas is %d: a format limit below 10 million replicas", MaxContextReplicas)
	}
}

// DecodeContextMax refuses a context naming more replicas than its limit
// from the heads alone, whatever the heads claim, and decodes one within
// it as DecodeContext does.
func TestDecodeContextMax_RefusesMoreReplicasThanItsLimit(t *testing.T) {
	c := NewContext()
	for i := range 10 {
		c.Add(Dot{ReplicaID(fmt.Sprintf("r%02d", i)), 1})
	}
	c.Add(Dot{"cloudy", 3})
	enc, err := EncodeContext(c)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeContextMax(enc, 11); err != nil || !got.Equal(c) {
		t.Fatalf("within the limit: %v", err)
	}
	if _, err := DecodeContextMax(enc, 10); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("11 replicas, limit 10: %v", err)
	}
	// Heads that claim 2^64-1 entries, in the vector or the cloud.
	huge := []byte{cborArray | 3, cborUint | FormatVersion, cborMap | 27, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	if _, err := DecodeContextMax(huge, 1_000_000); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a vector claiming 2^64-1 entries: %v", err)
	}
	cloud := []byte{cborArray | 3, cborUint | FormatVersion, cborMap | 1, cborText | 1, 'r', cborUint | 1, cborMap | 27, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	if _, err := DecodeContextMax(cloud, 1_000_000); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a cloud claiming 2^64-1 entries: %v", err)
	}
	if _, err := DecodeContextMax([]byte{0x80}, 10); !errors.Is(err, ErrInvalid) {
		t.Fatalf("not a context: %v", err)
	}
}
