//go:build !unix

package callback_test

import "time"

// processCPU is not available here; benchmarks then report no CPU figure.
func processCPU() (time.Duration, bool) { return 0, false }
