package crdt

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// FuzzEncodeRoundTrip works from the other side of the decoders: it builds
// a valid item and a valid delta out of the fuzzer's bytes — tables longer
// than a one-byte index, counters and timestamps of every CBOR width, field
// names and values across the 24- and 256-byte head boundaries, entries
// with and without the delta's own dot and timestamp — and checks that
//
//   - the hand-written encoders write what the generic encoder writes;
//   - the fast decoders accept their encoders' output (they never leave a
//     well-formed record to the generic path) and give the value back, as
//     do DecodeItem, DecodeStoredItem, DecodeDelta, MetadataReader and the
//     JSON form;
//   - MetadataReader's one-pass path takes every record of the shape it is
//     documented to handle;
//   - edits of the encodings (the bytes left over say where and what)
//     decode alike on the fast and generic paths, and MetadataReader and
//     DecodeStoredItem agree on them.
func FuzzEncodeRoundTrip(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("\x03\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13"))
	f.Add(bytes.Repeat([]byte{0xff, 0x00, 0x7f, 0x18, 0x19, 0x1a, 0x1b, 0x80}, 40))
	f.Add(bytes.Repeat([]byte("fuzz-round-trip-0123456789"), 20))
	f.Fuzz(func(t *testing.T, data []byte) {
		g := &fuzzGen{b: data}
		it := g.item()
		if err := it.validate(nil, true); err != nil {
			t.Fatalf("generator made an invalid item: %v\n%+v", err, it)
		}
		b, err := EncodeItem(it)
		if err != nil {
			t.Fatalf("EncodeItem: %v", err)
		}
		if want := referenceEncodeItem(it); !bytes.Equal(b, want) {
			t.Fatalf("item %+v:\n got  %x\n want %x", it, b, want)
		}
		if fastDecodeItem(b, true) == nil || fastDecodeItem(b, false) == nil {
			t.Fatalf("the fast path declines a well-formed item record %x", b)
		}
		for _, dec := range []func([]byte) (*Item, error){DecodeItem, DecodeStoredItem} {
			got, err := dec(b)
			if err != nil {
				t.Fatalf("decoding an encoded valid item: %v\n%x", err, b)
			}
			if !reflect.DeepEqual(got, it) {
				t.Fatalf("item round trip:\n got  %+v\n want %+v", got, it)
			}
		}
		var r MetadataReader
		requireReaderAgrees(t, &r, b)
		if g.storedShape(it) {
			if visible, ok := r.readStored(b); !ok || !visible {
				t.Fatalf("the one-pass reader declines a stored record of its shape: %x", b)
			}
		}

		d := g.delta(it)
		if err := d.Validate(); err != nil {
			t.Fatalf("generator made an invalid delta: %v\n%+v", err, d)
		}
		db, err := EncodeDelta(d)
		if err != nil {
			t.Fatalf("EncodeDelta: %v", err)
		}
		if want := referenceEncodeDelta(d); !bytes.Equal(db, want) {
			t.Fatalf("delta %+v:\n got  %x\n want %x", d, db, want)
		}
		if fastDecodeDelta(db) == nil {
			t.Fatalf("the fast path declines a well-formed delta record %x", db)
		}
		requireEncodeJoined(t, d, db)
		got, err := DecodeDelta(db)
		if err != nil {
			t.Fatalf("DecodeDelta of an encoded valid delta: %v\n%x", err, db)
		}
		if !reflect.DeepEqual(got, d) {
			t.Fatalf("delta round trip:\n got  %+v\n want %+v", got, d)
		}
		j, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("MarshalJSON: %v", err)
		}
		var viaJSON Delta
		if err := viaJSON.UnmarshalJSON(j); err != nil {
			t.Fatalf("UnmarshalJSON of a valid delta's JSON form: %v\n%s", err, j)
		}
		if !reflect.DeepEqual(&viaJSON, d) {
			t.Fatalf("JSON round trip:\n got  %+v\n want %+v", viaJSON, *d)
		}

		// Edits of the two records.
		for _, rec := range [][]byte{b, db} {
			for range 4 {
				c := g.edit(rec)
				if c == nil {
					break
				}
				requireSameDecoding(t, c)
				requireStoredAgrees(t, c)
				requireReaderAgrees(t, &r, c)
			}
		}
	})
}

