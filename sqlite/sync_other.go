//go:build !linux

package sqlite

import (
	"errors"
	"os"
)

// fdatasync is fsync where fdatasync is not available.
func fdatasync(f *os.File) error { return f.Sync() }

// syncfs is Linux only; the stage then syncs file by file.
func syncfs(*os.File) error { return errors.New("syncfs is not supported on this system") }

func syncfsReliable() bool { return false }

// nodeDirtyBytes is not known here (and SyncAuto does not use syncfs).
func nodeDirtyBytes() int64 { return 0 }
