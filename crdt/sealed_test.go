package crdt

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"
)

// nonCanonicalDeltas returns spellings of d's record that the decoders
// accept but EncodeDelta never writes: an unused or duplicated replica in
// the table, the table out of order, an entry's own dot or timestamp
// spelled out, an empty array or map where null goes.
func nonCanonicalDeltas(tb testing.TB, d *Delta) map[string][]byte {
	tb.Helper()
	base := func() wireDelta {
		var w wireDelta
		if err := decMode.Unmarshal(mustEncodeDelta(tb, d), &w); err != nil {
			tb.Fatal(err)
		}
		return w
	}
	out := map[string][]byte{}
	add := func(name string, w wireDelta) {
		b, err := encMode.Marshal(&w)
		if err != nil {
			tb.Fatal(err)
		}
		out[name] = b
	}
	w := base()
	w.Replicas = append(w.Replicas, "unused")
	add("unused replica", w)
	w = base()
	w.Replicas = append(w.Replicas, w.Replicas[0])
	for i := 0; i < len(w.Context); i += 2 {
		if w.Context[i] == 0 {
			w.Context[i] = uint64(len(w.Replicas) - 1)
			break
		}
	}
	add("duplicated replica", w)
	if w = base(); len(w.Replicas) >= 3 {
		last := uint64(len(w.Replicas) - 1)
		w.Replicas[1], w.Replicas[last] = w.Replicas[last], w.Replicas[1]
		swap := func(ps []uint64) {
			for i := 0; i < len(ps); i += 2 {
				switch ps[i] {
				case 1:
					ps[i] = last
				case last:
					ps[i] = 1
				}
			}
		}
		swap(w.Context)
		swap(w.Presence)
		for _, es := range w.Fields {
			for _, e := range es {
				swap(e.Dot)
			}
		}
		add("table out of order", w)
	}
	w = base()
	for _, es := range w.Fields {
		if es[0].Dot == nil {
			es[0].Dot = []uint64{0, w.Counter}
			add("own dot spelled out", w)
			break
		}
	}
	w = base()
	for _, es := range w.Fields {
		if es[0].TS == 0 {
			es[0].TS = w.TS
			add("own timestamp spelled out", w)
			break
		}
	}
	if w = base(); w.Presence == nil {
		w.Presence = []uint64{}
		add("empty presence array", w)
	}
	if w = base(); w.Fields == nil {
		w.Fields = map[string][]wireEntry{}
		add("empty field map", w)
	}
	return out
}

// sealSamples returns sampleHistory's deltas, richDelta and a delta whose
// record's table names three replicas.
func sealSamples(tb testing.TB) []*Delta {
	tb.Helper()
	_, all := sampleHistory(tb)
	n1, n2, n3 := newReplica("node1"), newReplica("node2"), newReplica("node3")
	a := n1.do(tb, snap1, t0, addOp(snap1, doc("size", "1024")))
	send(tb, n2, a)
	p := n2.do(tb, snap1, t0+1, patchOp(snap1, doc("status", `"ok"`)))
	send(tb, n3, a, p)
	return append(all, richDelta(tb), n3.do(tb, snap1, t0+2, replaceOp(snap1, doc("owner", `"me"`))))
}

// TestSealed_DecodeKeepsCanonicalBytes: a canonical record is sealed with
// the very bytes read, and decodes to what DecodeDelta gives.
func TestSealed_DecodeKeepsCanonicalBytes(t *testing.T) {
	for _, d := range sealSamples(t) {
		enc := mustEncodeDelta(t, d)
		p := Proof{Prev: ChainStart(d.Dot.Replica), Sig: bytes.Repeat([]byte{7}, SigSize)}
		s, err := DecodeSealed(enc, p)
		if err != nil {
			t.Fatalf("%s: %v", d.Dot, err)
		}
		if !bytes.Equal(s.Bytes(), enc) {
			t.Errorf("%s: sealed bytes differ from the record", d.Dot)
		}
		want := *d
		want.Proof = p
		if !reflect.DeepEqual(s.Delta(), &want) || s.Dot() != d.Dot {
			t.Errorf("%s: sealed %+v, want %+v", d.Dot, s.Delta(), want)
		}
		enc[len(enc)-1] ^= 0xff // the caller's buffer is not the sealed one
		if again := mustEncodeDelta(t, s.Delta()); !bytes.Equal(s.Bytes(), again) {
			t.Errorf("%s: sealed bytes changed with the caller's buffer", d.Dot)
		}
	}
}

