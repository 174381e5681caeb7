// Package metrics exports tasksd's Prometheus metrics with
// github.com/prometheus/client_golang, on a registry of its own. It is fed
// from outside the library packages: the callback.Recorder's Hooks and
// Stats, a few cheap store queries, and an HTTP middleware. So callback,
// handler and the stores stay free of the Prometheus dependency, and an
// embedder who wants other metrics does not inherit it.
//
// Metrics (labels come from small closed sets only: task type, outcome,
// route pattern, status code; never ids, users, URLs or tokens):
//
//	tasksd_tasks_created_total{type}                   counter
//	tasksd_tasks_finished_total{type,outcome}          counter; outcome succeeded, failed, timeout, interrupted
//	tasksd_task_duration_seconds{type}                 histogram of run time (tasks that ran)
//	tasksd_callback_attempts_total{outcome}            counter; outcome delivered, retry, given_up
//	tasksd_callback_delivery_latency_seconds           histogram, task finished → callback accepted
//	tasksd_callbacks_pending                           gauge, read from the store
//	tasksd_oldest_pending_callback_age_seconds         gauge, read from the store
//	tasksd_queue_length                                gauge, tasks waiting for a worker
//	tasksd_running_tasks                               gauge
//	tasksd_http_requests_total{route,code}             counter
//	tasksd_http_request_duration_seconds{route}        histogram
//
// plus the Go runtime and process collectors (go_*, process_*).
//
// The two store gauges are read at most once per Options.CacheFor (default
// 5 s), whatever the number of scrapes, and a read that took longer than a
// twentieth of that is reused for twenty times its duration: the pending
// count is one Find total with Limit 0 (the stores answer it from
// counters); the age is that of the oldest-created task whose callback is
// pending, since it finished (one Find at the last offset of that list,
// whose cost grows with the pending callbacks: SQLite sorts them). The outbox is ordered by due time,
// not by finish time, and no store index is ordered by finish time, so the
// creation order stands in for it: the task reported finished at most a
// task timeout later than the one created first, and any pending callback
// of a task created earlier would be the one reported.
//
// The delivery latency is read from the store too, once per delivered
// callback, off the delivery path: DeliveredAt (the start of the accepted
// attempt) minus FinishedAt, plus the attempt's duration. A background
// goroutine does those reads from a queue of 4096; when the store cannot
// keep up, observations are dropped rather than slowing deliveries.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/taskstore"
)

// Outcomes of a finished task (the outcome label of tasks_finished_total).
const (
	OutcomeSucceeded   = "succeeded"
	OutcomeFailed      = "failed"
	OutcomeTimeout     = "timeout"
	OutcomeInterrupted = "interrupted"
)

// Outcomes of a delivery attempt (the outcome label of
// callback_attempts_total).
const (
	AttemptDelivered = "delivered"
	AttemptRetry     = "retry"
	AttemptGivenUp   = "given_up"
)

// Options configure Metrics.
type Options struct {
	// Store is read for the pending-callback gauges and the delivery
	// latency. Required.
	Store taskstore.Store
	// CacheFor is how long the store gauges are reused between scrapes.
	// Default 5 s.
	CacheFor time.Duration
	// Logger receives store failures. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock (a test seam). Default time.Now.
	Now func() time.Time
}

// Metrics holds the registry and the collectors. Create it with New and
// stop it with Close.
type Metrics struct {
	o   Options
	reg *prometheus.Registry

	created  *prometheus.CounterVec
	finished *prometheus.CounterVec
	duration *prometheus.HistogramVec
	attempts *prometheus.CounterVec
	latency  prometheus.Histogram
	requests *prometheus.CounterVec
	reqDur   *prometheus.HistogramVec

	statsMu sync.RWMutex
	stats   func() callback.Stats

	delivered chan deliveredEvent
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

type deliveredEvent struct {
	id      string
	attempt time.Duration
}

// Buckets of the histograms, in seconds.
var (
	taskBuckets    = []float64{.1, .25, .5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600}
	latencyBuckets = []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 7200, 21600, 86400}
	httpBuckets    = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
)

