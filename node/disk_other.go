//go:build !unix

package node

// checkDisk does not check: this system offers no portable way to read
// free space; set Config.MaxStateBytes to bound imports.
func checkDisk(string) error { return nil }