// TestSealed_NonCanonicalRecordReencoded: a record the decoders accept in
// another spelling is sealed with EncodeDelta's bytes, which the chain
// hashes, not with the bytes read.
func TestSealed_NonCanonicalRecordReencoded(t *testing.T) {
	seen := map[string]bool{}
	for _, d := range sealSamples(t) {
		for name, b := range nonCanonicalDeltas(t, d) {
			seen[name] = true
			want, err := DecodeDelta(b)
			if err != nil {
				t.Fatalf("%s of %s: DecodeDelta: %v", name, d.Dot, err)
			}
			s, err := DecodeSealed(b, Proof{})
			if err != nil {
				t.Fatalf("%s of %s: DecodeSealed: %v", name, d.Dot, err)
			}
			if bytes.Equal(s.Bytes(), b) || !bytes.Equal(s.Bytes(), mustEncodeDelta(t, want)) {
				t.Errorf("%s of %s: sealed with\n %x\nread\n %x", name, d.Dot, s.Bytes(), b)
			}
			if !reflect.DeepEqual(s.Delta(), want) {
				t.Errorf("%s of %s: sealed %+v, want %+v", name, d.Dot, s.Delta(), want)
			}
		}
	}
	for _, name := range []string{"unused replica", "duplicated replica", "table out of order", "own dot spelled out",
		"own timestamp spelled out", "empty presence array", "empty field map"} {
		if !seen[name] {
			t.Errorf("no sample delta has the shape for %q", name)
		}
	}
}

// TestSealed_DecodeRejects: DecodeSealed rejects what DecodeDelta rejects,
// and a malformed proof.
func TestSealed_DecodeRejects(t *testing.T) {
	d := richDelta(t)
	enc := mustEncodeDelta(t, d)
	for name, c := range map[string]struct {
		b    []byte
		p    Proof
		want error
	}{
		"truncated":            {enc[:len(enc)-1], Proof{}, ErrInvalid},
		"other version":        {append([]byte{0x8a, 0x02}, enc[2:]...), Proof{}, ErrVersion},
		"too large":            {make([]byte, MaxDeltaBytes+1), Proof{}, ErrTooLarge},
		"signature, no chain":  {enc, Proof{Sig: make([]byte, SigSize)}, ErrInvalid},
		"short signature":      {enc, Proof{Prev: ChainStart(d.Dot.Replica), Sig: []byte{1}}, ErrInvalid},
		"generic path, no sig": {nonCanonicalDeltas(t, d)["unused replica"], Proof{Sig: []byte{1}}, ErrInvalid},
	} {
		s, err := DecodeSealed(c.b, c.p)
		if !errors.Is(err, c.want) || s != nil {
			t.Errorf("%s: got %v, %v; want an error wrapping %v", name, s, err, c.want)
		}
	}
}

// TestSeal_OwnsItsCopy: Seal validates, and later changes to the delta it
// sealed do not reach the Sealed.
func TestSeal_OwnsItsCopy(t *testing.T) {
	d := richDelta(t)
	d.Proof = Proof{Prev: ChainStart(d.Dot.Replica), Sig: bytes.Repeat([]byte{7}, SigSize)}
	want := *d
	want.Item = *d.Item.Clone()
	for _, es := range want.Item.Fields {
		for i := range es {
			es[i].Value = bytes.Clone(es[i].Value)
		}
	}
	want.Context = slices.Clone(d.Context)
	want.Proof.Sig = bytes.Clone(d.Proof.Sig)
	s, err := Seal(d)
	if err != nil {
		t.Fatal(err)
	}
	enc := bytes.Clone(s.Bytes())
	d.ID = "other"
	d.Context[0].Counter++
	d.Proof.Sig[0]++
	for _, es := range d.Item.Fields {
		es[0].Value[0] = ' '
	}
	if !reflect.DeepEqual(s.Delta(), &want) || !bytes.Equal(s.Bytes(), enc) || !bytes.Equal(enc, mustEncodeDelta(t, &want)) {
		t.Errorf("the sealed delta changed with the original:\n%+v\nwant %+v", s.Delta(), want)
	}
	bad := want
	bad.Context = nil
	if s, err := Seal(&bad); !errors.Is(err, ErrInvalid) || s != nil {
		t.Errorf("Seal of an invalid delta: %v, %v", s, err)
	}
	var zero Sealed
	if zero.Delta() != nil || zero.Bytes() != nil || zero.Dot() != (Dot{}) {
		t.Error("the zero Sealed holds something")
	}
}

