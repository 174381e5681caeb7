package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback/callbacktest"
	"github.com/tasksapi/tasks/internal/tasksdtest"
)

// The rows of issues #14 and #15 that the callback recorder and the Tasks
// API answer for, scaled for CI: fairness between tenants (their share of
// the queue, their callbacks while another's receiver stalls), the size of
// a stored request, the bytes held for queued tasks, retrieve_batch over
// heavy tasks, the log volume of a receiver outage and what a dead receiver
// costs. As in abuse_test.go, settings that older builds lack are passed as
// TASKSD_* variables, so that the same tests measure the "before" of
// RELIABILITY.md against such a build (TASKSDTEST_BINARY); they fail there.

// cpuTime reads the CPU time (user and system) the daemon has used, from
// /proc/<pid>/stat, in clock ticks of 10 ms (USER_HZ is 100 on Linux).
func cpuTime(t *testing.T, d *tasksdtest.Daemon) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.PID()))
	if err != nil {
		t.Fatal(err)
	}
	// The command name, in parentheses, may hold spaces: count from after it.
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if len(f) < 13 {
		t.Fatalf("unexpected /proc/%d/stat: %q", d.PID(), b)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("unexpected /proc/%d/stat: %q", d.PID(), b)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// legit is a client that sends a small Tasks API request every 50 ms, as a
// well-behaved tenant would during an attack, keeping its latencies and its
// answers' statuses.
type legit struct {
	mu     sync.Mutex
	lat    []time.Duration
	status map[int]int
	errs   int
	stop   chan struct{}
	done   sync.WaitGroup
}

func startLegit(url, token string, req map[string]any) *legit {
	l := &legit{status: map[int]int{}, stop: make(chan struct{})}
	l.done.Go(func() {
		for {
			select {
			case <-l.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			began := time.Now()
			a, err := postJSON(ctx, url+tasksPath, token, req)
			took := time.Since(began)
			cancel()
			l.mu.Lock()
			if err != nil {
				l.errs++
			} else {
				l.status[a.status]++
				l.lat = append(l.lat, took)
			}
			l.mu.Unlock()
		}
	})
	return l
}

// end stops the client and returns its 99th percentile latency, the
// number of answers, of 5xx answers and of transport errors.
func (l *legit) end() (p99 time.Duration, n, fivexx, errs int) {
	close(l.stop)
	l.done.Wait()
	l.mu.Lock()
	defer l.mu.Unlock()
	for s, c := range l.status {
		n += c
		if s >= 500 {
			fivexx += c
		}
	}
	return percentile(l.lat, 0.99), n, fivexx, l.errs
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// idleP99 measures the legitimate client alone for a second.
func idleP99(url, token string, req map[string]any) time.Duration {
	l := startLegit(url, token, req)
	time.Sleep(time.Second)
	p99, _, _, _ := l.end()
	return p99
}

// TestTenantFairnessQueue: tenant A floods async submits from 16 clients
// while tenant B submits every 200 ms. Before the fix A took the whole queue
// and B got 429 for nearly everything (issue #14: 3 of ~73 accepted). Now A
// is held to its share of the queue (-tenant-queue, a quarter by default)
// and B's submits are accepted as if A were idle; the workers take the
// tenants in turn, so B's tasks do not wait behind A's. Asserted: at least
// 80% of B's submits accepted, no 5xx for anyone. Reported: both tenants'
// outcomes, how long B's tasks waited to start, and a legitimate client's
// p99 against idle.
func TestTenantFairnessQueue(t *testing.T) {
	const flood, every = 5 * time.Second, 200 * time.Millisecond
	d := tasksdtest.Start(t, nil, "-db", filepath.Join(t.TempDir(), "tasks.db"), "-tokens", writeTokens(t),
		"-standin-delay", "300ms", "-workers", "2", "-queue", "64")
	page := map[string]any{"action": "retrieve_batch", "limit": 5}
	idle := idleP99(d.URL(), tokenOp, page)
	l := startLegit(d.URL(), tokenOp, page)

	var aOK, a429, aOther atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				a, err := postJSON(context.Background(), d.URL()+genPath, tokenA, map[string]any{"prompt": "flood", "async": true})
				switch {
				case err == nil && a.status == 200:
					aOK.Add(1)
				case err == nil && a.status == 429:
					a429.Add(1)
					time.Sleep(10 * time.Millisecond)
				default:
					aOther.Add(1)
				}
			}
		})
	}
	time.Sleep(500 * time.Millisecond) // the flood fills what it can
	var bIDs []string
	bTotal, bOther := 0, 0
	for end := time.Now().Add(flood); time.Now().Before(end); time.Sleep(every) {
		a, err := postJSON(context.Background(), d.URL()+genPath, tokenB, map[string]any{"prompt": "fair", "async": true})
		bTotal++
		switch {
		case err == nil && a.status == 200:
			bIDs = append(bIDs, a.str("task_id"))
		case err == nil && a.status == 429:
		default:
			bOther++
		}
	}
	close(stop)
	wg.Wait()
	p99, n, fivexx, errs := l.end()

	// How long B's accepted tasks waited for a worker.
	var waits []time.Duration
	if len(bIDs) > 0 {
		waitFor(30*time.Second, 100*time.Millisecond, func() bool {
			b, _ := retrieveBatch(t, d.URL(), tokenB, map[string]any{"ids": bIDs, "limit": 100, "status": "pending"})
			return *b.Count == 0
		})
		_, raw := retrieveBatch(t, d.URL(), tokenB, map[string]any{"ids": bIDs, "limit": 100})
		var recs struct {
			Items []struct {
				CreatedAt float64 `json:"created_at"`
				StartedAt float64 `json:"started_at"`
			} `json:"items"`
		}
		json.Unmarshal(raw, &recs)
		for _, it := range recs.Items {
			if it.StartedAt > 0 {
				waits = append(waits, time.Duration((it.StartedAt-it.CreatedAt)*float64(time.Second)))
			}
		}
	}
	share := float64(len(bIDs)) / float64(bTotal)
	t.Logf("queue fairness: tenant A (16 clients) %d accepted, %d answered 429; tenant B (every %v) %d of %d accepted (%.0f%%); "+
		"B's tasks waited for a worker %v (median), %v (max); a legitimate client: %d answers, p99 %v during vs %v idle (%.1fx), %d 5xx, %d errors",
		aOK.Load(), a429.Load(), every, len(bIDs), bTotal, 100*share,
		percentile(waits, 0.5).Round(time.Millisecond), percentile(waits, 1).Round(time.Millisecond),
		n, p99.Round(time.Millisecond), idle.Round(time.Millisecond), float64(p99)/float64(max(idle, time.Millisecond)), fivexx, errs)
	if share < 0.8 {
		t.Errorf("tenant B got %d of %d submits accepted while tenant A flooded, want at least 80%%", len(bIDs), bTotal)
	}
	if aOther.Load() > 0 || bOther > 0 || fivexx > 0 {
		t.Errorf("answers other than 200 and 429 during the flood: tenant A %d, tenant B %d, legitimate client %d 5xx", aOther.Load(), bOther, fivexx)
	}
}

