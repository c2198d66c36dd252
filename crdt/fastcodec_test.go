package crdt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// The hand-written codec (cbor.go) and the linear canonical-JSON check
// (canonical.go) are fast paths: they must give exactly what the generic
// paths give. These tests hold them to the generic CBOR encoder and decoder
// and to encoding/json.

// replicaTable and its methods are the reference encoders' replica table:
// indexes in order of first use.
type replicaTable struct {
	ids   []string
	index map[ReplicaID]uint64
}

func (t *replicaTable) pairs(ds []Dot) []uint64 {
	if len(ds) == 0 {
		return nil
	}
	out := make([]uint64, 0, 2*len(ds))
	for _, d := range ds {
		out = append(out, t.ref(d.Replica), d.Counter)
	}
	return out
}

func (t *replicaTable) ref(r ReplicaID) uint64 {
	if i, ok := t.index[r]; ok {
		return i
	}
	if t.index == nil {
		t.index = map[ReplicaID]uint64{}
	}
	i := uint64(len(t.ids))
	t.index[r] = i
	t.ids = append(t.ids, string(r))
	return i
}

// fields encodes entries, omitting dot and timestamp where they equal own
// and ownTS. Field names are visited in order so the table is deterministic.
func (t *replicaTable) fields(fs map[string][]Entry, own Dot, ownTS Timestamp) map[string][]wireEntry {
	if len(fs) == 0 {
		return nil
	}
	names := make([]string, 0, len(fs))
	for f := range fs {
		names = append(names, f)
	}
	sort.Strings(names)
	out := make(map[string][]wireEntry, len(fs))
	for _, f := range names {
		ws := make([]wireEntry, len(fs[f]))
		for i, e := range fs[f] {
			ws[i].Value = e.Value
			if e.Dot != own {
				ws[i].Dot = []uint64{t.ref(e.Dot.Replica), e.Dot.Counter}
			}
			if e.TS != ownTS {
				ws[i].TS = uint64(e.TS)
			}
		}
		out[f] = ws
	}
	return out
}

// referenceEncodeDelta is EncodeDelta through the generic CBOR encoder.
func referenceEncodeDelta(d *Delta) []byte {
	var t replicaTable
	t.ref(d.Dot.Replica)
	w := wireDelta{
		Version:    FormatVersion,
		Counter:    d.Dot.Counter,
		TS:         uint64(d.TS),
		Op:         uint8(d.Op),
		Collection: d.Collection,
		ID:         d.ID,
		Context:    t.pairs(d.Context),
		Presence:   t.pairs(d.Item.Presence),
		Fields:     t.fields(d.Item.Fields, d.Dot, d.TS),
	}
	w.Replicas = t.ids
	b, err := encMode.Marshal(&w)
	if err != nil {
		panic(err)
	}
	return b
}

// referenceEncodeItem is EncodeItem through the generic CBOR encoder.
func referenceEncodeItem(it *Item) []byte {
	var t replicaTable
	w := wireItem{Version: FormatVersion, Presence: t.pairs(it.Presence), Fields: t.fields(it.Fields, Dot{}, 0)}
	w.Replicas = t.ids
	b, err := encMode.Marshal(&w)
	if err != nil {
		panic(err)
	}
	return b
}

