// Package testbin gives tests that run crdt-catalog as a process (the
// end-to-end tests of cmd/crdt-catalog, the testnet harness) one binary,
// built at most once per go test run and shared by every test process of
// it.
//
// A run of go test ./... starts one process per package, in parallel; each
// asks Path for the binary. The first builds it into a directory named
// after a hash of everything that goes into it (the module's non-test
// sources, go.mod, go.sum, the Go version, the race setting and the build
// environment); the others wait on a lock for that build and then reuse
// it. A later run with the same sources reuses it too. Directories unused
// for a day are removed.
package testbin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// MainPackage is the import path of the binary Path builds.
const MainPackage = "github.com/crdt-catalog/crdt-catalog/cmd/crdt-catalog"

// BuildTimeout bounds a build, including the wait for another process's
// build of the same binary. A cold build compiles libp2p: about a minute
// on two quiet cores, and more than five when other packages' tests (and
// other jobs) share them, as in a cold `go test ./...`. A test whose own
// deadline comes sooner (go test's -timeout, 10 minutes by default) gets
// that deadline less a minute instead.
const BuildTimeout = 15 * time.Minute

// EnvBinary names the environment variable that, when set, names a
// binary to use instead of building one (the old name TESTNET_BIN).
// EnvRace=1 builds with the race detector: slower peers, races in the
// binary itself reported.
const (
	EnvBinary = "TESTNET_BIN"
	EnvRace   = "TESTNET_RACE"
)

// staleAfter is how long a build directory may go unused before Path
// removes it.
const staleAfter = 24 * time.Hour

// Path returns the crdt-catalog binary for tb's test: $TESTNET_BIN if set,
// otherwise the shared build (with -race if TESTNET_RACE=1). It builds it
// if no test process of this source tree has; it fails tb if the build
// fails or does not finish in time. Safe for concurrent use, within a
// process and across processes.
func Path(tb testing.TB) string {
	tb.Helper()
	if bin := os.Getenv(EnvBinary); bin != "" {
		return bin
	}
	timeout := BuildTimeout
	if d, ok := tb.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok {
			timeout = min(timeout, time.Until(dl)-time.Minute)
		}
	}
	if timeout <= 0 {
		tb.Fatalf("testbin: no time left to build %s before the test's deadline", MainPackage)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	bin, err := Build(ctx, os.Getenv(EnvRace) == "1")
	if err != nil {
		tb.Fatalf("testbin: %v (set %s to a prebuilt binary to skip the build)", err, EnvBinary)
	}
	return bin
}

// Build returns the path of the shared binary for the module that holds
// the current directory, building it first if needed; see the package
// comment. It blocks until the binary is ready or ctx ends.
func Build(ctx context.Context, race bool) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	key, err := buildKey(root, race)
	if err != nil {
		return "", err
	}
	base := filepath.Join(os.TempDir(), "crdt-catalog-testbin")
	dir := filepath.Join(base, key)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	unlock, err := lock(ctx, filepath.Join(dir, "lock"))
	if err != nil {
		return "", fmt.Errorf("waiting for another test process's build: %w", err)
	}
	defer unlock()
	bin := filepath.Join(dir, "crdt-catalog")
	if _, err := os.Stat(bin); err == nil {
		now := time.Now()
		_ = os.Chtimes(dir, now, now) // in use: not stale
		return bin, nil
	}
	prune(base, dir)
	tmp := bin + ".tmp"
	args := []string{"build", "-o", tmp}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, MainPackage)...)
	cmd.Dir = root
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w after %v", ctx.Err(), time.Since(start).Round(time.Second))
		}
		return "", fmt.Errorf("go build %s: %v\n%s", MainPackage, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// moduleRoot returns the directory of the go.mod above the current
// directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the current directory")
		}
		dir = parent
	}
}

// buildKey hashes what the binary is built from: every file the go
// command may compile into it (non-test .go, .s, .c and .h files outside
// testdata and the directories go ignores), go.mod, go.sum, and the
// settings of the build.
func buildKey(root string, race bool) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s %s/%s race=%v", runtime.Version(), runtime.GOOS, runtime.GOARCH, race)
	for _, v := range []string{"GOFLAGS", "CGO_ENABLED", "GOEXPERIMENT", "GOAMD64", "GOTOOLCHAIN", "CC"} {
		fmt.Fprintf(h, " %s=%s", v, os.Getenv(v))
	}
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (name == "testdata" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case path == filepath.Join(root, "go.mod"), path == filepath.Join(root, "go.sum"):
		case strings.HasSuffix(name, "_test.go"):
			return nil
		case strings.HasSuffix(name, ".go"), strings.HasSuffix(name, ".s"), strings.HasSuffix(name, ".c"), strings.HasSuffix(name, ".h"):
		default:
			return nil
		}
		files = append(files, path)
		return nil
	})
	if err != nil {
		return "", err
	}
	sort.Strings(files)
	for _, f := range files {
		rel, _ := filepath.Rel(root, f)
		fmt.Fprintf(h, "\x00%s\x00", rel)
		fh, err := os.Open(f)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(h, fh)
		fh.Close()
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:20], nil
}

// lock takes an exclusive flock on path, polling until ctx ends, and
// returns its release.
func lock(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// prune removes the build directories under base, other than keep, that
// no test used for staleAfter, each under its own lock so that a build or
// use in progress is left alone.
func prune(base, keep string) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range entries {
		dir := filepath.Join(base, e.Name())
		info, err := e.Info()
		if dir == keep || err != nil || !e.IsDir() || time.Since(info.ModTime()) < staleAfter {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		unlock, err := lock(ctx, filepath.Join(dir, "lock"))
		cancel()
		if err != nil {
			continue
		}
		_ = os.RemoveAll(dir)
		unlock()
	}
}
