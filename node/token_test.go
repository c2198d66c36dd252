package node

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// TestWaitApplied: a token of a's writes makes b wait until it has applied
// them, durably (a read after it sees them), asking for deltas meanwhile;
// a delta that waits for a dependency does not count; a context that ends
// first gets the missing dots.
func TestWaitApplied(t *testing.T) {
	ctx := context.Background()
	a, b := openMem(t, signedConfig(t)), openMem(t, signedConfig(t))
	first, err := a.Add(ctx, key("snapshots", "s1"), mustDoc(t, `{"v":1}`))
	if err != nil {
		t.Fatal(err)
	}
	second, err := a.Patch(ctx, key("snapshots", "s1"), mustDoc(t, `{"v":2}`))
	if err != nil {
		t.Fatal(err)
	}
	tok := crdt.Token{}
	tok.Add(first.Dot)
	tok.Add(second.Dot)
	if tok.String() != string(second.Dot.Replica)+":2" {
		t.Fatalf("token %q", tok)
	}
	if err := a.WaitApplied(ctx, tok); err != nil {
		t.Fatalf("the writer waits for its own writes: %v", err)
	}

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	var na *NotAppliedError
	if err := b.WaitApplied(short, tok); !errors.As(err, &na) || !errors.Is(err, context.DeadlineExceeded) ||
		len(na.Missing) != 1 || na.Missing[0] != second.Dot {
		t.Fatalf("b before the deltas: %v", err)
	}
	select {
	case <-b.Wants():
	default:
		t.Fatal("b waited without asking for deltas")
	}

	page, err := a.DeltasSince(ctx, 0, 10, true)
	if err != nil || len(page.Deltas) != 2 {
		t.Fatalf("a's deltas: %v, %v", page, err)
	}
	// Only the patch: it waits for the add, and the token is not met.
	if res, err := b.ApplyDeltas(ctx, page.Deltas[1:]); err != nil || res.Waiting != 1 {
		t.Fatalf("b joined the patch alone: %+v, %v", res, err)
	}
	done := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		done <- b.WaitApplied(wctx, tok)
	}()
	select {
	case err := <-done:
		t.Fatalf("WaitApplied returned %v while the patch waits for the add", err)
	case <-time.After(100 * time.Millisecond):
	}
	if _, err := b.ApplyDeltas(ctx, page.Deltas[:1]); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("WaitApplied after the deltas: %v", err)
	}
	if it, err := b.Get(ctx, key("snapshots", "s1")); err != nil || string(it.Metadata["v"]) != "2" {
		t.Fatalf("read after the wait: %+v, %v", it, err)
	}
	if err := b.WaitApplied(ctx, crdt.Token{}); err != nil {
		t.Fatalf("the empty token: %v", err)
	}
}

// TestWaitApplied_WhileWritesFail: a store that refuses writes stops
// writes, not reads: a token of writes made before still answers at once.
func TestWaitApplied_WhileWritesFail(t *testing.T) {
	ctx := context.Background()
	n, fst := openFaulty(t, t.TempDir(), testConfig(nil))
	defer n.Close()
	it, err := n.Add(ctx, key("snapshots", "s1"), mustDoc(t, `{}`))
	if err != nil {
		t.Fatal(err)
	}
	fst.set(enospc)
	if _, err := n.Add(ctx, key("snapshots", "s2"), mustDoc(t, `{}`)); err == nil {
		t.Fatal("a write on a full disk succeeded")
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := n.WaitApplied(wctx, crdt.Token{it.Dot.Replica: it.Dot.Counter}); err != nil {
		t.Fatalf("WaitApplied while writes fail: %v", err)
	}
}
