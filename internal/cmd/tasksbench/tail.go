package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/sqlitestore"
)

// Latency is the tail-latency measurement of one scenario under an open
// loop at Load times its closed-loop maximum.
type Latency struct {
	Scenario string  `json:"scenario"`
	Load     float64 `json:"load"`                       // fraction of MaxRate sent
	MaxRate  float64 `json:"closed_loop_max_per_second"` // measured in the same run
	Rate     float64 `json:"rate_per_second"`            // the open loop's arrival rate
	Seconds  float64 `json:"seconds"`                    // the open loop's length
	Count    int64   `json:"count"`                      // latencies recorded
	Errors   int64   `json:"errors"`                     // failed requests (counted in Count)
	FirstErr string  `json:"first_error,omitempty"`
	// Percentiles of the latency in milliseconds, from each request's
	// intended send time (for delivery: from the task's finish to the
	// receipt of its callback).
	P50  float64 `json:"p50_ms"`
	P90  float64 `json:"p90_ms"`
	P99  float64 `json:"p99_ms"`
	P999 float64 `json:"p99_9_ms"`
	Max  float64 `json:"max_ms"`
	// The Go runtime during the open loop: collections and their summed
	// stop-the-world pauses.
	GCs        uint32  `json:"gc_cycles"`
	GCPauseMs  float64 `json:"gc_pause_ms"`
	GCPauseMax float64 `json:"gc_pause_max_ms"` // the longest pause (bucket bound)
	GCCPU      float64 `json:"gc_cpu_cores"`    // CPU seconds collecting per second
	// How long goroutines waited, runnable, for a CPU during the open loop
	// (the 99th and 99.9th percentiles, ms, bucket bounds): high when the
	// machine (or GOMAXPROCS) is short of CPU.
	SchedP99  float64 `json:"sched_wait_p99_ms"`
	SchedP999 float64 `json:"sched_wait_p99_9_ms"`
	// CPU is the process's CPU time per second of the open loop (cores
	// used; the machine has NumCPU), LoadAvg the machine's one-minute load
	// average at its end (Linux; 0 elsewhere).
	CPU     float64 `json:"cpu_cores"`
	LoadAvg float64 `json:"load_average"`
	Target  string  `json:"target"`
	Pass    bool    `json:"pass"`
	// Curve is the latency distribution for the chart: the latency at
	// percentiles from 0 to 99.99 (as far as the count allows).
	Curve []CurvePoint `json:"curve"`
}

// CurvePoint is the latency at a percentile.
type CurvePoint struct {
	Percentile float64 `json:"percentile"`
	Ms         float64 `json:"ms"`
}

// latencyOf summarizes h.
func latencyOf(name string, h *hdrhistogram.Histogram, withP999 bool) Latency {
	ms := func(us int64) float64 { return float64(us) / 1e3 }
	l := Latency{
		Scenario: name, Count: h.TotalCount(),
		P50: ms(h.ValueAtQuantile(50)), P90: ms(h.ValueAtQuantile(90)), P99: ms(h.ValueAtQuantile(99)),
		P999: ms(h.ValueAtQuantile(99.9)), Max: ms(h.Max()),
	}
	l.Target, l.Pass = "p99 ≤ 5x p50", l.P99 <= 5*l.P50
	if withP999 {
		l.Target += ", p99.9 ≤ 20x p50"
		l.Pass = l.Pass && l.P999 <= 20*l.P50
	}
	l.Pass = l.Pass && l.Count > 0
	// Tenths of a decade of 1/(1-p): 0%, 20.6%, 36.9%, … 90%, … 99%, …
	// 99.99%, as far as there are samples beyond.
	for k := 0; k <= 40; k++ {
		p := 100 * (1 - math.Pow(10, -float64(k)/10))
		if k > 0 && float64(l.Count)*(1-p/100) < 1 {
			break
		}
		l.Curve = append(l.Curve, CurvePoint{Percentile: p, Ms: ms(h.ValueAtQuantile(p))})
	}
	return l
}

// tailScenario is one scenario of the open-loop measurement.
type tailScenario struct {
	name     string
	withP999 bool
	// setup starts the system under test and returns: maxRate, measuring
	// the closed-loop maximum (operations per second); send, one request
	// of the open loop; result, the histogram to report once the open
	// loop's requests have ended (nil: the open loop's own, from the
	// intended send times), after waiting for what they started; stop.
	setup func(ctx context.Context) (maxRate func(context.Context) (float64, error), send func(context.Context) error,
		result func(context.Context) (*hdrhistogram.Histogram, error), stop func(), err error)
}

