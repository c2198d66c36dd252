package node

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// TestNode_CreateIsCreateOnlyOnThisNode: Create adds an absent item (also
// one removed before), refuses a present one with ErrExists without
// writing anything, and of concurrent Creates of one id on one node
// exactly one succeeds.
func TestNode_CreateIsCreateOnlyOnThisNode(t *testing.T) {
	ctx := context.Background()
	n := openMem(t, testConfig(nil))
	k := key("snapshots", "s1")
	if _, err := n.Create(ctx, k, mustDoc(t, `{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	before := n.Stats().Counter
	if _, err := n.Create(ctx, k, mustDoc(t, `{"v":2}`)); !errors.Is(err, ErrExists) {
		t.Fatalf("Create of a present item: %v, want ErrExists", err)
	}
	if it, err := n.Get(ctx, k); err != nil || string(it.Metadata["v"]) != "1" {
		t.Fatalf("after a refused Create: %+v, %v", it, err)
	}
	if c := n.Stats().Counter; c != before {
		t.Fatalf("a refused Create used dot %d", c)
	}
	if err := n.Remove(ctx, k); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Create(ctx, k, mustDoc(t, `{"v":3}`)); err != nil {
		t.Fatalf("Create after a remove: %v", err)
	}

	const racers = 8
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created int
	)
	for range racers {
		wg.Go(func() {
			_, err := n.Create(ctx, key("snapshots", "raced"), mustDoc(t, `{}`))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created++
			case !errors.Is(err, ErrExists):
				t.Errorf("Create: %v", err)
			}
		})
	}
	wg.Wait()
	if created != 1 {
		t.Fatalf("%d of %d concurrent Creates succeeded, want 1", created, racers)
	}
}

// TestNode_CreateIsCheckedLocallyOnly: two nodes that create one id before
// seeing each other's add both succeed, and after the exchange both hold
// the item with one set of metadata, as for two concurrent adds.
func TestNode_CreateIsCheckedLocallyOnly(t *testing.T) {
	ctx := context.Background()
	a, b := openMem(t, testConfig(nil)), openMem(t, testConfig(nil))
	k := key("images", "img")
	if _, err := a.Create(ctx, k, mustDoc(t, `{"by":"a"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Create(ctx, k, mustDoc(t, `{"by":"b"}`)); err != nil {
		t.Fatal(err)
	}
	exchange(t, a, b)
	exchange(t, b, a)
	if da, db := dump(t, a, "images"), dump(t, b, "images"); da != db {
		t.Fatalf("diverged:\n%s\n%s", da, db)
	}
	if _, err := a.Create(ctx, k, mustDoc(t, `{}`)); !errors.Is(err, ErrExists) {
		t.Fatalf("Create once the other's add arrived: %v, want ErrExists", err)
	}
}
