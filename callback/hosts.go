package callback

import (
	"cmp"
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tasksapi/tasks/internal/webhook"
	"github.com/tasksapi/tasks/taskstore"
)

// Delivery scheduling: per receiver host and per principal.
//
// The store hands out due deliveries earliest first, whoever they belong
// to. The delivery loop decides, for each claimed delivery, to start it
// now, to keep it in memory a little (its receiver or its principal is at
// its cap and will have room soon), or to hand it back to the store for
// later without counting an attempt (DeferDeliveries): when its receiver
// is paused after failing, or busy for longer than holdWait. So a receiver
// that hangs holds DeliveriesPerHost slots at most, its other deliveries
// go back to the store spaced at the pace it can take them, and the other
// receivers' deliveries are claimed and sent meanwhile.

const (
	// holdWait is the longest a claimed delivery waits in memory for its
	// receiver or principal to have room; a longer expected wait hands it
	// back to the store.
	holdWait = 250 * time.Millisecond
	// firstGuess is the attempt duration assumed for a receiver before
	// any attempt to it has ended (the age of the attempts in flight
	// replaces it once they are older).
	firstGuess = 10 * time.Millisecond
	// minDefer is the shortest deferral.
	minDefer = 10 * time.Millisecond
	// maxLogHosts is how many receivers one summary names; the others
	// are summed up in one more line.
	maxLogHosts = 20
	// maxKeys bounds the cache of callback URLs' receivers.
	maxKeys = 4096
)

// hostState is what the recorder knows of one receiver (host and port).
// Guarded by dispatcher.mu.
type hostState struct {
	key      string
	inflight int
	held     int // claimed deliveries waiting in the loop
	waiting  int // scratch of dispatch: deliveries kept for it so far
	// sumStart is the sum of the start times of the attempts in flight
	// (since dispatcher.epoch), for their mean age.
	sumStart time.Duration
	// avg is a moving average of the attempts' durations; zero before the
	// first one ends.
	avg  time.Duration
	last time.Time // the last attempt's start or end

	// The circuit breaker: failures counts consecutive failed attempts;
	// from HostFailures on, the host is paused until pausedUntil, then
	// probed by one attempt at a time (probing).
	failures    int
	pausedUntil time.Time // zero: not paused
	pausedSince time.Time
	pause       time.Duration
	probing     bool

	// For the log: counts since the last summary.
	failed, retried, gaveUp, deferred, pauses int
	lastErr                                   string
	lastStatus                                int
	lastPaused, lastResumed                   time.Time // the last paused and resumed lines
}

// dispatcher holds the delivery scheduling state shared by the delivery
// loop and the attempts in flight.
type dispatcher struct {
	mu         sync.Mutex
	inflight   int                   // attempts in flight, at most DeliveryWorkers
	hosts      map[string]*hostState // receivers seen recently
	principals map[string]int        // attempts in flight per principal
	keys       map[string]string     // callback URL → hostKey, a cache
	// freed is signalled when an attempt ends (its slot freed).
	freed chan struct{}
	epoch time.Time // wall clock origin of hostState.sumStart
}

func newDispatcher() dispatcher {
	return dispatcher{hosts: make(map[string]*hostState), principals: make(map[string]int),
		keys: make(map[string]string), freed: make(chan struct{}, 1), epoch: time.Now()}
}

// hostKey is the receiver a callback URL names: its host in lower case and
// its port (the scheme's default when absent). An unparsable URL has its own
// key ("?"): its attempts fail at once and permanently.
func hostKey(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "?"
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if strings.EqualFold(u.Scheme, "https") {
			port = "443"
		}
	}
	return net.JoinHostPort(strings.ToLower(strings.TrimSuffix(u.Hostname(), ".")), port)
}

func taskPrincipal(t taskstore.Task) string {
	return principalKey(taskstore.Principal{ApplicationID: t.ApplicationID, UserID: t.UserID})
}

// host returns the state of the receiver with the given key, creating it.
// d.mu is held.
func (d *dispatcher) host(key string) *hostState {
	h := d.hosts[key]
	if h == nil {
		h = &hostState{key: key}
		d.hosts[key] = h
	}
	return h
}

// admission is what the dispatcher decides for a claimed delivery.
type admission int

const (
	startNow  admission = iota
	wait                // no free slot: it starts when one frees
	blocked             // its receiver or principal is at its cap (or being probed)
	paused              // its receiver is paused
	startOver           // its claim no longer covers an attempt
)

