package cputime_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/tasksapi/tasks/internal/cputime"
)

// Busy work makes the process's CPU time grow, and it never goes back.
func TestProcessGrows(t *testing.T) {
	start, ok := cputime.Process()
	if !ok {
		if runtime.GOOS == "linux" || runtime.GOOS == "darwin" {
			t.Fatalf("no CPU time on %s", runtime.GOOS)
		}
		t.Skip("no CPU time on this platform")
	}
	prev, x := start, 0
	for deadline := time.Now().Add(10 * time.Second); prev <= start; {
		if time.Now().After(deadline) {
			t.Fatalf("CPU time still %v after 10s of busy work", start)
		}
		for i := range 1_000_000 {
			x ^= i
		}
		now, _ := cputime.Process()
		if now < prev {
			t.Fatalf("CPU time went back from %v to %v", prev, now)
		}
		prev = now
	}
	if x == -1 {
		t.Log(x) // keeps the busy loop from being optimized away
	}
}
