package crdt

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"
)

// Fuzz targets for the decoders. Each one holds for any input: the decoder
// does not panic, fails only with one of the package's sentinels, and when
// it accepts the input the value survives encode → decode unchanged, the
// encoding is canonical (encoding the result again gives the same bytes),
// and the value can be used.
//
// Seeds come from f.Add below and from testdata/fuzz/<FuzzName>/.

// requireSentinel fails unless err wraps ErrInvalid, ErrTooLarge or
// ErrVersion.
func requireSentinel(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrVersion) {
		t.Fatalf("error wraps no sentinel: %v", err)
	}
}

func FuzzDecodeDelta(f *testing.F) {
	_, all := sampleHistory(f)
	for _, d := range append(all, richDelta(f)) {
		f.Add(mustEncodeDelta(f, d))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeDelta(b)
		if err != nil {
			requireSentinel(t, err)
			if d != nil {
				t.Fatalf("DecodeDelta failed but returned %+v", d)
			}
			return
		}
		if err := d.Validate(); err != nil {
			t.Fatalf("DecodeDelta returned a delta that fails Validate: %v", err)
		}
		e1, err := EncodeDelta(d)
		if err != nil {
			t.Fatalf("EncodeDelta of a decoded delta: %v", err)
		}
		d2, err := DecodeDelta(e1)
		if err != nil {
			t.Fatalf("DecodeDelta of a re-encoding: %v\n%x", err, e1)
		}
		if !reflect.DeepEqual(d, d2) {
			t.Fatalf("re-encoding changed the delta:\n%+v\n%+v", d, d2)
		}
		if e2 := mustEncodeDelta(t, d2); !bytes.Equal(e1, e2) {
			t.Fatalf("encoding is not canonical:\n%x\n%x", e1, e2)
		}
		// The JSON transport carries it unchanged.
		j, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("MarshalJSON of a decoded delta: %v", err)
		}
		var viaJSON Delta
		if err := viaJSON.UnmarshalJSON(j); err != nil {
			t.Fatalf("UnmarshalJSON of a decoded delta's JSON form: %v\n%s", err, j)
		}
		if !reflect.DeepEqual(&viaJSON, d) {
			t.Fatalf("the JSON form changed the delta:\n%+v\n%+v", viaJSON, *d)
		}
		// A delta that decodes joins into any state, and only once.
		s := NewState()
		if !s.Apply(d) || s.Apply(d) {
			t.Fatal("a decoded delta did not apply exactly once")
		}
		for _, it := range s.Items {
			it.Metadata()
			it.Conflicts()
		}
	})
}

func FuzzDecodeItem(f *testing.F) {
	rs, _ := sampleHistory(f)
	f.Add(mustEncodeItem(f, &Item{}))
	for _, r := range rs {
		for _, it := range r.st.Items {
			f.Add(mustEncodeItem(f, it))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		it, err := DecodeItem(b)
		if err != nil {
			requireSentinel(t, err)
			if it != nil {
				t.Fatalf("DecodeItem failed but returned %+v", it)
			}
			return
		}
		if err := it.validate(nil, true); err != nil {
			t.Fatalf("DecodeItem returned an item that fails validate: %v", err)
		}
		e1, err := EncodeItem(it)
		if err != nil {
			t.Fatalf("EncodeItem of a decoded item: %v", err)
		}
		it2, err := DecodeItem(e1)
		if err != nil {
			t.Fatalf("DecodeItem of a re-encoding: %v\n%x", err, e1)
		}
		if !reflect.DeepEqual(it, it2) || !it.Equal(it2) {
			t.Fatalf("re-encoding changed the item:\n%+v\n%+v", it, it2)
		}
		if e2 := mustEncodeItem(t, it2); !bytes.Equal(e1, e2) {
			t.Fatalf("encoding is not canonical:\n%x\n%x", e1, e2)
		}
		it.Metadata()
		it.Conflicts()
		ctx := NewContext()
		for _, d := range it.Dots() {
			ctx.Add(d)
		}
		if j := JoinItem(it, ctx, it2, ctx); !j.Equal(it) {
			t.Fatalf("joining an item with itself changed it: %+v", j)
		}
	})
}

func FuzzDecodeContext(f *testing.F) {
	rs, _ := sampleHistory(f)
	f.Add(mustEncodeContext(f, NewContext()))
	for _, r := range rs {
		f.Add(mustEncodeContext(f, r.st.Seen))
	}
	cloudy := NewContext()
	for _, d := range []Dot{{"a", 1}, {"a", 2}, {"a", 5}, {"a", 9}, {"b", 3}, {"c", 1}, {"c", 4}} {
		cloudy.Add(d)
	}
	f.Add(mustEncodeContext(f, cloudy))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeContext(b)
		if err != nil {
			requireSentinel(t, err)
			if c != nil {
				t.Fatalf("DecodeContext failed but returned %v", c)
			}
			return
		}
		requireCanonical(t, c)
		// It holds exactly the dots the input names: the vector as
		// given, and each cloud dot apart from it.
		var w wireContext
		if err := ctxDecMode.Unmarshal(b, &w); err != nil {
			t.Fatalf("DecodeContext accepts what the generic decoder rejects: %v", err)
		}
		vv := map[ReplicaID]uint64{}
		for r, n := range w.VV {
			vv[ReplicaID(r)] = n
		}
		var cloud []Dot
		for r, ks := range w.Cloud {
			for _, k := range ks {
				cloud = append(cloud, Dot{ReplicaID(r), k})
			}
		}
		if !reflect.DeepEqual(c.Version(), vv) || !slices.Equal(c.Cloud(), sortDots(cloud)) {
			t.Fatalf("decoded context %v %v; the input names %v %v", c.Version(), c.Cloud(), vv, sortDots(cloud))
		}
		e1, err := EncodeContext(c)
		if err != nil {
			t.Fatalf("EncodeContext of a decoded context: %v", err)
		}
		if want := referenceEncodeContext(c); !bytes.Equal(e1, want) {
			t.Fatalf("EncodeContext:\n got  %x\n want %x", e1, want)
		}
		c2, err := DecodeContext(e1)
		if err != nil {
			t.Fatalf("DecodeContext of a re-encoding: %v\n%x", err, e1)
		}
		if !c.Equal(c2) || !reflect.DeepEqual(c, c2) {
			t.Fatalf("re-encoding changed the context: %v %v vs %v %v", c.Version(), c.Cloud(), c2.Version(), c2.Cloud())
		}
		if e2 := mustEncodeContext(t, c2); !bytes.Equal(e1, e2) {
			t.Fatalf("encoding is not canonical:\n%x\n%x", e1, e2)
		}
		// Merging it into an empty context gives it back. (Missing and
		// Compare walk counter ranges, so they are not called on contexts
		// with arbitrary counters.)
		m := NewContext()
		m.Merge(c)
		if !m.Equal(c) {
			t.Fatal("Merge into an empty context lost dots")
		}
	})
}

