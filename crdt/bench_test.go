package crdt

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// benchDoc is a realistic ~150-byte metadata document.
func benchDoc(tb testing.TB) Document {
	tb.Helper()
	base := `{"size":1024,"created":"2023-01-01T00:00:00Z","cluster":"cluster-a","status":"completed","owner":"team-storage","region":"eu-west-1"`
	raw := base + `,"note":"` + strings.Repeat("x", 150-len(base)-len(`,"note":""}`)) + `"}`
	d, err := ParseDocument([]byte(raw))
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// concurrentItem returns an item that n replicas added and then each wrote
// every field of concurrently, with the context that holds its dots, and
// a second copy in which every other replica has since overwritten its
// writes with a newer one.
func concurrentItem(n int) (a *Item, actx *Context, b *Item, bctx *Context) {
	a, b = &Item{Fields: map[string][]Entry{}}, &Item{Fields: map[string][]Entry{}}
	actx, bctx = NewContext(), NewContext()
	fields := []string{"size", "status", "cluster", "owner", "region"}
	ids := make([]ReplicaID, n)
	for i := range ids {
		ids[i] = ReplicaID(fmt.Sprintf("r%04d", i))
	}
	for i, r := range ids {
		ts := MakeTimestamp(t0+int64(i), 0)
		a.Presence = append(a.Presence, Dot{r, 1})
		b.Presence = append(b.Presence, Dot{r, 1})
		for _, f := range fields {
			v := []byte(strconv.Quote(f + "-" + string(r)))
			a.Fields[f] = append(a.Fields[f], Entry{Dot{r, 1}, ts, v})
			if i%2 == 1 {
				b.Fields[f] = append(b.Fields[f], Entry{Dot{r, 2}, ts + 1, v})
			} else {
				b.Fields[f] = append(b.Fields[f], Entry{Dot{r, 1}, ts, v})
			}
		}
		actx.Add(Dot{r, 1})
		bctx.Add(Dot{r, 1})
		if i%2 == 1 {
			bctx.Add(Dot{r, 2})
		}
	}
	return a, actx, b, bctx
}

func BenchmarkJoinItem(b *testing.B) {
	for _, n := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			x, xctx, y, yctx := concurrentItem(n)
			b.ReportAllocs()
			for b.Loop() {
				JoinItem(x, xctx, y, yctx)
			}
		})
	}
}

// BenchmarkStateApply joins remote PUT deltas into a state of n items:
// the per-delta cost of the receiving side of gossip.
func BenchmarkStateApply(b *testing.B) {
	for _, n := range []int{1_000, 10_000} {
		b.Run(fmt.Sprintf("items=%d", n), func(b *testing.B) {
			local, remote := newReplica("local"), newReplica("remote")
			d0 := benchDoc(b)
			keys := make([]Key, n)
			for i := range keys {
				keys[i] = Key{"snapshots", fmt.Sprintf("snap%06d", i)}
				mustApply(b, local, remote.do(b, keys[i], t0, addOp(keys[i], d0)))
			}
			put := doc("size", "2048", "status", `"completed"`, "cluster", `"cluster-b"`)
			const batch = 1024
			deltas := make([]*Delta, 0, batch)
			next := 0
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%batch == 0 {
					b.StopTimer()
					deltas = deltas[:0]
					for range batch {
						k := keys[next%n]
						next++
						deltas = append(deltas, remote.do(b, k, t0+int64(next), replaceOp(k, put)))
					}
					b.StartTimer()
				}
				if !local.st.Apply(deltas[i%batch]) {
					b.Fatal("a new delta changed nothing")
				}
			}
			b.StopTimer()
			if len(local.st.Items) != n {
				b.Fatalf("state has %d items, want %d", len(local.st.Items), n)
			}
		})
	}
}

func benchAddDelta(b *testing.B) *Delta {
	b.Helper()
	d, err := AddDelta(snap1, nil, benchDoc(b), Dot{"a1b2c3d4e5f60718", 1_000_000}, MakeTimestamp(t0, 0))
	if err != nil {
		b.Fatal(err)
	}
	return d
}

func BenchmarkEncodeDelta(b *testing.B) {
	d := benchAddDelta(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := EncodeDelta(d); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeDelta(b *testing.B) {
	enc := mustEncodeDelta(b, benchAddDelta(b))
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeDelta(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAddDelta(b *testing.B) {
	d0 := benchDoc(b)
	x, _, _, _ := concurrentItem(10)
	for _, tc := range []struct {
		name string
		cur  *Item
	}{
		{"new", nil},
		{"over-10-concurrent", x},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ts := MakeTimestamp(t0, 0)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := AddDelta(snap1, tc.cur, d0, Dot{"a1b2c3d4e5f60718", 7}, ts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchItemRecord returns the stored record of an item added with the
// ~150-byte document.
func benchItemRecord(b *testing.B) []byte {
	b.Helper()
	d := benchAddDelta(b)
	return mustEncodeItem(b, JoinItem(nil, NewContext(), &d.Item, d.Covers()))
}

func BenchmarkEncodeItem(b *testing.B) {
	d := benchAddDelta(b)
	it := JoinItem(nil, NewContext(), &d.Item, d.Covers())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := EncodeItem(it); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeItem: DecodeItem checks every value's JSON;
// DecodeStoredItem does not; MetadataReader resolves the record without
// building an Item, as a query's scan does.
func BenchmarkDecodeItem(b *testing.B) {
	enc := benchItemRecord(b)
	for _, bc := range []struct {
		name   string
		decode func([]byte) error
	}{
		{"DecodeItem", func(b []byte) error { _, err := DecodeItem(b); return err }},
		{"DecodeStoredItem", func(b []byte) error { _, err := DecodeStoredItem(b); return err }},
		{"MetadataReader", func() func([]byte) error {
			var r MetadataReader
			return func(b []byte) error { _, _, err := r.Read(b); return err }
		}()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(enc)))
			b.ReportAllocs()
			for b.Loop() {
				if err := bc.decode(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncodeJoined encodes the item that an add delta brings, as
// node's join does: from the delta's encoding, and for comparison with
// EncodeItem.
func BenchmarkEncodeJoined(b *testing.B) {
	d := benchAddDelta(b)
	enc, err := EncodeDelta(d)
	if err != nil {
		b.Fatal(err)
	}
	post := d.JoinInto(nil, NewContext())
	b.Run("from-delta", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := EncodeJoined(d, enc, post); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("EncodeItem", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := EncodeItem(post); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkEncodeContext encodes the context of three replicas with a few
// out-of-order dots, as the commit goroutine does twice per commit; the
// reference is the generic CBOR encoder it replaced.
func BenchmarkEncodeContext(b *testing.B) {
	c := NewContext()
	for _, r := range []ReplicaID{"12D3KooWAbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcd.k3x7q2ab", "node2", "node3"} {
		for k := uint64(1); k <= 1000; k++ {
			c.Add(Dot{r, k})
		}
		c.Add(Dot{r, 1005})
	}
	b.Run("hand-written", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := EncodeContext(c); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reference", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			referenceEncodeContext(c)
		}
	})
}
