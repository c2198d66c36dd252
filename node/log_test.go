package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

func TestNode_PendingCursorExpiresWhenLogTrimmed(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(nil)
	cfg.MaxLogEntries = 5
	n := openMem(t, cfg)
	for i := range 3 {
		if _, err := n.Add(ctx, key("snapshots", fmt.Sprint("s", i)), crdt.Document{}); err != nil {
			t.Fatal(err)
		}
	}
	p, err := n.GetDeltas(ctx, 2)
	if err != nil || len(p.Deltas) != 2 || !p.More || p.Cursor != 2 {
		t.Fatalf("first page: %+v %v", p, err)
	}
	if err := n.ClearDeltas(ctx, p.Cursor); err != nil {
		t.Fatal(err)
	}
	if err := n.ClearDeltas(ctx, 99); !errors.Is(err, crdt.ErrInvalid) {
		t.Fatalf("clear beyond the end: %v", err)
	}
	for i := 3; i < 10; i++ {
		if _, err := n.Add(ctx, key("snapshots", fmt.Sprint("s", i)), crdt.Document{}); err != nil {
			t.Fatal(err)
		}
	}
	if st := n.Stats(); st.LogEntries != 5 {
		t.Fatalf("log holds %d entries, bound is 5", st.LogEntries)
	}
	if _, err := n.GetDeltas(ctx, 100); !errors.Is(err, ErrCursorExpired) {
		t.Fatalf("consumer behind the trimmed log: %v, want ErrCursorExpired", err)
	}
	cursor, err := n.ClearAllDeltas(ctx)
	if err != nil || cursor != 10 {
		t.Fatalf("clear all: %d %v", cursor, err)
	}
	if p, err := n.GetDeltas(ctx, 100); err != nil || len(p.Deltas) != 0 {
		t.Fatalf("after clear all: %+v %v", p, err)
	}
}

func TestNode_PendingHoldsOnlyLocalDeltas(t *testing.T) {
	ctx := context.Background()
	a, b := openMem(t, testConfig(nil)), openMem(t, testConfig(nil))
	if _, err := a.Add(ctx, key("snapshots", "x"), crdt.Document{}); err != nil {
		t.Fatal(err)
	}
	exchange(t, a, b)
	if _, err := b.Add(ctx, key("snapshots", "y"), crdt.Document{}); err != nil {
		t.Fatal(err)
	}
	p, err := b.GetDeltas(ctx, 10)
	if err != nil || len(p.Deltas) != 1 || p.Deltas[0].ID != "y" {
		t.Fatalf("pending on b: %+v %v", p, err)
	}
	all, err := b.DeltasSince(ctx, 0, 10, false)
	if err != nil || len(all.Deltas) != 2 {
		t.Fatalf("whole log on b: %+v %v", all, err)
	}
}