// admit decides for delivery t of receiver h and principal pk at now (the
// recorder's clock; wall is the time.Now of the same moment), and when the
// verdict is startNow takes its slot. d.mu is held.
func (r *Recorder) admit(h *hostState, pk string, t taskstore.Task, now, wall time.Time) (v admission, probe bool) {
	d := &r.disp
	switch {
	case !now.Add(r.o.AttemptTimeout).Before(t.Callback.NextAttemptAt):
		return startOver, false
	case !h.pausedUntil.IsZero() && now.Before(h.pausedUntil):
		return paused, false
	case !h.pausedUntil.IsZero() && (h.probing || h.inflight > 0):
		return blocked, false // one probe at a time, once the earlier attempts ended
	case h.inflight >= r.o.DeliveriesPerHost || d.principals[pk] >= r.o.DeliveriesPerPrincipal:
		return blocked, false
	case d.inflight >= r.o.DeliveryWorkers:
		return wait, false
	}
	probe = !h.pausedUntil.IsZero()
	h.probing = probe
	d.inflight++
	d.principals[pk]++
	h.inflight++
	h.sumStart += wall.Sub(d.epoch)
	h.last = now
	return startNow, probe
}

// expectedWait is how long the k-th delivery waiting for h (k from 1) may
// wait for room: k attempts' time spread over the receiver's slots, an
// attempt's time being the average of those that ended or the mean age of
// those in flight, whichever is longer (both measured with the wall clock).
// d.mu is held.
func (r *Recorder) expectedWait(h *hostState, k int) time.Duration {
	per := h.avg
	if per == 0 {
		per = firstGuess
	}
	if h.inflight > 0 {
		age := time.Since(r.disp.epoch) - h.sumStart/time.Duration(h.inflight)
		per = max(per, age)
	}
	return time.Duration(k) * per / time.Duration(r.o.DeliveriesPerHost)
}

// afterPause returns when to hand back a delivery of a paused receiver: the
// end of the pause plus up to a tenth of it, so that they do not all come
// back at once.
func afterPause(h *hostState) time.Time {
	return h.pausedUntil.Add(time.Duration(rand.Int64N(int64(h.pause/10) + 1)))
}

// outcomeKind classifies an attempt for the breaker.
type outcomeKind int

const (
	neutral outcomeKind = iota // says nothing about the receiver (refused by the guard, cancelled)
	answered
	failedAttempt // no answer, a timeout, 5xx, 408 or 429
)

func classify(res webhook.Result) outcomeKind {
	switch {
	case res.Permanent:
		return neutral
	case res.Status == 0,
		res.Status >= 500, res.Status == 408, res.Status == 429:
		return failedAttempt
	}
	return answered
}

// ended releases an attempt's slot and feeds its outcome to the receiver's
// breaker and to the log summary. began is the attempt's start by the wall
// clock.
func (r *Recorder) ended(h *hostState, pk string, probe bool, began time.Time, res webhook.Result, kind outcomeKind) {
	d := &r.disp
	now := r.now()
	var logPaused, logResumed bool
	var pausedFor time.Duration
	d.mu.Lock()
	d.inflight--
	if d.principals[pk]--; d.principals[pk] <= 0 {
		delete(d.principals, pk)
	}
	h.inflight--
	h.sumStart -= began.Sub(d.epoch)
	h.last = now
	if probe {
		h.probing = false
	}
	if kind != neutral {
		dur := max(time.Since(began), 0)
		if h.avg == 0 {
			h.avg = dur
		} else {
			h.avg = (4*h.avg + dur) / 5
		}
	}
	switch kind {
	case answered:
		if !h.pausedUntil.IsZero() {
			pausedFor = now.Sub(h.pausedSince)
			logResumed = r.transitionLogged(&h.lastResumed, now)
			h.pausedUntil, h.pausedSince, h.pause = time.Time{}, time.Time{}, 0
		}
		h.failures = 0
	case failedAttempt:
		h.failures++
		h.failed++
		h.lastErr, h.lastStatus = res.Err, res.Status
		switch {
		case probe:
			h.pause = min(2*h.pause, r.o.MaxHostPause)
			h.pausedUntil = now.Add(h.pause)
		case h.pausedUntil.IsZero() && h.failures >= r.o.HostFailures:
			h.pause = r.o.HostPause
			h.pausedUntil, h.pausedSince = now.Add(h.pause), now
			h.pauses++
			logPaused = r.transitionLogged(&h.lastPaused, now)
		}
	}
	pause, failures, key, lastErr := h.pause, h.failures, h.key, h.lastErr
	d.mu.Unlock()
	select {
	case d.freed <- struct{}{}:
	default:
	}
	if logPaused {
		r.log.Warn("callback: receiver paused after failing; its deliveries wait", "host", key,
			"failures", failures, "pause", pause.String(), "last_error", lastErr)
	}
	if logResumed {
		r.log.Info("callback: receiver answers again; its deliveries resume", "host", key,
			"paused_for", pausedFor.Round(time.Millisecond).String())
	}
}

