//go:build !unix

package node

// diskFree returns -1: this system offers no portable way to read free
// space, so imports are not bounded by it; set Config.MaxStateBytes.
var diskFree = func(string) (int64, error) { return -1, nil }
