//go:build !unix

package workerd

import "os/exec"

func newProcessGroup(cmd *exec.Cmd) {}

func signalGroup(cmd *exec.Cmd, kill bool) {
	if cmd.Process != nil {
		cmd.Process.Kill()
	}
}

func groupAlive(pgid int) bool { return false }