// genItem draws an arbitrary item, valid or not: any replica IDs (more of
// them than the encoder's linear table holds), counters and timestamps of
// every CBOR width, field names of every head width, nil, empty and long
// values, zero dots, empty entry lists.
func genItem(t *rapid.T) *Item {
	reps := rapid.SliceOfN(rapid.SampledFrom([]string{"", "a", "b", "node1", "r01", "r02", "r03", "r04", "r05",
		"r06", "r07", "r08", "r09", "r10", strings.Repeat("z", 30)}), 1, 12).Draw(t, "replicas")
	num := rapid.OneOf(rapid.Uint64Range(0, 30), rapid.Uint64Range(0, 300), rapid.Uint64Range(0, 70000),
		rapid.Uint64Range(0, 1<<33), rapid.Uint64())
	dot := rapid.Custom(func(t *rapid.T) Dot {
		return Dot{ReplicaID(rapid.SampledFrom(reps).Draw(t, "replica")), num.Draw(t, "counter")}
	})
	it := &Item{Presence: rapid.SliceOfN(dot, 0, 4).Draw(t, "presence")}
	if len(it.Presence) == 0 && rapid.Bool().Draw(t, "nil-presence") {
		it.Presence = nil
	}
	nf := rapid.IntRange(0, 6).Draw(t, "fields")
	if nf > 0 || rapid.Bool().Draw(t, "empty-field-map") {
		it.Fields = map[string][]Entry{}
	}
	for range nf {
		name := rapid.OneOf(rapid.StringN(0, 3, 30), rapid.SampledFrom([]string{"size", "status", "x", "é", strings.Repeat("n", 24), strings.Repeat("m", 300)})).Draw(t, "name")
		ne := rapid.IntRange(0, 3).Draw(t, "entries")
		var es []Entry
		if ne > 0 || rapid.Bool().Draw(t, "empty-entries") {
			es = []Entry{}
		}
		for range ne {
			e := Entry{TS: Timestamp(num.Draw(t, "ts"))}
			if rapid.IntRange(0, 9).Draw(t, "zero-dot") != 0 {
				e.Dot = dot.Draw(t, "dot")
			}
			switch rapid.IntRange(0, 4).Draw(t, "value") {
			case 0:
			case 1:
				e.Value = json.RawMessage{}
			case 2:
				e.Value = json.RawMessage(strings.Repeat("7", rapid.IntRange(20, 300).Draw(t, "len")))
			default:
				e.Value = json.RawMessage(rapid.SampledFrom(testValues).Draw(t, "json"))
			}
			es = append(es, e)
		}
		it.Fields[name] = es
	}
	return it
}

// TestCodec_EncodersMatchGenericEncoder: EncodeItem and EncodeDelta write
// exactly what encMode writes for the wire structs, for any item, valid or
// not.
func TestCodec_EncodersMatchGenericEncoder(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		it := genItem(t)
		got := encodeItemRecord(it)
		if want := referenceEncodeItem(it); !bytes.Equal(got, want) {
			t.Fatalf("item %+v:\n got  %x\n want %x", it, got, want)
		}
		d := &Delta{
			Dot:        Dot{ReplicaID(rapid.SampledFrom([]string{"a", "node1", "r07"}).Draw(t, "own")), rapid.Uint64().Draw(t, "counter")},
			TS:         Timestamp(rapid.Uint64().Draw(t, "ts")),
			Op:         Op(rapid.IntRange(0, 255).Draw(t, "op")),
			Collection: rapid.StringN(0, 3, 70).Draw(t, "collection"),
			ID:         rapid.StringN(0, 3, 300).Draw(t, "id"),
			Context:    it.Presence,
			Item:       *it,
		}
		if rapid.Bool().Draw(t, "own-entries") {
			for _, es := range d.Item.Fields {
				for i := range es {
					if i%2 == 0 {
						es[i].Dot, es[i].TS = d.Dot, d.TS
					}
				}
			}
		}
		gotD := encodeDeltaRecord(d)
		if want := referenceEncodeDelta(d); !bytes.Equal(gotD, want) {
			t.Fatalf("delta %+v:\n got  %x\n want %x", d, gotD, want)
		}
	})
	// And the records of a real history.
	rs, all := sampleHistory(t)
	for _, d := range append(all, richDelta(t)) {
		if got, want := mustEncodeDelta(t, d), referenceEncodeDelta(d); !bytes.Equal(got, want) {
			t.Errorf("delta %s:\n got  %x\n want %x", d.Dot, got, want)
		}
	}
	for _, r := range rs {
		for k, it := range r.st.Items {
			if got, want := mustEncodeItem(t, it), referenceEncodeItem(it); !bytes.Equal(got, want) {
				t.Errorf("item %s:\n got  %x\n want %x", k, got, want)
			}
		}
	}
}

// sameError reports whether two decoding errors are alike: both nil, or
// both wrapping the same sentinel. (Their messages may differ when the input
// has several faults: validation visits fields in map order.)
func sameError(a, b error) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	for _, s := range []error{ErrVersion, ErrTooLarge, ErrInvalid} {
		if errors.Is(a, s) || errors.Is(b, s) {
			return errors.Is(a, s) && errors.Is(b, s)
		}
	}
	return false
}

