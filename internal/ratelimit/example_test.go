package ratelimit_test

import (
	"fmt"

	"github.com/tasksapi/tasks/internal/ratelimit"
)

// A token with 1 request per second and a burst of 2: two requests pass at
// once, the third waits a second.
func Example() {
	l := ratelimit.New(nil)
	lim := ratelimit.Limit{Rate: 1, Burst: 2}
	for range 3 {
		ok, wait := l.Allow("token-a", lim)
		fmt.Println(ok, wait.Round(100_000_000))
	}
	// Output:
	// true 0s
	// true 0s
	// false 1s
}
