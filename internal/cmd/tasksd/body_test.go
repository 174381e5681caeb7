package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/memstore"
)

// bodyResult is what a test handler saw of its body.
type bodyResult struct {
	n   int
	err error
	ctx error // the request context's error after the handler's work
}

// guardServer serves h behind g.deadlines and returns its address.
func guardServer(t *testing.T, g *bodyGuard, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(g.deadlines(h))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// rawPost sends headers declaring length (-1: chunked is not used, length
// is always given) and the first part of the body; it returns the open
// connection.
func rawPost(t *testing.T, addr string, length int, part string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", length, part)
	return c
}

func readAllHandler(out chan<- bodyResult) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		out <- bodyResult{n: len(b), err: err}
	})
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestBodyStallCut: a body whose next bytes do not come within the timeout
// is cut: the handler's read fails with a timeout.
func TestBodyStallCut(t *testing.T) {
	g := newBodyGuard(200*time.Millisecond, 0, 32<<20, 64<<20, discardLog())
	out := make(chan bodyResult, 1)
	addr := guardServer(t, g, readAllHandler(out))
	start := time.Now()
	rawPost(t, addr, 1000, strings.Repeat("x", 100))
	select {
	case res := <-out:
		if !errors.Is(res.err, os.ErrDeadlineExceeded) || res.n != 100 {
			t.Errorf("read %d bytes, %v; want 100 and a deadline error", res.n, res.err)
		}
		t.Logf("cut after %v", time.Since(start))
	case <-time.After(10 * time.Second):
		t.Fatal("a stalled body was not cut in 10 s")
	}
}

// TestBodyMinRate: a body that keeps coming, but slower than the minimum
// rate, is cut once timeout + length/rate has passed.
func TestBodyMinRate(t *testing.T) {
	g := newBodyGuard(300*time.Millisecond, 100, 32<<20, 64<<20, discardLog()) // 100 bytes/s: 60 bytes are due in 0.9 s
	out := make(chan bodyResult, 1)
	addr := guardServer(t, g, readAllHandler(out))
	c := rawPost(t, addr, 60, "")
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for range 60 {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond): // 10 bytes/s, never stalling for 300 ms
			}
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	select {
	case res := <-out:
		if !errors.Is(res.err, os.ErrDeadlineExceeded) || res.n >= 60 {
			t.Errorf("read %d bytes, %v; want a deadline error before the end", res.n, res.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a trickled body was not cut in 10 s")
	}
}

// TestBodyDeadlineCleared: once the body is read, no deadline is set again,
// so a handler that then works longer than the timeout is not cancelled (the
// server's background read would otherwise time out and cancel the request).
// Both when the handler saw EOF and when it read exactly the declared length,
// and even when it reads again after the end.
func TestBodyDeadlineCleared(t *testing.T) {
	const timeout = 100 * time.Millisecond
	g := newBodyGuard(timeout, 1<<20, 32<<20, 64<<20, discardLog())
	for _, exact := range []bool{false, true} {
		out := make(chan bodyResult, 1)
		addr := guardServer(t, g, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var res bodyResult
			if exact {
				b := make([]byte, 5)
				res.n, res.err = io.ReadFull(r.Body, b)
			} else {
				b, err := io.ReadAll(r.Body)
				res.n, res.err = len(b), err
			}
			// Read again past the end, later, as some readers do: that must
			// not arm a deadline on the server's background read.
			time.Sleep(2 * timeout)
			r.Body.Read(make([]byte, 1))
			time.Sleep(3 * timeout)
			res.ctx = r.Context().Err()
			out <- res
			io.WriteString(w, "done")
		}))
		resp, err := http.Post("http://"+addr, "text/plain", strings.NewReader("hello"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		res := <-out
		if res.n != 5 || res.err != nil || res.ctx != nil || string(body) != "done" {
			t.Errorf("exact %v: read %d, %v; context %v; answer %q", exact, res.n, res.err, res.ctx, body)
		}
	}
}

// TestBodyBudget: large bodies share the budget; a request that finds no
// room in time gets the contract's 429; small bodies and bodies larger than
// the route reads are not counted.
func TestBodyBudget(t *testing.T) {
	g := newBodyGuard(300*time.Millisecond, 0, 32<<20, 1<<20, discardLog())
	release := make(chan struct{})
	entered := make(chan int64, 8)
	h := g.limit(2<<20, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- r.ContentLength
		if r.Header.Get("X-Hold") != "" {
			<-release
		}
		io.Copy(io.Discard, r.Body)
	}))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	post := func(body io.Reader, length int64, hold bool) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL, body)
		req.ContentLength = length
		if hold {
			req.Header.Set("X-Hold", "1")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	big := func() io.Reader { return bytes.NewReader(make([]byte, 800<<10)) }

	done := make(chan *http.Response, 1)
	go func() { done <- post(big(), 800<<10, true) }()
	<-entered // holds 800 KiB of the 1 MiB budget

	// No room for another 800 KiB, nor for an unsized body (it counts as
	// the route's cap): 429 after the timeout, without entering.
	for _, length := range []int64{800 << 10, -1} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, big())
		req.ContentLength = length
		if length < 0 {
			req.TransferEncoding = []string{"chunked"}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e struct {
			Error struct{ Code, Message string }
		}
		json.Unmarshal(raw, &e)
		if resp.StatusCode != http.StatusTooManyRequests || e.Error.Code != "too_many_requests" || resp.Header.Get("Retry-After") == "" {
			t.Errorf("length %d with the budget full: %d %v %s", length, resp.StatusCode, resp.Header, raw)
		}
	}
	// Small bodies, and bodies larger than the route reads (refused by it
	// unread), pass.
	for _, length := range []int64{smallBody, 3 << 20} {
		if resp := post(bytes.NewReader(make([]byte, length)), length, false); resp.StatusCode != 200 {
			t.Errorf("length %d with the budget full: %d", length, resp.StatusCode)
		}
		<-entered
	}
	select {
	case n := <-entered:
		t.Fatalf("a request of %d bytes entered beyond the budget", n)
	default:
	}

	// Room again once the first one answers.
	close(release)
	if resp := <-done; resp.StatusCode != 200 {
		t.Fatalf("the first request: %d", resp.StatusCode)
	}
	if resp := post(big(), 800<<10, false); resp.StatusCode != 200 {
		t.Errorf("after release: %d", resp.StatusCode)
	}
	<-entered
	if !g.budget.TryAcquire(1 << 20) {
		t.Error("the budget was not given back in full")
	}
}