// hungReceiver accepts callbacks and never answers them until the test
// ends; it counts the requests it took.
func hungReceiver(t *testing.T) (url string, hits *atomic.Int64) {
	hits = new(atomic.Int64)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) }) // before the server's Close, which waits for handlers
	return srv.URL, hits
}

// TestTenantFairnessCallbacks: tenant A's 64 tasks call back to a receiver
// that accepts and never answers; then tenant B's task calls back to a
// healthy one. Before the fix A's callbacks held every delivery slot and B's
// callback waited for them to time out (issue #14: 19.4 s instead of
// ~0.1 s). Now one receiver holds at most -callbacks-per-host slots. Asserted
// (generously): B's callback arrives sooner than A's attempts time out (here
// 6 s). Reported: the latency, and how many of A's attempts were in flight.
func TestTenantFairnessCallbacks(t *testing.T) {
	const timeout = 6 * time.Second
	hung, hits := hungReceiver(t)
	healthy := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{})
	d := tasksdtest.Start(t, nil, "-db", filepath.Join(t.TempDir(), "tasks.db"), "-tokens", writeTokens(t),
		"-standin-delay", "0s", "-allow-private-callbacks", "-callback-timeout", timeout.String())
	for range 64 {
		a := mustPost(t, d.URL()+genPath, tokenA, map[string]any{"prompt": "stall", "callback_url": hung + "/cb"})
		if a.status != 200 {
			t.Fatalf("tenant A's submit: %d %s", a.status, a.raw)
		}
	}
	if !waitFor(10*time.Second, 10*time.Millisecond, func() bool { return hits.Load() >= 16 }) {
		t.Fatalf("only %d of tenant A's callbacks reached the stalled receiver", hits.Load())
	}
	time.Sleep(200 * time.Millisecond)
	inFlight := hits.Load()
	began := time.Now()
	a := mustPost(t, d.URL()+genPath, tokenB, map[string]any{"prompt": "fair", "callback_url": healthy.URL + "/cb"})
	if a.status != 200 {
		t.Fatalf("tenant B's submit: %d %s", a.status, a.raw)
	}
	id := a.str("task_id")
	arrived := waitFor(30*time.Second, 5*time.Millisecond, func() bool { return healthy.Body(id) != nil })
	took := time.Since(began)
	t.Logf("callback fairness: tenant A's 64 callbacks to a receiver that never answers (%d attempts in flight); "+
		"tenant B's callback to a healthy receiver arrived %v after its submit (attempt timeout %v)",
		inFlight, took.Round(time.Millisecond), timeout)
	if !arrived || took >= timeout*2/3 {
		t.Errorf("tenant B's callback took %v (arrived: %v): it waited for tenant A's stalled deliveries", took, arrived)
	}
}