// transitionLogged reports whether a paused (or resumed) line may be
// logged for a receiver now, last being when the previous one was: at most
// one of each a LogInterval per receiver (the summary counts the pauses).
// d.mu is held.
func (r *Recorder) transitionLogged(last *time.Time, now time.Time) bool {
	if !last.IsZero() && now.Sub(*last) < r.o.LogInterval {
		return false
	}
	*last = now
	return true
}

// pausedHosts counts the receivers paused now.
func (r *Recorder) pausedHosts() int {
	if r.o.Now == nil { // a zero Recorder: nothing was ever paused
		return 0
	}
	now := r.now()
	r.disp.mu.Lock()
	defer r.disp.mu.Unlock()
	n := 0
	for _, h := range r.disp.hosts {
		if !h.pausedUntil.IsZero() && now.Before(h.pausedUntil) {
			n++
		}
	}
	return n
}

// noteAttempt counts a recorded failed attempt for the summary.
func (r *Recorder) noteAttempt(h *hostState, gaveUp bool) {
	r.disp.mu.Lock()
	if gaveUp {
		h.gaveUp++
	} else {
		h.retried++
	}
	r.disp.mu.Unlock()
}

// deliveryLog writes, every LogInterval, one line per receiver whose
// deliveries failed, were given up or deferred since the last one, and
// forgets the receivers it has not seen for a while.
func (r *Recorder) deliveryLog() {
	t := time.NewTicker(r.o.LogInterval)
	defer t.Stop()
	for {
		select {
		case <-r.bg.Done():
			r.logSummary() // what the last interval saw
			return
		case <-t.C:
		}
		r.logSummary()
	}
}

type hostSummary struct {
	key                                      string
	failed, retried, gaveUp, deferred, pause int
	lastErr                                  string
	lastStatus                               int
	pausedUntil                              time.Time
}

func (r *Recorder) logSummary() {
	now := r.now()
	var lines []hostSummary
	r.disp.mu.Lock()
	for key, h := range r.disp.hosts {
		if h.failed+h.retried+h.gaveUp+h.deferred+h.pauses > 0 {
			lines = append(lines, hostSummary{key, h.failed, h.retried, h.gaveUp, h.deferred, h.pauses, h.lastErr, h.lastStatus, h.pausedUntil})
			h.failed, h.retried, h.gaveUp, h.deferred, h.pauses = 0, 0, 0, 0, 0
			continue
		}
		idle := h.inflight == 0 && h.held == 0 && now.Sub(h.last) > r.o.MaxHostPause+r.o.LogInterval
		if idle && (h.pausedUntil.IsZero() || now.Sub(h.pausedUntil) > r.o.MaxHostPause) {
			delete(r.disp.hosts, key)
		}
	}
	r.disp.mu.Unlock()
	if len(lines) == 0 {
		return
	}
	// The receivers with the most failures first.
	sortSummaries(lines)
	var rest hostSummary
	for i, s := range lines {
		if i >= maxLogHosts {
			rest.failed += s.failed
			rest.retried += s.retried
			rest.gaveUp += s.gaveUp
			rest.deferred += s.deferred
			rest.key = ""
			continue
		}
		level := slog.LevelInfo
		if s.gaveUp > 0 || s.failed > 0 {
			level = slog.LevelWarn
		}
		attrs := []any{"host", s.key, "interval", r.o.LogInterval.String(), "failed", s.failed, "retries", s.retried,
			"given_up", s.gaveUp, "deferred", s.deferred}
		if s.lastErr != "" {
			attrs = append(attrs, "last_status", s.lastStatus, "last_error", s.lastErr)
		}
		if !s.pausedUntil.IsZero() && now.Before(s.pausedUntil) {
			attrs = append(attrs, "paused_for", s.pausedUntil.Sub(now).Round(time.Millisecond).String())
		}
		r.log.Log(context.Background(), level, "callback: deliveries to a receiver", attrs...)
	}
	if n := len(lines) - maxLogHosts; n > 0 {
		r.log.Warn("callback: deliveries to other receivers", "hosts", n, "interval", r.o.LogInterval.String(),
			"failed", rest.failed, "retries", rest.retried, "given_up", rest.gaveUp, "deferred", rest.deferred)
	}
}

func sortSummaries(s []hostSummary) {
	weight := func(x hostSummary) int { return x.failed + x.gaveUp + x.deferred }
	slices.SortFunc(s, func(a, b hostSummary) int {
		if c := cmp.Compare(weight(b), weight(a)); c != 0 {
			return c
		}
		return strings.Compare(a.key, b.key)
	})
}
