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
)

// The resume test runs its own test binary as a child that imports a full
// state into a LevelDB node with a StateDir and kills itself with SIGKILL
// at a chosen point of the import; the parent reopens the store and checks
// that the import was finished (or, killed before the stream was checked,
// that nothing changed and a new import completes it).
const (
	resumeChildEnv = "CRDT_CATALOG_RESUME_CHILD" // data directory; set only in the child
	resumeStateEnv = "CRDT_CATALOG_RESUME_STATE" // file holding the state to import
	resumeKillEnv  = "CRDT_CATALOG_RESUME_KILL"  // point:k — kill at the k-th time the import reaches point
	resumeItems    = 2500                        // items of the imported state: 3 chunks
)

func TestNode_ImportKilledAnywhereIsFinished(t *testing.T) {
	if dir := os.Getenv(resumeChildEnv); dir != "" {
		resumeChild(t, dir)
		return
	}
	if testing.Short() {
		t.Skip("spawns child processes; skipped with -short")
	}
	ctx := context.Background()
	// The sender: many items, some removed, so that its contexts matter.
	src := openMem(t, testConfig(nil))
	for i := range resumeItems {
		mustAdd(t, src, fmt.Sprintf("src-%05d", i), fmt.Sprintf(`{"n":%d}`, i))
	}
	for i := 0; i < resumeItems; i += 7 {
		if err := src.Remove(ctx, key("snapshots", fmt.Sprintf("src-%05d", i))); err != nil {
			t.Fatal(err)
		}
	}
	stateFile := filepath.Join(t.TempDir(), "state")
	if err := os.WriteFile(stateFile, exportOf(t, src), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, point := range []string{"spooled:1", "pending:1", "chunk:1", "chunk:2", "joined:1"} {
		t.Run(point, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(nil)
			cfg.StateDir = dir
			// The receiver has writes of its own.
			n := openDir(t, filepath.Join(dir, "store"), cfg)
			for i := range 20 {
				mustAdd(t, n, fmt.Sprintf("own-%02d", i), `{"own":true}`)
			}
			before := exportOf(t, n)
			beforeDump := dump(t, n, "snapshots")
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
			// What the receiver must hold once the import is done.
			ref := openMem(t, testConfig(nil))
			for _, st := range [][]byte{before, exportOf(t, src)} {
				if _, err := ref.ImportState(ctx, strings.NewReader(string(st))); err != nil {
					t.Fatal(err)
				}
			}
			want := dump(t, ref, "snapshots")
			_, wantApplied := ref.Contexts()

			resumeRunChild(t, dir, stateFile, point)

			n = openDir(t, filepath.Join(dir, "store"), cfg)
			defer n.Close()
			if left, _ := filepath.Glob(filepath.Join(dir, importPrefix+"*")); len(left) > 0 {
				t.Fatalf("files left after the restart: %q", left)
			}
			if point == "spooled:1" {
				// Killed before the stream was pending: nothing joined;
				// the sender sends it again.
				if got := dump(t, n, "snapshots"); got != beforeDump {
					t.Fatal("an import killed before its stream was checked changed the node")
				}
				if _, err := n.ImportState(ctx, onlyReader{strings.NewReader(string(exportOf(t, src)))}); err != nil {
					t.Fatal(err)
				}
			}
			if got := dump(t, n, "snapshots"); got != want {
				t.Fatalf("after the restart the node holds %d bytes of listing, want %d: the import was not finished", len(got), len(want))
			}
			if _, applied := n.Contexts(); !applied.Equal(wantApplied) {
				t.Fatal("after the restart the applied context lacks the sender's")
			}
			if st := n.Stats(); st.Items["snapshots"] != int64(20+resumeItems-(resumeItems+6)/7) {
				t.Fatalf("Stats().Items = %d", st.Items["snapshots"])
			}
			mustAdd(t, n, "after", `{}`)
		})
	}
}

// resumeRunChild runs the child on dir and checks that it died by SIGKILL.
func resumeRunChild(t *testing.T, dir, stateFile, point string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestNode_ImportKilledAnywhereIsFinished$", "-test.count=1")
	cmd.Env = append(os.Environ(), resumeChildEnv+"="+dir, resumeStateEnv+"="+stateFile, resumeKillEnv+"="+point)
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
}

// resumeChild imports the state as a network stream would arrive and
// kills its own process at the chosen point.
func resumeChild(t *testing.T, dir string) {
	point, kth, _ := strings.Cut(os.Getenv(resumeKillEnv), ":")
	k, err := strconv.Atoi(kth)
	if err != nil {
		t.Fatal(err)
	}
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
	f, err := os.Open(os.Getenv(resumeStateEnv))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.ImportState(context.Background(), onlyReader{f}); err != nil {
		t.Fatal(err)
	}
	t.Fatalf("the import ended without reaching %s", os.Getenv(resumeKillEnv))
}

// A pending import that cannot be joined (damaged on disk, or refused)
// is logged and dropped: it never keeps the node from starting.
func TestNode_BadPendingImportDoesNotStopOpen(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(nil)
	cfg.StateDir = dir
	n := openDir(t, filepath.Join(dir, "store"), cfg)
	mustAdd(t, n, "a", `{}`)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, importPrefix+"1"+importPending)
	if err := os.WriteFile(bad, []byte("\x05garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	n = openDir(t, filepath.Join(dir, "store"), cfg)
	defer n.Close()
	if _, err := os.Stat(bad); !os.IsNotExist(err) {
		t.Fatalf("the bad pending import is still there: %v", err)
	}
	if _, err := n.Get(context.Background(), key("snapshots", "a")); err != nil {
		t.Fatal(err)
	}
}
