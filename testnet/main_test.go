package testnet

import (
	"flag"
	"os"
	"testing"
)

var (
	seedFlag = flag.Int64("seed", 0, "seed of every random choice (0: TESTNET_SEED, else the clock)")
	longFlag = flag.Bool("long", false, "run the soak test (also TESTNET_LONG=1)")
)

func TestMain(m *testing.M) {
	flag.Parse()
	CloseOnSignal()
	code := m.Run()
	CloseAll()
	os.Exit(code)
}

// seedFor resolves the run's seed and logs it with replay instructions.
func seedFor(t *testing.T) int64 {
	t.Helper()
	seed := ResolveSeed(*seedFlag)
	t.Logf("seed %d (replay: go test ./testnet -run '^%s$' -seed %d, or TESTNET_SEED=%d)", seed, t.Name(), seed, seed)
	return seed
}

// long reports whether the soak runs.
func long() bool { return *longFlag || os.Getenv("TESTNET_LONG") == "1" }

// skipShort skips tests that build the binary and start processes when
// the run is -short.
func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: builds the binary and starts processes")
	}
}
