package main

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// op is one operation of a load; worker is the index of the goroutine
// running it.
type op func(ctx context.Context, worker int) error

// load is one side of a comparison: an operation and how many goroutines
// run it at once.
type load struct {
	op   op
	conc int
}

// sample is one timed run of a load.
type sample struct {
	ops     int64
	elapsed time.Duration
	mallocs uint64
	cpu     time.Duration // the process's CPU time (all goroutines, client and server)
}

func (s sample) nsPerOp() float64 { return float64(s.elapsed.Nanoseconds()) / float64(max(s.ops, 1)) }

// runFor runs l for about d and counts the operations. ns/op of a
// concurrent load is the elapsed time divided by all operations: the
// inverse of its throughput.
func runFor(ctx context.Context, l load, d time.Duration) (sample, error) {
	var (
		ops      atomic.Int64
		stop     atomic.Bool
		firstErr error
		errOnce  sync.Once
		wg       sync.WaitGroup
		m0, m1   runtime.MemStats
	)
	runtime.ReadMemStats(&m0)
	cpu0 := processCPU()
	start := time.Now()
	for w := range max(l.conc, 1) {
		wg.Go(func() {
			for !stop.Load() {
				if err := l.op(ctx, w); err != nil {
					errOnce.Do(func() { firstErr = err })
					stop.Store(true)
					return
				}
				ops.Add(1)
			}
		})
	}
	timer := time.NewTimer(d)
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
	timer.Stop()
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(start)
	runtime.ReadMemStats(&m1)
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return sample{ops: ops.Load(), elapsed: elapsed, mallocs: m1.Mallocs - m0.Mallocs, cpu: processCPU() - cpu0}, firstErr
}

// pair is the outcome of a comparison: medians over the rounds.
type pair struct {
	oursNs, refNs         float64 // ns per operation
	oursAllocs, refAllocs float64 // process-wide allocations per operation
	oursCPU, refCPU       float64 // process CPU µs per operation
}

// compare measures ours and ref interleaved: a short warm-up of each, then
// cfg.Rounds rounds of cfg.Duration/cfg.Rounds each, alternating which goes
// first, and returns the medians.
func compare(ctx context.Context, cfg config, ours, ref load) (pair, error) {
	m, err := compareN(ctx, cfg, ours, ref)
	if err != nil {
		return pair{}, err
	}
	return m.pair(0, 1), nil
}

// medians are the medians of the rounds of several sides, in the order the
// sides were given.
type medians struct{ ns, allocs, cpu []float64 }

// pair is the comparison of side i (ours) with side j (the reference).
func (m medians) pair(i, j int) pair {
	return pair{oursNs: m.ns[i], refNs: m.ns[j], oursAllocs: m.allocs[i], refAllocs: m.allocs[j],
		oursCPU: m.cpu[i], refCPU: m.cpu[j]}
}

// roundOrder is the order in which the n sides run in round i: as given in
// even rounds, reversed in odd ones.
func roundOrder(n, i int) []int {
	order := make([]int, n)
	for k := range order {
		order[k] = k
		if i%2 == 1 {
			order[k] = n - 1 - k
		}
	}
	return order
}

// compareN is compare for any number of sides: a warm-up of each, then
// cfg.Rounds rounds in which every side runs cfg.Duration/cfg.Rounds, the
// order reversed every other round.
func compareN(ctx context.Context, cfg config, loads ...load) (medians, error) {
	round := cfg.Duration / time.Duration(cfg.Rounds)
	warm := min(round/2, 200*time.Millisecond)
	for _, l := range loads {
		if _, err := runFor(ctx, l, warm); err != nil {
			return medians{}, err
		}
	}
	samples := make([][]sample, len(loads))
	for i := range cfg.Rounds {
		for _, k := range roundOrder(len(loads), i) {
			runtime.GC() // garbage of the other side is not this side's cost
			s, err := runFor(ctx, loads[k], round)
			if err != nil {
				return medians{}, err
			}
			samples[k] = append(samples[k], s)
		}
	}
	return mediansOf(samples), nil
}

func mediansOf(samples [][]sample) medians {
	m := medians{ns: make([]float64, len(samples)), allocs: make([]float64, len(samples)), cpu: make([]float64, len(samples))}
	for k, ss := range samples {
		m.ns[k], m.allocs[k], m.cpu[k] = median(ss, sample.nsPerOp), median(ss, allocsPerOp), median(ss, cpuPerOp)
	}
	return m
}

func allocsPerOp(s sample) float64 { return float64(s.mallocs) / float64(max(s.ops, 1)) }

// cpuPerOp is the process's CPU time per operation, in µs.
func cpuPerOp(s sample) float64 { return float64(s.cpu.Microseconds()) / float64(max(s.ops, 1)) }

func median(ss []sample, f func(sample) float64) float64 {
	v := make([]float64, len(ss))
	for i, s := range ss {
		v[i] = f(s)
	}
	return medianOf(v)
}

func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// batchTimer measures a side that does a fixed amount of work per round
// (delivering a backlog): prepare builds the round's work untimed, do runs
// it and returns how many operations it did.
type batchTimer struct {
	prepare func(ctx context.Context) (do func(ctx context.Context) (int, error), cleanup func(), err error)
}

func (b batchTimer) once(ctx context.Context) (sample, error) {
	do, cleanup, err := b.prepare(ctx)
	if err != nil {
		return sample{}, err
	}
	defer cleanup()
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	cpu0 := processCPU()
	start := time.Now()
	n, err := do(ctx)
	elapsed := time.Since(start)
	runtime.ReadMemStats(&m1)
	return sample{ops: int64(n), elapsed: elapsed, mallocs: m1.Mallocs - m0.Mallocs, cpu: processCPU() - cpu0}, err
}

// compareBatches is compare for batch sides: one warm-up round each, then
// cfg.Rounds alternating rounds.
func compareBatches(ctx context.Context, cfg config, ours, ref batchTimer) (pair, error) {
	m, err := compareBatchesN(ctx, cfg, ours, ref)
	if err != nil {
		return pair{}, err
	}
	return m.pair(0, 1), nil
}

// compareBatchesN is compareBatches for any number of sides, the order
// reversed every other round.
func compareBatchesN(ctx context.Context, cfg config, timers ...batchTimer) (medians, error) {
	for _, b := range timers {
		if _, err := b.once(ctx); err != nil {
			return medians{}, err
		}
	}
	samples := make([][]sample, len(timers))
	for i := range cfg.Rounds {
		for _, k := range roundOrder(len(timers), i) {
			s, err := timers[k].once(ctx)
			if err != nil {
				return medians{}, err
			}
			samples[k] = append(samples[k], s)
		}
	}
	return mediansOf(samples), nil
}
