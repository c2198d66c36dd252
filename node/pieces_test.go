package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/crdt-catalog/crdt-catalog/crdt"
)

// smallPieces makes imports use pieces of size bytes for the rest of the
// test.
func smallPieces(tb testing.TB, size int) {
	tb.Helper()
	old := importPieceBytes
	importPieceBytes = size
	tb.Cleanup(func() { importPieceBytes = old })
}

// pieceSource is a sender of 600 items (every 7th removed) and its state.
func pieceSource(tb testing.TB) (*Node, []byte) {
	tb.Helper()
	src := openMem(tb, testConfig(nil))
	ops := make([]Op, 0, 600)
	for i := range 600 {
		ops = append(ops, Op{Kind: OpAdd, Key: key("snapshots", fmt.Sprintf("p%04d", i)), Doc: mustDoc(tb, fmt.Sprintf(`{"n":%d,"pad":"%s"}`, i, strings.Repeat("x", 40)))})
	}
	for i := 0; i < len(ops); i += MaxBatchOps {
		if _, err := src.Batch(context.Background(), ops[i:min(i+MaxBatchOps, len(ops))]); err != nil {
			tb.Fatal(err)
		}
	}
	for i := 0; i < 600; i += 7 {
		if err := src.Remove(context.Background(), key("snapshots", fmt.Sprintf("p%04d", i))); err != nil {
			tb.Fatal(err)
		}
	}
	return src, exportOf(tb, src)
}

// pieceReceiver opens a node holding writes of its own, some under the
// sender's keys, on a LevelDB in dir with dir as its StateDir (or none).
func pieceReceiver(tb testing.TB, dir string, stateDir bool) *Node {
	tb.Helper()
	cfg := testConfig(nil)
	if stateDir {
		cfg.StateDir = dir
	}
	n := openDir(tb, filepath.Join(dir, "store"), cfg)
	for i := 0; i < 600; i += 50 {
		mustAdd(tb, n, fmt.Sprintf("p%04d", i+3), `{"own":true}`)
	}
	mustAdd(tb, n, "zzz", `{"own":true}`)
	return n
}

// pieceWant returns the listing and applied context a receiver of state
// must hold once the import is done: those of a node that joined the
// receiver's own state and the sender's, each checked whole.
func pieceWant(tb testing.TB, receiver *Node, state []byte) (string, *crdt.Context) {
	tb.Helper()
	ref := openMem(tb, testConfig(nil))
	for _, st := range [][]byte{exportOf(tb, receiver), state} {
		if _, err := ref.ImportState(context.Background(), strings.NewReader(string(st))); err != nil {
			tb.Fatal(err)
		}
	}
	_, applied := ref.Contexts()
	return dump(tb, ref, "snapshots"), applied
}

// checkJoined fails the test unless n holds what pieceWant returned.
func checkJoined(tb testing.TB, n *Node, want string, wantApplied *crdt.Context) {
	tb.Helper()
	if got := dump(tb, n, "snapshots"); got != want {
		tb.Fatalf("the node holds %d bytes of listing, want %d: the join is not that of the whole state", len(got), len(want))
	}
	if _, applied := n.Contexts(); !applied.Equal(wantApplied) {
		tb.Fatal("the applied context is not the join of the receiver's and the sender's")
	}
}

// TestNode_ImportInPieces: a state of many pieces, read as a network
// stream, joins exactly as the same state checked whole does, with a
// StateDir and without, leaving no file behind. A stream that turns
// garbage in a later piece is refused as garbage; the pieces before it
// stay joined without the sender's contexts, and the next import of the
// whole state completes the join.
func TestNode_ImportInPieces(t *testing.T) {
	ctx := context.Background()
	smallPieces(t, 4<<10) // about 40 items a piece
	_, state := pieceSource(t)

	for _, stateDir := range []bool{true, false} {
		t.Run(fmt.Sprint("StateDir=", stateDir), func(t *testing.T) {
			dir := t.TempDir()
			n := pieceReceiver(t, dir, stateDir)
			defer n.Close()
			want, wantApplied := pieceWant(t, n, state)
			res, err := n.ImportState(ctx, onlyReader{strings.NewReader(string(state))})
			if err != nil {
				t.Fatal(err)
			}
			if res.Items != 600-86 {
				t.Fatalf("ImportResult %+v", res)
			}
			checkJoined(t, n, want, wantApplied)
			if left, _ := filepath.Glob(filepath.Join(dir, importPrefix+"*")); len(left) > 0 {
				t.Fatalf("files left: %q", left)
			}
		})
	}

	t.Run("garbage in a later piece", func(t *testing.T) {
		dir := t.TempDir()
		n := pieceReceiver(t, dir, true)
		defer n.Close()
		want, wantApplied := pieceWant(t, n, state)
		_, appliedBefore := n.Contexts()
		fs := splitFrames(t, state)
		idOf := func(frame []byte) string {
			f, err := readFrame(bufioReader(frame), nil, headerBytes(maxReplicasLimit))
			if err != nil {
				t.Fatal(err)
			}
			return f.ID
		}
		bad := append([]byte{}, concat(fs[:300]...)...)
		bad = append(bad, fs[200]...) // an item out of order: garbage
		bad = append(bad, fs[len(fs)-1]...)
		res, err := n.ImportState(ctx, onlyReader{strings.NewReader(string(bad))})
		if !errors.Is(err, crdt.ErrInvalid) {
			t.Fatalf("a stream that turns garbage: %v, want crdt.ErrInvalid", err)
		}
		if res.Changed == 0 || !has(n, idOf(fs[1])) {
			t.Fatalf("%+v: the pieces before the garbage were not joined", res)
		}
		if has(n, idOf(fs[299])) {
			t.Fatal("an item of the bad piece was joined")
		}
		if _, applied := n.Contexts(); !applied.Equal(appliedBefore) {
			t.Fatal("the sender's contexts were joined from a stream refused midway")
		}
		if left, _ := filepath.Glob(filepath.Join(dir, importPrefix+"*")); len(left) > 0 {
			t.Fatalf("files left: %q", left)
		}
		if _, err := n.ImportState(ctx, onlyReader{strings.NewReader(string(state))}); err != nil {
			t.Fatal(err)
		}
		checkJoined(t, n, want, wantApplied)
	})
}

