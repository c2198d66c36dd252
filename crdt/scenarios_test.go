package crdt

import (
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"testing"
)

// The seed's conflict scenarios, played on two or three replicas that hand
// each other deltas explicitly. Every delta travels through the binary
// codec, as it would between real nodes.

// t0 is 2023-12-07T10:30:45Z, the time of the seed's transcript.
const t0 int64 = 1_701_945_045_000

var snap1 = Key{"snapshots", "snap1"}

// mutator is one delta-mutator with everything but the item's current
// state, the dot and the timestamp bound.
type mutator func(cur *Item, dot Dot, ts Timestamp) (*Delta, error)

func addOp(k Key, d Document) mutator {
	return func(cur *Item, dot Dot, ts Timestamp) (*Delta, error) { return AddDelta(k, cur, d, dot, ts) }
}

func removeOp(k Key) mutator {
	return func(cur *Item, dot Dot, ts Timestamp) (*Delta, error) { return RemoveDelta(k, cur, dot, ts) }
}

func replaceOp(k Key, d Document) mutator {
	return func(cur *Item, dot Dot, ts Timestamp) (*Delta, error) { return ReplaceDelta(k, cur, d, dot, ts) }
}

func patchOp(k Key, d Document) mutator {
	return func(cur *Item, dot Dot, ts Timestamp) (*Delta, error) { return PatchDelta(k, cur, d, dot, ts) }
}

// do performs m on k at physical time now with r's next dot and clock
// reading, joins the delta into r's state and returns it.
func (r *replica) do(tb testing.TB, k Key, now int64, m mutator) *Delta {
	tb.Helper()
	dot, ts := r.tick(now)
	return r.doWith(tb, k, dot, ts, m)
}

// doAt is do with a timestamp chosen by the test instead of r's clock.
func (r *replica) doAt(tb testing.TB, k Key, ts Timestamp, m mutator) *Delta {
	tb.Helper()
	r.n++
	r.clock.Restore(ts)
	return r.doWith(tb, k, Dot{r.id, r.n}, ts, m)
}

func (r *replica) doWith(tb testing.TB, k Key, dot Dot, ts Timestamp, m mutator) *Delta {
	tb.Helper()
	d, err := m(r.st.Items[k], dot, ts)
	if err != nil {
		tb.Fatalf("%s: %v", r.id, err)
	}
	if err := d.Validate(); err != nil {
		tb.Fatalf("%s: mutator made an invalid delta: %v", r.id, err)
	}
	if !r.apply(d, ts.Wall()) {
		tb.Fatalf("%s: local delta %s changed nothing", r.id, d.Dot)
	}
	return d
}

// send delivers deltas to r through the binary codec, in the order given,
// and reports how many of them changed r's state.
func send(tb testing.TB, r *replica, ds ...*Delta) int {
	tb.Helper()
	changed := 0
	for _, d := range ds {
		b, err := EncodeDelta(d)
		if err != nil {
			tb.Fatalf("encode %s: %v", d.Dot, err)
		}
		got, err := DecodeDelta(b)
		if err != nil {
			tb.Fatalf("decode %s: %v", d.Dot, err)
		}
		if r.apply(got, t0) {
			changed++
		}
	}
	return changed
}

