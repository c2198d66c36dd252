//go:build !linux

package main

import "os/exec"

// bindToParent does nothing where the kernel has no parent-death signal.
func bindToParent(*exec.Cmd) {}
