package testnet

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/crdt-catalog/crdt-catalog/internal/testbin"
)

// MainPackage is the import path of the binary the harness runs.
const MainPackage = testbin.MainPackage

// BuildTo builds the crdt-catalog binary into dir with "go build -o"
// (with -race if race) and returns its path. It runs the go command found
// on PATH from the current directory, which must lie inside the module.
// It is for commands (testnet bench, httpload) that build a binary of
// their own; tests use Build.
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

// Build returns the crdt-catalog binary for a test: the one build that
// every test process of the go test run shares (cmd/crdt-catalog's
// end-to-end tests too), made on first use within testbin.BuildTimeout.
// TESTNET_RACE=1 builds it with the race detector (much slower peers);
// TESTNET_BIN=FILE uses FILE instead of building. It fails tb if the
// build fails. See internal/testbin.
func Build(tb testing.TB) string {
	tb.Helper()
	return testbin.Path(tb)
}
