package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	"github.com/crdt-catalog/crdt-catalog/node/query"
)

// next reads the next changes of w, failing the test after a deadline.
func next(tb testing.TB, w *Watcher, limit int) []*ItemEvent {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	evs, err := w.Next(ctx, limit)
	if err != nil {
		tb.Fatalf("watcher at %d: %v", w.Position(), err)
	}
	return evs
}

// readN reads exactly count changes from w.
func readN(tb testing.TB, w *Watcher, count int) []*ItemEvent {
	tb.Helper()
	var out []*ItemEvent
	for len(out) < count {
		out = append(out, next(tb, w, count-len(out))...)
	}
	return out
}

// describe renders events as "seq kind id via {metadata}" lines.
func describe(tb testing.TB, evs []*ItemEvent) string {
	tb.Helper()
	var b bytes.Buffer
	for _, e := range evs {
		it, ok, err := e.Item()
		if err != nil {
			tb.Fatal(err)
		}
		md := "-"
		if ok {
			b, err := json.Marshal(it.Metadata)
			if err != nil {
				tb.Fatal(err)
			}
			md = string(b)
		}
		fmt.Fprintf(&b, "%d %s %s/%s %s %s\n", e.Seq, e.Kind, e.Key.Collection, e.Key.ID, e.Via, md)
	}
	return b.String()
}

