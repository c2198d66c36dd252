package crdt

import (
	"encoding/json"
	"fmt"
	"testing"

	"pgregory.net/rapid"
)

// replica is one simulated replica in the property tests: a state, its
// counter and its clock.
type replica struct {
	id    ReplicaID
	st    *State
	n     uint64
	clock Clock
}

func newReplica(id ReplicaID) *replica { return &replica{id: id, st: NewState()} }

// tick returns the next dot and timestamp of r at physical time now.
func (r *replica) tick(now int64) (Dot, Timestamp) {
	r.n++
	return Dot{r.id, r.n}, r.clock.Now(now)
}

// apply joins d into r's state, advancing its clock as a receiver does.
func (r *replica) apply(d *Delta, now int64) bool {
	r.clock.Observe(d.TS, now)
	return r.st.Apply(d)
}

func doc(kv ...string) Document {
	d := Document{}
	for i := 0; i+1 < len(kv); i += 2 {
		d[kv[i]] = json.RawMessage(kv[i+1])
	}
	return d
}

var (
	testKeys   = []Key{{"snapshots", "a"}, {"snapshots", "b"}, {"snapshots", "c"}, {"images", "a"}}
	testFields = []string{"size", "status", "cluster"}
	testValues = []string{`1`, `2`, `"x"`, `"y"`, `{"n":1}`, `{"m":null}`, `null`, `true`}
)

// genOp performs one random operation on r and returns its delta.
func genOp(t *rapid.T, r *replica, now int64) *Delta {
	d, _ := genOpDoc(t, r, now)
	return d
}

// genOpDoc is genOp that also returns the operation's document.
func genOpDoc(t *rapid.T, r *replica, now int64) (*Delta, Document) {
	k := rapid.SampledFrom(testKeys).Draw(t, "key")
	cur := r.st.Items[k]
	d := Document{}
	for _, f := range testFields {
		if rapid.Bool().Draw(t, "has-"+f) {
			d[f] = json.RawMessage(rapid.SampledFrom(testValues).Draw(t, "value"))
		}
	}
	dot, ts := r.tick(now)
	var (
		delta *Delta
		err   error
	)
	switch op := rapid.IntRange(0, 3).Draw(t, "op"); {
	case op == 0 || !cur.Visible():
		for f, v := range d {
			if isNull(v) {
				delete(d, f)
			}
		}
		delta, err = AddDelta(k, cur, d, dot, ts)
	case op == 1:
		delta, err = RemoveDelta(k, cur, dot, ts)
	case op == 2:
		delta, err = ReplaceDelta(k, cur, d, dot, ts)
	default:
		delta, err = PatchDelta(k, cur, d, dot, ts)
	}
	if err != nil {
		t.Fatalf("mutator: %v", err)
	}
	if err := delta.Validate(); err != nil {
		t.Fatalf("mutator made an invalid delta: %v", err)
	}
	if !r.apply(delta, now) {
		t.Fatalf("local delta %s changed nothing", delta.Dot)
	}
	return delta, d
}

// history runs random operations on n replicas with random partial
// delivery between them, and returns the replicas and every delta made.
func history(t *rapid.T, n int) ([]*replica, []*Delta) {
	rs := make([]*replica, n)
	for i := range rs {
		rs[i] = newReplica(ReplicaID(fmt.Sprintf("r%d", i)))
	}
	var all []*Delta
	steps := rapid.IntRange(1, 40).Draw(t, "steps")
	for s := range steps {
		now := int64(1_700_000_000_000) + int64(rapid.IntRange(0, 50).Draw(t, "time")) + int64(s)
		if len(all) > 0 && rapid.Bool().Draw(t, "deliver") {
			d := rapid.SampledFrom(all).Draw(t, "delta")
			rapid.SampledFrom(rs).Draw(t, "to").apply(d, now)
			continue
		}
		all = append(all, genOp(t, rapid.SampledFrom(rs).Draw(t, "replica"), now))
	}
	return rs, all
}

// visibleDocs returns the visible items of s with their resolved metadata.
func visibleDocs(s *State) map[Key]string {
	out := map[Key]string{}
	for k, it := range s.Items {
		if it.Visible() {
			b, _ := json.Marshal(it.Metadata())
			out[k] = string(b)
		}
	}
	return out
}

func mustApply(tb testing.TB, r *replica, d *Delta) {
	tb.Helper()
	if err := d.Validate(); err != nil {
		tb.Fatal(err)
	}
	r.apply(d, 0)
}

// fieldsOf makes one entry per field of a canonical doc, all tagged with
// dot: the reference for what the mutators write.
func fieldsOf(doc Document, dot Dot, ts Timestamp) map[string][]Entry {
	if len(doc) == 0 {
		return nil
	}
	fs := make(map[string][]Entry, len(doc))
	for f, v := range doc {
		fs[f] = []Entry{{Dot: dot, TS: ts, Value: v}}
	}
	return fs
}
