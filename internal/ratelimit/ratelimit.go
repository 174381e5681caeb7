// Package ratelimit limits requests per key (tasksd keys them by bearer
// token) with one token-bucket limiter (golang.org/x/time/rate) per key.
//
// Memory stays bounded with many keys: a key's limiter is dropped once it
// has been idle long enough for its bucket to be full again (burst/rate),
// which is exactly the state a new limiter starts in, so dropping it
// changes no answer. Idle limiters are swept at most once a minute, during
// the calls, by the caller's goroutine: nothing runs in the background.
//
// Over the limit, Middleware answers 429 too_many_requests with a
// Retry-After header (whole seconds, at least 1) and the Tasks API's error
// body, without calling the next handler: nothing is stored.
package ratelimit

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/tasksapi/tasks/internal/apierr"
)

// Limit is a request rate and burst. A Rate of 0 (or less) means no limit.
type Limit struct {
	// Rate is the sustained number of requests per second.
	Rate float64
	// Burst is how many requests may come at once; at least 1 when Rate
	// is positive.
	Burst int
}

// Off reports whether l limits nothing.
func (l Limit) Off() bool { return l.Rate <= 0 }

// sweepEvery is how often idle limiters are looked for.
const sweepEvery = time.Minute

// Limiter keeps one limiter per key. The zero value is not usable; create
// it with New. It is safe for concurrent use.
type Limiter struct {
	now func() time.Time

	mu        sync.Mutex
	keys      map[string]*entry
	lastSweep time.Time
}

type entry struct {
	lim  *rate.Limiter
	last time.Time     // last request
	full time.Duration // time for the bucket to refill from empty
}

// New returns an empty Limiter. now is the clock; nil means time.Now.
func New(now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{now: now, keys: map[string]*entry{}}
}

// Allow takes one request of key under lim. When the request is over the
// limit it returns false and how long until one would be allowed.
func (l *Limiter) Allow(key string, lim Limit) (bool, time.Duration) {
	if lim.Off() {
		return true, 0
	}
	burst := max(lim.Burst, 1)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= sweepEvery {
		l.sweep(now)
	}
	e := l.keys[key]
	if e == nil || e.lim.Limit() != rate.Limit(lim.Rate) || e.lim.Burst() != burst {
		e = &entry{lim: rate.NewLimiter(rate.Limit(lim.Rate), burst)}
		e.full = time.Duration(float64(burst) / lim.Rate * float64(time.Second))
		l.keys[key] = e
	}
	e.last = now
	if e.lim.AllowN(now, 1) {
		return true, 0
	}
	r := e.lim.ReserveN(now, 1)
	wait := r.DelayFrom(now)
	r.CancelAt(now)
	return false, wait
}

// sweep drops the limiters idle long enough to be full again.
func (l *Limiter) sweep(now time.Time) {
	l.lastSweep = now
	for k, e := range l.keys {
		if now.Sub(e.last) >= e.full {
			delete(l.keys, k)
		}
	}
}

// Len returns how many limiters are kept.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

// Middleware limits the requests for which key returns ok: over the limit
// they are answered 429 too_many_requests with Retry-After. Requests for
// which key returns false (no credential, or one the next handler will
// refuse) pass through.
func (l *Limiter) Middleware(key func(r *http.Request) (k string, lim Limit, ok bool), next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if k, lim, ok := key(r); ok {
			if allowed, wait := l.Allow(k, lim); !allowed {
				secs := max(1, int(math.Ceil(wait.Seconds())))
				w.Header().Set("Retry-After", strconv.Itoa(secs))
				apierr.Write(w, http.StatusTooManyRequests, apierr.TooManyRequests,
					"this token is over its request rate; retry after "+strconv.Itoa(secs)+"s")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
