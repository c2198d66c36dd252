package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// The crash test runs its own test binary as a child process that writes to
// a LevelDB node as fast as it can and reports every acknowledged write on
// stdout; the parent kills it with SIGKILL at a random moment and checks
// the reopened store against what was acknowledged.
const (
	crashChildEnv = "CRDT_CATALOG_CRASH_CHILD" // data directory; set only in the child
	crashCycleEnv = "CRDT_CATALOG_CRASH_CYCLE" // cycle number, to keep ids distinct across cycles
	crashSeedEnv  = "CRDT_CATALOG_CRASH_SEED"  // optional: replay a logged seed
	crashWriters  = 8                          // concurrent writers in the child
	crashMaxOps   = 200_000                    // child bound: operations
	crashMaxTime  = 60 * time.Second           // child bound: time
	crashCycles   = 3                          // kill/reopen cycles on one directory
	crashDeadline = crashMaxTime + time.Minute // parent bound on one child
	crashColl     = "snapshots"                // collection the child writes
	crashDocJSON  = `{"size":1024,"cluster":"cluster-a","status":"completed","created":"2023-12-07T10:30:45Z"}`
)

// expectation is what the parent knows about one id from the child's output.
type expectation uint8

const (
	expectPresent expectation = iota + 1 // add acknowledged, no removal begun
	expectAbsent                         // removal acknowledged
	expectUnknown                        // removal begun but not acknowledged: either outcome is correct
)

func TestNode_CrashKeepsAcknowledgedWrites(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(t, dir, os.Getenv(crashCycleEnv))
		return
	}
	if testing.Short() {
		t.Skip("spawns a child process that writes with fsync for seconds; skipped with -short")
	}

	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(crashSeedEnv); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("%s=%q: %v", crashSeedEnv, s, err)
		}
	}
	t.Logf("seed %d (replay with %s=%d)", seed, crashSeedEnv, seed)
	rng := rand.New(rand.NewPCG(seed, 0x5eed))

	dir := t.TempDir()
	model := map[string]expectation{}
	var counter uint64 // Stats().Counter after the previous cycle's verification
	for cycle := 1; cycle <= crashCycles; cycle++ {
		killAfter := 50 + rng.IntN(3000-50+1)
		start := time.Now()
		acked := crashRunChild(t, dir, cycle, killAfter, model)
		t.Logf("cycle %d: kill after %d acknowledged lines; %d operations acknowledged in %v",
			cycle, killAfter, acked, time.Since(start).Round(time.Millisecond))
		counter = crashVerify(t, dir, cycle, model, counter, uint64(acked))
	}
}

// crashRunChild starts the child on dir, kills it after killAfter
// acknowledged operations, reads its output to the end, and folds what it
// acknowledged into model. It returns the number of acknowledged operations.
func crashRunChild(t *testing.T, dir string, cycle, killAfter int, model map[string]expectation) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), crashDeadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestNode_CrashKeepsAcknowledgedWrites$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashCycleEnv+"="+strconv.Itoa(cycle),
		// Under -race, a data race in the child ends it at once, before
		// the kill, and the parent reports it with the child's stderr.
		"GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" halt_on_error=1"))
	tail := &crashTail{max: 4096}
	cmd.Stderr = tail
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	acked, killed, done := 0, false, false
	var childErrs []string
	r := bufio.NewReader(out)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			// EOF (or the pipe closed by WaitDelay): a last line without
			// its newline was cut by the kill and says nothing.
			break
		}
		verb, id, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
		switch verb {
		case "ack":
			model[id] = expectPresent
			acked++
		case "rm?":
			model[id] = expectUnknown
		case "rm":
			model[id] = expectAbsent
			acked++
		case "done":
			done = true
		case "error":
			childErrs = append(childErrs, id)
		default:
			continue // test framework output
		}
		if !killed && acked >= killAfter {
			if err := cmd.Process.Kill(); err != nil {
				t.Fatalf("kill child: %v", err)
			}
			killed = true
		}
	}
	werr := cmd.Wait()
	stderr := tail.String()
	if ctx.Err() != nil {
		t.Fatalf("cycle %d: child did not finish within %v; stderr:\n%s", cycle, crashDeadline, stderr)
	}
	if len(childErrs) > 0 {
		t.Fatalf("cycle %d: child reported errors: %q; stderr:\n%s", cycle, childErrs, stderr)
	}
	switch {
	case killed && werr == nil && done:
		t.Logf("cycle %d: child reached its bound just as it was killed", cycle)
	case killed:
		var ee *exec.ExitError
		if !errors.As(werr, &ee) {
			t.Fatalf("cycle %d: wait after kill: %v", cycle, werr)
		}
	case werr != nil || !done:
		t.Fatalf("cycle %d: child exited before the kill (%d acknowledged, done=%v): %v; stderr:\n%s",
			cycle, acked, done, werr, stderr)
	default:
		t.Logf("cycle %d: child reached its bound after %d operations before the kill", cycle, acked)
	}
	return acked
}

