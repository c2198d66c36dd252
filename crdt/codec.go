package crdt

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

// FormatVersion is the version of the binary encodings below. Decoders
// reject any other version with ErrVersion.
const FormatVersion = 1

// The binary encodings are CBOR (RFC 8949) in its deterministic core form,
// so equal values encode to equal bytes. Dots are written as pairs of
// (index into a per-record table of replica IDs, counter), and the entries a
// delta's own operation wrote omit their dot and timestamp, which keeps an
// encoded add close to the size of its metadata.

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
	// ctxDecMode decodes contexts, whose maps may name up to
	// MaxContextReplicas replicas; the decoder checks that the input is
	// well formed, so holds every pair it announces, before it allocates.
	ctxDecMode cbor.DecMode
)

func init() {
	var err error
	if encMode, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic(err)
	}
	if decMode, err = (cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		MaxNestedLevels:   8,
		MaxArrayElements:  2 * MaxDeltaDots * 4,
		MaxMapPairs:       1 << 20,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}).DecMode(); err != nil {
		panic(err)
	}
	if ctxDecMode, err = (cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		MaxNestedLevels:   8,
		MaxArrayElements:  2 * MaxDeltaDots * 4,
		MaxMapPairs:       MaxContextReplicas,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
	}).DecMode(); err != nil {
		panic(err)
	}
}

type wireEntry struct {
	Value []byte   `cbor:"1,keyasint"`
	Dot   []uint64 `cbor:"2,keyasint,omitempty"` // (replica index, counter); absent: the record's own dot
	TS    uint64   `cbor:"3,keyasint,omitempty"` // absent: the record's own timestamp
}

type wireDelta struct {
	_          struct{} `cbor:",toarray"`
	Version    uint
	Replicas   []string // [0] is the delta's own replica
	Counter    uint64
	TS         uint64
	Op         uint8
	Collection string
	ID         string
	Context    []uint64 // pairs
	Presence   []uint64 // pairs
	Fields     map[string][]wireEntry
}

type wireItem struct {
	_        struct{} `cbor:",toarray"`
	Version  uint
	Replicas []string
	Presence []uint64
	Fields   map[string][]wireEntry
}

type wireContext struct {
	_       struct{} `cbor:",toarray"`
	Version uint
	VV      map[string]uint64
	Cloud   map[string][]uint64
}

