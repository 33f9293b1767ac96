//go:build !unix

package procgroup

import "os/exec"

// Lead does nothing: there are no process groups.
func Lead(cmd *exec.Cmd) {}

// Signal kills cmd's process, whatever kill says.
func Signal(cmd *exec.Cmd, kill bool) {
	if cmd.Process != nil {
		cmd.Process.Kill()
	}
}

// Alive reports false: there are no process groups.
func Alive(pgid int) bool { return false }
