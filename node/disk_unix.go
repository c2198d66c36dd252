//go:build unix

package node

import "syscall"

// diskFree returns the bytes available to this process on the file
// system of dir. A variable for tests.
var diskFree = func(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
