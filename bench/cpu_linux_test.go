package bench

import (
	"syscall"
	"testing"
	"time"
)

func TestGroupCPU(t *testing.T) {
	for start := time.Now(); time.Since(start) < 50*time.Millisecond; { // spend some CPU
	}
	if got := GroupCPU(syscall.Getpgrp()); got <= 0 {
		t.Errorf("GroupCPU(own group) = %v, want positive", got)
	}
	if got := GroupCPU(1 << 30); got != 0 {
		t.Errorf("GroupCPU(no such group) = %v, want 0", got)
	}
}
