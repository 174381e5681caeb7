package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/tasksapi/tasks/internal/apierr"
)

// smallBody is the size up to which a request body is not counted in the
// body budget: the connection cap bounds what such bodies can hold.
const smallBody = 64 << 10

// bodyGuard bounds what request bodies cost while they arrive:
//
//   - time: a body whose next bytes take longer than timeout to come, or
//     that is not complete within timeout + length/minRate of its first
//     read, is cut: the read fails and the connection is closed, so a
//     stalled body's memory is released (deadlines);
//   - memory: bodies over smallBody hold a share of a budget of bytes from
//     the moment their handler is called until it returns. The handlers
//     grow their buffers as the bytes arrive, never past the declared
//     Content-Length, so the declared length is what a body can cost; it is
//     reserved up front, an unsized (chunked) body reserving the route's
//     cap, so that a request that finds no room within timeout is answered
//     429 too_many_requests before a byte of it is read (limit). A body
//     declared but not sent holds budget, not memory, and only until the
//     deadlines cut it.
type bodyGuard struct {
	timeout time.Duration
	minRate int64 // bytes per second; 0: no minimum
	maxBody int64 // the largest body any route reads, for unsized bodies' total time
	size    int64 // the budget
	budget  *semaphore.Weighted
	log     *slog.Logger

	mu       sync.Mutex
	lastFull time.Time
}

func newBodyGuard(timeout time.Duration, minRate, maxBody, budget int64, log *slog.Logger) *bodyGuard {
	return &bodyGuard{timeout: timeout, minRate: minRate, maxBody: maxBody, size: budget,
		budget: semaphore.NewWeighted(budget), log: log}
}

// deadlines sets read deadlines on the connection while a request's body
// is read. Wrap the whole server's handler with it.
func (g *bodyGuard) deadlines(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		b := &deadlineBody{ReadCloser: r.Body, g: g, rc: http.NewResponseController(w), length: r.ContentLength}
		// Until the handler reads, the deadline bounds what the server
		// reads of an unread body after the handler returns.
		b.rc.SetReadDeadline(time.Now().Add(g.timeout))
		r.Body = b
		next.ServeHTTP(w, r)
	})
}

// deadlineBody moves the connection's read deadline before each read of
// the body, and leaves it alone once the body is read: the server then
// lifts it and reads the connection in the background to notice a client
// that goes away, a read that a deadline would turn into a cancelled
// request.
type deadlineBody struct {
	io.ReadCloser
	g      *bodyGuard
	rc     *http.ResponseController
	length int64 // -1: unsized

	read int64
	end  time.Time // when the whole body must have arrived; zero: no bound
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	if b.done {
		return b.ReadCloser.Read(p)
	}
	now := time.Now()
	if b.read == 0 && b.end.IsZero() && b.g.minRate > 0 {
		length := b.length
		if length < 0 {
			length = b.g.maxBody
		}
		b.end = now.Add(b.g.timeout + time.Duration(float64(length)/float64(b.g.minRate)*float64(time.Second)))
	}
	d := now.Add(b.g.timeout)
	if !b.end.IsZero() && b.end.Before(d) {
		d = b.end
	}
	b.rc.SetReadDeadline(d)
	n, err := b.ReadCloser.Read(p)
	b.read += int64(n)
	if err == io.EOF || b.length >= 0 && b.read >= b.length {
		b.done = true
		b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// limit reserves a body's share of the budget around next. maxBody is the
// largest body next reads into memory; a body declared larger is refused by
// next without being read, and reserves nothing.
func (g *bodyGuard) limit(maxBody int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := r.ContentLength
		switch {
		case r.Body == nil || r.Body == http.NoBody:
			n = 0
		case n < 0:
			n = maxBody + 1
		case n > maxBody:
			n = 0
		}
		if n <= smallBody {
			next.ServeHTTP(w, r)
			return
		}
		n = min(n, g.size)
		ctx, cancel := context.WithTimeout(r.Context(), g.timeout)
		err := g.budget.Acquire(ctx, n)
		cancel()
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil {
				g.full()
			}
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(g.timeout/time.Second))))
			apierr.Write(w, http.StatusTooManyRequests, apierr.TooManyRequests,
				"too many large request bodies are being received; retry later")
			return
		}
		defer g.budget.Release(n)
		next.ServeHTTP(w, r)
	})
}

// capBody refuses a request body longer than max bytes with 400
// bad_request: one declared longer before a byte is read, an unsized one
// when it goes past max (http.MaxBytesReader: callback.Wrap answers 400
// naming the limit while it reads the body; a handler reading it later sees
// the error). Since callback.Wrap passes requests without callback_url
// through unlimited, it is what keeps -max-body-bytes a cap on every body
// of the image routes, which limit relies on ("refused by next without
// being read").
func capBody(max int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > max {
			apierr.Write(w, http.StatusBadRequest, apierr.BadRequest,
				"request body must be at most "+strconv.FormatInt(max, 10)+" bytes")
			return
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(w, r.Body, max)
		}
		next.ServeHTTP(w, r)
	})
}

// full logs, at most once a minute, that the budget turned requests away.
func (g *bodyGuard) full() {
	g.mu.Lock()
	log := time.Since(g.lastFull) >= time.Minute
	if log {
		g.lastFull = time.Now()
	}
	g.mu.Unlock()
	if log {
		g.log.Warn("request body budget full: requests answered 429", "body_budget", g.size)
	}
}