// TestBodyBudgetWaits: a request that finds the budget full waits for room
// rather than failing at once.
func TestBodyBudgetWaits(t *testing.T) {
	g := newBodyGuard(5*time.Second, 0, 32<<20, 1<<20, discardLog())
	var order []string
	orderc := make(chan string, 2)
	h := g.limit(2<<20, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.Header.Get("X-Name") == "first" {
			time.Sleep(200 * time.Millisecond)
		}
		orderc <- r.Header.Get("X-Name")
	}))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	post := func(name string) int {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, srv.URL, bytes.NewReader(make([]byte, 800<<10)))
		req.Header.Set("X-Name", name)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	first := make(chan int, 1)
	go func() { first <- post("first") }()
	time.Sleep(50 * time.Millisecond)
	if code := post("second"); code != 200 {
		t.Errorf("the waiting request: %d", code)
	}
	if code := <-first; code != 200 {
		t.Errorf("the first request: %d", code)
	}
	order = append(order, <-orderc, <-orderc)
	if order[0] != "first" || order[1] != "second" {
		t.Errorf("order %v", order)
	}
}

// TestBodyUnreadCut: a handler that does not read the body (here: answers
// at once) leaves the server to discard it; a client that then stalls is
// cut by the deadline set before the handler ran.
func TestBodyUnreadCut(t *testing.T) {
	g := newBodyGuard(200*time.Millisecond, 0, 32<<20, 64<<20, discardLog())
	addr := guardServer(t, g, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "no thanks")
	}))
	c := rawPost(t, addr, 100<<10, "x")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	if _, err := br.ReadByte(); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the connection with an unread, stalled body: %v; want it closed by the server", err)
	}
}

// TestCapBody: -max-body-bytes still caps the image routes' bodies now
// that callback.Wrap streams requests without callback_url unlimited: one
// declared larger is refused unread, an unsized one fails past the cap
// (Wrap answers 400 naming it while it looks for callback_url), and one
// within the cap reaches the handler whole.
func TestCapBody(t *testing.T) {
	store := memstore.New()
	t.Cleanup(func() { store.Close() })
	rec, err := callback.New(store, callback.Options{Logger: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rec.Close(context.Background()) })
	const max = 2 << 20
	var got int
	h := capBody(max, rec.Wrap("images_generations", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got = len(b)
	})))
	body := func(n int) string { return `{"prompt":"` + strings.Repeat("a", n) + `"}` }
	for _, tc := range []struct {
		name    string
		body    string
		unsized bool
		status  int
	}{
		{"Declared", body(max), false, 400},
		{"Unsized", body(max), true, 400},
		{"Within", body(max - 100), true, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got = 0
			req := httptest.NewRequest(http.MethodPost, "/v1/images/generations", strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			if tc.unsized {
				req.ContentLength = -1
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if tc.status == 400 && !strings.Contains(w.Body.String(), `"request body must be at most 2097152 bytes"`) || tc.status == 200 && got != len(tc.body) {
				t.Errorf("answer %s, handler read %d bytes", w.Body, got)
			}
		})
	}
}