// has reports whether n holds the visible item snapshots/id.
func has(n *Node, id string) bool {
	_, err := n.Get(context.Background(), key("snapshots", id))
	return err == nil
}

// TestNode_ImportBoundedByDisk: without MaxStateBytes, an import into a
// node with a StateDir stops, with ErrStateTooLarge, before a piece would
// leave the disk less than minFreeDisk free: a state that never ends is
// cut off there (the disk's free space is simulated, shrinking as pieces
// arrive).
func TestNode_ImportBoundedByDisk(t *testing.T) {
	smallPieces(t, 4<<10)
	calls := 0
	old := diskFree
	diskFree = func(string) (int64, error) {
		calls++
		return minFreeDisk + int64(importPieceBytes)*int64(10-calls), nil
	}
	t.Cleanup(func() { diskFree = old })
	dir := t.TempDir()
	cfg := testConfig(nil)
	cfg.StateDir = dir
	n := openDir(t, filepath.Join(dir, "store"), cfg)
	defer n.Close()
	_, err := n.ImportState(context.Background(), &endlessState{})
	if !errors.Is(err, ErrStateTooLarge) {
		t.Fatalf("an endless state: %v, want ErrStateTooLarge", err)
	}
	if calls != 10 {
		t.Fatalf("the disk was checked %d times, want 10 (before each piece)", calls)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, importPrefix+"*")); len(left) > 0 {
		t.Fatalf("files left: %q", left)
	}
}

// The pieces kill test runs its own test binary as a child that imports a
// state of many pieces into a LevelDB node with a StateDir and kills
// itself with SIGKILL at a point of a piece after the first.
const (
	piecesChildEnv = "CRDT_CATALOG_PIECES_CHILD" // data directory; set only in the child
	piecesStateEnv = "CRDT_CATALOG_PIECES_STATE"
	piecesKillEnv  = "CRDT_CATALOG_PIECES_KILL" // point:k
)

// TestNode_ImportKilledBetweenPieces: killed during the import of a
// state of many pieces, a node restarts with the pending piece joined,
// nothing left on disk, and without the sender's contexts (so anti-entropy
// pulls the state again); the next import of the state completes it.
func TestNode_ImportKilledBetweenPieces(t *testing.T) {
	if dir := os.Getenv(piecesChildEnv); dir != "" {
		piecesChild(t, dir)
		return
	}
	if testing.Short() {
		t.Skip("spawns child processes; skipped with -short")
	}
	ctx := context.Background()
	smallPieces(t, 4<<10)
	_, state := pieceSource(t)
	stateFile := filepath.Join(t.TempDir(), "state")
	if err := os.WriteFile(stateFile, state, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, point := range []string{"pending:3", "chunk:3", "joined:3", "spooled:4"} {
		t.Run(point, func(t *testing.T) {
			dir := t.TempDir()
			n := pieceReceiver(t, dir, true)
			want, wantApplied := pieceWant(t, n, state)
			_, appliedBefore := n.Contexts()
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestNode_ImportKilledBetweenPieces$", "-test.count=1")
			cmd.Env = append(os.Environ(), piecesChildEnv+"="+dir, piecesStateEnv+"="+stateFile, piecesKillEnv+"="+point)
			tail := &crashTail{max: 4096}
			cmd.Stdout, cmd.Stderr = tail, tail
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("child: %v; want it killed at %s; output:\n%s", err, point, tail)
			}
			if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("child ended with %v, not by SIGKILL at %s; output:\n%s", err, point, tail)
			}

			cfg := testConfig(nil)
			cfg.StateDir = dir
			n = openDir(t, filepath.Join(dir, "store"), cfg)
			defer n.Close()
			if left, _ := filepath.Glob(filepath.Join(dir, importPrefix+"*")); len(left) > 0 {
				t.Fatalf("files left after the restart: %q", left)
			}
			if !has(n, "p0001") {
				t.Fatal("the first piece is not joined after the restart")
			}
			if _, applied := n.Contexts(); !applied.Equal(appliedBefore) {
				t.Fatal("the sender's contexts were joined from an import cut short")
			}
			if _, err := n.ImportState(ctx, onlyReader{strings.NewReader(string(state))}); err != nil {
				t.Fatal(err)
			}
			checkJoined(t, n, want, wantApplied)
		})
	}
}

// piecesChild imports the state as a network stream would arrive and
// kills its own process at the chosen point.
func piecesChild(t *testing.T, dir string) {
	point, kth, _ := strings.Cut(os.Getenv(piecesKillEnv), ":")
	k, err := strconv.Atoi(kth)
	if err != nil {
		t.Fatal(err)
	}
	smallPieces(t, 4<<10)
	seen := 0
	importHook = func(p string) {
		if p == point {
			if seen++; seen == k {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // the signal is on its way
			}
		}
	}
	cfg := testConfig(nil)
	cfg.StateDir = dir
	n := openDir(t, filepath.Join(dir, "store"), cfg)
	f, err := os.Open(os.Getenv(piecesStateEnv))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.ImportState(context.Background(), onlyReader{f}); err != nil {
		t.Fatal(err)
	}
	t.Fatalf("the import ended without reaching %s", os.Getenv(piecesKillEnv))
}
