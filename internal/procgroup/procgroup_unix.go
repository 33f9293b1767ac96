//go:build unix

package procgroup

import (
	"os/exec"
	"syscall"
)

// Lead makes cmd, before it starts, lead a process group of its own.
func Lead(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// Signal sends SIGTERM, or SIGKILL if kill, to the process group led
// by cmd's process. It does nothing if cmd was not started.
func Signal(cmd *exec.Cmd, kill bool) {
	if cmd.Process == nil {
		return
	}
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	syscall.Kill(-cmd.Process.Pid, sig)
}

// Alive reports whether process group pgid has a live process.
func Alive(pgid int) bool { return syscall.Kill(-pgid, 0) == nil }