// decodeTable checks a decoded replica table.
func decodeTable(ids []string) ([]ReplicaID, error) {
	out := make([]ReplicaID, len(ids))
	for i, s := range ids {
		r := ReplicaID(s)
		if err := r.Validate(); err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

func unpairs(table []ReplicaID, ps []uint64) ([]Dot, error) {
	if len(ps)%2 != 0 {
		return nil, fmt.Errorf("%w: odd dot list", ErrInvalid)
	}
	if len(ps) == 0 {
		return nil, nil
	}
	out := make([]Dot, len(ps)/2)
	for i := range out {
		d, err := unpair(table, ps[2*i], ps[2*i+1])
		if err != nil {
			return nil, err
		}
		out[i] = d
	}
	return out, nil
}

func unpair(table []ReplicaID, ri, counter uint64) (Dot, error) {
	if ri >= uint64(len(table)) {
		return Dot{}, fmt.Errorf("%w: replica index %d outside a table of %d", ErrInvalid, ri, len(table))
	}
	return Dot{table[ri], counter}, nil
}

func unfields(table []ReplicaID, ws map[string][]wireEntry, own Dot, ownTS Timestamp) (map[string][]Entry, error) {
	if len(ws) == 0 {
		return nil, nil
	}
	out := make(map[string][]Entry, len(ws))
	for f, es := range ws {
		list := make([]Entry, len(es))
		for i, w := range es {
			e := Entry{Dot: own, TS: ownTS, Value: w.Value}
			if w.Dot != nil {
				if len(w.Dot) != 2 {
					return nil, fmt.Errorf("%w: field %q: malformed dot", ErrInvalid, f)
				}
				d, err := unpair(table, w.Dot[0], w.Dot[1])
				if err != nil {
					return nil, err
				}
				e.Dot = d
			}
			if w.TS != 0 {
				e.TS = Timestamp(w.TS)
			}
			list[i] = e
		}
		out[f] = list
	}
	return out, nil
}

// EncodeDelta returns the binary encoding of d. It fails only if d is
// larger than MaxDeltaBytes.
func EncodeDelta(d *Delta) ([]byte, error) {
	b := encodeDeltaRecord(d)
	if len(b) > MaxDeltaBytes {
		return nil, fmt.Errorf("encode delta %s: %w: %d bytes, limit %d", d.Dot, ErrTooLarge, len(b), MaxDeltaBytes)
	}
	return b, nil
}

// DecodeDelta decodes and validates a delta. It returns an error wrapping
// ErrInvalid, ErrTooLarge or ErrVersion on any bad input, and never panics.
func DecodeDelta(b []byte) (*Delta, error) {
	if len(b) > MaxDeltaBytes {
		return nil, fmt.Errorf("decode delta: %w: %d bytes, limit %d", ErrTooLarge, len(b), MaxDeltaBytes)
	}
	if v, ok := peekVersion(b); ok && v != FormatVersion {
		return nil, fmt.Errorf("decode delta: %w %d", ErrVersion, v)
	}
	if d := fastDecodeDelta(b); d != nil {
		if err := d.Validate(); err != nil {
			return nil, fmt.Errorf("decode delta: %w", err)
		}
		return d, nil
	}
	return decodeDeltaGeneric(b)
}

// decodeDeltaGeneric is DecodeDelta through the generic CBOR decoder, after
// the checks of size and version.
func decodeDeltaGeneric(b []byte) (*Delta, error) {
	var w wireDelta
	if err := decMode.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("decode delta: %w: %v", ErrInvalid, err)
	}
	if w.Version != FormatVersion {
		return nil, fmt.Errorf("decode delta: %w %d", ErrVersion, w.Version)
	}
	table, err := decodeTable(w.Replicas)
	if err != nil {
		return nil, fmt.Errorf("decode delta: %w", err)
	}
	if len(table) == 0 {
		return nil, fmt.Errorf("decode delta: %w: empty replica table", ErrInvalid)
	}
	d := &Delta{Dot: Dot{table[0], w.Counter}, TS: Timestamp(w.TS), Op: Op(w.Op), Collection: w.Collection, ID: w.ID}
	if d.Context, err = unpairs(table, w.Context); err != nil {
		return nil, fmt.Errorf("decode delta: %w", err)
	}
	if d.Item.Presence, err = unpairs(table, w.Presence); err != nil {
		return nil, fmt.Errorf("decode delta: %w", err)
	}
	if d.Item.Fields, err = unfields(table, w.Fields, d.Dot, d.TS); err != nil {
		return nil, fmt.Errorf("decode delta: %w", err)
	}
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("decode delta: %w", err)
	}
	return d, nil
}

// EncodeItem returns the binary encoding of an item record.
func EncodeItem(it *Item) ([]byte, error) {
	b := encodeItemRecord(it)
	if len(b) > MaxItemBytes {
		return nil, fmt.Errorf("encode item: %w: %d bytes, limit %d", ErrTooLarge, len(b), MaxItemBytes)
	}
	return b, nil
}

// EncodeJoined returns EncodeItem(post) for post, the item that joining
// delta d gave (Delta.JoinInto), where enc is EncodeDelta(d). When post is
// d's own item — the delta brought a new item — the record is written from
// enc's field names and values as they lie, without walking and sorting
// d's fields; an enc that is not d's record is noticed and ignored.
func EncodeJoined(d *Delta, enc []byte, post *Item) ([]byte, error) {
	if post == &d.Item {
		if b := encodeNewItem(d, enc); b != nil {
			if len(b) > MaxItemBytes {
				return nil, fmt.Errorf("encode item: %w: %d bytes, limit %d", ErrTooLarge, len(b), MaxItemBytes)
			}
			return b, nil
		}
	}
	return EncodeItem(post)
}

