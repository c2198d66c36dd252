package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
	ds "github.com/ipfs/go-datastore"
)

// faultStore wraps a store; while a fault is set, every batch commit fails
// with it before writing anything, as a full disk fails goleveldb's.
type faultStore struct {
	ds.Batching
	fault   atomic.Pointer[error]
	commits atomic.Int64 // batch commits that failed
}

// enospc is the error goleveldb returns for a full disk.
var enospc error = &fs.PathError{Op: "write", Path: "000001.log", Err: syscall.ENOSPC}

func (s *faultStore) set(err error) {
	if err == nil {
		s.fault.Store(nil)
		return
	}
	s.fault.Store(&err)
}

func (s *faultStore) Batch(ctx context.Context) (ds.Batch, error) {
	b, err := s.Batching.Batch(ctx)
	if err != nil {
		return nil, err
	}
	return &faultBatch{Batch: b, s: s}, nil
}

type faultBatch struct {
	ds.Batch
	s *faultStore
}

func (b *faultBatch) Commit(ctx context.Context) error {
	if err := b.s.fault.Load(); err != nil {
		b.s.commits.Add(1)
		return *err
	}
	return b.Batch.Commit(ctx)
}

// openFaulty opens a node on a LevelDB store in dir behind a faultStore.
func openFaulty(tb testing.TB, dir string, cfg Config) (*Node, *faultStore) {
	tb.Helper()
	inner, err := OpenLevelDB(dir, false)
	if err != nil {
		tb.Fatal(err)
	}
	fst := &faultStore{Batching: inner}
	n, err := Open(context.Background(), fst, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return n, fst
}

// waitFor polls cond until it holds, failing the test after a generous
// deadline.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// recordChanges drains a subscription into a list, returned by the
// function it returns once the subscription has ended.
func recordChanges(n *Node) (stop func() []Change) {
	sub := n.Subscribe(1 << 16)
	var got []Change
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range sub.C {
			got = append(got, c)
		}
	}()
	return func() []Change {
		sub.Close()
		<-done
		if err := sub.Err(); err != nil {
			panic(fmt.Sprintf("subscription: %v", err))
		}
		return got
	}
}

func TestNode_FailedCommitRecovers(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := testConfig(nil)
	cfg.RetryInterval = 5 * time.Millisecond
	n, fst := openFaulty(t, dir, cfg)
	defer func() { _ = n.Close() }()
	changes := recordChanges(n)

	for i := range 5 {
		if _, err := n.Add(ctx, key("snapshots", fmt.Sprint("a", i)), mustDoc(t, `{"n":1}`)); err != nil {
			t.Fatal(err)
		}
	}
	before := n.Stats()

	fst.set(enospc)
	_, err := n.Add(ctx, key("snapshots", "lost"), mustDoc(t, `{}`))
	if !errors.Is(err, ErrFailed) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Add on a full disk: %v, want ErrFailed and ENOSPC", err)
	}
	if err := n.Writable(); !errors.Is(err, ErrFailed) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Writable on a full disk: %v", err)
	}
	// Every kind of write is refused while the store refuses writes,
	// without reaching it.
	failedCommits := fst.commits.Load()
	writes := map[string]func() error{
		"add":    func() error { _, err := n.Add(ctx, key("snapshots", "lost2"), mustDoc(t, `{}`)); return err },
		"remove": func() error { return n.Remove(ctx, key("snapshots", "a0")) },
		"clear":  func() error { return n.ClearDeltas(ctx, 1) },
		"apply": func() error {
			d, err := crdt.AddDelta(key("images", "remote"), nil, crdt.Document{}, crdt.Dot{Replica: "feedbeeffeedbeef", Counter: 1}, 1)
			if err != nil {
				t.Fatal(err)
			}
			_, err = n.ApplyDeltas(ctx, []*crdt.Delta{d})
			return err
		},
	}
	for name, w := range writes {
		if err := w(); !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("%s while failed: %v, want ENOSPC", name, err)
		}
	}
	// Memory fell back to the store: the failed add is gone from the
	// counter, the contexts and the item counts.
	st := n.Stats()
	if st.Counter != before.Counter || st.Items["snapshots"] != 5 || st.CommitFailures == 0 {
		t.Errorf("stats while failed: counter %d items %d failures %d, want %d, 5, >0", st.Counter, st.Items["snapshots"], st.CommitFailures, before.Counter)
	}
	if _, a := n.Contexts(); a.Max(n.ReplicaID()) != before.Counter {
		t.Errorf("applied context names counter %d, want %d", a.Max(n.ReplicaID()), before.Counter)
	}
	if _, err := n.Get(ctx, key("snapshots", "lost")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of the failed add: %v, want ErrNotFound", err)
	}
	if _, err := n.Get(ctx, key("snapshots", "a4")); err != nil {
		t.Errorf("reads stop while failed: %v", err)
	}

	// The probe keeps failing while the fault lasts, then writes resume
	// by themselves.
	waitFor(t, "the probe retries", func() bool { return fst.commits.Load() > failedCommits+2 })
	fst.set(nil)
	waitFor(t, "the node takes writes again", func() bool { return n.Writable() == nil })
	if _, err := n.Add(ctx, key("snapshots", "after"), mustDoc(t, `{}`)); err != nil {
		t.Fatal(err)
	}
	got := changes()
	if len(got) != 6 {
		t.Fatalf("published %d changes, want 6 (5 before, 1 after)", len(got))
	}
	for i, c := range got {
		if c.Delta.Dot.Counter != uint64(i+1) {
			t.Errorf("change %d has dot %s, want counter %d: the failed add's counter is reused, nothing else", i, c.Delta.Dot, i+1)
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	n2 := openDir(t, dir, testConfig(nil))
	defer n2.Close()
	for _, id := range []string{"a0", "a1", "a2", "a3", "a4", "after"} {
		if _, err := n2.Get(ctx, key("snapshots", id)); err != nil {
			t.Errorf("acknowledged %s after reopening: %v", id, err)
		}
	}
	if _, err := n2.Get(ctx, key("snapshots", "lost")); !errors.Is(err, ErrNotFound) {
		t.Errorf("failed add after reopening: %v, want ErrNotFound", err)
	}
	if c := n2.Stats().Counter; c != 6 {
		t.Errorf("counter after reopening %d, want 6", c)
	}
}

func TestNode_FailedCommitOtherError(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(nil)
	cfg.RetryInterval = 5 * time.Millisecond
	n, fst := openFaulty(t, t.TempDir(), cfg)
	defer n.Close()
	fst.set(&fs.PathError{Op: "write", Path: "000001.log", Err: syscall.EIO})
	_, err := n.Add(ctx, key("snapshots", "x"), mustDoc(t, `{}`))
	if !errors.Is(err, ErrFailed) || !errors.Is(err, syscall.EIO) || errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Add with a failing disk: %v, want ErrFailed and EIO", err)
	}
	fst.set(nil)
	waitFor(t, "the node takes writes again", func() bool { return n.Writable() == nil })
	if _, err := n.Add(ctx, key("snapshots", "x"), mustDoc(t, `{}`)); err != nil {
		t.Fatal(err)
	}
}