// TestChanges_LocalWrites: add, patch and remove are numbered 1, 2, 3,
// with the item after each and this node's dots; a removal of an absent
// item and a write that fails number nothing.
func TestChanges_LocalWrites(t *testing.T) {
	ctx := context.Background()
	n := openMem(t, testConfig(nil))
	w, err := n.Watch(0)
	if err != nil {
		t.Fatal(err)
	}
	a, err := n.Add(ctx, key("snapshots", "s1"), mustDoc(t, `{"size":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Patch(ctx, key("snapshots", "s1"), mustDoc(t, `{"owner":"ann"}`)); err != nil {
		t.Fatal(err)
	}
	if err := n.Remove(ctx, key("snapshots", "gone")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove of an absent item: %v", err)
	}
	if err := n.Remove(ctx, key("snapshots", "s1")); err != nil {
		t.Fatal(err)
	}
	evs := readN(t, w, 3)
	want := "1 added snapshots/s1 local {\"size\":1}\n" +
		"2 updated snapshots/s1 local {\"owner\":\"ann\",\"size\":1}\n" +
		"3 removed snapshots/s1 local -\n"
	if got := describe(t, evs); got != want {
		t.Fatalf("events:\n%s\nwant:\n%s", got, want)
	}
	if evs[0].Dot != a.Dot || evs[2].Dot.Replica != n.ReplicaID() || evs[2].Dot.Counter != a.Dot.Counter+2 {
		t.Fatalf("origins %v %v, add's dot %v", evs[0].Dot, evs[2].Dot, a.Dot)
	}
	if first, last := n.ChangeBounds(); first != 1 || last != 3 {
		t.Fatalf("bounds %d..%d, want 1..3", first, last)
	}
}

// TestChanges_RestartLosesNothing: a watcher that saw changes up to some
// number before a restart reads every later change after it, once each:
// those committed before the restart from the store, the later ones from
// memory.
func TestChanges_RestartLosesNothing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	n := openDir(t, dir, testConfig(nil))
	for i := range 5 {
		if _, err := n.Add(ctx, key("snapshots", fmt.Sprint("s", i)), mustDoc(t, `{}`)); err != nil {
			t.Fatal(err)
		}
	}
	w, _ := n.Watch(0)
	seen := readN(t, w, 2)
	since := seen[len(seen)-1].Seq
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = openDir(t, dir, testConfig(nil))
	defer n.Close()
	for i := range 3 {
		if _, err := n.Patch(ctx, key("snapshots", fmt.Sprint("s", i)), mustDoc(t, `{"v":2}`)); err != nil {
			t.Fatal(err)
		}
	}
	w, err := n.Watch(since)
	if err != nil {
		t.Fatal(err)
	}
	evs := readN(t, w, 6)
	for i, e := range evs {
		if e.Seq != since+1+uint64(i) {
			t.Fatalf("event %d has seq %d, want %d", i, e.Seq, since+1+uint64(i))
		}
	}
	if evs[2].Kind != ChangeAdded || evs[3].Kind != ChangeUpdated {
		t.Fatalf("kinds across the restart: %v %v", evs[2].Kind, evs[3].Kind)
	}
	// Nothing more: a read now waits.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if evs, err := w.Next(short, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("after the last change: %d events, %v", len(evs), err)
	}
}

// TestChanges_Remote: changes that arrive by gossip (a pending delta),
// by anti-entropy (DeltasFor) and by a full-state import are numbered on
// the receiver, with their origin.
func TestChanges_Remote(t *testing.T) {
	ctx := context.Background()
	a, b := openMem(t, testConfig(nil)), openMem(t, testConfig(nil))
	w, _ := b.Watch(0)

	if _, err := a.Add(ctx, key("images", "gossip"), mustDoc(t, `{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	exchange(t, a, b)
	e := readN(t, w, 1)[0]
	if e.Kind != ChangeAdded || e.Via != ViaDelta || e.Dot.Replica != a.ReplicaID() || e.Key.ID != "gossip" {
		t.Fatalf("gossiped change: %+v", e)
	}

	if _, err := a.Patch(ctx, key("images", "gossip"), mustDoc(t, `{"n":2}`)); err != nil {
		t.Fatal(err)
	}
	antiEntropy(t, a, b)
	e = readN(t, w, 1)[0]
	if e.Kind != ChangeUpdated || e.Via != ViaDelta || e.Dot.Replica != a.ReplicaID() {
		t.Fatalf("anti-entropy change: %+v", e)
	}

	c := openMem(t, testConfig(nil))
	if _, err := c.Add(ctx, key("images", "state"), mustDoc(t, `{"n":3}`)); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := c.ExportState(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ImportState(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	e = readN(t, w, 1)[0]
	it, ok, err := e.Item()
	if err != nil || !ok || e.Kind != ChangeAdded || e.Via != ViaState || e.Dot != (crdt.Dot{}) || string(it.Metadata["n"]) != "3" {
		t.Fatalf("imported change: %+v %+v %v", e, it, err)
	}
}

// TestChanges_FilterEntersAndLeaves: Match says, for each change, whether
// the item matched before and after it.
func TestChanges_FilterEntersAndLeaves(t *testing.T) {
	ctx := context.Background()
	n := openMem(t, testConfig(nil))
	w, _ := n.Watch(0)
	k := key("snapshots", "s")
	for _, doc := range []string{`{"owner":"bob"}`, `{"owner":"ann"}`, `{"owner":"ann","v":1}`, `{"owner":"bob"}`} {
		if _, err := n.Add(ctx, k, mustDoc(t, doc)); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Remove(ctx, k); err != nil {
		t.Fatal(err)
	}
	q, err := query.Parse(`owner=ann`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range readN(t, w, 5) {
		before, after, err := e.Match(q)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprint(e.Kind, ":", before, after))
	}
	want := "[added:false false updated:false true updated:true true updated:true false removed:false false]"
	if fmt.Sprint(got) != want {
		t.Fatalf("matches %v, want %s", got, want)
	}
}

// TestChanges_HistoryTrimmed: the history keeps ChangeHistory changes;
// a watch from before them, or from a number this node never used, fails
// with ErrHistoryTrimmed, and a watch from within reads the rest.
func TestChanges_HistoryTrimmed(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(nil)
	cfg.ChangeHistory = 5
	n := openMem(t, cfg)
	for i := range 10 {
		if _, err := n.Add(ctx, key("snapshots", fmt.Sprint("s", i)), mustDoc(t, `{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if first, last := n.ChangeBounds(); first != 6 || last != 10 {
		t.Fatalf("bounds %d..%d, want 6..10", first, last)
	}
	for _, since := range []uint64{0, 4, 11} {
		if _, err := n.Watch(since); !errors.Is(err, ErrHistoryTrimmed) {
			t.Fatalf("watch from %d: %v", since, err)
		}
	}
	w, err := n.Watch(5)
	if err != nil {
		t.Fatal(err)
	}
	if evs := readN(t, w, 5); evs[0].Seq != 6 || evs[4].Seq != 10 {
		t.Fatalf("read %d..%d", evs[0].Seq, evs[4].Seq)
	}
	// On disk too: only the last five records are stored.
	stored, err := n.readChanges(ctx, 6, 10)
	if err != nil || len(stored) != 5 {
		t.Fatalf("stored changes: %d, %v", len(stored), err)
	}
	if _, err := n.readChanges(ctx, 5, 10); !errors.Is(err, ErrHistoryTrimmed) {
		t.Fatalf("trimmed change read: %v", err)
	}
}

// TestChanges_SlowWatcherCutOff: a watcher that caught up and then falls
// further behind than the node keeps in memory is cut off with
// ErrWatchTooSlow, while writers go on; it resumes from its position with
// a new watcher.
func TestChanges_SlowWatcherCutOff(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(nil)
	cfg.ChangeHistory = 8 // the ring holds 8 changes too
	n := openMem(t, cfg)
	w, _ := n.Watch(0)
	if _, err := n.Add(ctx, key("snapshots", "first"), mustDoc(t, `{}`)); err != nil {
		t.Fatal(err)
	}
	readN(t, w, 1)
	for i := range 20 {
		if _, err := n.Add(ctx, key("snapshots", fmt.Sprint("s", i)), mustDoc(t, `{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Next(ctx, 10); !errors.Is(err, ErrWatchTooSlow) {
		t.Fatalf("slow watcher: %v", err)
	}
	if _, err := n.Watch(w.Position()); !errors.Is(err, ErrHistoryTrimmed) {
		t.Fatalf("resume beyond the history: %v", err)
	}
}

// TestChanges_FailedCommitNumbersNothing: a commit the store refuses
// leaves no number used: the next change takes the number after the last
// durable one.
func TestChanges_FailedCommitNumbersNothing(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(nil)
	cfg.RetryInterval = 5 * time.Millisecond
	n, fst := openFaulty(t, t.TempDir(), cfg)
	defer n.Close()
	w, _ := n.Watch(0)
	if _, err := n.Add(ctx, key("snapshots", "a"), mustDoc(t, `{}`)); err != nil {
		t.Fatal(err)
	}
	fst.set(enospc)
	if _, err := n.Add(ctx, key("snapshots", "lost"), mustDoc(t, `{}`)); err == nil {
		t.Fatal("write to a failing store succeeded")
	}
	fst.set(nil)
	deadline := time.Now().Add(10 * time.Second)
	for n.Writable() != nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := n.Add(ctx, key("snapshots", "b"), mustDoc(t, `{}`)); err != nil {
		t.Fatal(err)
	}
	got := describe(t, readN(t, w, 2))
	if want := "1 added snapshots/a local {}\n2 added snapshots/b local {}\n"; got != want {
		t.Fatalf("events:\n%s\nwant:\n%s", got, want)
	}
}

// TestChanges_InitialSnapshotIsExact: while writers add, change and
// remove items, WatchInitial's items and the changes after them rebuild
// exactly the final state: no change is in both, none in neither.
func TestChanges_InitialSnapshotIsExact(t *testing.T) {
	ctx := context.Background()
	n := openMem(t, testConfig(nil))
	for i := range 50 {
		if _, err := n.Add(ctx, key("snapshots", fmt.Sprintf("s%02d", i)), mustDoc(t, `{"v":0}`)); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1_000_000 {
				select {
				case <-stop:
					return
				default:
				}
				k := key("snapshots", fmt.Sprintf("s%02d", (i*7+g*13)%60))
				var err error
				if i%5 == 4 {
					err = n.Remove(ctx, k)
				} else {
					_, err = n.Add(ctx, k, mustDoc(t, fmt.Sprintf(`{"v":%d}`, i)))
				}
				if err != nil && !errors.Is(err, ErrNotFound) {
					t.Error(err)
					return
				}
			}
		}()
	}
	// The snapshot and the changes after it are taken while the writers
	// run: wait until they have made changes before it and after it.
	moved := func(from uint64) func() bool {
		return func() bool { _, last := n.ChangeBounds(); return last >= from+20 }
	}
	_, start := n.ChangeBounds()
	waitFor(t, "writes before the snapshot", moved(start))
	state := map[string]string{}
	w, err := n.WatchInitial(ctx, "snapshots", nil, func(it Item) error {
		state[it.ID] = string(it.Metadata["v"])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "writes after the snapshot", moved(w.Position()))
	close(stop)
	wg.Wait()
	_, last := n.ChangeBounds()
	for w.Position() < last {
		for _, e := range next(t, w, 100) {
			_, had := state[e.Key.ID]
			switch it, _, _ := e.Item(); e.Kind {
			case ChangeAdded:
				if had {
					t.Fatalf("change %d adds %s, which the snapshot or an earlier change holds", e.Seq, e.Key.ID)
				}
				state[e.Key.ID] = string(it.Metadata["v"])
			case ChangeUpdated:
				if !had {
					t.Fatalf("change %d updates %s, which is missing", e.Seq, e.Key.ID)
				}
				state[e.Key.ID] = string(it.Metadata["v"])
			case ChangeRemoved:
				if !had {
					t.Fatalf("change %d removes %s, which is missing", e.Seq, e.Key.ID)
				}
				delete(state, e.Key.ID)
			}
		}
	}
	page, err := n.Query(ctx, "snapshots", "", MaxQueryLimit, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Items) != len(state) {
		t.Fatalf("rebuilt %d items, node holds %d", len(state), len(page.Items))
	}
	for _, it := range page.Items {
		if state[it.ID] != string(it.Metadata["v"]) {
			t.Fatalf("%s: rebuilt v=%s, node holds %s", it.ID, state[it.ID], it.Metadata["v"])
		}
	}
}

// TestDecodeChange_RoundTrip: every kind and origin survives encoding.
func TestDecodeChange_RoundTrip(t *testing.T) {
	it := &crdt.Item{Presence: []crdt.Dot{{Replica: "r1", Counter: 1}}}
	rec, err := crdt.EncodeItem(it)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []*ItemEvent{
		{Key: key("c", "a"), Kind: ChangeAdded, Via: ViaLocal, Dot: crdt.Dot{Replica: "r1", Counter: 1}, after: rec},
		{Key: key("c", "a"), Kind: ChangeUpdated, Via: ViaDelta, Dot: crdt.Dot{Replica: "r2", Counter: 9}, before: rec, after: rec},
		{Key: key("c", "a"), Kind: ChangeRemoved, Via: ViaState, before: rec},
	} {
		got, err := decodeChange(7, encodeChange(e))
		if err != nil {
			t.Fatal(err)
		}
		if got.Seq != 7 || got.Key != e.Key || got.Kind != e.Kind || got.Via != e.Via || got.Dot != e.Dot ||
			!bytes.Equal(got.before, e.before) || !bytes.Equal(got.after, e.after) {
			t.Fatalf("round trip of %+v: %+v", e, got)
		}
	}
}

// FuzzDecodeChange: no input makes the change-record decoder panic; what
// it accepts re-encodes to the same bytes, and its item records decode or
// fail with an error.
func FuzzDecodeChange(f *testing.F) {
	rec, _ := crdt.EncodeItem(&crdt.Item{Presence: []crdt.Dot{{Replica: "r1", Counter: 1}}})
	f.Add(encodeChange(&ItemEvent{Key: key("c", "a"), Kind: ChangeUpdated, Via: ViaDelta, Dot: crdt.Dot{Replica: "r2", Counter: 9}, before: rec, after: rec}))
	f.Add(encodeChange(&ItemEvent{Key: key("c", "a"), Kind: ChangeRemoved, Via: ViaState, before: rec}))
	f.Add([]byte{1, 1, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeChange(1, b)
		if err != nil {
			return
		}
		if again := encodeChange(e); !bytes.Equal(again, b) {
			t.Fatalf("re-encoded %x, decoded from %x", again, b)
		}
		_, _, _ = e.Item()
		_, _, _ = e.Match(nil)
	})
}

// FuzzDecodeFeed: the feed record decoder refuses what it cannot use.
func FuzzDecodeFeed(f *testing.F) {
	f.Add(encodeFeed(feedMeta{Last: 9, First: 3, Bytes: 100}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeFeed(b)
		if err == nil && (m.First == 0 || m.First > m.Last+1 || m.Bytes < 0 || !bytes.Equal(encodeFeed(m), b)) {
			t.Fatalf("accepted %+v from %x", m, b)
		}
	})
}

// TestChanges_RepairDropsHistory: after Repair the history is empty (a
// watcher from before it must start from a snapshot) and numbering goes on
// after the last number used.
func TestChanges_RepairDropsHistory(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	n := openDir(t, dir, testConfig(nil))
	for i := range 3 {
		if _, err := n.Add(ctx, key("snapshots", fmt.Sprint("s", i)), mustDoc(t, `{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	repairDir(t, dir)
	n = openDir(t, dir, testConfig(nil))
	defer n.Close()
	if first, last := n.ChangeBounds(); first != 4 || last != 3 {
		t.Fatalf("bounds after repair %d..%d, want 4..3", first, last)
	}
	if _, err := n.Watch(1); !errors.Is(err, ErrHistoryTrimmed) {
		t.Fatalf("watch from before the repair: %v", err)
	}
	w, err := n.Watch(3)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Add(ctx, key("snapshots", "after"), mustDoc(t, `{}`)); err != nil {
		t.Fatal(err)
	}
	if e := readN(t, w, 1)[0]; e.Seq != 4 || e.Key.ID != "after" {
		t.Fatalf("first change after the repair: %d %s", e.Seq, e.Key)
	}
}

// A full-state import that changes more items than the history holds
// numbers every change but records only the first ChangeHistory of them:
// the history then starts after the import, a watcher behind it is told
// to start again from the items, and numbering goes on, across a
// restart, from the last change.
func TestChanges_LargeImportNumbersWithoutRecording(t *testing.T) {
	ctx := context.Background()
	src := openMem(t, testConfig(nil))
	for i := range 30 {
		if _, err := src.Add(ctx, key("snapshots", fmt.Sprint("s", i)), mustDoc(t, `{}`)); err != nil {
			t.Fatal(err)
		}
	}
	var state bytes.Buffer
	if err := src.ExportState(ctx, &state); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(nil)
	cfg.ChangeHistory = 10
	dir := t.TempDir()
	n := openDir(t, dir, cfg)
	if _, err := n.Add(ctx, key("snapshots", "mine"), mustDoc(t, `{}`)); err != nil {
		t.Fatal(err)
	}
	live, err := n.Watch(0)
	if err != nil {
		t.Fatal(err)
	}
	readN(t, live, 1)
	if _, err := n.ImportState(ctx, &state); err != nil {
		t.Fatal(err)
	}
	first, last := n.ChangeBounds()
	if last != 31 || first != 32 {
		t.Fatalf("after importing 30 items: changes %d..%d, want an empty history after 31", first, last)
	}
	if _, err := live.Next(ctx, 100); !errors.Is(err, ErrHistoryTrimmed) {
		t.Fatalf("a watcher behind the import: %v", err)
	}
	if _, err := n.Watch(1); !errors.Is(err, ErrHistoryTrimmed) {
		t.Fatalf("resuming before the import: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n = openDir(t, dir, cfg)
	defer n.Close()
	w, err := n.Watch(31)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Add(ctx, key("snapshots", "after"), mustDoc(t, `{}`)); err != nil {
		t.Fatal(err)
	}
	if evs := readN(t, w, 1); evs[0].Seq != 32 || evs[0].Key != key("snapshots", "after") {
		t.Fatalf("the change after the import: %+v", evs[0])
	}
}