// DecodeItem decodes and validates an item record.
func DecodeItem(b []byte) (*Item, error) { return decodeItem(b, true) }

// DecodeStoredItem decodes an item record that EncodeItem wrote into this
// process's own store, which validated every value on its way in. It checks
// everything DecodeItem checks — the encoding, the replica table, every dot,
// timestamp and field name — and so rejects garbage with an error wrapping
// ErrInvalid (and an Item it returns is safe for every function of this
// package), except that it does not re-check that each value is canonical
// JSON; it only requires values to be non-empty. Records from anywhere
// else — a peer's state transfer, say — go through DecodeItem.
func DecodeStoredItem(b []byte) (*Item, error) { return decodeItem(b, false) }

// decodeItem decodes an item record, checking its values' JSON if values
// is set.
func decodeItem(b []byte, values bool) (*Item, error) {
	if len(b) > MaxItemBytes {
		return nil, fmt.Errorf("decode item: %w: %d bytes, limit %d", ErrTooLarge, len(b), MaxItemBytes)
	}
	if v, ok := peekVersion(b); ok && v != FormatVersion {
		return nil, fmt.Errorf("decode item: %w %d", ErrVersion, v)
	}
	if it := fastDecodeItem(b, values); it != nil {
		return it, nil
	}
	return decodeItemGeneric(b, values)
}

// decodeItemGeneric is decodeItem through the generic CBOR decoder, after
// the checks of size and version: the path of every record that is not in
// canonical form or fails a check.
func decodeItemGeneric(b []byte, values bool) (*Item, error) {
	var w wireItem
	if err := decMode.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("decode item: %w: %v", ErrInvalid, err)
	}
	if w.Version != FormatVersion {
		return nil, fmt.Errorf("decode item: %w %d", ErrVersion, w.Version)
	}
	table, err := decodeTable(w.Replicas)
	if err != nil {
		return nil, fmt.Errorf("decode item: %w", err)
	}
	it := &Item{}
	if it.Presence, err = unpairs(table, w.Presence); err != nil {
		return nil, fmt.Errorf("decode item: %w", err)
	}
	if it.Fields, err = unfields(table, w.Fields, Dot{}, 0); err != nil {
		return nil, fmt.Errorf("decode item: %w", err)
	}
	if err := it.validate(nil, values); err != nil {
		return nil, fmt.Errorf("decode item: %w", err)
	}
	return it, nil
}

// EncodeContext returns the binary encoding of a causal context: the
// wireContext that encMode writes, written by hand (the commit goroutine
// encodes two contexts per commit).
func EncodeContext(c *Context) ([]byte, error) {
	vv := make([]ReplicaID, 0, len(c.vv))
	size := 8
	for r, n := range c.vv {
		if n > 0 {
			vv = append(vv, r)
			size += len(r) + 12
		}
	}
	cloud := make([]ReplicaID, 0, len(c.cloud))
	for r, cl := range c.cloud {
		cloud = append(cloud, r)
		size += len(r) + 12 + 9*len(cl)
	}
	sortCBORKeys(vv)
	sortCBORKeys(cloud)
	b := make([]byte, 0, size)
	b = append(b, cborArray|3, cborUint|FormatVersion)
	b = appendHead(b, cborMap, uint64(len(vv)))
	for _, r := range vv {
		b = appendText(b, string(r))
		b = appendHead(b, cborUint, c.vv[r])
	}
	if len(cloud) == 0 {
		b = append(b, cborNull)
	} else {
		b = appendHead(b, cborMap, uint64(len(cloud)))
		var ks []uint64
		for _, r := range cloud {
			ks = ks[:0]
			for k := range c.cloud[r] {
				ks = append(ks, k)
			}
			slices.Sort(ks)
			b = appendText(b, string(r))
			b = appendHead(b, cborArray, uint64(len(ks)))
			for _, k := range ks {
				b = appendHead(b, cborUint, k)
			}
		}
	}
	if len(b) > MaxContextBytes {
		return nil, fmt.Errorf("encode context: %w: %d bytes, limit %d", ErrTooLarge, len(b), MaxContextBytes)
	}
	return b, nil
}