// requireSameDecoding fails unless the fast and generic decoders agree on b:
// alike errors, or equal values.
func requireSameDecoding(t interface {
	Helper()
	Fatalf(string, ...any)
}, b []byte) {
	t.Helper()
	for _, values := range []bool{true, false} {
		got, gerr := decodeItem(b, values)
		want, werr := decodeItemGeneric(b, values)
		if len(b) > MaxItemBytes {
			continue // decodeItem checks the size first; the generic path does not repeat it
		}
		if v, ok := peekVersion(b); ok && v != FormatVersion {
			continue // likewise the version
		}
		if !sameError(gerr, werr) || !reflect.DeepEqual(got, want) {
			t.Fatalf("item % x (values %v): fast %+v, %v; generic %+v, %v", b, values, got, gerr, want, werr)
		}
	}
	if len(b) > MaxDeltaBytes {
		return
	}
	if v, ok := peekVersion(b); ok && v != FormatVersion {
		return
	}
	got, gerr := DecodeDelta(b)
	want, werr := decodeDeltaGeneric(b)
	if !sameError(gerr, werr) || !reflect.DeepEqual(got, want) {
		t.Fatalf("delta % x: fast %+v, %v; generic %+v, %v", b, got, gerr, want, werr)
	}
}

// TestCodec_DecodersMatchGenericDecoder: on well-formed records and on
// edits of them, the fast decoders return what the generic ones return.
func TestCodec_DecodersMatchGenericDecoder(t *testing.T) {
	rs, all := sampleHistory(t)
	var recs [][]byte
	for _, d := range append(all, richDelta(t)) {
		b := mustEncodeDelta(t, d)
		if fastDecodeDelta(b) == nil {
			t.Errorf("the fast path declines the delta %s", d.Dot)
		}
		recs = append(recs, b)
	}
	for _, r := range rs {
		for k, it := range r.st.Items {
			b := mustEncodeItem(t, it)
			if fastDecodeItem(b, true) == nil || fastDecodeItem(b, false) == nil {
				t.Errorf("the fast path declines the item %s", k)
			}
			recs = append(recs, b)
		}
	}
	for _, b := range recs {
		requireSameDecoding(t, b)
		for i := range b {
			requireSameDecoding(t, b[:i])
			// Some edits; FuzzRecordCodec tries the rest.
			c := bytes.Clone(b)
			c[i] = b[i] ^ 1
			requireSameDecoding(t, c)
			c[i] = []byte{0x00, 0x18, 0x40, 0x80, 0xf6}[i%5]
			requireSameDecoding(t, c)
		}
	}
	rapid.Check(t, func(t *rapid.T) {
		it := genItem(t)
		requireSameDecoding(t, referenceEncodeItem(it))
	})
}

// FuzzRecordCodec: for any input the fast decoders agree with the generic
// ones, and what decodes re-encodes as the generic encoder would.
func FuzzRecordCodec(f *testing.F) {
	rs, all := sampleHistory(f)
	for _, d := range append(all, richDelta(f)) {
		f.Add(mustEncodeDelta(f, d))
	}
	for _, r := range rs {
		for _, it := range r.st.Items {
			f.Add(mustEncodeItem(f, it))
		}
	}
	seed := mustEncodeItem(f, rs[0].st.Items[snap1])
	f.Fuzz(func(t *testing.T, b []byte) {
		requireSameDecoding(t, b)
		requireStoredAgrees(t, b)
		// A reader that has seen another record first, then this one twice.
		var r MetadataReader
		requireReaderAgrees(t, &r, seed)
		requireReaderAgrees(t, &r, b)
		requireReaderAgrees(t, &r, b)
		if it, err := DecodeItem(b); err == nil {
			if got, want := encodeItemRecord(it), referenceEncodeItem(it); !bytes.Equal(got, want) {
				t.Fatalf("item re-encoding:\n got  %x\n want %x", got, want)
			}
		}
		if d, err := DecodeDelta(b); err == nil {
			if got, want := encodeDeltaRecord(d), referenceEncodeDelta(d); !bytes.Equal(got, want) {
				t.Fatalf("delta re-encoding:\n got  %x\n want %x", got, want)
			}
		}
	})
}

