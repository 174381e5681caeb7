package main

import (
	"math"
	"os"
	"runtime/metrics"
	"strconv"
	"strings"
	"time"
)

// runtimeSample reads the Go runtime's cumulative histograms that explain a
// latency tail inside the process: how long goroutines waited, runnable,
// for a CPU (a machine busy with other work, or this process short of
// GOMAXPROCS), and the stop-the-world pauses of the collector.
type runtimeSample struct {
	sched, gcPause *metrics.Float64Histogram
	gcCPU          float64       // seconds of CPU spent collecting
	cpu            time.Duration // the process's CPU time
}

var runtimeMetrics = []string{"/sched/latencies:seconds", "/sched/pauses/total/gc:seconds", "/cpu/classes/gc/total:cpu-seconds"}

func readRuntime() runtimeSample {
	s := make([]metrics.Sample, len(runtimeMetrics))
	for i, name := range runtimeMetrics {
		s[i].Name = name
	}
	metrics.Read(s)
	out := runtimeSample{cpu: processCPU()}
	if s[0].Value.Kind() == metrics.KindFloat64Histogram {
		out.sched = s[0].Value.Float64Histogram()
	}
	if s[1].Value.Kind() == metrics.KindFloat64Histogram {
		out.gcPause = s[1].Value.Float64Histogram()
	}
	if s[2].Value.Kind() == metrics.KindFloat64 {
		out.gcCPU = s[2].Value.Float64()
	}
	return out
}

// quantileSince is quantile q (0–1) of what histogram b recorded since a
// (the same buckets), in milliseconds: the upper bound of the bucket that
// holds it; 0 when nothing was recorded.
func quantileSince(a, b *metrics.Float64Histogram, q float64) float64 {
	if a == nil || b == nil || len(a.Counts) != len(b.Counts) {
		return 0
	}
	var total uint64
	for i := range b.Counts {
		total += b.Counts[i] - a.Counts[i]
	}
	if total == 0 {
		return 0
	}
	rank := min(uint64(q*float64(total)), total-1)
	var seen uint64
	for i := range b.Counts {
		seen += b.Counts[i] - a.Counts[i]
		if seen > rank {
			hi := b.Buckets[i+1]
			if math.IsInf(hi, 0) {
				hi = b.Buckets[i]
			}
			if math.IsInf(hi, 0) {
				return 0
			}
			return hi * 1e3
		}
	}
	return 0
}

// runtimeSince fills l's runtime fields with what happened between a and b
// over wall time d.
func runtimeSince(l *Latency, a, b runtimeSample, d time.Duration) {
	l.SchedP99, l.SchedP999 = quantileSince(a.sched, b.sched, 0.99), quantileSince(a.sched, b.sched, 0.999)
	l.GCPauseMax = quantileSince(a.gcPause, b.gcPause, 1)
	l.GCCPU = (b.gcCPU - a.gcCPU) / d.Seconds()
	l.CPU = (b.cpu - a.cpu).Seconds() / d.Seconds()
	l.LoadAvg = loadAverage()
}

// loadAverage is the machine's load average over the last minute (Linux),
// or 0.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