// TestStoredSizeCap: a multipart callback-mode edit whose form field is
// 8 MiB of control bytes. Before the fix it was stored as a 48 MB JSON
// string (each byte escaped as \u0001) and memory peaked accordingly
// (issue #14: 31 MiB → 195 MB stored, 1.87 GB RSS). Now it is refused with
// 400 naming -max-request-bytes, before anything is encoded or stored.
func TestStoredSizeCap(t *testing.T) {
	needProc(t)
	d := tasksdtest.Start(t, nil, "-db", filepath.Join(t.TempDir(), "tasks.db"), "-tokens", writeTokens(t), "-standin-delay", "0s")
	warmUp(t, d)
	idle := memory(t, d)
	before, _ := retrieveBatch(t, d.URL(), tokenOp, map[string]any{"limit": 1})

	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	mw.WriteField("async", "true")
	mw.WriteField("prompt", strings.Repeat("\x01", 8*mib))
	fw, _ := mw.CreateFormFile("image", "in.png")
	fw.Write([]byte("\x89PNG\r\n\x1a\nnot really"))
	mw.Close()
	a, err := send(context.Background(), http.MethodPost, d.URL()+"/openai/images/edits", tokenA, mw.FormDataContentType(), body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	peak := memory(t, d).Peak
	after, _ := retrieveBatch(t, d.URL(), tokenOp, map[string]any{"limit": 1})
	t.Logf("stored size: an 8 MiB form field of control bytes in callback mode: %d %.200s; tasks %d → %d; RSS idle %d MiB, peak %d MiB (+%d MiB)",
		a.status, a.raw, *before.Count, *after.Count, idle.RSS/mib, peak/mib, (peak-idle.RSS)/mib)
	if a.status != 400 || !strings.Contains(string(a.raw), "4194304 bytes") {
		t.Errorf("answer %d %.200s, want 400 naming the 4194304-byte limit", a.status, a.raw)
	}
	if *after.Count != *before.Count {
		t.Errorf("%d tasks stored by the refused submit", *after.Count-*before.Count)
	}
	if growth := peak - idle.RSS; growth > 160*mib {
		t.Errorf("peak RSS grew by %d MiB for one 8 MiB submit, want at most 160 MiB", growth/mib)
	}
}

// bigPrompt is a callback-mode JSON body of about n bytes.
func bigPrompt(n int) []byte {
	return []byte(`{"async":true,"prompt":"` + strings.Repeat("p", n-len(`{"async":true,"prompt":""}`)) + `"}`)
}

// TestQueuedBytesBudget: 60 callback-mode submits of 3.9 MiB each while the
// only worker is busy for a minute. Before the fix every one was accepted
// and held in memory until it ran (issue #14: ≈ 42 MB per queued 30 MiB
// task, 1.70 GB for 40). Now the bodies held for queued and running tasks
// are bounded by -queue-bytes (here 64 MiB, a tenant a quarter of it):
// beyond it submits get 429. Asserted: peak RSS within 192 MiB of idle, and
// only 200 or 429.
func TestQueuedBytesBudget(t *testing.T) {
	needProc(t)
	const n, size = 60, 3900 << 10
	d := tasksdtest.Start(t, []string{"TASKSD_QUEUE_BYTES=64MiB"}, "-db", filepath.Join(t.TempDir(), "tasks.db"), "-tokens", writeTokens(t),
		"-standin-delay", "60s", "-workers", "1", "-task-timeout", "2m")
	for range 5 { // warm up (the worker is then busy for a minute)
		mustPost(t, d.URL()+genPath, tokenA, map[string]any{"prompt": "warm", "async": true})
		mustPost(t, d.URL()+tasksPath, tokenA, map[string]any{"action": "retrieve_batch"})
	}
	time.Sleep(200 * time.Millisecond)
	idle := memory(t, d)
	tokens := []string{tokenA, tokenB, tokenOp}
	statuses := map[int]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 2 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				a, err := postJSON(context.Background(), d.URL()+genPath, tokens[i%len(tokens)], bigPrompt(size))
				mu.Lock()
				if err != nil {
					statuses[-1]++
				} else {
					statuses[a.status]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	time.Sleep(500 * time.Millisecond)
	m := memory(t, d)
	growth := m.Peak - idle.RSS
	t.Logf("queued bytes: %d callback-mode submits of %d KiB, one busy worker, 3 tenants: answers %v; RSS idle %d MiB, now %d MiB, peak %d MiB (+%d MiB)",
		n, size>>10, statuses, idle.RSS/mib, m.RSS/mib, m.Peak/mib, growth/mib)
	if growth > 192*mib {
		t.Errorf("peak RSS grew by %d MiB with the queue full of large bodies, want at most 192 MiB", growth/mib)
	}
	for s, c := range statuses {
		if s != 200 && s != 429 {
			t.Errorf("%d answers with status %d, want only 200 and 429", c, s)
		}
	}
}

// TestBatchOverHeavyTasks: 24 tasks of 3.9 MiB each, then (in a fresh
// process, so that its peak memory is the answer's alone) a retrieve_batch
// with limit 24. Before the fix the answer held all 40 (issue #14: 1.26 GB
// for 40 tasks of 30 MiB, 6 GB RSS). Now it stops at -batch-bytes (16 MiB)
// with the same count, and a client that goes on from offset + items gets
// every task once. Asserted: peak RSS within 128 MiB of idle; the paging
// rule. Reported: the answer's size and items, and a legitimate client's
// p99 against idle.
func TestBatchOverHeavyTasks(t *testing.T) {
	needProc(t)
	const n, size = 24, 3900 << 10
	db := filepath.Join(t.TempDir(), "tasks.db")
	tokens := writeTokens(t)
	d := tasksdtest.Start(t, nil, "-db", db, "-tokens", tokens, "-standin-delay", "0s")
	for i := 0; i < n; {
		a := mustPost(t, d.URL()+genPath, []string{tokenA, tokenB}[i%2], bigPrompt(size))
		switch a.status {
		case 200:
			i++
		case 429: // the queue's bytes: wait for the tasks to run
			time.Sleep(50 * time.Millisecond)
		default:
			t.Fatalf("submit: %d %.200s", a.status, a.raw)
		}
	}
	if !waitFor(60*time.Second, 100*time.Millisecond, func() bool {
		b, _ := retrieveBatch(t, d.URL(), tokenOp, map[string]any{"limit": 1, "status": "pending"})
		r, _ := retrieveBatch(t, d.URL(), tokenOp, map[string]any{"limit": 1, "status": "running"})
		return *b.Count == 0 && *r.Count == 0
	}) {
		t.Fatal("the heavy tasks did not finish")
	}
	d.Stop()

	d = tasksdtest.Start(t, nil, "-db", db, "-tokens", tokens, "-standin-delay", "0s")
	warm, _ := retrieveBatch(t, d.URL(), tokenOp, map[string]any{"limit": 1})
	time.Sleep(200 * time.Millisecond)
	idle := memory(t, d)
	// The legitimate client's requests are light (its tasks are all
	// heavy): a batch by an id that matches nothing.
	light := map[string]any{"action": "retrieve_batch", "ids": []string{"no-such-task"}}
	idleP := idleP99(d.URL(), tokenA, light)
	l := startLegit(d.URL(), tokenA, light)
	b, raw := retrieveBatch(t, d.URL(), tokenOp, map[string]any{"limit": n})
	time.Sleep(200 * time.Millisecond)
	peak := memory(t, d).Peak
	first := len(b.Items)
	seen := map[string]bool{}
	answers := 1
	for _, it := range b.Items {
		seen[it.ID] = true
	}
	for offset := len(b.Items); offset < *b.Count; answers++ {
		p, _ := retrieveBatch(t, d.URL(), tokenOp, map[string]any{"limit": n, "offset": offset})
		if len(p.Items) == 0 || *p.Count != n {
			t.Fatalf("offset %d: %d items, count %d", offset, len(p.Items), *p.Count)
		}
		for _, it := range p.Items {
			if seen[it.ID] {
				t.Fatalf("%s listed twice", it.ID)
			}
			seen[it.ID] = true
		}
		offset += len(p.Items)
	}
	p99, calls, fivexx, errs := l.end()
	growth := peak - idle.RSS
	t.Logf("heavy batch: %d tasks of %d KiB (%d in all); retrieve_batch limit %d answered %d MiB with %d items and count %d; "+
		"every task once in %d answers going on from offset + items; RSS idle %d MiB, peak %d MiB (+%d MiB); "+
		"a legitimate client: %d answers, p99 %v during vs %v idle, %d 5xx, %d errors",
		n, size>>10, *warm.Count, n, len(raw)>>20, first, *b.Count, answers, idle.RSS/mib, peak/mib, growth/mib,
		calls, p99.Round(time.Millisecond), idleP.Round(time.Millisecond), fivexx, errs)
	if *b.Count != n || len(seen) != n {
		t.Errorf("count %d, %d distinct tasks paged, want %d", *b.Count, len(seen), n)
	}
	if growth > 128*mib {
		t.Errorf("peak RSS grew by %d MiB for a batch of heavy tasks, want at most 128 MiB", growth/mib)
	}
	if fivexx > 0 {
		t.Errorf("%d answers 5xx to a legitimate client", fivexx)
	}
}

// reservedAddr returns a loopback address nobody listens on (yet).
func reservedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// submitAt submits callback-mode tasks calling back to url at rate per
// second for d, from a few clients, and returns their ids and when each
// was sent (failing the test on any answer but 200).
func submitAt(t *testing.T, base, token, url string, rate int, d time.Duration) (ids []string, sent map[string]time.Time) {
	t.Helper()
	var mu sync.Mutex
	sent = map[string]time.Time{}
	var bad atomic.Int64
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	end := time.Now().Add(d)
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for time.Now().Before(end) {
		<-tick.C
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			at := time.Now()
			a, err := postJSON(context.Background(), base+genPath, token, map[string]any{"prompt": "p", "callback_url": url})
			if err != nil || a.status != 200 {
				bad.Add(1)
				return
			}
			mu.Lock()
			ids = append(ids, a.str("task_id"))
			sent[a.str("task_id")] = at
			mu.Unlock()
		})
	}
	wg.Wait()
	if n := bad.Load(); n > 0 {
		t.Errorf("%d submits failed", n)
	}
	return ids, sent
}