// New creates the registry with every metric and starts the goroutine that
// reads delivery latencies.
func New(o Options) *Metrics {
	if o.Store == nil {
		panic("metrics.New: nil Store")
	}
	if o.CacheFor <= 0 {
		o.CacheFor = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	m := &Metrics{
		o:   o,
		reg: prometheus.NewRegistry(),
		created: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasksd_tasks_created_total", Help: "Tasks stored by callback mode, by type.",
		}, []string{"type"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasksd_tasks_finished_total",
			Help: "Tasks whose response was recorded, by type and outcome (succeeded, failed, timeout, interrupted).",
		}, []string{"type", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tasksd_task_duration_seconds", Help: "Run time of the tasks that ran, by type.", Buckets: taskBuckets,
		}, []string{"type"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasksd_callback_attempts_total",
			Help: "Recorded callback delivery attempts, by outcome (delivered, retry, given_up).",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tasksd_callback_delivery_latency_seconds",
			Help:    "Time from a task's finish to its callback being accepted by the receiver.",
			Buckets: latencyBuckets,
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tasksd_http_requests_total", Help: "HTTP requests answered, by route pattern and status code.",
		}, []string{"route", "code"}),
		reqDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "tasksd_http_request_duration_seconds", Help: "Time to answer HTTP requests, by route pattern.",
			Buckets: httpBuckets,
		}, []string{"route"}),
		delivered: make(chan deliveredEvent, 4096),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	for _, o := range []string{AttemptDelivered, AttemptRetry, AttemptGivenUp} {
		m.attempts.WithLabelValues(o)
	}
	m.reg.MustRegister(m.created, m.finished, m.duration, m.attempts, m.latency, m.requests, m.reqDur,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tasksd_queue_length", Help: "Tasks stored and waiting for a worker.",
		}, func() float64 { return float64(m.recorderStats().Queued) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "tasksd_running_tasks", Help: "Tasks running now.",
		}, func() float64 { return float64(m.recorderStats().Running) }),
		newStoreCollector(o),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	go m.readLatencies()
	return m
}

// Registry returns the registry, to add collectors or gather in tests.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(m.o.Logger.Handler(), slog.LevelWarn)})
}

// WatchRecorder sets where tasksd_queue_length and tasksd_running_tasks
// are read (callback.Recorder.Stats). Until it is called they are 0.
func (m *Metrics) WatchRecorder(stats func() callback.Stats) {
	m.statsMu.Lock()
	m.stats = stats
	m.statsMu.Unlock()
}

func (m *Metrics) recorderStats() callback.Stats {
	m.statsMu.RLock()
	f := m.stats
	m.statsMu.RUnlock()
	if f == nil {
		return callback.Stats{}
	}
	return f()
}

// Close stops the latency reader. It is idempotent.
func (m *Metrics) Close() {
	m.closeOnce.Do(func() {
		close(m.stop)
		<-m.done
	})
}

// Hooks returns the recorder hooks that feed the task and callback
// metrics; put them in callback.Options.Hooks.
func (m *Metrics) Hooks() callback.Hooks {
	return callback.Hooks{
		TaskCreated: func(_ context.Context, ev callback.TaskEvent) { m.created.WithLabelValues(ev.Type).Inc() },
		TaskFinished: func(_ context.Context, ev callback.TaskEvent) {
			m.finished.WithLabelValues(ev.Type, Outcome(ev)).Inc()
			if ev.Duration > 0 {
				m.duration.WithLabelValues(ev.Type).Observe(ev.Duration.Seconds())
			}
		},
		DeliveryAttempted: func(_ context.Context, ev callback.DeliveryEvent) {
			switch {
			case ev.Delivered:
				m.attempts.WithLabelValues(AttemptDelivered).Inc()
				select {
				case m.delivered <- deliveredEvent{ev.TaskID, ev.Duration}:
				default: // the reader is behind: drop the observation
				}
			case ev.GaveUp:
				m.attempts.WithLabelValues(AttemptGivenUp).Inc()
			default:
				m.attempts.WithLabelValues(AttemptRetry).Inc()
			}
		},
	}
}