func TestNode_SubscriberThatLagsIsClosed(t *testing.T) {
	ctx := context.Background()
	n := openMem(t, testConfig(nil))
	s := n.Subscribe(2)
	for i := range 3 {
		if _, err := n.Add(ctx, key("snapshots", fmt.Sprint("s", i)), crdt.Document{}); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	for range s.C {
		got++
	}
	if got != 2 || !errors.Is(s.Err(), ErrLagged) {
		t.Fatalf("got %d changes, err %v; want 2 and ErrLagged", got, s.Err())
	}
	s2 := n.Subscribe(10)
	s2.Close()
	if _, ok := <-s2.C; ok || s2.Err() != nil {
		t.Fatalf("closed subscription: err %v", s2.Err())
	}
}

func TestNode_ExportImportJoinsBothWays(t *testing.T) {
	ctx := context.Background()
	a, b := openMem(t, testConfig(nil)), openMem(t, testConfig(nil))
	for i := range 2500 { // more than one import chunk
		if _, err := a.Add(ctx, key("snapshots", fmt.Sprintf("a%04d", i)), mustDoc(t, `{"i":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Add(ctx, key("images", "only-b"), mustDoc(t, `{"b":true}`)); err != nil {
		t.Fatal(err)
	}
	// a removes an item that b already had: b must lose it by the import.
	if err := a.Remove(ctx, key("snapshots", "a0001")); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := a.ExportState(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	res, err := b.ImportState(ctx, bytes.NewReader(buf.Bytes()))
	if err != nil || res.Items != 2499 {
		t.Fatalf("import: %+v %v", res, err)
	}
	buf.Reset()
	if err := b.ExportState(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ImportState(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"snapshots", "images"} {
		if da, db := dump(t, a, c), dump(t, b, c); da != db {
			t.Fatalf("%s differ after exchanging full states", c)
		}
	}
	if st := b.Stats(); st.Items["snapshots"] != 2499 || st.Items["images"] != 1 {
		t.Fatalf("counts after import: %+v", st.Items)
	}
	// Importing the same state again changes nothing.
	buf.Reset()
	if err := a.ExportState(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	if res, err := b.ImportState(ctx, &buf); err != nil || res.Changed != 0 {
		t.Fatalf("second import: %+v %v", res, err)
	}
}

func TestNode_ImportRejectsBadStreams(t *testing.T) {
	ctx := context.Background()
	a := openMem(t, testConfig(nil))
	for i := range 3 {
		if _, err := a.Add(ctx, key("snapshots", fmt.Sprint("s", i)), crdt.Document{}); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := a.ExportState(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	// Garbage is ErrInvalid or ErrTooLarge; a stream that ends early is
	// io.ErrUnexpectedEOF and neither of those (a peer that sent it is
	// not disconnected). Random bytes whose first byte claims a frame
	// longer than what follows look like a stream cut short too.
	for _, tc := range []struct {
		name    string
		in      []byte
		cutCase bool
	}{
		{"empty", nil, true},
		{"garbage", []byte("\x12not a state stream"), false},
		{"garbage with a long length", []byte("not a state stream"), true},
		{"cut short", good[:len(good)-3], true},
		{"no trailer", good[:len(good)-2], true},
		{"huge frame", []byte{0xff, 0xff, 0xff, 0xff, 0x7f}, false},
		{"overlong length", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, false},
		{"data after the trailer", append(bytes.Clone(good), 0), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := openMem(t, testConfig(nil))
			_, err := b.ImportState(ctx, bytes.NewReader(tc.in))
			garbage := errors.Is(err, crdt.ErrInvalid) || errors.Is(err, crdt.ErrTooLarge)
			cut := errors.Is(err, io.ErrUnexpectedEOF)
			if tc.cutCase && (!cut || garbage) {
				t.Fatalf("got %v, want io.ErrUnexpectedEOF alone", err)
			}
			if !tc.cutCase && (!garbage || cut) {
				t.Fatalf("got %v, want ErrInvalid or ErrTooLarge", err)
			}
			seen, applied := b.Contexts()
			if seen.Len() != 0 || applied.Len() != 0 {
				t.Fatal("a rejected stream changed the contexts")
			}
		})
	}
}

func TestNode_DeltasForReportsGap(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(nil)
	cfg.MaxLogEntries = 2
	a, b := openMem(t, cfg), openMem(t, testConfig(nil))
	for i := range 4 {
		if _, err := a.Add(ctx, key("snapshots", fmt.Sprint("s", i)), crdt.Document{}); err != nil {
			t.Fatal(err)
		}
	}
	_, have := b.Contexts()
	sent, err := a.DeltasFor(ctx, have, func(*crdt.Delta, []byte) error { return nil })
	if !errors.Is(err, ErrLogGap) || sent != 0 {
		t.Fatalf("sent %d, err %v; want a gap at the first trimmed delta", sent, err)
	}
	if !antiEntropy(t, a, b) {
		t.Fatal("anti-entropy did not fall back to a full state")
	}
	// Now b is current except for what comes next, which the log covers.
	if _, err := a.Add(ctx, key("snapshots", "s9"), crdt.Document{}); err != nil {
		t.Fatal(err)
	}
	_, have = b.Contexts()
	var got []string
	if _, err := a.DeltasFor(ctx, have, func(d *crdt.Delta, _ []byte) error { got = append(got, d.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != "s9" {
		t.Fatalf("sent %v, want just s9", got)
	}
}

// TestLogKeys_Layout: the log's keys keep the layout of the store
// (docs/DESIGN.md): 16 lower-case hex digits, zero-padded.
func TestLogKeys_Layout(t *testing.T) {
	for _, n := range []uint64{0, 1, 0xabc, 1 << 40, ^uint64(0)} {
		if got, want := logSeqKey(n).String(), fmt.Sprintf("/l/s/%016x", n); got != want {
			t.Errorf("logSeqKey(%d) = %q, want %q", n, got, want)
		}
		d := crdt.Dot{Replica: "3f2a9c41d07e5b68", Counter: n}
		if got, want := logDotKey(d).String(), fmt.Sprintf("/l/d/r%s/%016x", d.Replica, d.Counter); got != want {
			t.Errorf("logDotKey(%s) = %q, want %q", d, got, want)
		}
	}
}

// TestNode_LogBoundedByBytes: by default the delta log is bounded by its
// encoded size alone: many small deltas stay (no count bound), and large
// deltas push the oldest out once MaxLogBytes is reached; a consumer
// behind the trimmed part gets ErrCursorExpired.
func TestNode_LogBoundedByBytes(t *testing.T) {
	ctx := context.Background()
	if d := DefaultConfig(); d.MaxLogEntries != 0 || d.MaxLogBytes != 128<<20 {
		t.Fatalf("defaults: MaxLogEntries %d, MaxLogBytes %d; want 0 (no count bound) and 128 MiB", d.MaxLogEntries, d.MaxLogBytes)
	}
	cfg := testConfig(nil)
	cfg.MaxLogBytes = crdt.MaxDeltaBytes // the least allowed: 2 MiB
	n := openMem(t, cfg)
	const small = 3000
	ops := make([]Op, 0, MaxBatchOps)
	for i := 0; i < small; i += MaxBatchOps {
		ops = ops[:0]
		for j := i; j < min(i+MaxBatchOps, small); j++ {
			ops = append(ops, Op{Kind: OpAdd, Key: key("snapshots", fmt.Sprintf("s%05d", j)), Doc: crdt.Document{"n": []byte(fmt.Sprint(j))}})
		}
		if _, err := n.Batch(ctx, ops); err != nil {
			t.Fatal(err)
		}
	}
	st := n.Stats()
	if st.LogEntries != small || st.LogBytes > cfg.MaxLogBytes {
		t.Fatalf("after %d small deltas the log holds %d entries of %d bytes, want all of them", small, st.LogEntries, st.LogBytes)
	}
	for i := range 30 {
		if _, err := n.Add(ctx, key("snapshots", fmt.Sprintf("big%02d", i)), bigDoc(100<<10)); err != nil {
			t.Fatal(err)
		}
	}
	st = n.Stats()
	if st.LogBytes > cfg.MaxLogBytes || st.LogBytes < cfg.MaxLogBytes-200<<10 {
		t.Fatalf("the log holds %d bytes, want at most %d and close to it", st.LogBytes, cfg.MaxLogBytes)
	}
	if st.LogEntries >= 30 {
		t.Fatalf("the log holds %d entries: the large deltas did not push the old ones out", st.LogEntries)
	}
	if _, err := n.DeltasSince(ctx, 0, 10, false); !errors.Is(err, ErrCursorExpired) {
		t.Fatalf("a consumer behind the trimmed log: %v, want ErrCursorExpired", err)
	}
}
