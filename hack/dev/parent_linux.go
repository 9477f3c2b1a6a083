package main

import (
	"os"
	"syscall"
)

// stopWithParent asks the kernel to send SIGTERM when the process that
// started this one ends. make does not pass a SIGTERM or SIGINT sent to it
// alone on to its recipe: without this, a supervisor that stops `make dev`
// would leave the whole control plane running.
func stopWithParent() {
	parent := os.Getppid()
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0); errno != 0 {
		return
	}
	// The parent may have ended before the request was made.
	if os.Getppid() != parent {
		_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
	}
}