// callbackAttempts sums the recorded attempts of the tasks' callbacks.
func callbackAttempts(t *testing.T, base string, ids []string) (attempts int, delivered int) {
	t.Helper()
	for len(ids) > 0 {
		k := min(len(ids), 100)
		_, raw := retrieveBatch(t, base, tokenOp, map[string]any{"ids": ids[:k], "limit": 100})
		var b struct {
			Items []struct {
				Callback struct {
					Status   string `json:"status"`
					Attempts int    `json:"attempts"`
				} `json:"callback"`
			} `json:"items"`
		}
		json.Unmarshal(raw, &b)
		for _, it := range b.Items {
			attempts += it.Callback.Attempts
			if it.Callback.Status == "delivered" {
				delivered++
			}
		}
		ids = ids[k:]
	}
	return attempts, delivered
}

// TestOutageLogs: a receiver is down (connection refused) for 10 s while
// tasks calling back to it are submitted at 100 a second (the long profile:
// 2 minutes at 400 a second, the scale), then comes back. Before the
// fix every failed attempt wrote an INFO line (issue #15: 497,759 lines,
// 99 MB, for 2 minutes at 400 submits/s). Now retries and give-ups are
// summed up per receiver every -callback-log-interval, and the receiver is
// paused rather than retried. Asserted: every callback delivered once the
// receiver is back, and at most 100 log lines from the outage's start to the
// last delivery (300 in the long profile).
func TestOutageLogs(t *testing.T) {
	rate, outage, maxLines := pick(100, 400), pick(10*time.Second, 2*time.Minute), pick(100, 300)
	addr := reservedAddr(t)
	d := tasksdtest.Start(t, []string{"TASKSD_CALLBACK_HOST_PAUSE=1s", "TASKSD_CALLBACK_HOST_MAX_PAUSE=4s"},
		"-db", filepath.Join(t.TempDir(), "tasks.db"), "-tokens", writeTokens(t), "-standin-delay", "0s",
		"-allow-private-callbacks", "-callback-schedule", "0s,1s,2s,4s,8s,16s,32s,60s")
	// Count from the end of the start-up lines (the last one names the
	// tokens file).
	waitFor(10*time.Second, 10*time.Millisecond, func() bool { return strings.Contains(d.Logs(), "msg=authentication") })
	from := len(d.Logs())
	began := time.Now()
	ids, _ := submitAt(t, d.URL(), tokenA, "http://"+addr+"/cb", rate, outage)
	time.Sleep(outage - time.Since(began))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen again on %s to end the outage: %v", addr, err)
	}
	rc := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{Listener: ln})
	back := time.Now()
	all := waitFor(pick(90*time.Second, 10*time.Minute), 100*time.Millisecond, func() bool { return len(rc.Delivered()) >= len(ids) })
	took := time.Since(back)
	logs := d.Logs()[from:]
	lines := strings.Count(logs, "\n")
	attempts, delivered := callbackAttempts(t, d.URL(), ids)
	_, requests, problems := rc.Snapshot()
	t.Logf("outage logs: %d tasks submitted at %d/s during a %v outage (connection refused); %d delivered %v after the receiver came back; "+
		"%d attempts recorded (%d reached the receiver); %d log lines (%d KiB) from the outage's start to the last delivery: %d \"will retry\", %d summaries, %d paused, %d resumed",
		len(ids), rate, outage, delivered, took.Round(time.Millisecond), attempts, requests, lines, len(logs)>>10,
		strings.Count(logs, "will retry"), strings.Count(logs, "deliveries to a receiver"), strings.Count(logs, "receiver paused"),
		strings.Count(logs, "receiver answers again"))
	if !all || len(problems) > 0 {
		t.Errorf("%d of %d callbacks delivered after the outage; problems %v", len(rc.Delivered()), len(ids), problems)
	}
	if lines > maxLines {
		t.Errorf("%d log lines for a %v outage at %d submits/s, want at most %d:\n%s", lines, outage, rate, maxLines, tail(logs, 1500))
	}
}

