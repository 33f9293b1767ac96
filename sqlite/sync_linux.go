package sqlite

import (
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// fdatasync flushes f's data and the metadata needed to read it back (as
// SQLite does on Linux): a WAL file reused in place keeps its size, so the
// inode's timestamps need no journal commit.
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}

// syncfs writes every dirty page of the filesystem holding dir and flushes
// the device's cache: one call for the files of many objects.
func syncfs(dir *os.File) error {
	for {
		err := unix.Syncfs(int(dir.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}

// syncfsReliable reports whether syncfs reports write-back errors: since
// Linux 5.8 (before, it returned 0 even when data was lost).
var syncfsReliable = sync.OnceValue(func() bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return false
	}
	return kernelAtLeast(unix.ByteSliceToString(u.Release[:]), 5, 8)
})