// FuzzCanonicalJSON: the linear check never calls a value canonical that
// encoding/json would rewrite, and isCanonical and canonicalJSON give what
// the decode-and-encode path gives.
func FuzzCanonicalJSON(f *testing.F) {
	for _, v := range append(testValues, `"a\"b\\c\u0001\n\t\b\f\r"`, `"\u2028\u2029"`, `"é€𝄞"`, "\"\xff\"",
		`{"a":{"b":[1,2.5e-3,-0,true,false,null]},"b":"x"}`, `{"b":1,"a":2}`, `{"a":1,"a":2}`, `"\u0041"`, `"\/"`,
		`"\u001F"`, `"\u001f"`, `"\u007f"`, "\"\x7f\"", `1E+2`, `-01`, `[1 ,2]`, ` 1`, `{"\n":1}`, `""`, `{}`, `[]`) {
		f.Add([]byte(v))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		want, werr := decodeCanonical(v)
		if scanCanonical(v) && (werr != nil || !bytes.Equal(want, v)) {
			t.Fatalf("scanCanonical accepted %q; encoding/json gives %q, %v", v, want, werr)
		}
		if got, want := isCanonical(v), werr == nil && bytes.Equal(want, v); got != want {
			t.Fatalf("isCanonical(%q) = %v, want %v", v, got, want)
		}
		got, gerr := canonicalJSON(v)
		if !sameErrorText(gerr, werr) || !bytes.Equal(got, want) {
			t.Fatalf("canonicalJSON(%q) = %q, %v; want %q, %v", v, got, gerr, want, werr)
		}
		// What canonicalJSON makes is canonical: a value stored once
		// passes every later check unchanged.
		if gerr == nil {
			if !isCanonical(got) {
				t.Fatalf("canonicalJSON(%q) = %q, which isCanonical rejects", v, got)
			}
			if again, err := canonicalJSON(got); err != nil || !bytes.Equal(again, got) {
				t.Fatalf("canonicalJSON is not idempotent on %q: %q, %v", got, again, err)
			}
		}
	})
}

// TestCanonicalJSON_LinearCheckCoversCommonValues: the values a catalog
// usually holds never need encoding/json to be checked.
func TestCanonicalJSON_LinearCheckCoversCommonValues(t *testing.T) {
	for _, v := range []string{`1024`, `-1.5e10`, `"2023-12-07T10:30:45Z"`, `"cluster-a"`, `true`, `null`, `[1,"a",{"k":"v"}]`,
		`{"a":1,"b":{"c":[true,false]},"team":"storage"}`, `"R&D <storage>"`, `"a\"quoted\" \\ value"`, `"café"`, `"\u2028"`, `"\u0000\n"`} {
		if !scanCanonical([]byte(v)) {
			t.Errorf("scanCanonical(%s) = false", v)
		}
	}
}

func sameErrorText(a, b error) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// requireStoredAgrees fails unless DecodeStoredItem agrees with DecodeItem
// on b: it accepts, with the same item, everything DecodeItem accepts; it
// rejects, with a like error, everything DecodeItem rejects, except records
// whose only fault is a value that is not canonical JSON.
func requireStoredAgrees(t interface {
	Helper()
	Fatalf(string, ...any)
}, b []byte) {
	t.Helper()
	full, ferr := DecodeItem(b)
	stored, serr := DecodeStoredItem(b)
	switch {
	case ferr == nil:
		if serr != nil || !reflect.DeepEqual(full, stored) {
			t.Fatalf("record % x: DecodeItem gives %+v; DecodeStoredItem %+v, %v", b, full, stored, serr)
		}
	case serr != nil:
		if !sameError(ferr, serr) {
			t.Fatalf("record % x: DecodeItem error %v, DecodeStoredItem error %v", b, ferr, serr)
		}
	default:
		canonical := true
		for _, es := range stored.Fields {
			for _, e := range es {
				canonical = canonical && isCanonical(e.Value)
			}
		}
		if canonical || !errors.Is(ferr, ErrInvalid) {
			t.Fatalf("record % x: DecodeItem error %v, but DecodeStoredItem accepts %+v", b, ferr, stored)
		}
		if err := stored.validate(nil, false); err != nil {
			t.Fatalf("record % x: DecodeStoredItem accepts an item that fails validate: %v", b, err)
		}
	}
}

// requireReaderAgrees fails unless MetadataReader.Read gives what
// DecodeStoredItem and Item.Metadata give for b.
func requireReaderAgrees(t interface {
	Helper()
	Fatalf(string, ...any)
}, r *MetadataReader, b []byte) {
	t.Helper()
	it, werr := DecodeStoredItem(b)
	doc, visible, err := r.Read(b)
	if !sameError(err, werr) {
		t.Fatalf("record % x: Read error %v, DecodeStoredItem error %v", b, err, werr)
	}
	if err != nil {
		return
	}
	if visible != it.Visible() {
		t.Fatalf("record % x: Read says visible %v, the item %v", b, visible, it.Visible())
	}
	if want := it.Metadata(); visible && !reflect.DeepEqual(map[string]json.RawMessage(doc), want) {
		t.Fatalf("record % x: Read gives %q, Metadata %q", b, doc, want)
	}
}