// TestDeadHostCPU: tenant B's callbacks go to a healthy receiver at 50 a
// second for 5 s (the long profile: 200 a second for 30 s), first while
// tenant A's go to the same receiver (control), then
// while A's go to an address where nothing listens. Before the fix every
// one of A's callbacks was attempted on its schedule (here every 200 ms,
// ten times), each attempt a connection, a store write and a log line
// (issue #15: 6–7k attempts/s saturating the CPU). Now the dead receiver is
// paused after a few failures and probed once per pause. Asserted: A's
// callbacks to the dead address made at most one attempt in ten callbacks,
// B's callbacks all arrived, and (generously) tasksd used at most 3 times
// the CPU of the control phase. Reported: the CPU of both phases, the
// attempts, and B's callback latency.
func TestDeadHostCPU(t *testing.T) {
	needProc(t)
	rate, phase := pick(50, 200), pick(5*time.Second, 30*time.Second)
	dead := "http://" + reservedAddr(t) + "/cb"
	var mu sync.Mutex
	arrivals := map[string]time.Time{}
	healthy := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{Status: func(r callbacktest.Delivery) int {
		mu.Lock()
		if _, ok := arrivals[r.Header.Get("webhook-id")]; !ok {
			arrivals[r.Header.Get("webhook-id")] = time.Now()
		}
		mu.Unlock()
		return http.StatusNoContent
	}})
	d := tasksdtest.Start(t, nil, "-db", filepath.Join(t.TempDir(), "tasks.db"), "-tokens", writeTokens(t), "-standin-delay", "0s",
		"-allow-private-callbacks", "-callback-schedule", "0s"+strings.Repeat(",200ms", 9))
	warmUp(t, d)

	run := func(aURL string) (cpu time.Duration, aIDs, bIDs []string, bSent map[string]time.Time) {
		c0 := cpuTime(t, d)
		var wg sync.WaitGroup
		wg.Go(func() { aIDs, _ = submitAt(t, d.URL(), tokenA, aURL, rate, phase) })
		wg.Go(func() { bIDs, bSent = submitAt(t, d.URL(), tokenB, healthy.URL+"/cb", rate, phase) })
		wg.Wait()
		time.Sleep(2 * time.Second) // the retries of the last ones
		return cpuTime(t, d) - c0, aIDs, bIDs, bSent
	}
	cpuControl, _, _, _ := run(healthy.URL + "/cb")
	cpuDead, aIDs, bIDs, bSent := run(dead)
	attempts, _ := callbackAttempts(t, d.URL(), aIDs)
	_, bDelivered := callbackAttempts(t, d.URL(), bIDs)
	var lat []time.Duration
	mu.Lock()
	for _, id := range bIDs {
		if at, ok := arrivals[id]; ok {
			lat = append(lat, at.Sub(bSent[id]))
		}
	}
	mu.Unlock()
	ratio := float64(cpuDead) / float64(max(cpuControl, 10*time.Millisecond))
	t.Logf("dead host: tenant A's %d callbacks to a dead address and tenant B's %d to a healthy receiver over %v at %d/s each: "+
		"%d attempts to the dead address (%.2f per callback); B's callbacks delivered: %d, %v after their submit (median), %v (p99); "+
		"tasksd CPU %v against %v with both healthy (%.2fx)",
		len(aIDs), len(bIDs), phase, rate, attempts, float64(attempts)/float64(max(len(aIDs), 1)), bDelivered,
		percentile(lat, 0.5).Round(time.Millisecond), percentile(lat, 0.99).Round(time.Millisecond),
		cpuDead.Round(10*time.Millisecond), cpuControl.Round(10*time.Millisecond), ratio)
	if attempts > len(aIDs)/10 {
		t.Errorf("%d attempts to the dead address for %d callbacks, want at most one in ten", attempts, len(aIDs))
	}
	if bDelivered != len(bIDs) {
		t.Errorf("%d of tenant B's %d callbacks delivered while tenant A's receiver was dead", bDelivered, len(bIDs))
	}
	if ratio > 3 {
		t.Errorf("tasksd used %.1fx the CPU of the control phase while a receiver was dead, want at most 3x", ratio)
	}
}
