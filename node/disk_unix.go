//go:build unix

package node

import (
	"fmt"
	"os"
	"syscall"
)

// checkDisk fails with ErrStateTooLarge if the file system of dir ("":
// os.TempDir()) has less than importPieceBytes + minFreeDisk available:
// an import without Config.MaxStateBytes stops there.
func checkDisk(dir string) error {
	if dir == "" {
		dir = os.TempDir()
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fmt.Errorf("spool state stream: free space of %s: %w", dir, err)
	}
	if free := int64(st.Bavail) * int64(st.Bsize); free < int64(importPieceBytes)+minFreeDisk {
		return fmt.Errorf("%w: %s has %d MiB free, and an import leaves at least %d MiB", ErrStateTooLarge, dir, free>>20, minFreeDisk>>20)
	}
	return nil
}