// fuzzGen draws values from a fuzzer's bytes; once they run out it draws
// zeros.
type fuzzGen struct {
	b []byte
}

func (g *fuzzGen) byte() byte {
	if len(g.b) == 0 {
		return 0
	}
	c := g.b[0]
	g.b = g.b[1:]
	return c
}

// intn returns a number in [0, n).
func (g *fuzzGen) intn(n int) int {
	if n <= 256 {
		return int(g.byte()) % n
	}
	return int(uint(g.byte())<<8|uint(g.byte())) % n
}

// uint returns a number whose CBOR head is of any width.
func (g *fuzzGen) uint() uint64 {
	var buf [8]byte
	switch g.byte() % 5 {
	case 0:
		return uint64(g.byte() % 24)
	case 1:
		return uint64(g.byte())
	case 2:
		buf[6], buf[7] = g.byte(), g.byte()
	case 3:
		for i := 4; i < 8; i++ {
			buf[i] = g.byte()
		}
	default:
		for i := range buf {
			buf[i] = g.byte()
		}
	}
	return binary.BigEndian.Uint64(buf[:])
}

func (g *fuzzGen) counter() uint64 { return max(g.uint(), 1) }

// ts returns a valid timestamp.
func (g *fuzzGen) ts() Timestamp {
	t := Timestamp(g.uint())
	if t.Wall() > MaxWallMillis {
		t = Timestamp(uint64(t) % (uint64(MaxWallMillis+1) << logicalBits))
	}
	return max(t, 1)
}

const idAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:-"

// id returns a valid replica ID, item id or collection name of at most
// maxLen bytes.
func (g *fuzzGen) id(maxLen int) string {
	n := 1 + g.intn(maxLen)
	if g.byte()%2 == 0 {
		n = 1 + n%4
	}
	var sb strings.Builder
	for range n {
		sb.WriteByte(idAlphabet[g.intn(len(idAlphabet))])
	}
	return sb.String()
}

var fuzzNames = []string{"size", "status", "a", "é", "\u2028", "with space", strings.Repeat("n", 23),
	strings.Repeat("n", 24), strings.Repeat("m", MaxFieldNameLen), "\U0001d11e"}

func (g *fuzzGen) fieldName() string {
	if c := g.byte(); c < 128 {
		return fuzzNames[int(c)%len(fuzzNames)]
	}
	n := 1 + g.intn(40)
	var sb strings.Builder
	for range n {
		c := g.byte()
		if c < 0x20 || c >= 0x7f {
			c = 'x'
		}
		sb.WriteByte(c)
	}
	return sb.String()
}

var fuzzValues = []string{`1`, `-0`, `1E+2`, `"x"`, `null`, `true`, `false`, `[]`, `{}`, `{"a":{"b":[1,2]},"c":"d"}`,
	`"a\"b\\c\u0001\n"`, `"\u2028"`, `"é€𝄞"`, `"R&D <x>"`, `[1,"a",{"k":"v"}]`}

// value returns a canonical JSON value, sometimes a long one.
func (g *fuzzGen) value() json.RawMessage {
	if c := g.byte(); c < 200 {
		return json.RawMessage(fuzzValues[int(c)%len(fuzzValues)])
	}
	n := g.intn(600)
	return json.RawMessage(`"` + strings.Repeat("v", n) + `"`)
}

// item returns a valid item.
func (g *fuzzGen) item() *Item {
	reps := make([]ReplicaID, 1+g.intn(30))
	for i := range reps {
		reps[i] = ReplicaID(g.id(MaxReplicaIDLen))
	}
	dot := func() Dot { return Dot{reps[g.intn(len(reps))], g.counter()} }
	it := &Item{}
	for range g.intn(6) {
		it.Presence = append(it.Presence, dot())
	}
	it.Presence = sortDots(it.Presence)
	for range g.intn(6) {
		f := g.fieldName()
		if ValidateFieldName(f) != nil {
			continue
		}
		var es []Entry
		for range 1 + g.intn(4) {
			es = append(es, Entry{Dot: dot(), TS: g.ts(), Value: g.value()})
		}
		slices.SortFunc(es, func(a, b Entry) int { return compareDots(a.Dot, b.Dot) })
		es = slices.CompactFunc(es, func(a, b Entry) bool { return a.Dot == b.Dot })
		if it.Fields == nil {
			it.Fields = map[string][]Entry{}
		}
		it.Fields[f] = es
	}
	return it
}

