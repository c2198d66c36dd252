package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// TestNode_SeedExample replays the seed's transcript: node1 adds snap1,
// both nodes write its metadata concurrently, they exchange deltas, and
// both end with the same catalog, the later write winning.
func TestNode_SeedExample(t *testing.T) {
	ctx := context.Background()
	c1, c2 := newFakeClock(), newFakeClock()
	n1, n2 := openMem(t, testConfig(c1.Now)), openMem(t, testConfig(c2.Now))

	if _, err := n1.Add(ctx, key("snapshots", "snap1"), mustDoc(t, `{"size":1024,"created":"2023-12-07T10:30:45Z","cluster":"cluster-a"}`)); err != nil {
		t.Fatal(err)
	}
	exchange(t, n1, n2)
	c1.Advance(time.Millisecond)
	c2.Advance(2 * time.Millisecond) // node2 writes later
	if _, err := n1.Replace(ctx, key("snapshots", "snap1"), mustDoc(t, `{"size":1024,"status":"completed","updated":"2023-12-07T10:30:45Z"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := n2.Replace(ctx, key("snapshots", "snap1"), mustDoc(t, `{"size":1024,"status":"failed","updated":"2023-12-07T10:30:45Z"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := n1.Add(ctx, key("snapshots", "snap2"), mustDoc(t, `{"size":2048,"created":"2023-12-07T10:30:45Z","cluster":"cluster-b"}`)); err != nil {
		t.Fatal(err)
	}
	if got := exchange(t, n1, n2); got != 2 {
		t.Errorf("node1 sent %d deltas, want 2 (the first was cleared)", got)
	}
	if got := exchange(t, n2, n1); got != 1 {
		t.Errorf("node2 sent %d deltas, want 1 (its own write; received deltas were cleared)", got)
	}
	d1, d2 := dump(t, n1, "snapshots"), dump(t, n2, "snapshots")
	if d1 != d2 {
		t.Fatalf("nodes differ after sync:\n%s\n%s", d1, d2)
	}
	for _, n := range []*Node{n1, n2} {
		it, err := n.Get(ctx, key("snapshots", "snap1"))
		if err != nil {
			t.Fatal(err)
		}
		if got := string(it.Metadata["status"]); got != `"failed"` {
			t.Errorf("%s: status = %s, want the later write \"failed\"", n.ReplicaID(), got)
		}
		if len(it.Conflicts["status"]) != 1 || string(it.Conflicts["status"][0].Value) != `"completed"` {
			t.Errorf("%s: conflicts = %v, want the losing \"completed\"", n.ReplicaID(), it.Conflicts)
		}
	}
	s1, a1 := n1.Contexts()
	s2, a2 := n2.Contexts()
	if !s1.Equal(s2) || !a1.Equal(a2) {
		t.Error("causal contexts differ after sync")
	}
}

func TestNode_OperationsAndErrors(t *testing.T) {
	ctx := context.Background()
	n := openMem(t, testConfig(nil))
	k := key("images", "img-1")
	if _, err := n.Get(ctx, k); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get absent: %v", err)
	}
	if _, err := n.Replace(ctx, k, mustDoc(t, `{"a":1}`)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("replace absent: %v", err)
	}
	if _, err := n.Patch(ctx, k, mustDoc(t, `{"a":1}`)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("patch absent: %v", err)
	}
	if err := n.Remove(ctx, k); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove absent: %v", err)
	}
	if _, err := n.Add(ctx, key("volumes", "v"), crdt.Document{}); !errors.Is(err, ErrUnknownCollection) {
		t.Fatalf("unknown collection: %v", err)
	}
	if _, err := n.Add(ctx, key("images", "bad/id"), crdt.Document{}); !errors.Is(err, crdt.ErrInvalid) {
		t.Fatalf("bad id: %v", err)
	}
	if _, err := n.Add(ctx, k, mustDoc(t, `{"os":"linux","arch":"amd64","labels":{"a":"1"}}`)); err != nil {
		t.Fatal(err)
	}
	it, err := n.Patch(ctx, k, mustDoc(t, `{"arch":null,"labels":{"b":"2"},"new":true}`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"os": `"linux"`, "labels": `{"a":"1","b":"2"}`, "new": "true"}
	if len(it.Metadata) != len(want) {
		t.Fatalf("after patch: %v", it.Metadata)
	}
	for f, v := range want {
		if string(it.Metadata[f]) != v {
			t.Errorf("after patch %s = %s, want %s", f, it.Metadata[f], v)
		}
	}
	it, err = n.Replace(ctx, k, mustDoc(t, `{"os":"bsd"}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(it.Metadata) != 1 || string(it.Metadata["os"]) != `"bsd"` {
		t.Fatalf("after replace: %v", it.Metadata)
	}
	if st := n.Stats(); st.Items["images"] != 1 || st.Ops != 3 {
		t.Fatalf("stats: %+v", st)
	}
	if err := n.Remove(ctx, k); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Get(ctx, k); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get removed: %v", err)
	}
	if st := n.Stats(); st.Items["images"] != 0 || st.Counter != 4 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestNode_ApplyDeltasAllOrNothing(t *testing.T) {
	ctx := context.Background()
	src, dst := openMem(t, testConfig(nil)), openMem(t, testConfig(nil))
	for _, id := range []string{"a", "b"} {
		if _, err := src.Add(ctx, key("snapshots", id), mustDoc(t, `{"n":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	p, err := src.GetDeltas(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	bad := *p.Deltas[1]
	bad.Context = nil // fails validation: the context lacks the delta's own dot
	if _, err := dst.ApplyDeltas(ctx, []*crdt.Delta{p.Deltas[0], &bad}); !errors.Is(err, crdt.ErrInvalid) {
		t.Fatalf("invalid batch: %v", err)
	}
	if st := dst.Stats(); st.Items["snapshots"] != 0 || st.LogEntries != 0 || st.DeltasRejected != 1 {
		t.Fatalf("a rejected batch changed state: %+v", st)
	}
	res, err := dst.ApplyDeltas(ctx, p.Deltas)
	if err != nil || res.New != 2 || res.Duplicate != 0 {
		t.Fatalf("apply: %+v %v", res, err)
	}
	res, err = dst.ApplyDeltas(ctx, append(p.Deltas, p.Deltas...))
	if err != nil || res.New != 0 || res.Duplicate != 4 {
		t.Fatalf("apply duplicates: %+v %v", res, err)
	}
	if st := dst.Stats(); st.LogEntries != 2 {
		t.Fatalf("duplicates were logged: %+v", st)
	}
}

func TestNode_ReopenKeepsStateAndCounter(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	n := openDir(t, dir, testConfig(nil))
	id := n.ReplicaID()
	for _, s := range []string{"a", "b", "c"} {
		if _, err := n.Add(ctx, key("snapshots", s), mustDoc(t, `{"v":"`+s+`"}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Remove(ctx, key("snapshots", "b")); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = openDir(t, dir, testConfig(nil))
	defer n.Close()
	if n.ReplicaID() != id {
		t.Fatalf("replica id changed: %s -> %s", id, n.ReplicaID())
	}
	st := n.Stats()
	if st.Counter != 4 || st.Items["snapshots"] != 2 || st.LogEntries != 4 {
		t.Fatalf("after reopen: %+v", st)
	}
	if got := dump(t, n, "snapshots"); got != `[{"Collection":"snapshots","ID":"a","Metadata":{"v":"a"},"Conflicts":null},{"Collection":"snapshots","ID":"c","Metadata":{"v":"c"},"Conflicts":null}]` {
		t.Fatalf("after reopen: %s", got)
	}
	if _, err := n.Add(ctx, key("snapshots", "d"), crdt.Document{}); err != nil {
		t.Fatal(err)
	}
	if st := n.Stats(); st.Counter != 5 {
		t.Fatalf("counter after reopen and add: %d", st.Counter)
	}
	if _, err := OpenLevelDB(dir, true); err == nil {
		t.Fatal("a second open of a directory in use succeeded")
	}
}

// TestNode_FarFutureDeltaDoesNotExhaustClock: a valid delta stamped at the
// end of the timestamp range is joined, and local writes still work.
func TestNode_FarFutureDeltaDoesNotExhaustClock(t *testing.T) {
	ctx := context.Background()
	n := openMem(t, testConfig(nil))
	k := key("snapshots", "future")
	dot := crdt.Dot{Replica: "badclock", Counter: 1}
	d, err := crdt.AddDelta(k, nil, mustDoc(t, `{"v":1}`), dot, crdt.MakeTimestamp(crdt.MaxWallMillis, 65535))
	if err != nil {
		t.Fatal(err)
	}
	if res, err := n.ApplyDelta(ctx, d); err != nil || res.New != 1 {
		t.Fatalf("apply: %+v %v", res, err)
	}
	if n.Stats().ClockAhead != 1 {
		t.Fatal("the far-future timestamp was not counted")
	}
	if _, err := n.Add(ctx, key("snapshots", "after"), crdt.Document{}); err != nil {
		t.Fatalf("local write after a far-future delta: %v", err)
	}
}

// TestNode_OversizedItemIsRejectedNotFatal: concurrent remote writes that
// would grow one item past crdt.MaxItemBytes are rejected with
// ErrTooLarge, and the node keeps working.
func TestNode_OversizedItemIsRejectedNotFatal(t *testing.T) {
	ctx := context.Background()
	n := openMem(t, testConfig(nil))
	k := key("snapshots", "big")
	big := mustDoc(t, `{"pad":"`+strings.Repeat("x", 900<<10)+`"}`)
	var err error
	for i := 1; i <= 40 && err == nil; i++ {
		var d *crdt.Delta
		d, err = crdt.AddDelta(k, nil, big, crdt.Dot{Replica: crdt.ReplicaID(fmt.Sprint("r", i)), Counter: 1}, crdt.MakeTimestamp(1, 0))
		if err != nil {
			t.Fatal(err)
		}
		_, err = n.ApplyDelta(ctx, d)
	}
	if !errors.Is(err, crdt.ErrTooLarge) {
		t.Fatalf("growing an item past its limit: %v, want ErrTooLarge", err)
	}
	if _, err := n.Add(ctx, key("snapshots", "small"), crdt.Document{}); err != nil {
		t.Fatalf("node stuck after a rejected delta: %v", err)
	}
}