func FuzzDeltaJSON(f *testing.F) {
	_, all := sampleHistory(f)
	signed, _, _ := signedChain(f, 2, 2) // with proofs, one signed
	r, key := keyedReplica(f)
	split, err := AddDelta(Key{"snapshots", "s"}, nil, doc("n", "1"), Dot{r, 1}, Timestamp(1<<16))
	if err != nil {
		f.Fatal(err)
	}
	splitChain(f, key, split)
	signed = append(signed, split, Stub(split)) // the split format, and a stub
	for _, d := range append(append(all, richDelta(f)), signed...) {
		b, err := json.Marshal(d)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// As a person may write it: unsorted dots, white space, an offset time.
	f.Add([]byte(`{"dot":{"replica":"n1","counter":2},"ts":"2023-12-07T11:30:45.000+01:00/1","op":"patch",
		"collection":"images","id":"img-1",
		"context":[{"replica":"n1","counter":2},{"replica":"n0","counter":4}],
		"presence":[{"replica":"n0","counter":4}],
		"fields":{"tags":[{"dot":{"replica":"n1","counter":2},"ts":"2023-12-07T10:30:45.000Z/1","value":[ 1, 2 ]},
		                  {"dot":{"replica":"n0","counter":4},"ts":"2023-12-07T10:30:45.000Z/0","value":{ "a" : 1 }}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var d Delta
		if err := d.UnmarshalJSON(b); err != nil {
			requireSentinel(t, err)
			if !reflect.DeepEqual(d, Delta{}) {
				t.Fatalf("a failed UnmarshalJSON changed its target to %+v", d)
			}
			return
		}
		j1, err := json.Marshal(&d)
		if err != nil {
			t.Fatalf("MarshalJSON of a decoded delta: %v", err)
		}
		var d2 Delta
		if err := d2.UnmarshalJSON(j1); err != nil {
			t.Fatalf("UnmarshalJSON of a re-encoding: %v\n%s", err, j1)
		}
		if !reflect.DeepEqual(d, d2) {
			t.Fatalf("JSON re-encoding changed the delta:\n%+v\n%+v\n%s", d, d2, j1)
		}
		if j2, _ := json.Marshal(&d2); !bytes.Equal(j1, j2) {
			t.Fatalf("JSON form is not canonical:\n%s\n%s", j1, j2)
		}
		// The binary form carries the same delta.
		e, err := EncodeDelta(&d)
		if errors.Is(err, ErrTooLarge) {
			return
		}
		if err != nil {
			t.Fatalf("EncodeDelta: %v", err)
		}
		viaCBOR, err := DecodeDelta(e)
		if err != nil {
			t.Fatalf("DecodeDelta of a delta that came as JSON: %v", err)
		}
		// ... but for its proof, which travels beside the encoding.
		viaCBOR.Proof = d.Proof
		if !reflect.DeepEqual(viaCBOR, &d) {
			t.Fatalf("CBOR and JSON disagree:\n%+v\n%+v", viaCBOR, d)
		}
	})
}

// FuzzContextEntry: SetEntry never panics, refuses with a sentinel and no
// change, and what it accepts is canonical and re-encodes to the input.
func FuzzContextEntry(f *testing.F) {
	cloudy := NewContext()
	for _, d := range []Dot{{"a", 1}, {"a", 2}, {"a", 5}, {"a", 9}, {"b", 3}, {"c", 1}, {"c", 4}} {
		cloudy.Add(d)
	}
	for _, r := range []ReplicaID{"a", "b", "c"} {
		f.Add(cloudy.AppendEntry(nil, r))
	}
	f.Add([]byte{FormatVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		c := cloudy.Clone()
		if err := c.SetEntry("a", b); err != nil {
			requireSentinel(t, err)
			if !c.Equal(cloudy) {
				t.Fatal("a refused entry changed the context")
			}
			return
		}
		requireCanonical(t, c)
		if got := c.AppendEntry(nil, "a"); !bytes.Equal(got, b) {
			t.Fatalf("entry %x re-encodes as %x", b, got)
		}
		for _, r := range []ReplicaID{"b", "c"} {
			if !bytes.Equal(c.AppendEntry(nil, r), cloudy.AppendEntry(nil, r)) {
				t.Fatalf("SetEntry of a changed %s", r)
			}
		}
	})
}