// TestMetadataReader_MatchesDecodeStoredItem: one reader over many records
// resolves each as DecodeStoredItem followed by Item.Metadata would.
func TestMetadataReader_MatchesDecodeStoredItem(t *testing.T) {
	var r MetadataReader
	rs, _ := sampleHistory(t)
	for _, rep := range rs {
		for k, it := range rep.st.Items {
			b := mustEncodeItem(t, it)
			if _, ok := r.readStored(b); it.Visible() && !ok {
				t.Errorf("the one-pass path declines the stored record of %s", k)
			}
			requireReaderAgrees(t, &r, b)
			for i := range b {
				c := bytes.Clone(b)
				c[i] ^= 1
				requireReaderAgrees(t, &r, c)
				requireReaderAgrees(t, &r, b[:i])
			}
		}
	}
	rapid.Check(t, func(t *rapid.T) {
		it := genItem(t)
		// Make some items valid: sorted, distinct, non-zero dots and
		// timestamps, canonical values.
		if rapid.Bool().Draw(t, "fix") {
			it = JoinItem(nil, NewContext(), sanitize(it), NewContext())
		}
		requireReaderAgrees(t, &r, referenceEncodeItem(it))
	})
}

// sanitize turns a generated item into a valid one.
func sanitize(it *Item) *Item {
	fix := func(d Dot) Dot {
		if d.Replica.Validate() != nil {
			d.Replica = "r"
		}
		if d.Counter == 0 {
			d.Counter = 1
		}
		return d
	}
	out := &Item{}
	for _, d := range it.Presence {
		out.Presence = append(out.Presence, fix(d))
	}
	out.Presence = sortDots(out.Presence)
	for f, es := range it.Fields {
		if ValidateFieldName(f) != nil || len(es) == 0 {
			continue
		}
		seen := map[Dot]bool{}
		var list []Entry
		for _, e := range es {
			e.Dot = fix(e.Dot)
			if seen[e.Dot] {
				continue
			}
			seen[e.Dot] = true
			if e.TS == 0 || e.TS.Validate() != nil {
				e.TS = MakeTimestamp(t0, 1)
			}
			if !isCanonical(e.Value) {
				e.Value = json.RawMessage(`"v"`)
			}
			list = append(list, e)
		}
		sort.Slice(list, func(i, j int) bool { return list[i].Dot.Less(list[j].Dot) })
		if out.Fields == nil {
			out.Fields = map[string][]Entry{}
		}
		out.Fields[f] = list
	}
	return out
}

// TestMetadataReader_OnePassTakesShortEntries: the one-pass path takes a
// record whose last entry is as short as an entry with a value can be (a
// one-byte value, counter and timestamp), rather than leaving it to the
// general path.
func TestMetadataReader_OnePassTakesShortEntries(t *testing.T) {
	it := &Item{Presence: []Dot{{"a", 1}}, Fields: map[string][]Entry{"f": {{Dot{"a", 1}, 1, json.RawMessage(`1`)}}}}
	b := mustEncodeItem(t, it)
	var r MetadataReader
	if visible, ok := r.readStored(b); !ok || !visible {
		t.Fatalf("the one-pass path declines % x", b)
	}
	requireReaderAgrees(t, &r, b)
}

// referenceEncodeContext is EncodeContext through the generic CBOR
// encoder.
func referenceEncodeContext(c *Context) []byte {
	w := wireContext{Version: FormatVersion, VV: make(map[string]uint64, len(c.vv))}
	for r, n := range c.vv {
		if n > 0 {
			w.VV[string(r)] = n
		}
	}
	if len(c.cloud) > 0 {
		w.Cloud = make(map[string][]uint64, len(c.cloud))
		for r, cl := range c.cloud {
			ks := make([]uint64, 0, len(cl))
			for k := range cl {
				ks = append(ks, k)
			}
			slices.Sort(ks)
			w.Cloud[string(r)] = ks
		}
	}
	b, err := encMode.Marshal(&w)
	if err != nil {
		panic(err)
	}
	return b
}
