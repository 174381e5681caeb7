//go:build unix

package pgstore

import (
	"syscall"
	"testing"
	"time"
)

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the client's CPU time per operation ("cpu-ns/op") when
// the benchmark ends: unlike ns/op, which is mostly waiting for the server
// and swings with the machine's load, it shows the client-side cost of the
// store against the raw driver.
func reportCPU(b *testing.B) {
	start := cpuTime()
	b.Cleanup(func() {
		b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
	})
}
