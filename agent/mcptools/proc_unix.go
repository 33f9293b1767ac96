//go:build unix

package mcptools

import (
	"os/exec"
	"syscall"
)

// newProcessGroup makes cmd lead a process group of its own, so that the
// children it starts (npx starts node) can be killed with it.
func newProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// signalGroup sends SIGTERM, or SIGKILL if kill, to the process group led
// by cmd's process.
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
