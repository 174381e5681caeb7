//go:build unix

package callback_test

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time (user and system) the process has used so
// far, for benchmarks that report CPU per operation next to wall time.
func processCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