// Outcome is the outcome label of a finished task: succeeded, or the
// failure's kind: timeout, interrupted, or failed for any other failure
// (an upstream error's own code is not a label value: the set stays
// closed).
func Outcome(ev callback.TaskEvent) string {
	switch {
	case ev.Success:
		return OutcomeSucceeded
	case ev.Code == callback.CodeTimeout:
		return OutcomeTimeout
	case ev.Code == callback.CodeInterrupted:
		return OutcomeInterrupted
	}
	return OutcomeFailed
}

// readLatencies observes the delivery latency of delivered callbacks,
// reading each task's finish and delivery times from the store.
func (m *Metrics) readLatencies() {
	defer close(m.done)
	for {
		var ev deliveredEvent
		select {
		case <-m.stop:
			return
		case ev = <-m.delivered:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		t, err := m.o.Store.Get(ctx, ev.id)
		cancel()
		if err != nil || t.FinishedAt.IsZero() || t.Callback.DeliveredAt.IsZero() {
			continue // deleted or redelivered meanwhile: nothing to observe
		}
		d := t.Callback.DeliveredAt.Sub(t.FinishedAt) + ev.attempt
		m.latency.Observe(max(d, 0).Seconds())
	}
}

// Middleware counts and times the requests next answers under the route
// label route (a route pattern, never a URL).
func (m *Metrics) Middleware(route string, next http.Handler) http.Handler {
	return promhttp.InstrumentHandlerCounter(m.requests.MustCurryWith(prometheus.Labels{"route": route}),
		promhttp.InstrumentHandlerDuration(m.reqDur.MustCurryWith(prometheus.Labels{"route": route}), next))
}

// storeCollector reports the store gauges, read at most once per CacheFor.
type storeCollector struct {
	o       Options
	pending *prometheus.Desc
	age     *prometheus.Desc

	mu      sync.Mutex
	read    time.Time     // when the values were read; zero: never
	reuse   time.Duration // how long they are reused: CacheFor, or longer after a slow read
	ok      bool
	nPend   int
	ageSecs float64
}

func newStoreCollector(o Options) *storeCollector {
	return &storeCollector{
		o: o,
		pending: prometheus.NewDesc("tasksd_callbacks_pending",
			"Callbacks due or waiting for a retry (read from the store, cached).", nil, nil),
		age: prometheus.NewDesc("tasksd_oldest_pending_callback_age_seconds",
			"Seconds since the oldest-created task with a pending callback finished; 0 when none is pending (read from the store, cached).", nil, nil),
	}
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.age
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.o.Now()
	if c.read.IsZero() || now.Sub(c.read) >= c.reuse {
		began := time.Now()
		c.refresh(now)
		// A slow read (many pending callbacks) is reused for longer, so that
		// reading never takes more than a twentieth of the time.
		c.reuse = max(c.o.CacheFor, 20*time.Since(began))
	}
	if !c.ok {
		return // the store failed: no value rather than a wrong one
	}
	ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(c.nPend))
	ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, c.ageSecs)
}

// refresh reads the pending count and the oldest pending age: one Find
// total with Limit 0 (the stores' counters), and, when some are pending, one
// Find of the last task of the list (its cost grows with the number of
// pending callbacks: the stores sort them by creation).
func (c *storeCollector) refresh(now time.Time) {
	c.read = now
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var page []taskstore.Task
	_, n, err := c.o.Store.Find(ctx, taskstore.Filter{CallbackStatus: taskstore.CallbackPending})
	for off := n - 1; err == nil && off >= 0 && len(page) == 0; off = min(off-1, n-1) {
		// Empty when some were delivered meanwhile: look again nearer.
		page, n, err = c.o.Store.Find(ctx, taskstore.Filter{CallbackStatus: taskstore.CallbackPending, Offset: off, Limit: 1})
	}
	if err != nil {
		c.ok = false
		c.o.Logger.Warn("metrics: reading pending callbacks", "err", err)
		return
	}
	c.ok, c.nPend, c.ageSecs = true, n, 0
	if len(page) == 1 && !page[0].FinishedAt.IsZero() {
		c.ageSecs = max(now.Sub(page[0].FinishedAt), 0).Seconds()
	}
}