// FuzzDecodeSealed: DecodeSealed accepts exactly what DecodeDelta accepts,
// gives the same delta, and seals it with EncodeDelta's bytes whatever the
// spelling read.
func FuzzDecodeSealed(f *testing.F) {
	for _, d := range sealSamples(f) {
		f.Add(mustEncodeDelta(f, d))
		for _, b := range nonCanonicalDeltas(f, d) {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want, werr := DecodeDelta(b)
		if werr == nil {
			// What a sealed delta must also be (checkSealed): DecodeDelta
			// cannot tell a stub without its proof.
			werr = want.checkSealed()
		}
		s, err := DecodeSealed(b, Proof{})
		if !sameError(err, werr) {
			t.Fatalf("DecodeSealed: %v; DecodeDelta: %v", err, werr)
		}
		if err != nil {
			requireSentinel(t, err)
			if s != nil {
				t.Fatalf("DecodeSealed failed but returned %+v", s)
			}
			return
		}
		if !reflect.DeepEqual(s.Delta(), want) {
			t.Fatalf("sealed %+v, want %+v", s.Delta(), want)
		}
		if enc := mustEncodeDelta(t, want); !bytes.Equal(s.Bytes(), enc) {
			t.Fatalf("sealed with\n %x\nEncodeDelta writes\n %x\nread\n %x", s.Bytes(), enc, b)
		}
		again, err := Seal(want)
		if err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("Seal of the decoded delta: %+v, %v; want %+v", again, err, s)
		}
		requireEncodeJoined(t, s.Delta(), s.Bytes())
		requireEncodeJoined(t, s.Delta(), b)
	})
}

// requireEncodeJoined fails unless EncodeJoined(d, enc, &d.Item) is
// EncodeItem(&d.Item), whether or not enc is d's record.
func requireEncodeJoined(t interface {
	Helper()
	Fatalf(string, ...any)
}, d *Delta, enc []byte) {
	t.Helper()
	want, werr := EncodeItem(&d.Item)
	got, err := EncodeJoined(d, enc, &d.Item)
	if !sameError(err, werr) || !bytes.Equal(got, want) {
		t.Fatalf("EncodeJoined of %s:\n %x, %v\nEncodeItem:\n %x, %v", d.Dot, got, err, want, werr)
	}
}

// TestEncodeJoined_NewItem: the record of a new item written from its
// delta's encoding is EncodeItem's, and an encoding of another delta
// changes nothing.
func TestEncodeJoined_NewItem(t *testing.T) {
	samples := sealSamples(t)
	fast := 0
	for i, d := range samples {
		enc := mustEncodeDelta(t, d)
		if encodeNewItem(d, enc) != nil {
			fast++
		}
		requireEncodeJoined(t, d, enc)
		requireEncodeJoined(t, d, mustEncodeDelta(t, samples[(i+1)%len(samples)]))
		post := d.JoinInto(nil, NewContext())
		want := mustEncodeItem(t, post)
		if got, err := EncodeJoined(d, enc, post); err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %x, %v; want %x", d.Dot, got, err, want)
		}
	}
	if fast == 0 {
		t.Error("no sample delta takes the fast path")
	}
	// An add whose values differ from its encoding's, and one with a
	// field more.
	d := samples[0]
	enc := mustEncodeDelta(t, d)
	other := *d
	other.Item = *d.Item.Clone()
	for _, es := range other.Item.Fields {
		es[0].Value = json.RawMessage(`"other"`)
		break
	}
	requireEncodeJoined(t, &other, enc)
	other.Item.Fields["extra"] = []Entry{{Dot: d.Dot, TS: d.TS, Value: json.RawMessage("1")}}
	requireEncodeJoined(t, &other, enc)
}
