package main

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Open-loop measurement (issue #19): requests are sent at a constant
// arrival rate, each on its own schedule — request i is due at
// start + i/rate whatever happened to the ones before — and each latency is
// measured from that intended send time, not from when the request
// actually left. A stall therefore shows in the latency of every request
// due during it, as a user arriving then would feel it, instead of hiding
// behind a sender that waited for the slow answer (coordinated omission).

// newHistogram is a latency histogram in microseconds, from 1 µs to 10
// minutes, with 3 significant digits.
func newHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(10*time.Minute/time.Microsecond), 3)
}

// syncHistogram is a histogram safe for concurrent recording.
type syncHistogram struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

func (s *syncHistogram) record(d time.Duration) {
	us := max(d.Microseconds(), 1)
	s.mu.Lock()
	s.h.RecordValue(min(us, s.h.HighestTrackableValue()))
	s.mu.Unlock()
}

// openLoopStats is what an open-loop run counted.
type openLoopStats struct {
	sent   int64 // requests sent (each recorded in the histogram)
	errors int64 // of them, those that failed
	first  error // the first failure
	late   time.Duration
}

// openLoop sends rate requests per second for d: request i is due at
// start + i/rate and is sent by a goroutine of its own once due, so that a
// slow answer delays no other send. At most inFlight requests are under way
// at once; a request due while that many are waits for one to end, and its
// wait counts in its latency. The latency of every request, from its
// intended send time to the end of send, is recorded in h. send's errors
// are counted, not returned; openLoop returns early only when ctx ends.
func openLoop(ctx context.Context, rate float64, d time.Duration, inFlight int, h *syncHistogram,
	send func(ctx context.Context) error) (openLoopStats, error) {
	n := int64(math.Round(rate * d.Seconds()))
	interval := float64(time.Second) / rate
	sem := make(chan struct{}, max(inFlight, 1))
	var (
		wg     sync.WaitGroup
		errs   atomic.Int64
		first  error
		once   sync.Once
		stats  openLoopStats
		timer  = time.NewTimer(0)
		start  = time.Now()
		maxLag time.Duration
	)
	<-timer.C
	defer timer.Stop()
	for i := range n {
		intended := start.Add(time.Duration(float64(i) * interval))
		if wait := time.Until(intended); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				wg.Wait()
				return stats, ctx.Err()
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return stats, ctx.Err()
		}
		maxLag = max(maxLag, time.Since(intended))
		stats.sent++
		wg.Go(func() {
			err := send(ctx)
			h.record(time.Since(intended))
			<-sem
			if err != nil {
				errs.Add(1)
				once.Do(func() { first = err })
			}
		})
	}
	wg.Wait()
	stats.errors, stats.first, stats.late = errs.Load(), first, maxLag
	return stats, ctx.Err()
}
