//go:build !unix

package memstore_test

import "time"

func cpuTime() (time.Duration, bool) { return 0, false }
