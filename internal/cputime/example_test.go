package cputime_test

import (
	"fmt"

	"github.com/tasksapi/tasks/internal/cputime"
)

// A benchmark reads the process's CPU time before and after its loop and
// divides by the operations it ran.
func Example() {
	start, ok := cputime.Process()
	sum := 0
	const ops = 1000
	for i := range ops {
		sum += i
	}
	end, ok2 := cputime.Process()
	// Outside unix there is no CPU time to read (ok is false).
	fmt.Println(sum, !ok || !ok2 || end >= start)
	// Output: 499500 true
}
