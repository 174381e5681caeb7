package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stallingServer answers requests one at a time; the first one takes
// stall.
func stallingServer(t *testing.T, stall time.Duration) *httptest.Server {
	var (
		mu    sync.Mutex
		first atomic.Bool
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		defer mu.Unlock()
		if first.CompareAndSwap(false, true) {
			time.Sleep(stall)
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestOpenLoopCountsTheWait is the coordinated-omission test: a server
// stalls once for 100 ms while requests keep falling due; the latency of
// every request due during the stall is counted from when it was due, so
// it includes its wait behind the stall, whether the wait is the
// server's (requests sent on time, queued there) or the sender's (no
// room to send). A sender that measured from the moment it actually sent
// (or waited for each answer before the next send) would record most of
// them as fast. Only lower bounds are checked: a slow machine makes the
// latencies longer, never shorter.
func TestOpenLoopCountsTheWait(t *testing.T) {
	const stall = 100 * time.Millisecond
	for _, tc := range []struct {
		name     string
		inFlight int
	}{
		{"queued at the server", 256},
		{"held by the sender", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := stallingServer(t, stall)
			client := srv.Client()
			send := post(client, srv.URL, [][]byte{[]byte(`{}`)}, 1)
			h := &syncHistogram{h: newHistogram()}
			// 500 requests a second for 0.3 s: 150 requests, one every 2 ms;
			// the 26 due in the first 50 ms wait at least 50 ms.
			stats, err := openLoop(context.Background(), 500, 300*time.Millisecond, tc.inFlight, h,
				func(ctx context.Context) error { return send.op(ctx, 0) })
			if err != nil {
				t.Fatal(err)
			}
			if stats.sent != 150 || h.h.TotalCount() != 150 || stats.errors != 0 {
				t.Fatalf("sent %d, recorded %d, %d errors (%v); want 150, 150, 0", stats.sent, h.h.TotalCount(), stats.errors, stats.first)
			}
			waited := int64(0)
			for _, b := range h.h.Distribution() {
				if b.From >= (stall / 2).Microseconds() {
					waited += b.Count
				}
			}
			if waited < 26 {
				t.Errorf("%d latencies of at least %v, want at least 26: the wait behind the stall is not counted", waited, stall/2)
			}
			if max := time.Duration(h.h.Max()) * time.Microsecond; max < stall {
				t.Errorf("max latency %v, want at least the stall %v", max, stall)
			}
		})
	}
}

// TestOpenLoopSendsOnSchedule: a slow answer does not delay the next
// send: with room for every request, all are sent while the first one
// still waits.
func TestOpenLoopSendsOnSchedule(t *testing.T) {
	release := make(chan struct{})
	var started atomic.Int64
	h := &syncHistogram{h: newHistogram()}
	done := make(chan openLoopStats)
	go func() {
		stats, _ := openLoop(context.Background(), 1000, 50*time.Millisecond, 100, h, func(ctx context.Context) error {
			if started.Add(1) == 1 {
				<-release // the first answer takes until every request was sent
			}
			return nil
		})
		done <- stats
	}()
	for started.Load() < 50 {
		time.Sleep(time.Millisecond)
	}
	close(release)
	if stats := <-done; stats.sent != 50 || h.h.TotalCount() != 50 {
		t.Fatalf("sent %d, recorded %d, want 50", stats.sent, h.h.TotalCount())
	}
}

func TestLatencyTargets(t *testing.T) {
	h := newHistogram()
	for range 990 {
		h.RecordValue(1000) // 1 ms
	}
	for range 10 {
		h.RecordValue(30_000) // 1% at 30 ms
	}
	l := latencyOf("x", h, false)
	if l.P50 != 1 || l.Count != 1000 || l.Max < 29.9 || l.Max > 30.1 {
		t.Fatalf("p50 %v, count %d, max %v", l.P50, l.Count, l.Max)
	}
	if l.P99 > 1.01 || !l.Pass {
		t.Errorf("p99 %v pass %v; want 1 ms (990 of 1000 at 1 ms), pass", l.P99, l.Pass)
	}
	h.RecordValues(30_000, 10) // now 2% at 30 ms: p99 = 30x p50
	if l := latencyOf("x", h, false); l.Pass || l.P99 < 29.9 {
		t.Errorf("p99 %v, pass %v; want 30 ms, NO", l.P99, l.Pass)
	}
	h.Reset()
	h.RecordValues(1000, 9985)
	h.RecordValues(25_000, 15) // p99.9 = 25x p50
	if l := latencyOf("x", h, true); l.Pass || l.Target != "p99 ≤ 5x p50, p99.9 ≤ 20x p50" {
		t.Errorf("with p99.9 at 25x: pass %v, target %q", l.Pass, l.Target)
	}
	if l := latencyOf("x", h, false); !l.Pass {
		t.Error("p99 target alone failed")
	}
	if l := latencyOf("x", h, true); len(l.Curve) != 41 || l.Curve[0].Percentile != 0 || l.Curve[40].Percentile < 99.99 {
		t.Errorf("curve of %d points: %v", len(l.Curve), l.Curve)
	}
}

// checkLatencySVG fails t unless svg is well-formed XML with one line per
// scenario.
func checkLatencySVG(t *testing.T, svg []byte, lines int) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(svg))
	polylines, root := 0, ""
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the latency chart is not well-formed XML: %v\n%s", err, svg)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
			}
			if se.Name.Local == "polyline" {
				polylines++
			}
		}
	}
	if root != "svg" || polylines != lines {
		t.Errorf("root %q with %d lines, want svg with %d", root, polylines, lines)
	}
}

func TestLatencySVG(t *testing.T) {
	var ls []Latency
	for i, name := range []string{"submit (Wrap over sqlitestore)", "retrieve <by id> & more"} {
		h := newHistogram()
		for v := range int64(5000) {
			h.RecordValue(100 + v*int64(i+1))
		}
		ls = append(ls, latencyOf(name, h, i == 0))
	}
	checkLatencySVG(t, latencySVG(ls), 2)
	checkLatencySVG(t, latencySVG(nil), 0)
}

func TestQuantileSince(t *testing.T) {
	inf := math.Inf(1)
	a := &metrics.Float64Histogram{Counts: []uint64{0, 5, 0, 0}, Buckets: []float64{-inf, 0.001, 0.002, 0.004, inf}}
	b := &metrics.Float64Histogram{Counts: []uint64{0, 95, 9, 1}, Buckets: a.Buckets}
	// Since a: 90 below 1 ms… 2 ms, 9 up to 4 ms, 1 beyond.
	for _, tc := range []struct{ q, want float64 }{{0.5, 2}, {0.95, 4}, {0.999, 4}, {1, 4}} {
		if got := quantileSince(a, b, tc.q); got != tc.want {
			t.Errorf("q %v: %v ms, want %v", tc.q, got, tc.want)
		}
	}
	if got := quantileSince(b, b, 0.99); got != 0 {
		t.Errorf("nothing recorded: %v", got)
	}
}
