package ratelimit_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasksapi/tasks/internal/ratelimit"
)

type clock struct{ t atomic.Pointer[time.Time] }

func newClock() *clock {
	c := &clock{}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c.t.Store(&now)
	return c
}
func (c *clock) now() time.Time { return *c.t.Load() }
func (c *clock) add(d time.Duration) {
	t := c.now().Add(d)
	c.t.Store(&t)
}

func TestAllowBurstThenRate(t *testing.T) {
	c := newClock()
	l := ratelimit.New(c.now)
	lim := ratelimit.Limit{Rate: 2, Burst: 3}
	for i := range 3 {
		if ok, _ := l.Allow("a", lim); !ok {
			t.Fatalf("request %d of the burst refused", i)
		}
	}
	ok, wait := l.Allow("a", lim)
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("over the burst: %v, wait %v", ok, wait)
	}
	c.add(500 * time.Millisecond)
	if ok, _ := l.Allow("a", lim); !ok {
		t.Fatal("refused after the wait")
	}
	if ok, _ := l.Allow("a", lim); ok {
		t.Fatal("a second request allowed without waiting")
	}
	// Off: no limit at all, nothing kept.
	for range 100 {
		if ok, _ := l.Allow("b", ratelimit.Limit{}); !ok {
			t.Fatal("an unlimited key refused")
		}
	}
}

// One key at its limit does not slow another.
func TestKeysAreIndependent(t *testing.T) {
	c := newClock()
	l := ratelimit.New(c.now)
	lim := ratelimit.Limit{Rate: 1, Burst: 1}
	l.Allow("busy", lim)
	for range 10 {
		if ok, _ := l.Allow("busy", lim); ok {
			t.Fatal("busy allowed over its limit")
		}
	}
	for i := range 5 {
		if ok, _ := l.Allow("other-"+strconv.Itoa(i), lim); !ok {
			t.Fatalf("other-%d refused while busy is at its limit", i)
		}
	}
}

// Idle limiters are dropped once their bucket would be full again, so
// memory is bounded by the keys active in that window.
func TestIdleLimitersDropped(t *testing.T) {
	c := newClock()
	l := ratelimit.New(c.now)
	lim := ratelimit.Limit{Rate: 10, Burst: 20} // full again after 2 s
	for i := range 10000 {
		l.Allow("k"+strconv.Itoa(i), lim)
	}
	if l.Len() != 10000 {
		t.Fatalf("Len = %d", l.Len())
	}
	c.add(time.Minute)
	l.Allow("fresh", lim)
	if l.Len() != 1 {
		t.Fatalf("after a minute idle, %d limiters kept, want 1", l.Len())
	}
	// A key dropped while its bucket was full answers as before.
	for i := range 20 {
		if ok, _ := l.Allow("k1", lim); !ok {
			t.Fatalf("request %d of a fresh burst refused", i)
		}
	}
	// A limiter not yet full is kept by the sweep.
	c.add(time.Minute + time.Second) // k1 is idle for 61 s: full; slow is not
	slow := ratelimit.Limit{Rate: 0.001, Burst: 1}
	l.Allow("slow", slow)
	c.add(time.Minute)
	l.Allow("x", lim)
	if ok, _ := l.Allow("slow", slow); ok {
		t.Fatal("the slow key's limiter was dropped before its bucket refilled")
	}
}

func TestMiddleware(t *testing.T) {
	c := newClock()
	l := ratelimit.New(c.now)
	var served atomic.Int64
	h := l.Middleware(func(r *http.Request) (string, ratelimit.Limit, bool) {
		tok := r.Header.Get("Authorization")
		return tok, ratelimit.Limit{Rate: 0.5, Burst: 1}, tok != ""
	}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served.Add(1) }))
	do := func(tok string) *httptest.ResponseRecorder {
		rr := httptest.NewRecorder()
		r := httptest.NewRequest("POST", "/", nil)
		if tok != "" {
			r.Header.Set("Authorization", tok)
		}
		h.ServeHTTP(rr, r)
		return rr
	}
	if rr := do("a"); rr.Code != 200 {
		t.Fatal(rr.Code)
	}
	rr := do("a")
	var body struct {
		Error   struct{ Code, Message string }
		TraceID string `json:"trace_id"`
	}
	json.Unmarshal(rr.Body.Bytes(), &body)
	if rr.Code != 429 || rr.Header().Get("Retry-After") != "2" || body.Error.Code != "too_many_requests" || body.TraceID == "" {
		t.Fatalf("over the limit: %d %v %s", rr.Code, rr.Header(), rr.Body)
	}
	if served.Load() != 1 {
		t.Fatalf("the refused request reached the handler")
	}
	for range 5 { // no key: not limited
		if rr := do(""); rr.Code != 200 {
			t.Fatal(rr.Code)
		}
	}
}
