package main

import "os"

// Example prints the table of a report: one row per scenario, then what
// each reference is and the settings of the run.
func Example() {
	rep := &Report{Results: []Result{
		throughput("sqlitestore create", "the same INSERT through the raw driver, prepared",
			pair{oursNs: 100_000, refNs: 80_000, oursAllocs: 45, refAllocs: 47}, 0.7),
		timeRatio("HTTP retrieve_batch by user at 1M (limit 12)", "HTTP retrieve by id",
			pair{oursNs: 250_000, refNs: 100_000}, 3),
	}}
	rep.Machine.CPU, rep.Machine.NumCPU, rep.Machine.GOMAXPROCS = "CPU", 2, 2
	rep.Machine.GoVersion, rep.Machine.OS = "go1.26", "linux/amd64"
	rep.Settings.Rows, rep.Settings.SmallRows, rep.Settings.Concurrency = 1_000_000, 10_000, 16
	rep.Settings.DurationSec, rep.Settings.Rounds, rep.Settings.PayloadPer = 3, 6, 864
	writeTable(os.Stdout, rep)
	// Output:
	// scenario                                          ours          reference     ratio  target  pass  allocs/op ours/ref
	//  1. sqlitestore create                            10,000 ops/s  12,500 ops/s  0.80x  ≥ 0.7x  yes   45 / 47
	//  2. HTTP retrieve_batch by user at 1M (limit 12)  250.0 µs/op   100.0 µs/op   2.50x  ≤ 3.0x  yes   -
	//
	// references:
	//  1. the same INSERT through the raw driver, prepared
	//  2. HTTP retrieve by id
	//
	// CPU, 2 CPUs (GOMAXPROCS 2), go1.26, linux/amd64; 1000000 and 10000 tasks, concurrency 16, 3.0s per side in 6 interleaved rounds (medians); payload 864 bytes per task
}
