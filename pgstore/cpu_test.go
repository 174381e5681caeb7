package pgstore

import (
	"testing"

	"github.com/tasksapi/tasks/internal/cputime"
)

// reportCPU reports the client's CPU time per operation ("cpu-ns/op") when
// the benchmark ends: unlike ns/op, which is mostly waiting for the server
// and swings with the machine's load, it shows the client-side cost of the
// store against the raw driver.
func reportCPU(b *testing.B) {
	start, ok := cputime.Process()
	b.Cleanup(func() {
		if end, ok2 := cputime.Process(); ok && ok2 {
			b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
		}
	})
}