// metadata returns the resolved metadata of k on r as compact JSON with
// sorted keys, or "absent" when the item is not visible.
func metadata(tb testing.TB, r *replica, k Key) string {
	tb.Helper()
	it := r.st.Items[k]
	if !it.Visible() {
		return "absent"
	}
	b, err := json.Marshal(it.Metadata())
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// requireConverged fails unless every replica holds the same state as the
// first.
func requireConverged(tb testing.TB, rs ...*replica) {
	tb.Helper()
	for _, r := range rs[1:] {
		if !r.st.Equal(rs[0].st) {
			tb.Fatalf("%s and %s diverged:\n%v\n%v", rs[0].id, r.id, visibleDocs(rs[0].st), visibleDocs(r.st))
		}
	}
}

func requireField(tb testing.TB, r *replica, k Key, f, want string) Entry {
	tb.Helper()
	w, ok := r.st.Items[k].Field(f)
	if !ok {
		tb.Fatalf("%s: %s has no field %q", r.id, k, f)
	}
	if string(w.Value) != want {
		tb.Fatalf("%s: %s.%s = %s, want %s", r.id, k, f, w.Value, want)
	}
	return w
}

// requireLosers fails unless field f of k on r has exactly the losing
// values want, greatest first.
func requireLosers(tb testing.TB, r *replica, k Key, f string, want ...string) {
	tb.Helper()
	var got []string
	for _, e := range r.st.Items[k].Conflicts()[f] {
		got = append(got, string(e.Value))
	}
	if !slices.Equal(got, want) {
		tb.Fatalf("%s: conflicts of %s.%s = %v, want %v", r.id, k, f, got, want)
	}
}

func TestScenario_ConcurrentMetadataLaterTimestampWins(t *testing.T) {
	n1, n2 := newReplica("node1"), newReplica("node2")
	add := n1.do(t, snap1, t0, addOp(snap1, doc("size", "1024", "created", `"2023-12-07T10:30:45Z"`, "cluster", `"cluster-a"`)))
	send(t, n2, add)

	// Concurrent PUTs: neither has seen the other's. node2's clock reads
	// later, whatever the order in which they happen here.
	put2 := n2.do(t, snap1, t0+20, replaceOp(snap1, doc("size", "1024", "status", `"failed"`)))
	put1 := n1.do(t, snap1, t0+10, replaceOp(snap1, doc("size", "1024", "status", `"completed"`)))
	if put1.TS >= put2.TS {
		t.Fatalf("setup: node1's write %s is not earlier than node2's %s", put1.TS, put2.TS)
	}
	send(t, n2, put1)
	send(t, n1, put2)

	for _, r := range []*replica{n1, n2} {
		w := requireField(t, r, snap1, "status", `"failed"`)
		if w.Dot != put2.Dot || w.TS != put2.TS {
			t.Fatalf("%s: winning entry %+v is not node2's write %s", r.id, w, put2.Dot)
		}
		requireLosers(t, r, snap1, "status", `"completed"`)
		if got := r.st.Items[snap1].Conflicts()["status"][0]; got.Dot != put1.Dot || got.TS != put1.TS {
			t.Fatalf("%s: losing entry %+v is not node1's write %s", r.id, got, put1.Dot)
		}
		if _, ok := r.st.Items[snap1].Field("created"); ok {
			t.Fatalf("%s: both PUTs dropped created, but it survived", r.id)
		}
	}
	requireConverged(t, n1, n2)
}

func TestScenario_EqualTimestampsHigherReplicaWins(t *testing.T) {
	// "node9" > "node10" as strings: the order is lexicographic, not numeric.
	lo, hi, third := newReplica("node10"), newReplica("node9"), newReplica("node1")
	add := lo.do(t, snap1, t0, addOp(snap1, doc("size", "1024")))
	send(t, hi, add)
	send(t, third, add)

	ts := MakeTimestamp(t0+10, 3)
	fromHi := hi.doAt(t, snap1, ts, replaceOp(snap1, doc("size", "1024", "status", `"from-node9"`)))
	fromLo := lo.doAt(t, snap1, ts, replaceOp(snap1, doc("size", "1024", "status", `"from-node10"`)))

	send(t, lo, fromHi)
	send(t, hi, fromLo)
	send(t, third, fromLo, fromHi)

	for _, r := range []*replica{lo, hi, third} {
		w := requireField(t, r, snap1, "status", `"from-node9"`)
		if w.Dot.Replica != "node9" {
			t.Fatalf("%s: status won by %s, want node9", r.id, w.Dot)
		}
		requireLosers(t, r, snap1, "status", `"from-node10"`)
	}
	requireConverged(t, lo, hi, third)
}

func TestScenario_ConcurrentAddAndRemoveAddWins(t *testing.T) {
	n1, n2 := newReplica("node1"), newReplica("node2")
	add := n1.do(t, snap1, t0, addOp(snap1, doc("size", "1024", "cluster", `"cluster-a"`)))
	send(t, n2, add)

	rm := n1.do(t, snap1, t0+10, removeOp(snap1))
	readd := n2.do(t, snap1, t0+5, addOp(snap1, doc("size", "2048", "cluster", `"cluster-b"`)))
	if metadata(t, n1, snap1) != "absent" {
		t.Fatal("node1 still shows the item it removed")
	}

	send(t, n1, readd)
	send(t, n2, rm)

	want := `{"cluster":"cluster-b","size":2048}`
	for _, r := range []*replica{n1, n2} {
		if got := metadata(t, r, snap1); got != want {
			t.Fatalf("%s: %s = %s, want %s", r.id, snap1, got, want)
		}
		if p := r.st.Items[snap1].Presence; !slices.Equal(p, []Dot{readd.Dot}) {
			t.Fatalf("%s: presence %v, want only node2's add %s", r.id, p, readd.Dot)
		}
	}
	requireConverged(t, n1, n2)
}

func TestScenario_RemoveThenStaleAddStaysRemoved(t *testing.T) {
	n1, n2, n3 := newReplica("node1"), newReplica("node2"), newReplica("node3")
	add := n1.do(t, snap1, t0, addOp(snap1, doc("size", "1024")))
	send(t, n2, add)
	rm := n2.do(t, snap1, t0+10, removeOp(snap1))

	send(t, n3, rm) // node3 learns of the remove before the add
	if got := send(t, n2, add); got != 0 {
		t.Fatal("a duplicate add changed node2's state")
	}
	send(t, n3, add, add)
	send(t, n1, rm)
	if got := send(t, n1, add); got != 0 {
		t.Fatal("node1's own add, delivered again, changed its state")
	}

	for _, r := range []*replica{n1, n2, n3} {
		if got := metadata(t, r, snap1); got != "absent" {
			t.Fatalf("%s: removed item came back as %s", r.id, got)
		}
		if len(r.st.Items) != 0 {
			t.Fatalf("%s: removed item left %+v behind", r.id, r.st.Items)
		}
		if v := r.st.Visible("snapshots"); len(v) != 0 {
			t.Fatalf("%s: visible %v", r.id, v)
		}
	}
	requireConverged(t, n1, n2, n3)
}

func TestScenario_MetadataWriteConcurrentWithRemoveDoesNotResurrect(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write mutator
	}{
		{"replace", replaceOp(snap1, doc("size", "1024", "status", `"failed"`))},
		{"patch", patchOp(snap1, doc("status", `"failed"`))},
		{"patch-null", patchOp(snap1, doc("size", "null"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n1, n2 := newReplica("node1"), newReplica("node2")
			add := n1.do(t, snap1, t0, addOp(snap1, doc("size", "1024")))
			send(t, n2, add)

			rm := n1.do(t, snap1, t0+10, removeOp(snap1))
			// node2's write is later in time but concurrent: it has not
			// seen the remove.
			w := n2.do(t, snap1, t0+20, tc.write)
			send(t, n1, w)
			send(t, n2, rm)

			for _, r := range []*replica{n1, n2} {
				if got := metadata(t, r, snap1); got != "absent" {
					t.Fatalf("%s: a metadata write resurrected the removed item as %s", r.id, got)
				}
				if v := r.st.Visible("snapshots"); len(v) != 0 {
					t.Fatalf("%s: visible %v", r.id, v)
				}
			}
			requireConverged(t, n1, n2)

			// A later add observes whatever the concurrent write left and
			// supersedes it: the item comes back with the add's document.
			readd := n1.do(t, snap1, t0+30, addOp(snap1, doc("size", "4096")))
			send(t, n2, readd)
			for _, r := range []*replica{n1, n2} {
				if got, want := metadata(t, r, snap1), `{"size":4096}`; got != want {
					t.Fatalf("%s: after re-add %s = %s, want %s", r.id, snap1, got, want)
				}
			}
			requireConverged(t, n1, n2)
		})
	}
}

func TestScenario_ReplaceRemovesAbsentFields(t *testing.T) {
	n1, n2 := newReplica("node1"), newReplica("node2")
	add := n1.do(t, snap1, t0, addOp(snap1, doc("size", "1024", "created", `"2023-01-01T00:00:00Z"`, "cluster", `"cluster-a"`)))
	put := n1.do(t, snap1, t0+10, replaceOp(snap1, doc("size", "2048", "status", `"completed"`)))
	send(t, n2, add, put)

	want := `{"size":2048,"status":"completed"}`
	for _, r := range []*replica{n1, n2} {
		if got := metadata(t, r, snap1); got != want {
			t.Fatalf("%s: after PUT %s = %s, want %s", r.id, snap1, got, want)
		}
		if c := r.st.Items[snap1].Conflicts(); c != nil {
			t.Fatalf("%s: sequential writes left conflicts %v", r.id, c)
		}
	}

	// Out of order: the PUT's delta reaches node3 before the add. The add's
	// fields stay superseded once it arrives.
	n3 := newReplica("node3")
	send(t, n3, put, add)
	if got := metadata(t, n3, snap1); got != want {
		t.Fatalf("node3: deltas out of order gave %s, want %s", got, want)
	}
	requireConverged(t, n1, n2, n3)
}

func TestScenario_PatchNullRemovesField(t *testing.T) {
	n1, n2 := newReplica("node1"), newReplica("node2")
	add := n1.do(t, snap1, t0, addOp(snap1, doc("size", "1024", "cluster", `"cluster-a"`, "tags", `{"a":1,"b":2}`)))
	patch := n1.do(t, snap1, t0+10, patchOp(snap1, doc("cluster", "null", "tags", `{"b":null,"c":3}`, "status", `"completed"`, "absent", "null")))
	send(t, n2, add, patch)

	want := `{"size":1024,"status":"completed","tags":{"a":1,"c":3}}`
	for _, r := range []*replica{n1, n2} {
		if got := metadata(t, r, snap1); got != want {
			t.Fatalf("%s: after PATCH %s = %s, want %s", r.id, snap1, got, want)
		}
		if _, ok := r.st.Items[snap1].Fields["cluster"]; ok {
			t.Fatalf("%s: a null patch left entries of cluster", r.id)
		}
	}
	// Fields the patch does not name keep their original write.
	if w, _ := n2.st.Items[snap1].Field("size"); w.Dot != add.Dot {
		t.Fatalf("size was rewritten by %s, want untouched from %s", w.Dot, add.Dot)
	}
	requireConverged(t, n1, n2)
}

func TestScenario_MetadataWriteOnAbsentItemIsNotFound(t *testing.T) {
	n1 := newReplica("node1")
	other := Key{"snapshots", "other"}
	n1.do(t, other, t0, addOp(other, doc("size", "1")))
	n1.do(t, snap1, t0+1, addOp(snap1, doc("size", "1")))
	n1.do(t, snap1, t0+2, removeOp(snap1))
	removed := n1.st.Items[snap1] // nil: a removed item leaves nothing
	orphan := &Item{Fields: map[string][]Entry{"size": {{Dot{"node2", 1}, MakeTimestamp(t0, 0), json.RawMessage("1")}}}}

	for _, tc := range []struct {
		name string
		cur  *Item
		m    mutator
	}{
		{"replace-never-added", nil, replaceOp(snap1, doc("size", "2"))},
		{"patch-never-added", nil, patchOp(snap1, doc("size", "2"))},
		{"remove-never-added", nil, removeOp(snap1)},
		{"replace-removed", removed, replaceOp(snap1, doc("size", "2"))},
		{"patch-removed", removed, patchOp(snap1, doc("size", "2"))},
		{"remove-removed", removed, removeOp(snap1)},
		{"replace-fields-without-presence", orphan, replaceOp(snap1, doc("size", "2"))},
		{"patch-fields-without-presence", orphan, patchOp(snap1, doc("size", "2"))},
		{"remove-fields-without-presence", orphan, removeOp(snap1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := tc.m(tc.cur, Dot{"node1", 99}, MakeTimestamp(t0+5, 0))
			if !errors.Is(err, ErrNotFound) {
				t.Fatalf("got delta %v, error %v; want ErrNotFound", d, err)
			}
			if d != nil {
				t.Fatalf("failed mutator returned a delta %+v", d)
			}
		})
	}
	if got := metadata(t, n1, other); got != `{"size":1}` {
		t.Fatalf("other item changed: %s", got)
	}
}

func TestScenario_RemoveLeavesNoTombstone(t *testing.T) {
	const cycles = 1000
	n1, n2, n3 := newReplica("node1"), newReplica("node2"), newReplica("node3")
	var all []*Delta
	for i := range cycles {
		now := t0 + int64(i)
		all = append(all,
			n1.do(t, snap1, now, addOp(snap1, doc("size", "1024", "status", `"completed"`))),
			n1.do(t, snap1, now, removeOp(snap1)))
	}
	send(t, n2, all...)
	slices.Reverse(all)
	send(t, n3, all...) // the worst order: every add arrives after its remove

	want := map[ReplicaID]uint64{"node1": 2 * cycles}
	for _, r := range []*replica{n1, n2, n3} {
		if len(r.st.Items) != 0 {
			t.Fatalf("%s: %d items left after remove", r.id, len(r.st.Items))
		}
		for name, c := range map[string]*Context{"Seen": r.st.Seen, "Applied": r.st.Applied} {
			if v := c.Version(); !maps.Equal(v, want) {
				t.Fatalf("%s: %s version vector %v, want %v", r.id, name, v, want)
			}
			if cl := c.Cloud(); len(cl) != 0 {
				t.Fatalf("%s: %s keeps a cloud of %d dots", r.id, name, len(cl))
			}
		}
	}
	requireConverged(t, n1, n2, n3)
}