// tail measures one open-loop scenario and appends it to the report.
func (b *bench) tail(ctx context.Context, sc tailScenario) error {
	maxRate, send, result, stop, err := sc.setup(ctx)
	if err != nil {
		return err
	}
	defer stop()
	top, err := maxRate(ctx)
	if err != nil {
		return fmt.Errorf("closed-loop maximum: %w", err)
	}
	if !(top > 0) {
		return fmt.Errorf("closed-loop maximum of %v per second", top)
	}
	rate := b.cfg.Load * top
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	r0, t0 := readRuntime(), time.Now()
	stopProfile, err := b.startProfile("tail-" + strings.ReplaceAll(sc.name, " ", "-"))
	if err != nil {
		return err
	}
	h := &syncHistogram{h: newHistogram()}
	stats, err := openLoop(ctx, rate, b.cfg.TailDuration, maxInFlight, h, send)
	if err != nil {
		stopProfile()
		return err
	}
	hist := h.h
	if result != nil {
		if hist, err = result(ctx); err != nil {
			stopProfile()
			return err
		}
	}
	stopProfile()
	r1, elapsed := readRuntime(), time.Since(t0)
	runtime.ReadMemStats(&m1)
	l := latencyOf(sc.name, hist, sc.withP999)
	l.Load, l.MaxRate, l.Rate, l.Seconds = b.cfg.Load, top, rate, b.cfg.TailDuration.Seconds()
	l.Errors = stats.errors
	if stats.first != nil {
		l.FirstErr = stats.first.Error()
	}
	l.GCs = m1.NumGC - m0.NumGC
	l.GCPauseMs = float64(m1.PauseTotalNs-m0.PauseTotalNs) / 1e6
	runtimeSince(&l, r0, r1, elapsed)
	b.rep.Latency = append(b.rep.Latency, l)
	return nil
}

// maxInFlight bounds the requests of an open loop under way at once (and
// so its connections). A request due while that many are waits for one to
// end; its wait counts in its latency.
const maxInFlight = 2048

// startProfile starts a CPU profile named name in -profiles, if set (and
// no whole-run profile is being written).
func (b *bench) startProfile(name string) (func(), error) {
	if b.cfg.Profiles == "" || b.cfg.CPUProfile != "" {
		return func() {}, nil
	}
	if err := os.MkdirAll(b.cfg.Profiles, 0o755); err != nil {
		return nil, err
	}
	f, err := os.Create(filepath.Join(b.cfg.Profiles, name+".pprof"))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// closedLoopMax runs l for the comparisons' duration (after a warm-up)
// and returns its operations per second.
func (b *bench) closedLoopMax(ctx context.Context, l load) (float64, error) {
	if _, err := runFor(ctx, l, min(b.cfg.Duration/4, 300*time.Millisecond)); err != nil {
		return 0, err
	}
	runtime.GC()
	s, err := runFor(ctx, l, b.cfg.Duration)
	if err != nil {
		return 0, err
	}
	return 1e9 / s.nsPerOp(), nil
}

// openClient is the client of an open loop: enough idle connections for
// the requests a stall piles up.
func openClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true}}
}

// httpTail is an open-loop scenario of POSTs of bodies to h, served on
// loopback; its maximum is that of b.cfg.Concurrency clients.
func (b *bench) httpTail(name string, withP999 bool, h func(ctx context.Context) (http.Handler, func(), error), bodies [][]byte) tailScenario {
	return tailScenario{name: name, withP999: withP999, setup: func(ctx context.Context) (func(context.Context) (float64, error),
		func(context.Context) error, func(context.Context) (*hdrhistogram.Histogram, error), func(), error) {
		handler, closeHandler, err := h(ctx)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		url, stopServer, err := serve(handler)
		if err != nil {
			closeHandler()
			return nil, nil, nil, nil, err
		}
		client := openClient()
		stop := func() {
			client.CloseIdleConnections()
			stopServer()
			closeHandler()
		}
		closed := post(client, url, bodies, b.cfg.Concurrency)
		open := post(client, url, bodies, 1)
		maxRate := func(ctx context.Context) (float64, error) { return b.closedLoopMax(ctx, closed) }
		send := func(ctx context.Context) error { return open.op(ctx, 0) }
		return maxRate, send, nil, stop, nil
	}}
}

// The four open-loop scenarios of issue #19.

func (b *bench) tailSubmit(ctx context.Context) ([]Result, error) {
	sc := b.httpTail("submit (Wrap over sqlitestore)", true, func(ctx context.Context) (http.Handler, func(), error) {
		s, err := sqlitestore.Open(filepath.Join(b.scratch, "tail-submit.db"))
		if err != nil {
			return nil, nil, err
		}
		// The workers are held back, as in row 9.
		h, stop, err := heldBackWrap(s, 1<<21)
		if err != nil {
			s.Close()
			return nil, nil, err
		}
		return h, func() {
			stop()
			s.Close()
		}, nil
	}, [][]byte{submitBody})
	return nil, b.tail(ctx, sc)
}

func (b *bench) tailRetrieve(ctx context.Context) ([]Result, error) {
	sc := b.httpTail(fmt.Sprintf("retrieve by id at %s", count(b.cfg.Rows)), false, func(context.Context) (http.Handler, func(), error) {
		return tasksHandler(b.big), func() {}, nil
	}, retrieveBodies(b.cfg.Rows))
	return nil, b.tail(ctx, sc)
}

