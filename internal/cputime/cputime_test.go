package cputime_test

import (
	"runtime"
	"testing"

	"github.com/tasksapi/tasks/internal/cputime"
)

// Busy work makes the process's CPU time grow; it never goes back.
func TestProcessGrows(t *testing.T) {
	start, ok := cputime.Process()
	if !ok {
		if runtime.GOOS != "windows" && runtime.GOOS != "plan9" && runtime.GOOS != "js" && runtime.GOOS != "wasip1" {
			t.Fatalf("no CPU time on %s", runtime.GOOS)
		}
		t.Skip("no CPU time on this platform")
	}
	x := 0
	for end := start; end <= start; end, _ = cputime.Process() {
		for i := range 1_000_000 {
			x ^= i
		}
	}
	if x == -1 {
		t.Log(x) // keep the loop
	}
}
