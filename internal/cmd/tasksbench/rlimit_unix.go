//go:build unix

package main

import "syscall"

// raiseFileLimit raises the soft limit of open files to the hard one: an
// open loop may hold many connections (two descriptors each, client and
// server) while answers are slow.
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
