package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node/query"
	ds "github.com/ipfs/go-datastore"
)

// indexedConfig is testConfig with indexes on snapshots' size, cluster,
// created and flag.
func indexedConfig() Config {
	cfg := testConfig(nil)
	cfg.Indexes = map[string][]string{"snapshots": {"size", "cluster", "created", "flag"}}
	return cfg
}

// scanQuery is n.Query with every index ignored: the scan's answer.
func scanQuery(tb testing.TB, n *Node, coll, q string, limit int, cursor string) Page {
	tb.Helper()
	parsed, err := query.Parse(q)
	if err != nil {
		tb.Fatalf("scan %q: %v", q, err)
	}
	p, err := n.scanPage(context.Background(), coll, parsed, limit, cursor)
	if err != nil {
		tb.Fatalf("scan %q: %v", q, err)
	}
	if !p.Scanned {
		tb.Fatalf("scan %q: not scanned", q)
	}
	return p
}

// sameAsScan checks that every page of q, with page size limit, is the
// page a scan returns, and returns whether the first page read an index.
func sameAsScan(tb testing.TB, n *Node, q string, limit int) bool {
	tb.Helper()
	cursor, indexed, matches := "", false, 0
	for pages := 0; ; pages++ {
		got, err := n.Query(context.Background(), "snapshots", q, limit, cursor)
		if err != nil {
			tb.Fatalf("query %q: %v", q, err)
		}
		if pages == 0 {
			indexed = !got.Scanned
		}
		want := scanQuery(tb, n, "snapshots", q, limit, cursor)
		gj, _ := json.Marshal(got.Items)
		wj, _ := json.Marshal(want.Items)
		if !bytes.Equal(gj, wj) || got.NextCursor != want.NextCursor {
			tb.Fatalf("query %q limit %d cursor %q:\nindex %s next %q\nscan  %s next %q", q, limit, cursor, gj, got.NextCursor, wj, want.NextCursor)
		}
		matches += len(want.Items)
		if got.NextCursor == "" {
			if c, _, err := n.Count(context.Background(), "snapshots", q); err != nil || c != matches {
				tb.Fatalf("Count(%q) = %d, %v; a scan finds %d", q, c, err, matches)
			}
			return indexed
		}
		if pages > 1000 {
			tb.Fatalf("query %q: too many pages", q)
		}
		cursor = got.NextCursor
	}
}

// checkIndexes fails unless every index of n is ready, marked built, and
// holds exactly the entries its collection's items call for.
func checkIndexes(tb testing.TB, n *Node) {
	tb.Helper()
	ctx := context.Background()
	for _, st := range n.Indexes() {
		coll, f := st.Collection, st.Field
		{
			if b, err := get(ctx, n.store, indexMarker(coll, f)); err != nil || len(b) != 1 || st.State != IndexReady {
				tb.Fatalf("index %s.%s: %s, marker %v, %v", coll, f, st.State, b, err)
			}
			want, got := map[string]string{}, map[string]string{}
			err := scan(ctx, n.store, collectionPrefix(coll), "", func(key string, val []byte) (bool, error) {
				k, _ := parseItemKey(key)
				it, err := crdt.DecodeStoredItem(val)
				if err != nil {
					return false, err
				}
				if e := indexEntry(coll, f, k.ID, it); e != "" {
					want[e] = k.ID
				}
				return true, nil
			})
			if err == nil {
				err = scan(ctx, n.store, indexPrefix(coll, f), "", func(key string, val []byte) (bool, error) {
					got[key] = string(val)
					return true, nil
				})
			}
			if err != nil {
				tb.Fatal(err)
			}
			if !maps.Equal(want, got) {
				var missing, extra []string
				for k := range want {
					if _, ok := got[k]; !ok {
						missing = append(missing, k)
					}
				}
				for k := range got {
					if _, ok := want[k]; !ok {
						extra = append(extra, k)
					}
				}
				tb.Fatalf("index %s.%s: %d entries, items call for %d\nmissing %q\nextra %q", coll, f, len(got), len(want), missing, extra)
			}
		}
	}
}

