//go:build race

package node

// raceEnabled reports whether the tests run under the race detector,
// whose own allocations and slowness make heap figures meaningless.
const raceEnabled = true
