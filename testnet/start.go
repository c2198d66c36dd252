package testnet

import (
	"context"
	"os"
	"strings"
	"testing"
)

// Start launches a cluster for a test and registers its teardown with
// tb.Cleanup: the peers are stopped (a peer that does not exit with status
// 0 within Options.StopTimeout of SIGTERM fails the test), the namespaces
// removed, and the directory deleted. The test also fails if a peer exited
// without being asked to, or logged a panic or a data race; if it failed,
// the tail of every peer's log is printed first. Options.Logf defaults to
// tb.Logf. Each peer's start is bounded by Options.StartTimeout. Start
// fails tb if the launch fails.
func Start(tb testing.TB, opts Options) *Cluster {
	tb.Helper()
	if opts.Logf == nil {
		opts.Logf = tb.Logf
	}
	c, err := Launch(context.Background(), opts)
	if err != nil {
		tb.Fatalf("launch: %v", err)
	}
	tb.Cleanup(func() { c.cleanupFor(tb) })
	return c
}

// cleanupFor is Start's teardown.
func (c *Cluster) cleanupFor(tb testing.TB) {
	crashes := c.Crashes()
	if err := c.shutdown(); err != nil {
		tb.Errorf("stopping the cluster: %v", err)
	}
	for i, cs := range crashes {
		tb.Errorf("peer %d: %s", i, strings.Join(cs, "; "))
	}
	for _, p := range c.Peers() {
		b, err := os.ReadFile(p.Log)
		if err != nil {
			continue
		}
		for _, bad := range []string{"panic:", "WARNING: DATA RACE", "fatal error:"} {
			if strings.Contains(string(b), bad) {
				tb.Errorf("peer %d logged %q", p.Index, bad)
			}
		}
	}
	if tb.Failed() {
		for _, p := range c.Peers() {
			tb.Logf("--- last lines of peer %d's log (%s):\n%s", p.Index, p.Log, tailFrom(p.Log, 0, 40))
		}
		if c.opts.Keep || !c.tmpDir {
			tb.Logf("logs and data kept in %s", c.dir)
		}
	}
	c.removeDir()
}