// indexValues are field values for the random tests: numbers in several
// spellings, times in several offsets, strings that look like numbers or
// times, long strings that share a cut prefix, and other JSON.
var indexValues = []string{
	`0`, `-0`, `1`, `1.0`, `1e0`, `2`, `10`, `-1`, `-1.5`, `100`, `1e2`, `0.001`, `-1e-3`,
	`123456789012345678901234567890`, `1e40`, `-1e40`,
	`"` + strings.Repeat("9", 140) + `"`, strings.Repeat("7", 150), "-" + strings.Repeat("7", 150),
	`"2023-12-07T10:30:45Z"`, `"2023-12-07T11:30:45+01:00"`, `"2023-12-07T10:30:45.5Z"`, `"2024-01-01T00:00:00Z"`, `"1999-01-01T00:00:00Z"`,
	`"cluster-a"`, `"cluster-b"`, `"1"`, `"10"`, `"100"`, `""`, `"a\u0000b"`, `"true"`, `"2023-12-07"`,
	`"` + strings.Repeat("x", 130) + `a"`, `"` + strings.Repeat("x", 130) + `b"`, `"` + strings.Repeat("x", 128) + `"`,
	`true`, `false`, `null`, `{"a":1}`, `[1,2]`,
}

// indexQueryValues are the values the random queries compare with.
var indexQueryValues = []string{
	"0", "1", "1.0", "2", "10", "100", "-1", "-1.5", "1e2", "1e40", "123456789012345678901234567890",
	"2023-12-07T10:30:45Z", "2023-12-07T11:30:45+01:00", "2023-12-07T10:30:45.5Z", "2000-01-01T00:00:00Z",
	"cluster-a", "cluster", "true", "null", `{"a":1}`, `""`, "2023-12-07",
	strings.Repeat("7", 150), strings.Repeat("x", 130) + "a", strings.Repeat("x", 128), strings.Repeat("x", 129),
}

func randomDoc(r *rand.Rand) string {
	var b strings.Builder
	b.WriteByte('{')
	first := true
	for _, f := range []string{"size", "cluster", "created", "flag", "other"} {
		if r.IntN(4) == 0 {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		fmt.Fprintf(&b, "%q:%s", f, indexValues[r.IntN(len(indexValues))])
	}
	b.WriteByte('}')
	return b.String()
}

func randomQuery(r *rand.Rand) string {
	ops := []string{"=", "=", "<", "<=", ">", ">=", "!=", "~"}
	fields := []string{"size", "cluster", "created", "flag", "other"}
	var terms []string
	for range 1 + r.IntN(3) {
		v := indexQueryValues[r.IntN(len(indexQueryValues))]
		if strings.ContainsAny(v, " \"") {
			v = `"` + strings.ReplaceAll(v, `"`, `\"`) + `"`
		}
		switch r.IntN(10) {
		case 0:
			terms = append(terms, fmt.Sprintf("id>=s%d", r.IntN(30)))
		case 1:
			terms = append(terms, fmt.Sprintf("id<=s%d", r.IntN(30)))
		default:
			terms = append(terms, fields[r.IntN(len(fields))]+ops[r.IntN(len(ops))]+v)
		}
	}
	return strings.Join(terms, " ")
}

// After random adds, patches, removes, remote deltas and a full-state
// import, every query answers through its index exactly as a scan does,
// page by page, and every index holds exactly its items' entries.
func TestIndex_AnswersEqualScan(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 7))
	ctx := context.Background()
	dir := t.TempDir()
	a := openDir(t, dir, indexedConfig())
	b := openMem(t, testConfig(nil))
	id := func() crdt.Key { return key("snapshots", fmt.Sprintf("s%d", r.IntN(40))) }
	step := func(n *Node) {
		k := id()
		var err error
		switch r.IntN(6) {
		case 0, 1:
			_, err = n.Add(ctx, k, mustDoc(t, randomDoc(r)))
		case 2, 3:
			_, err = n.Patch(ctx, k, mustDoc(t, randomDoc(r)))
		case 4:
			_, err = n.Patch(ctx, k, mustDoc(t, `{"size":null,"created":null}`))
		default:
			err = n.Remove(ctx, k)
		}
		if err != nil && !strings.Contains(err.Error(), "not found") {
			t.Fatal(err)
		}
	}
	queries := func(rounds int) {
		indexed := 0
		for range rounds {
			if sameAsScan(t, a, randomQuery(r), 1+r.IntN(5)) {
				indexed++
			}
		}
		if indexed == 0 {
			t.Fatal("no query read an index")
		}
		checkIndexes(t, a)
	}
	for range 150 {
		step(a)
		step(b)
	}
	queries(150)
	exchange(t, b, a) // remote deltas
	queries(150)
	for range 100 {
		step(b)
	}
	var state bytes.Buffer
	if err := b.ExportState(ctx, &state); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ImportState(ctx, &state); err != nil {
		t.Fatal(err)
	}
	queries(150)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a = openDir(t, dir, indexedConfig())
	defer a.Close()
	checkIndexes(t, a)
	queries(100)
}

