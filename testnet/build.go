package testnet

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// MainPackage is the import path of the binary the harness runs.
const MainPackage = "github.com/crdt-catalog/crdt-catalog/cmd/crdt-catalog"

var (
	buildMu    sync.Mutex
	buildDir   string              // the process's build directory, made on first use
	buildCache = map[bool]string{} // race -> binary path
)

// BuildTo builds the crdt-catalog binary into dir with "go build -o"
// (with -race if race) and returns its path. It runs the go command found
// on PATH from the current directory, which must lie inside the module.
func BuildTo(ctx context.Context, dir string, race bool) (string, error) {
	bin := filepath.Join(dir, "crdt-catalog")
	if race {
		bin += "-race"
	}
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, MainPackage)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", MainPackage, err, out)
	}
	return bin, nil
}

// Build builds the binary once per process (per race setting) into a
// directory of the process's own and returns its path; later calls return
// the same path. The environment variable TESTNET_RACE=1 builds it with
// the race detector (much slower peers); TESTNET_BIN=FILE uses FILE
// instead of building. It fails tb if the build fails. RemoveBuilds
// deletes the directory.
func Build(tb testing.TB) string {
	tb.Helper()
	if bin := os.Getenv("TESTNET_BIN"); bin != "" {
		return bin
	}
	race := os.Getenv("TESTNET_RACE") == "1"
	buildMu.Lock()
	defer buildMu.Unlock()
	if bin, ok := buildCache[race]; ok {
		return bin
	}
	if buildDir == "" {
		d, err := os.MkdirTemp("", "testnet-bin-")
		if err != nil {
			tb.Fatal(err)
		}
		buildDir = d
	}
	bin, err := BuildTo(context.Background(), buildDir, race)
	if err != nil {
		tb.Fatal(err)
	}
	buildCache[race] = bin
	return bin
}

// RemoveBuilds deletes the binaries Build made. Call it from TestMain
// after the tests ran.
func RemoveBuilds() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
		buildDir = ""
		clear(buildCache)
	}
}
