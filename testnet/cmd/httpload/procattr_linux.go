package main

import (
	"os/exec"
	"syscall"
)

// bindToParent makes the kernel send the node SIGTERM if httpload dies
// before stopping it, so that no node outlives a crashed run.
func bindToParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