// crashVerify reopens dir and checks it against model: every acknowledged
// add is present unless its removal was acknowledged, every acknowledged
// removal is absent, the dot counter covers every acknowledged operation,
// and a new operation takes a dot greater than any this replica used
// before. It returns the counter after that new operation.
func crashVerify(t *testing.T, dir string, cycle int, model map[string]expectation, prevCounter, acked uint64) uint64 {
	t.Helper()
	ctx := context.Background()
	n := openDir(t, dir, crashConfig())
	defer func() {
		if err := n.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()

	present, absent, unknown := 0, 0, 0
	var lost []string
	for id, want := range model {
		_, err := n.Get(ctx, key(crashColl, id))
		switch {
		case err != nil && !errors.Is(err, ErrNotFound):
			t.Fatalf("cycle %d: get %s: %v", cycle, id, err)
		case want == expectPresent && err != nil:
			lost = append(lost, "add "+id)
		case want == expectAbsent && err == nil:
			lost = append(lost, "remove "+id)
		case want == expectUnknown:
			unknown++
			// Whatever the crash left is now durable: hold later cycles to it.
			if err == nil {
				model[id] = expectPresent
			} else {
				model[id] = expectAbsent
			}
		}
		if model[id] == expectPresent {
			present++
		} else {
			absent++
		}
	}
	if len(lost) > 0 {
		slices.Sort(lost)
		t.Fatalf("cycle %d: %d acknowledged operations lost (of %d ids checked), e.g. %q",
			cycle, len(lost), len(model), lost[:min(len(lost), 10)])
	}

	st := n.Stats()
	if st.Counter < prevCounter+acked {
		t.Fatalf("cycle %d: counter %d after reopen, want at least %d (before) + %d (acknowledged operations)",
			cycle, st.Counter, prevCounter, acked)
	}
	// The per-collection count survives the crash in step with the items
	// (the child's unacknowledged adds may be present too).
	visible := 0
	for cursor := ""; ; {
		p, err := n.Query(ctx, crashColl, "", MaxQueryLimit, cursor)
		if err != nil {
			t.Fatal(err)
		}
		visible += len(p.Items)
		if cursor = p.NextCursor; cursor == "" {
			break
		}
	}
	if st.Items[crashColl] != int64(visible) || visible < present {
		t.Fatalf("cycle %d: Stats().Items[%s] = %d, query finds %d, model has %d present",
			cycle, crashColl, st.Items[crashColl], visible, present)
	}

	// Every index holds exactly the entries of the items once the builds
	// and drops the kill cut have resumed, and answers as a scan does.
	for _, st := range n.Indexes() {
		if st.State != IndexReady {
			t.Logf("cycle %d: index on %s %s at reopen (%d/%d items)", cycle, st.Field, st.State, st.Indexed, st.Total)
		}
	}
	waitIndexes(t, n)
	checkIndexes(t, n)
	sameAsScan(t, n, "status=completed", MaxQueryLimit)
	sameAsScan(t, n, "kind=k3", MaxQueryLimit)
	for _, q := range []string{"cluster=cluster-b", "size>=500 size<510", "created<2023-12-07T10:05:00Z"} {
		if !sameAsScan(t, n, q, MaxQueryLimit) {
			t.Fatalf("cycle %d: %q scanned", cycle, q)
		}
	}

	// Every acknowledged operation is in the log, and no dot of this
	// replica appears twice.
	logged, cursor := crashReadLog(t, n, 0)
	added, removed := map[string]bool{}, map[string]bool{}
	var maxCounter uint64
	for dot, d := range logged {
		switch d.Op {
		case crdt.OpAdd:
			added[d.ID] = true
		case crdt.OpRemove:
			removed[d.ID] = true
		}
		maxCounter = max(maxCounter, dot.Counter)
	}
	var unlogged []string
	for id, want := range model {
		if !added[id] {
			unlogged = append(unlogged, "add "+id)
		}
		if want == expectAbsent && !removed[id] {
			unlogged = append(unlogged, "remove "+id)
		}
	}
	if len(unlogged) > 0 {
		slices.Sort(unlogged)
		t.Fatalf("cycle %d: %d acknowledged operations missing from the delta log, e.g. %q",
			cycle, len(unlogged), unlogged[:min(len(unlogged), 10)])
	}
	if maxCounter > st.Counter {
		t.Fatalf("cycle %d: the log holds dot counter %d but the node's counter is %d: the next write would reuse a dot",
			cycle, maxCounter, st.Counter)
	}

	// A new operation takes a fresh dot.
	pk := key(crashColl, fmt.Sprintf("parent-%d", cycle))
	if _, err := n.Add(ctx, pk, mustDoc(t, crashDocJSON)); err != nil {
		t.Fatal(err)
	}
	fresh, _ := crashReadLog(t, n, cursor)
	if len(fresh) != 1 {
		t.Fatalf("cycle %d: %d new deltas after one add, want 1", cycle, len(fresh))
	}
	for dot, d := range fresh {
		if d.Key() != pk {
			t.Fatalf("cycle %d: new delta is about %s, want %s", cycle, d.Key(), pk)
		}
		if _, reused := logged[dot]; reused || dot.Counter <= maxCounter {
			t.Fatalf("cycle %d: new add took dot %s; the log already reaches counter %d (reused: %v)",
				cycle, dot, maxCounter, reused)
		}
		if after := n.Stats().Counter; dot.Counter != after {
			t.Fatalf("cycle %d: new add took dot %s but the counter is %d", cycle, dot, after)
		}
	}
	model[pk.ID] = expectPresent
	t.Logf("cycle %d: verified %d present, %d absent (%d in-flight removals resolved), %d logged dots, counter %d",
		cycle, present, absent, unknown, len(logged)+1, n.Stats().Counter)
	return n.Stats().Counter
}

// crashReadLog returns the node's own deltas logged after cursor, by dot,
// failing on a dot logged twice, and the cursor after the last one.
func crashReadLog(t *testing.T, n *Node, cursor uint64) (map[crdt.Dot]*crdt.Delta, uint64) {
	t.Helper()
	out := map[crdt.Dot]*crdt.Delta{}
	for {
		p, err := n.DeltasSince(context.Background(), cursor, 1000, true)
		if err != nil {
			t.Fatalf("read delta log after %d: %v", cursor, err)
		}
		for _, d := range p.Deltas {
			if d.Dot.Replica != n.ReplicaID() {
				t.Fatalf("local log entry with foreign dot %s", d.Dot)
			}
			if prev, dup := out[d.Dot]; dup {
				t.Fatalf("dot %s used twice: %s %s and %s %s", d.Dot, prev.Op, prev.Key(), d.Op, d.Key())
			}
			out[d.Dot] = d
		}
		cursor = p.Cursor
		if !p.More {
			return out, cursor
		}
	}
}

// crashChild is the child process: writers add and remove items on dir
// and print each acknowledged operation, until the parent kills the
// process or a bound is reached.
func crashChild(t *testing.T, dir, cycle string) {
	// Small chunks, so that builds and drops span many commits and the
	// kill is likely to land in one.
	buildChunk, indexChunk = 2, 2
	n := openDir(t, dir, crashConfig())
	ctx, cancel := context.WithTimeout(context.Background(), crashMaxTime)
	defer cancel()

	var outMu sync.Mutex
	emit := func(verb, id string) {
		outMu.Lock()
		defer outMu.Unlock()
		// One write per line, straight to the file: a line is printed
		// only after its operation was acknowledged, and is out of the
		// process (in the pipe) before the next one starts.
		_, _ = os.Stdout.WriteString(verb + " " + id + "\n")
	}
	// Drop the index the previous cycle added at runtime and add another,
	// built in the background while the writers below write.
	for _, st := range n.Indexes() {
		if st.API && st.State != IndexDropping {
			if err := n.DropIndex(ctx, st.Collection, st.Field); err != nil {
				emit("error", strings.ReplaceAll(fmt.Sprintf("drop index %s: %v", st.Field, err), "\n", " "))
				return
			}
		}
	}
	c, _ := strconv.Atoi(cycle)
	field := []string{"kind", "status"}[c%2]
	for {
		_, _, err := n.AddIndex(ctx, crashColl, field)
		if errors.Is(err, ErrIndexBusy) && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond) // its earlier drop is still deleting entries
			continue
		}
		if err != nil {
			emit("error", strings.ReplaceAll(fmt.Sprintf("add index %s: %v", field, err), "\n", " "))
			return
		}
		break
	}
	var ops atomic.Int64
	var wg sync.WaitGroup
	for g := range crashWriters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []string // acknowledged adds not yet removed
			for i := 0; ctx.Err() == nil && ops.Add(1) <= crashMaxOps; i++ {
				if i%4 == 3 && len(mine) > 0 {
					id := mine[0]
					mine = mine[1:]
					emit("rm?", id)
					if err := n.Remove(ctx, key(crashColl, id)); err != nil {
						if ctx.Err() == nil {
							emit("error", strings.ReplaceAll(fmt.Sprintf("remove %s: %v", id, err), "\n", " "))
						}
						return
					}
					emit("rm", id)
					continue
				}
				if i%4 == 2 && len(mine) > 0 {
					// Move a present item's index entries.
					id := mine[len(mine)-1]
					if _, err := n.Patch(ctx, key(crashColl, id), crashDoc(t, i+7, g)); err != nil {
						if ctx.Err() == nil {
							emit("error", strings.ReplaceAll(fmt.Sprintf("patch %s: %v", id, err), "\n", " "))
						}
						return
					}
					continue
				}
				id := fmt.Sprintf("c%s-w%d-%d", cycle, g, i)
				if _, err := n.Add(ctx, key(crashColl, id), crashDoc(t, i, g)); err != nil {
					if ctx.Err() == nil {
						emit("error", strings.ReplaceAll(fmt.Sprintf("add %s: %v", id, err), "\n", " "))
					}
					return
				}
				emit("ack", id)
				mine = append(mine, id)
			}
		}()
	}
	wg.Wait()
	if err := n.Close(); err != nil {
		emit("error", "close: "+err.Error())
	}
	emit("done", "")
}

// crashConfig is the configuration of the child and of the parent's
// checks: indexes on three fields of the collection written.
func crashConfig() Config {
	cfg := testConfig(nil)
	cfg.Indexes = map[string][]string{crashColl: {"size", "cluster", "created"}}
	return cfg
}

// crashDoc is the document of the i-th operation of writer g: its indexed
// fields vary.
func crashDoc(tb testing.TB, i, g int) crdt.Document {
	return mustDoc(tb, fmt.Sprintf(`{"size":%d,"cluster":"cluster-%c","status":"completed","created":"2023-12-07T10:%02d:45Z","kind":"k%d"}`, i%1000, 'a'+g%3, i%60, i%7))
}

// crashTail keeps the last max bytes written to it.
type crashTail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (w *crashTail) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	if len(w.b) > w.max {
		w.b = w.b[len(w.b)-w.max:]
	}
	return len(p), nil
}

func (w *crashTail) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.b)
}

var _ io.Writer = (*crashTail)(nil)
