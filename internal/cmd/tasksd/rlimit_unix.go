//go:build unix

package main

import "syscall"

// openFileLimit returns the process's open-file limit: the soft
// RLIMIT_NOFILE, which the Go runtime raised to the hard limit at start.
func openFileLimit() (uint64, bool) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, false
	}
	return uint64(r.Cur), true
}
