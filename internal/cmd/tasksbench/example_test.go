package main

import "os"

// Example prints the table of a report: one row per scenario, then what
// each reference is, the settings of the run and the open-loop latencies.
func Example() {
	create := throughput("sqlitestore create", "the same INSERT through the raw driver, prepared",
		pair{oursNs: 100_000, refNs: 80_000, oursAllocs: 45, refAllocs: 47}, 0.7)
	create.Row = "1"
	submit := throughput("callback submit (Wrap) over sqlitestore", "sqlitestore Create called directly",
		pair{oursNs: 100_000, refNs: 50_000}, 0.8)
	submit.Row = "9"
	bare := info(throughput("callback submit (Wrap) over sqlitestore, against the bare handler", "bare handler",
		pair{oursNs: 100_000, refNs: 25_000}, 0), "9b")
	rep := &Report{Results: []Result{create, submit, bare}, Latency: []Latency{{
		Scenario: "retrieve by id at 1M", Load: 0.5, MaxRate: 20_000, Rate: 10_000, Seconds: 20, Count: 200_000,
		P50: 0.42, P90: 0.8, P99: 1.9, P999: 6.5, Max: 12.25, GCs: 40, GCPauseMax: 0.23, SchedP99: 0.52, SchedP999: 4.2, CPU: 1.1, LoadAvg: 1.3, Target: "p99 ≤ 5x p50", Pass: true,
	}}}
	rep.Machine.CPU, rep.Machine.NumCPU, rep.Machine.GOMAXPROCS = "CPU", 2, 2
	rep.Machine.GoVersion, rep.Machine.OS = "go1.26", "linux/amd64"
	rep.Settings.Rows, rep.Settings.SmallRows, rep.Settings.Concurrency = 1_000_000, 10_000, 16
	rep.Settings.DurationSec, rep.Settings.Rounds, rep.Settings.PayloadPer = 3, 6, 864
	writeTable(os.Stdout, rep)
	// Output:
	// scenario                                                                 ours          reference     ratio  target  pass  allocs/op ours/ref
	//    1. sqlitestore create                                                 10,000 ops/s  12,500 ops/s  0.80x  ≥ 0.7x  yes   45 / 47
	//    9. callback submit (Wrap) over sqlitestore                            10,000 ops/s  20,000 ops/s  0.50x  ≥ 0.8x  NO    -
	//   9b. callback submit (Wrap) over sqlitestore, against the bare handler  10,000 ops/s  40,000 ops/s  0.25x  —       -     -
	//
	// references:
	//    1. the same INSERT through the raw driver, prepared
	//    9. sqlitestore Create called directly
	//   9b. bare handler
	//
	// CPU, 2 CPUs (GOMAXPROCS 2), go1.26, linux/amd64; 1000000 and 10000 tasks, concurrency 16, 3.0s per side in 6 interleaved rounds (medians); payload 864 bytes per task
	//
	// tail latency under an open loop at 50% of the closed-loop maximum (20s each), ms from the intended send time:
	// scenario              max/s   rate/s  count   p50   p90  p99  p99.9  max   p99/p50  target        pass  GCs (max pause)  sched wait p99/p99.9  CPU   load avg
	// retrieve by id at 1M  20,000  10,000  200000  0.42  0.8  1.9  6.5    12.2  4.5x     p99 ≤ 5x p50  yes   40 (0.23)        0.52 / 4.2            1.10  1.3
}
