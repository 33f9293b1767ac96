package archive_test

import (
	"syscall"
	"time"
)

// threadCPU returns the CPU time of the calling OS thread (the caller
// locks its goroutine to it), so that codec speeds can be measured on a
// machine other processes load.
func threadCPU() (time.Duration, bool) {
	const rusageThread = 1 // RUSAGE_THREAD
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
