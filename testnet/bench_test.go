package testnet

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestRunBench_Small runs the cluster benchmark at a toy size so that the
// command behind "testnet bench" keeps working; it asserts on the
// report's shape, never on speed.
func TestRunBench_Small(t *testing.T) {
	skipShort(t)
	res, err := RunBench(t.Context(), BenchConfig{Binary: Build(t), N: 2, Rate: 100, Duration: time.Second,
		CatchUp: 200, Seed: seedFor(t), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	res.Print(&b)
	t.Log("\n" + b.String())
	if res.OK == 0 || res.Visibility.N == 0 || res.CatchUpWrites != 200 || res.BytesSent <= 0 || len(res.Memory) != 2 {
		t.Errorf("incomplete result: %+v", res)
	}
	for _, want := range []string{"visibility", "catch-up", "bytes per replicated write"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
}