// sortCBORKeys sorts text map keys as deterministic CBOR orders them: by
// their encodings, so shorter first, then bytewise.
func sortCBORKeys(rs []ReplicaID) {
	slices.SortFunc(rs, func(a, b ReplicaID) int {
		if len(a) != len(b) {
			return cmp.Compare(len(a), len(b))
		}
		return strings.Compare(string(a), string(b))
	})
}

// DecodeContext decodes and validates a causal context.
func DecodeContext(b []byte) (*Context, error) {
	if len(b) > MaxContextBytes {
		return nil, fmt.Errorf("decode context: %w: %d bytes, limit %d", ErrTooLarge, len(b), MaxContextBytes)
	}
	var w wireContext
	if v, ok := peekVersion(b); ok && v != FormatVersion {
		return nil, fmt.Errorf("decode context: %w %d", ErrVersion, v)
	}
	if err := ctxDecMode.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("decode context: %w: %v", ErrInvalid, err)
	}
	if w.Version != FormatVersion {
		return nil, fmt.Errorf("decode context: %w %d", ErrVersion, w.Version)
	}
	c := NewContext()
	for s, n := range w.VV {
		r := ReplicaID(s)
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("decode context: %w", err)
		}
		if n == 0 {
			return nil, fmt.Errorf("decode context: %w: zero version for %s", ErrInvalid, r)
		}
		c.vv[r] = n
	}
	for s, ks := range w.Cloud {
		r := ReplicaID(s)
		if err := r.Validate(); err != nil {
			return nil, fmt.Errorf("decode context: %w", err)
		}
		for i, k := range ks {
			// A dot the vector covers or would absorb (k == vv+1, written
			// so that it does not wrap at the top of the range).
			if k <= c.vv[r] || k-c.vv[r] == 1 || (i > 0 && k <= ks[i-1]) {
				return nil, fmt.Errorf("decode context: %w: cloud of %s not canonical at %d", ErrInvalid, r, k)
			}
			c.Add(Dot{r, k})
		}
	}
	return c, nil
}

// DecodeContextMax is DecodeContext for a context from a peer, which may
// name at most maxReplicas replicas: one that names more, or that is not
// in EncodeContext's form (whose heads tell the count without decoding),
// is refused before anything is allocated for it, wrapping ErrTooLarge or
// ErrInvalid.
func DecodeContextMax(b []byte, maxReplicas int) (*Context, error) {
	n, ok := contextReplicas(b, uint64(max(maxReplicas, 0)))
	switch {
	case !ok:
		return nil, fmt.Errorf("decode context: %w: not in canonical form", ErrInvalid)
	case n > uint64(maxReplicas):
		return nil, fmt.Errorf("decode context: %w: names %d replicas or more, limit %d", ErrTooLarge, n, maxReplicas)
	}
	return DecodeContext(b)
}

// contextReplicas counts the replicas an encoded context names (version
// vector and cloud entries) from its CBOR heads, stopping as soon as the
// count passes limit. It allocates nothing; ok is false if b does not
// start as EncodeContext writes.
func contextReplicas(b []byte, limit uint64) (n uint64, ok bool) {
	r := &cborReader{b: b, ok: true}
	if r.head(cborArray) != 3 {
		return 0, false
	}
	r.uint()
	n = r.head(cborMap)
	if !r.ok || n > limit {
		return n, r.ok
	}
	for range n {
		r.str(cborText)
		r.uint()
	}
	if !r.ok {
		return 0, false
	}
	if r.null() {
		return n, true
	}
	c := r.head(cborMap)
	if c > limit {
		return c, r.ok // n + c could wrap
	}
	return n + c, r.ok
}

