package sqlite

import (
	"bytes"
	"os"
	"strconv"
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

// nodeDirtyBytes returns the page cache of the node waiting to be written
// (Dirty plus Writeback in /proc/meminfo), 0 if it cannot be read.
func nodeDirtyBytes() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	var total int64
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		var rest []byte
		var ok bool
		if rest, ok = bytes.CutPrefix(line, []byte("Dirty:")); !ok {
			if rest, ok = bytes.CutPrefix(line, []byte("Writeback:")); !ok {
				continue
			}
		}
		f := bytes.Fields(rest)
		if len(f) == 0 {
			continue
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			continue
		}
		total += kb << 10
	}
	return total
}
