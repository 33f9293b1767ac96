//go:build !linux

package bench

import "time"

func machineBusy() time.Duration { return -1 }

func selfCPU() time.Duration { return -1 }

// GroupCPU returns -1: CPU time of other processes is read on Linux only.
func GroupCPU(pgid int) time.Duration { return -1 }
