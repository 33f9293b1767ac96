//go:build unix

package workerd

import (
	"os/exec"
	"syscall"
)

func newProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// signalGroup signals the process group led by cmd's process: node and
// the workerd it started.
func signalGroup(cmd *exec.Cmd, kill bool) {
	if cmd.Process == nil {
		return
	}
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	syscall.Kill(-cmd.Process.Pid, sig)
}

// groupAlive reports whether process group pgid has a live process.
func groupAlive(pgid int) bool { return syscall.Kill(-pgid, 0) == nil }