// TestNode_FailedCommitConcurrent runs local writers and a remote-delta
// feeder while the store fails and recovers several times: every
// acknowledged write survives a reopen, the published dots of local writes
// are exactly 1..N (a failed group's counters are reused, nothing that
// was published), and every remote delta, retried until acknowledged,
// ends up applied.
func TestNode_FailedCommitConcurrent(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := testConfig(nil)
	cfg.RetryInterval = time.Millisecond
	n, fst := openFaulty(t, dir, cfg)
	defer func() { _ = n.Close() }()
	changes := recordChanges(n)

	// Deltas of another replica, to feed in.
	src := openMem(t, testConfig(nil))
	srcChanges := recordChanges(src)
	const remote = 200
	for i := range remote {
		if _, err := src.Add(ctx, key("images", fmt.Sprint("r", i)), mustDoc(t, `{}`)); err != nil {
			t.Fatal(err)
		}
	}
	var deltas []*crdt.Delta
	for _, c := range srcChanges() {
		deltas = append(deltas, c.Delta)
	}

	const writers = 6
	var (
		stop    atomic.Bool
		wg      sync.WaitGroup
		mu      sync.Mutex
		acked   []string
		refused atomic.Int64
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				_, err := n.Add(ctx, key("snapshots", id), mustDoc(t, `{"i":1}`))
				switch {
				case err == nil:
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
				case errors.Is(err, ErrFailed) && errors.Is(err, syscall.ENOSPC):
					refused.Add(1)
					time.Sleep(100 * time.Microsecond)
				default:
					t.Errorf("Add: %v", err)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < len(deltas); {
			_, err := n.ApplyDeltas(ctx, deltas[i:min(i+3, len(deltas))])
			switch {
			case err == nil:
				i += 3
			case errors.Is(err, ErrFailed):
				time.Sleep(100 * time.Microsecond)
			default:
				t.Errorf("ApplyDeltas: %v", err)
				return
			}
		}
	}()

	ackedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	for range 5 {
		base := ackedCount()
		waitFor(t, "writes are acknowledged", func() bool { return ackedCount() > base+20 })
		failures := n.Stats().CommitFailures
		fst.set(enospc)
		waitFor(t, "a commit fails", func() bool { return n.Stats().CommitFailures > failures })
		r := refused.Load()
		waitFor(t, "writers are refused", func() bool { return refused.Load() > r+5 })
		fst.set(nil)
		waitFor(t, "the node takes writes again", func() bool { return n.Writable() == nil })
	}
	stop.Store(true)
	wg.Wait()
	if t.Failed() {
		return
	}

	got := changes()
	local := 0
	for _, c := range got {
		if c.Delta.Dot.Replica != n.ReplicaID() {
			continue
		}
		local++
		if c.Delta.Dot.Counter != uint64(local) {
			t.Fatalf("local change %d has dot %s, want counter %d", local, c.Delta.Dot, local)
		}
	}
	if local != len(acked) {
		t.Errorf("published %d local changes, acknowledged %d writes", local, len(acked))
	}
	failures := n.Stats().CommitFailures
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	n2 := openDir(t, dir, testConfig(nil))
	defer n2.Close()
	for _, id := range acked {
		if _, err := n2.Get(ctx, key("snapshots", id)); err != nil {
			t.Fatalf("acknowledged %s after reopening: %v", id, err)
		}
	}
	st := n2.Stats()
	if st.Items["snapshots"] != int64(len(acked)) || st.Items["images"] != remote {
		t.Errorf("after reopening: %d snapshots, %d images; want %d and %d", st.Items["snapshots"], st.Items["images"], len(acked), remote)
	}
	if st.Counter != uint64(len(acked)) {
		t.Errorf("counter after reopening %d, want %d", st.Counter, len(acked))
	}
	t.Logf("%d writes acknowledged, %d refused, %d commits failed", len(acked), refused.Load(), failures)
}

// TestNode_FullDisk fills a real small file system holding the LevelDB
// store, then frees it: writes fail with ENOSPC, the node resumes by
// itself, and nothing acknowledged is lost. It needs an empty directory on
// a file system of a few MB, named by CATALOG_TEST_SMALL_FS (for example,
// as root: mount -t tmpfs -o size=4m tmpfs /mnt/small); without it, it is
// skipped.
func TestNode_FullDisk(t *testing.T) {
	root := os.Getenv("CATALOG_TEST_SMALL_FS")
	if root == "" {
		t.Skip("CATALOG_TEST_SMALL_FS is not set")
	}
	ctx := context.Background()
	dir, err := os.MkdirTemp(root, "node")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := testConfig(nil)
	cfg.RetryInterval = 50 * time.Millisecond
	store, err := OpenLevelDB(filepath.Join(dir, "store"), true)
	if err != nil {
		t.Fatal(err)
	}
	n, err := Open(ctx, store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = n.Close() }()

	// Leave a little room, then write until the disk is full.
	filler := filepath.Join(root, "filler")
	fill(t, filler)
	t.Cleanup(func() { os.Remove(filler) })
	var acked []string
	big := mustDoc(t, `{"pad":"`+strings.Repeat("p", 2000)+`"}`)
	for i := 0; ; i++ {
		id := fmt.Sprint("x", i)
		_, err := n.Add(ctx, key("snapshots", id), big)
		if err == nil {
			acked = append(acked, id)
			continue
		}
		if !errors.Is(err, ErrFailed) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("write %d on a filling disk: %v, want ErrFailed and ENOSPC", i, err)
		}
		t.Logf("disk full after %d writes: %v", len(acked), err)
		break
	}
	if err := n.Writable(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Writable on a full disk: %v", err)
	}
	counter := n.Stats().Counter
	time.Sleep(3 * cfg.RetryInterval) // let probes fail against the full disk
	if err := n.Writable(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Writable on a full disk after probes: %v", err)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the node takes writes again", func() bool { return n.Writable() == nil })
	for i := range 10 {
		id := fmt.Sprint("after", i)
		if _, err := n.Add(ctx, key("snapshots", id), mustDoc(t, `{}`)); err != nil {
			t.Fatalf("write after space came back: %v", err)
		}
		acked = append(acked, id)
	}
	if c := n.Stats().Counter; c != counter+10 {
		t.Errorf("counter %d after 10 more writes, want %d", c, counter+10)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n2 := openDir(t, filepath.Join(dir, "store"), testConfig(nil))
	defer n2.Close()
	for _, id := range acked {
		if _, err := n2.Get(ctx, key("snapshots", id)); err != nil {
			t.Fatalf("acknowledged %s after reopening: %v", id, err)
		}
	}
	if c := n2.Stats().Counter; c != counter+10 {
		t.Errorf("counter after reopening %d, want %d", c, counter+10)
	}
}

// fill writes path until its file system is full, then frees 256 KiB of
// it: room for some writes, not for many.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 16<<10)
	var size int64
	for {
		m, err := f.Write(buf)
		size += int64(m)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(max(size-256<<10, 0)); err != nil {
		t.Fatal(err)
	}
}