// An index declared on a store that holds items is built at Open; one no
// longer declared is dropped; a build cut short is redone.
func TestIndex_BuiltAtOpenDroppedWhenUndeclared(t *testing.T) {
	defer func(c int) { indexChunk = c }(indexChunk)
	indexChunk = 7 // builds and drops take several batches
	dir := t.TempDir()
	n := openDir(t, dir, testConfig(nil))
	for i := range 50 {
		mustAdd(t, n, fmt.Sprintf("s%02d", i), fmt.Sprintf(`{"size":%d,"cluster":"c%d"}`, i, i%5))
	}
	if err := n.Remove(context.Background(), key("snapshots", "s07")); err != nil {
		t.Fatal(err)
	}
	n.Close()

	n = openDir(t, dir, indexedConfig())
	checkIndexes(t, n)
	if !sameAsScan(t, n, "cluster=c2", 3) || !sameAsScan(t, n, "size>=10 size<20", 4) {
		t.Fatal("queries on indexed fields scanned")
	}
	// A build cut short: entries without a marker, one of them stale.
	if err := n.store.Delete(context.Background(), indexMarker("snapshots", "size")); err != nil {
		t.Fatal(err)
	}
	if err := n.store.Put(context.Background(), indexEntryKey(t, "size", "zz", `5`), []byte("zz")); err != nil {
		t.Fatal(err)
	}
	n.Close()
	n = openDir(t, dir, indexedConfig())
	checkIndexes(t, n)
	n.Close()

	cfg := testConfig(nil)
	cfg.Indexes = map[string][]string{"snapshots": {"cluster"}}
	n = openDir(t, dir, cfg)
	defer n.Close()
	waitIndexes(t, n) // the undeclared ones are dropped in the background
	checkIndexes(t, n)
	for _, f := range []string{"size", "created"} {
		var left int
		_ = scan(context.Background(), n.store, indexPrefix("snapshots", f), "", func(string, []byte) (bool, error) {
			left++
			return true, nil
		})
		if b, _ := get(context.Background(), n.store, indexMarker("snapshots", f)); left != 0 || b != nil {
			t.Fatalf("index on %s not declared: %d entries, marker %v", f, left, b)
		}
	}
	if sameAsScan(t, n, "size=3", 2) {
		t.Fatal("a dropped index answered")
	}
}