// peekVersion returns the first element of the CBOR array b, if b starts
// with an array whose first element is an unsigned integer, so that a
// record of another format version is reported as such whatever its shape.
func peekVersion(b []byte) (uint64, bool) {
	if len(b) < 2 || b[0]>>5 != 4 {
		return 0, false
	}
	i := 1
	switch ai := b[0] & 0x1f; {
	case ai < 24 || ai == 31:
	case ai <= 27:
		i += 1 << (ai - 24)
	default:
		return 0, false
	}
	if i >= len(b) || b[i]>>5 != 0 {
		return 0, false
	}
	ai := b[i] & 0x1f
	if ai < 24 {
		return uint64(ai), true
	}
	if ai > 27 {
		return 0, false
	}
	n := 1 << (ai - 24)
	if i+1+n > len(b) {
		return 0, false
	}
	var v uint64
	for _, c := range b[i+1 : i+1+n] {
		v = v<<8 | uint64(c)
	}
	return v, true
}

// AppendEntry appends the encoding of r's entry in c (its version-vector
// entry and its cloud: every dot of r that c holds) to b, and returns b
// unchanged if c holds no dot of r. It is what a store keeps per replica,
// so that a commit rewrites the entries it changed (see Context.Track),
// not whole contexts. The form is a sequence of uvarints: FormatVersion,
// the vector entry, the cloud's size, then each cloud counter in
// ascending order as its distance from the one before (the vector entry
// plus one for the first) minus one. Equal entries encode to equal bytes.
func (c *Context) AppendEntry(b []byte, r ReplicaID) []byte {
	base, cl := c.vv[r], c.cloud[r]
	if base == 0 && len(cl) == 0 {
		return b
	}
	ks := make([]uint64, 0, len(cl))
	for k := range cl {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	b = binary.AppendUvarint(b, FormatVersion)
	b = binary.AppendUvarint(b, base)
	b = binary.AppendUvarint(b, uint64(len(ks)))
	prev := base + 1
	for _, k := range ks {
		b = binary.AppendUvarint(b, k-prev-1)
		prev = k
	}
	return b
}

// SetEntry replaces r's entry in c with the one enc encodes (AppendEntry's
// form). It allocates no more than enc's length warrants, and changes
// nothing if r or enc is invalid: an error wraps ErrVersion for another
// format version, else ErrInvalid.
func (c *Context) SetEntry(r ReplicaID, enc []byte) error {
	if err := r.Validate(); err != nil {
		return fmt.Errorf("decode context entry: %w", err)
	}
	rest := enc
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(rest)
		if n <= 0 || (n > 1 && rest[n-1] == 0) { // cut short, too long, or not in its shortest form
			return 0, false
		}
		rest = rest[n:]
		return v, true
	}
	bad := func(what string) error {
		return fmt.Errorf("decode context entry of %s: %w: %s", r, ErrInvalid, what)
	}
	v, ok := next()
	if !ok {
		return bad("no version")
	}
	if v != FormatVersion {
		return fmt.Errorf("decode context entry of %s: %w %d", r, ErrVersion, v)
	}
	base, ok1 := next()
	size, ok2 := next()
	switch {
	case !ok1 || !ok2:
		return bad("cut short")
	case size > uint64(len(rest)): // each counter takes at least a byte
		return bad(fmt.Sprintf("cloud of %d counters in %d bytes", size, len(rest)))
	case base == 0 && size == 0:
		return bad("empty")
	case base == math.MaxUint64 && size > 0:
		return bad("cloud above the top counter")
	}
	var cl map[uint64]struct{}
	if size > 0 {
		cl = make(map[uint64]struct{}, size)
	}
	prev := base + 1
	for range size {
		gap, ok := next()
		if !ok {
			return bad("cloud cut short")
		}
		if gap >= math.MaxUint64-prev {
			return bad("cloud counter past the top")
		}
		prev += gap + 1
		cl[prev] = struct{}{}
	}
	if len(rest) > 0 {
		return bad(fmt.Sprintf("%d trailing bytes", len(rest)))
	}
	c.touch(r)
	delete(c.cloud, r)
	delete(c.vv, r)
	if base > 0 {
		c.vv[r] = base
	}
	if cl != nil {
		c.cloud[r] = cl
	}
	return nil
}
