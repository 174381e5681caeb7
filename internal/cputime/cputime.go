// Package cputime reads how much CPU time the process has used, for
// benchmarks that report CPU per operation next to wall-clock time: on a
// shared or lightly loaded machine, wall time per operation hides what an
// operation costs, while the process's CPU time does not.
package cputime

import "time"

// Process returns the CPU time, user and system, that all threads of the
// process have used so far. ok is false where the platform does not say
// (outside unix); callers then report no CPU figure.
func Process() (d time.Duration, ok bool) { return process() }