// waitIndexes waits until every index of n is ready and no dropped one
// is left, for at most 30 s.
func waitIndexes(tb testing.TB, n *Node) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		settled := true
		var last []IndexStatus
		for _, st := range n.Indexes() {
			last = append(last, st)
			if st.State == IndexFailed {
				tb.Fatalf("index %s.%s failed: %s", st.Collection, st.Field, st.Error)
			}
			settled = settled && st.State == IndexReady
		}
		if settled {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("indexes not settled after 30 s: %+v", last)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func indexEntryKey(tb testing.TB, field, id, value string) ds.Key {
	tb.Helper()
	it := &crdt.Item{Presence: []crdt.Dot{{Replica: "r", Counter: 1}}, Fields: map[string][]crdt.Entry{field: {{Value: json.RawMessage(value)}}}}
	return ds.RawKey(indexEntry("snapshots", field, id, it))
}

// The page says whether it scanned and how many items it read: an
// equality that matches nothing reads none.
func TestIndex_PageReportsScanAndReads(t *testing.T) {
	n := openMem(t, indexedConfig())
	for i := range 100 {
		mustAdd(t, n, fmt.Sprintf("s%03d", i), fmt.Sprintf(`{"size":%d,"cluster":"c%d","other":%d}`, i, i%10, i))
	}
	ctx := context.Background()
	for _, tc := range []struct {
		q       string
		scanned bool
		read    int
		items   int
	}{
		{"cluster=none", false, 0, 0},
		{"cluster=c3", false, 10, 10},
		{"cluster=c3 size>=50", false, 10, 5},         // cluster=c3 has 10 entries, size>=50 50
		{"size>=95 cluster~c", false, 5, 5},           // the range has 5 entries
		{"other=3", true, 100, 1},                     // not indexed
		{"cluster!=c3", true, 100, 90},                // != is never indexed
		{"size=5 other=5", false, 1, 1},               // one indexed term is enough
		{"cluster=c1 cluster=c2", false, 10, 0},       // fewest wins; equal counts, first
		{"size<10", false, 11, 10},                    // a range alone reads its bounds inclusive
		{"id>=s050 id<s150 cluster=c5", false, 10, 5}, // the id bounds narrow the read to the prefix "s"
	} {
		p, err := n.Query(ctx, "snapshots", tc.q, MaxQueryLimit, "")
		if err != nil {
			t.Fatal(err)
		}
		if p.Scanned != tc.scanned || p.Read != tc.read || len(p.Items) != tc.items {
			t.Errorf("%q: scanned %v read %d items %d; want %v %d %d", tc.q, p.Scanned, p.Read, len(p.Items), tc.scanned, tc.read, tc.items)
		}
		sameAsScan(t, n, tc.q, 3)
	}
}

func TestIndex_ConfigRejectsBadIndexes(t *testing.T) {
	for _, idx := range []map[string][]string{
		{"nope": {"size"}},
		{"snapshots": {"size", "size"}},
		{"snapshots": {"id"}},
		{"snapshots": {"a b"}},
		{"snapshots": {""}},
	} {
		cfg := testConfig(nil)
		cfg.Indexes = idx
		if err := cfg.validate(); err == nil {
			t.Errorf("Indexes %v accepted", idx)
		}
	}
}

// Damage that took index entries but left their items (another table)
// is repaired: Repair drops the markers, and Open rebuilds every index.
func TestIndex_RebuiltAfterRepair(t *testing.T) {
	dir := t.TempDir()
	n := openDir(t, dir, indexedConfig())
	for i := range 30 {
		mustAdd(t, n, fmt.Sprintf("s%02d", i), fmt.Sprintf(`{"size":%d,"cluster":"c%d"}`, i, i%3))
	}
	var lost []ds.Key
	_ = scan(context.Background(), n.store, indexPrefix("snapshots", "cluster"), "", func(key string, _ []byte) (bool, error) {
		lost = append(lost, ds.RawKey(key))
		return len(lost) < 5, nil
	})
	for _, k := range lost {
		if err := n.store.Delete(context.Background(), k); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	repairDir(t, dir)
	n = openDir(t, dir, indexedConfig())
	defer n.Close()
	checkIndexes(t, n)
	sameAsScan(t, n, "cluster=c0", 4)
}