// storedShape reports whether it's record has the shape readStored is
// documented to take: a visible item, a table of at most 8 replicas,
// values shorter than 256 bytes, fewer than 24 entries per field.
func (g *fuzzGen) storedShape(it *Item) bool {
	if !it.Visible() {
		return false
	}
	reps := map[ReplicaID]bool{}
	for _, d := range it.Dots() {
		reps[d.Replica] = true
	}
	if len(reps) > 8 {
		return false
	}
	for _, es := range it.Fields {
		if len(es) >= 24 {
			return false
		}
		for _, e := range es {
			if len(e.Value) >= 256 {
				return false
			}
		}
	}
	return true
}

// delta returns a valid delta about an item whose state it is: the delta
// covers every dot of it plus its own, and some entries carry its own dot
// and timestamp (which the encoding omits) or its own dot with another
// timestamp.
func (g *fuzzGen) delta(it *Item) *Delta {
	d := &Delta{TS: g.ts(), Op: Op(1 + g.intn(4)), Collection: g.id(MaxCollectionLen), ID: g.id(MaxIDLen)}
	if ds := it.Dots(); len(ds) > 0 && g.byte()%2 == 0 {
		d.Dot = ds[g.intn(len(ds))]
	} else {
		d.Dot = Dot{ReplicaID(g.id(MaxReplicaIDLen)), g.counter()}
	}
	// A delta is its replica's latest operation among the dots it names.
	for _, x := range it.Dots() {
		if x.Replica == d.Dot.Replica && x.Counter > d.Dot.Counter {
			d.Dot = x
		}
	}
	d.Item = *it.Clone()
	if d.Item.Fields == nil && g.byte()%2 == 0 {
		d.Item.Fields = map[string][]Entry{"own": {{Dot: d.Dot, TS: d.TS, Value: json.RawMessage(`1`)}}}
	}
	names := make([]string, 0, len(d.Item.Fields))
	for f := range d.Item.Fields {
		names = append(names, f)
	}
	slices.Sort(names)
	for _, f := range names {
		es := d.Item.Fields[f]
		if g.byte()%2 == 0 && !slices.ContainsFunc(es, func(e Entry) bool { return e.Dot == d.Dot }) {
			es = append(es, Entry{Dot: d.Dot, Value: g.value()})
		}
		for i := range es {
			if es[i].Dot == d.Dot {
				es[i].Dot, es[i].TS = d.Dot, d.TS
				if g.byte()%4 == 0 {
					es[i].TS = g.ts()
				}
			}
		}
		slices.SortFunc(es, func(a, b Entry) int { return compareDots(a.Dot, b.Dot) })
		d.Item.Fields[f] = es
	}
	if d.Op == OpAdd && !slices.Contains(d.Item.Presence, d.Dot) {
		d.Item.Presence = sortDots(append(d.Item.Presence, d.Dot))
	}
	d.Context = append(d.Item.Dots(), d.Dot)
	for range g.intn(3) {
		if x := (Dot{ReplicaID(g.id(MaxReplicaIDLen)), g.counter()}); x.Replica != d.Dot.Replica || x.Counter < d.Dot.Counter {
			d.Context = append(d.Context, x)
		}
	}
	d.Context = sortDots(d.Context)
	return d
}

// edit returns a copy of rec with a few bytes changed, inserted or
// removed, or nil once the fuzzer's bytes are used up.
func (g *fuzzGen) edit(rec []byte) []byte {
	if len(g.b) < 3 || len(rec) == 0 {
		return nil
	}
	c := bytes.Clone(rec)
	for range 1 + g.intn(3) {
		i := g.intn(len(c))
		switch v := g.byte(); g.byte() % 4 {
		case 0:
			c[i] = v
		case 1:
			c[i] ^= 1 << (v % 8)
		case 2:
			c = slices.Insert(c, i, v)
		default:
			c = slices.Delete(c, i, i+1)
		}
		if len(c) == 0 {
			return c
		}
	}
	return c
}