func (b *bench) tailBatch(ctx context.Context) ([]Result, error) {
	sc := b.httpTail(fmt.Sprintf("retrieve_batch by user at %s", count(b.cfg.Rows)), false, func(context.Context) (http.Handler, func(), error) {
		return tasksHandler(b.big), func() {}, nil
	}, batchUserBodies())
	return nil, b.tail(ctx, sc)
}

// tailDelivery: tasks submitted through Wrap over sqlitestore at a
// constant rate, run at once by an image handler that answers
// immediately; the latency is from the moment each task's response is
// recorded (the TaskFinished hook) to the receipt of its callback at a
// loopback receiver. The maximum is the rate at which the receiver gets
// callbacks while b.cfg.Concurrency clients submit as fast as they can.
func (b *bench) tailDelivery(ctx context.Context) ([]Result, error) {
	sc := tailScenario{name: "callback delivery, finish to receipt (sqlitestore)", setup: func(ctx context.Context) (func(context.Context) (float64, error),
		func(context.Context) error, func(context.Context) (*hdrhistogram.Histogram, error), func(), error) {
		rcv, err := newReceiver()
		if err != nil {
			return nil, nil, nil, nil, err
		}
		s, err := sqlitestore.Open(filepath.Join(b.scratch, "tail-delivery.db"))
		if err != nil {
			rcv.stop()
			return nil, nil, nil, nil, err
		}
		var (
			finished  sync.Map // task id → when its response was recorded, or its receipt
			created   atomic.Int64
			hist      = &syncHistogram{h: newHistogram()}
			measuring atomic.Bool
		)
		// A delivery may be claimed (woken by another task's finish) and
		// received before its own TaskFinished hook runs: whichever of
		// the two comes second records the latency (then next to zero).
		type received struct{ at time.Time }
		onReceipt := func(id string, at time.Time) {
			if v, loaded := finished.LoadOrStore(id, received{at}); loaded {
				finished.Delete(id)
				if measuring.Load() {
					hist.record(at.Sub(v.(time.Time)))
				}
			}
		}
		onFinished := func(_ context.Context, e callback.TaskEvent) {
			now := time.Now()
			if v, loaded := finished.LoadOrStore(e.ID, now); loaded {
				finished.Delete(e.ID)
				if measuring.Load() {
					hist.record(max(v.(received).at.Sub(now), 0))
				}
			}
		}
		rcv.onReceipt.Store(&onReceipt)
		c := b.cfg.Concurrency
		rec, err := callback.New(s, callback.Options{
			AllowPrivateNetworks: true, DeliveryWorkers: c, DeliveriesPerHost: c, DeliveriesPerPrincipal: c,
			Queue: 1 << 20, Lease: time.Hour, Logger: discard,
			Hooks: callback.Hooks{
				TaskCreated:  func(context.Context, callback.TaskEvent) { created.Add(1) },
				TaskFinished: onFinished,
			},
		})
		if err != nil {
			s.Close()
			rcv.stop()
			return nil, nil, nil, nil, err
		}
		images := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, `{"created":1721626477,"data":[{"url":"https://img.example/1.png"}]}`)
		})
		url, stopServer, err := serve(rec.Wrap("images_generations", images))
		if err != nil {
			rec.Close(context.Background())
			s.Close()
			rcv.stop()
			return nil, nil, nil, nil, err
		}
		client := openClient()
		stop := func() {
			client.CloseIdleConnections()
			stopServer()
			cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			rec.Close(cctx)
			cancel()
			s.Close()
			rcv.stop()
		}
		body := bytes.Replace(submitBody, []byte(callbackURL), []byte(rcv.url), 1)
		drain := func(ctx context.Context) error { return rcv.waitFor(ctx, created.Load()) }
		maxRate := func(ctx context.Context) (float64, error) {
			closed := post(client, url, [][]byte{body}, c)
			if _, err := runFor(ctx, closed, min(b.cfg.Duration/4, 300*time.Millisecond)); err != nil {
				return 0, err
			}
			if err := drain(ctx); err != nil {
				return 0, err
			}
			runtime.GC()
			n0, t0 := rcv.n.Load(), time.Now()
			if _, err := runFor(ctx, closed, b.cfg.Duration); err != nil {
				return 0, err
			}
			n1, t1 := rcv.n.Load(), time.Now()
			if err := drain(ctx); err != nil {
				return 0, err
			}
			measuring.Store(true)
			return float64(n1-n0) / t1.Sub(t0).Seconds(), nil
		}
		open := post(client, url, [][]byte{body}, 1)
		send := func(ctx context.Context) error { return open.op(ctx, 0) }
		result := func(ctx context.Context) (*hdrhistogram.Histogram, error) {
			if err := drain(ctx); err != nil {
				return nil, err
			}
			measuring.Store(false)
			return hist.h, nil
		}
		return maxRate, send, result, stop, nil
	}}
	return nil, b.tail(ctx, sc)
}
