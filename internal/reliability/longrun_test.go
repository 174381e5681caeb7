package reliability

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tasksapi/tasks/internal/tasksdtest"
	"github.com/tasksapi/tasks/sqlitestore"
	"github.com/tasksapi/tasks/taskstore"
)

// The long-run profile (issue #15): what a deployment meets after running
// for a long time. Each test prints its figures with -v as a benchmark
// would (a report, not a timed assertion) and fails only on broken promises:
// a lost or unfinished task, a 5xx, a callback not delivered, a damaged
// database, a log that grows with the number of tasks recovered.
//
//	go test -count=1 -v -run 'TestLongRun' ./internal/reliability/                              # short (CI)
//	TASKS_RELIABILITY=long go test -count=1 -timeout 60m -v -run 'TestLongRun' ./internal/reliability/

// lrClients is the number of concurrent clients of the long-run loads.
const lrClients = 16

// lrTask is task i of a long-run dataset, shaped as callback mode stores an
// image task (a request of about 200 bytes, a response of about 600),
// created at the given time and owned by tenant A. finished: with its
// response and its callback delivered; otherwise unfinished, as a process
// killed while running it leaves it (started, its lease held until lease),
// with a callback to cb.
func lrTask(i int, created time.Time, finished bool, cb string, lease time.Time) taskstore.Task {
	id := lrID(i)
	req := fmt.Sprintf(`{"model":"gpt-image-1","prompt":"long run %d: a watercolor of a lighthouse at dusk, soft light, fine detail","size":"1024x1024","quality":"high","n":1}`, i)
	t := taskstore.Task{
		ID: id, TraceID: fmt.Sprintf("lr-%d", i), Type: "images_generations",
		Request: json.RawMessage(req), CreatedAt: created,
		ApplicationID: "app-a", UserID: "user-a", CredentialID: "cred-a",
	}
	if finished {
		t.StartedAt, t.FinishedAt = created.Add(4*time.Millisecond), created.Add(29*time.Second)
		t.Response = json.RawMessage(fmt.Sprintf(`{"success":true,"task_id":%q,"created":%d,"data":[{"url":"https://cdn.example.com/images/%s.png","revised_prompt":"a watercolor of a lighthouse at dusk, soft light, fine detail, balanced composition and gentle contrast"}],"usage":{"input_tokens":%d,"output_tokens":4160,"total_tokens":%d},"size":"1024x1024","quality":"high","output_format":"png"}`,
			id, created.Unix()+29, id, 40+i%50, 4200+i%50))
		t.Callback = taskstore.Callback{URL: "https://client.example.com/hooks", Attempts: 1, LastStatus: 200,
			DeliveredAt: created.Add(30 * time.Second)}
		return t
	}
	t.StartedAt, t.LeaseUntil = created.Add(4*time.Millisecond), lease
	t.Callback.URL = cb
	return t
}

// lrID is a UUID-shaped id, distinct for each i.
func lrID(i int) string {
	return fmt.Sprintf("1a5e0000-0000-4000-8000-%012x", i)
}

// buildDB stores n tasks made by gen in a new SQLite file at path, in
// chunks of 10,000 (sqlitestore.Import), and closes it.
func buildDB(t *testing.T, path string, n int, gen func(i int) taskstore.Task) {
	t.Helper()
	start := time.Now()
	s, err := sqlitestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]taskstore.Task, 0, 10_000)
	for lo := 0; lo < n; lo += cap(chunk) {
		chunk = chunk[:0]
		for i := lo; i < min(n, lo+cap(chunk)); i++ {
			chunk = append(chunk, gen(i))
		}
		if err := s.Import(context.Background(), chunk); err != nil {
			s.Close()
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("dataset: %d tasks in %s (%.0f MB), built in %v", n, filepath.Base(path), float64(fileSize(path))/1e6,
		time.Since(start).Round(100*time.Millisecond))
}

// copyFile copies the database file src (closed, its WAL checkpointed) to dst.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// fileSize is the size of the file at path, 0 when it does not exist.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// loadStats is what a long-run load saw.
type loadStats struct {
	mu        sync.Mutex
	elapsed   time.Duration
	submitOK  []time.Duration // latencies of the submits answered 200
	retrieve  []time.Duration // latencies of retrieve and retrieve_batch
	statuses  map[string]int  // "submit 200", "submit 429", "retrieve 200", …
	created   []string        // task_ids received
	failures  []string        // transport errors, 5xx, malformed answers
	queueFull int             // submits answered 429
}

func (s *loadStats) fail(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.failures) < 20 {
		s.failures = append(s.failures, fmt.Sprintf(format, args...))
	}
}

// pct returns the p-th percentile of ds (sorted in place).
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[min(len(ds)-1, int(float64(len(ds))*p))]
}

func (s *loadStats) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	secs := s.elapsed.Seconds()
	return fmt.Sprintf("%.1f s: %d submits accepted (%.0f/s), %d refused 429 (%.0f/s); submit p50 %v p99 %v; lookups %d, p99 %v; answers %v",
		secs, len(s.submitOK), float64(len(s.submitOK))/secs, s.queueFull, float64(s.queueFull)/secs,
		pct(s.submitOK, 0.50).Round(10*time.Microsecond), pct(s.submitOK, 0.99).Round(10*time.Microsecond),
		len(s.retrieve), pct(s.retrieve, 0.99).Round(10*time.Microsecond), s.statuses)
}

// add merges what another load saw into s.
func (s *loadStats) add(o *loadStats) {
	s.elapsed += o.elapsed
	s.submitOK = append(s.submitOK, o.submitOK...)
	s.retrieve = append(s.retrieve, o.retrieve...)
	for k, v := range o.statuses {
		s.statuses[k] += v
	}
	s.created = append(s.created, o.created...)
	s.failures = append(s.failures, o.failures...)
	s.queueFull += o.queueFull
}

// runLoad runs lrClients clients against the daemon at url until stop
// returns true (checked every 100 ms): 40% callback-mode submits (half
// with a callback to cb, half async), 40% retrieve of a known id (lookup
// returns one; nil: one the load created) and 20% retrieve_batch of the
// tenant's newest page.
func runLoad(url, cb string, lookup func(rng *rand.Rand) string, stop func(elapsed time.Duration) bool) *loadStats {
	st := &loadStats{statuses: map[string]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		wg     sync.WaitGroup
		seq    atomic.Int64
		finish = make(chan struct{})
	)
	start := time.Now()
	for c := range lrClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 15))
			for {
				select {
				case <-finish:
					return
				default:
				}
				var (
					op   string
					body map[string]any
					to   = url + "/openai/tasks"
				)
				switch p := rng.IntN(100); {
				case p < 40:
					op, to = "submit", url+"/openai/images/generations"
					n := seq.Add(1)
					body = map[string]any{"prompt": fmt.Sprintf("long-run load %d", n), "trace_id": fmt.Sprintf("lrl-%d", n)}
					if n%2 == 0 {
						body["callback_url"] = cb
					} else {
						body["async"] = true
					}
				case p < 80:
					var id string
					if lookup != nil {
						id = lookup(rng)
					} else {
						st.mu.Lock()
						if len(st.created) > 0 {
							id = st.created[rng.IntN(len(st.created))]
						}
						st.mu.Unlock()
					}
					op, body = "retrieve", map[string]any{"action": "retrieve", "id": cmp.Or(id, lrID(0))}
				default:
					op, body = "retrieve_batch", map[string]any{"action": "retrieve_batch", "limit": 12}
				}
				t0 := time.Now()
				a, err := postJSON(ctx, to, tokenA, body)
				d := time.Since(t0)
				if err != nil {
					if ctx.Err() == nil {
						st.fail("%s: %v", op, err)
					}
					continue
				}
				st.mu.Lock()
				st.statuses[fmt.Sprintf("%s %d", op, a.status)]++
				switch {
				case a.status >= 500:
					if len(st.failures) < 20 {
						st.failures = append(st.failures, fmt.Sprintf("%s: %d %.200s", op, a.status, a.raw))
					}
				case op == "submit" && a.status == 200:
					st.submitOK = append(st.submitOK, d)
					st.created = append(st.created, a.str("task_id"))
				case op == "submit" && a.status == 429:
					st.queueFull++
				case a.status == 200:
					st.retrieve = append(st.retrieve, d)
				}
				st.mu.Unlock()
			}
		}()
	}
	for !stop(time.Since(start)) {
		time.Sleep(100 * time.Millisecond)
	}
	close(finish)
	wg.Wait()
	st.elapsed = time.Since(start)
	return st
}

// prunedRE matches the line a pruning pass that deleted something logs at
// its end.
var prunedRE = regexp.MustCompile(`msg="callback: pruned old tasks".* deleted=(\d+)`)

// TestLongRunPrune: retention expires 90% of a large SQLite file while 16
// clients submit, retrieve and list. A second tasksd serves a copy of the
// file with retention off (-retention 0), and the load alternates between
// the two in short rounds (A B B A …), the daemon not under load stopped
// with SIGSTOP, so that both meet the same machine, whatever else runs on
// it; the rounds go on until the pass ends. The two are compared: submits
// refused 429, submit p50 and p99, submits accepted (a report, not an
// assertion). Asserted: no 5xx or transport error, the old tasks gone and
// the others (the kept tenth and every task the load created) still there,
// integrity_check ok. Then the file's size once it settles.
func TestLongRunPrune(t *testing.T) {
	n := pick(10_000, 1_000_000)
	old := n * 9 / 10
	round, minRounds, maxActive := pick(time.Second, 5*time.Second), pick(2, 6), pick(time.Minute, 10*time.Minute)

	dir := t.TempDir()
	db, controlDB := filepath.Join(dir, "prune.db"), filepath.Join(dir, "control.db")
	now := time.Now()
	buildDB(t, db, n, func(i int) taskstore.Task {
		created := now.Add(-48*time.Hour + time.Duration(i)*time.Millisecond) // older than 24h
		if i >= old {
			created = now.Add(-time.Hour + time.Duration(i-old)*time.Millisecond)
		}
		return lrTask(i, created, true, "", time.Time{})
	})
	copyFile(t, db, controlDB)
	sizeBefore := fileSize(db)
	rcv := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{})
	lookup := func(rng *rand.Rand) string { return lrID(old + rng.IntN(n-old)) } // kept tasks
	args := func(path, retention string) []string {
		return []string{"-db", path, "-tokens", writeTokens(t), "-allow-private-callbacks", "-standin-delay", "0s",
			"-callback-schedule", "0s,100ms,200ms", "-callback-timeout", "2s", "-retention", retention}
	}
	signal := func(d *tasksdtest.Daemon, sig syscall.Signal) {
		if err := syscall.Kill(d.PID(), sig); err != nil {
			t.Fatalf("signal %v: %v", sig, err)
		}
	}

	without := tasksdtest.Start(t, nil, args(controlDB, "0")...)
	signal(without, syscall.SIGSTOP)
	with := tasksdtest.Start(t, nil, args(db, "24h")...)
	var (
		pruning, control = &loadStats{statuses: map[string]int{}}, &loadStats{statuses: map[string]int{}}
		pruneTook        time.Duration // the time with served until the round in which the pass ended
		rounds           [2]int
	)
	for i := 0; ; i++ {
		on, off, into := with, without, pruning
		if i%4 == 1 || i%4 == 2 {
			on, off, into = without, with, control
		}
		signal(off, syscall.SIGSTOP)
		signal(on, syscall.SIGCONT)
		st := runLoad(on.URL(), rcv.URL+"/cb", lookup, func(el time.Duration) bool { return el >= round })
		into.add(st)
		if on == with {
			rounds[0]++
			if pruneTook == 0 && prunedRE.MatchString(with.Logs()) {
				pruneTook = pruning.elapsed
			}
		} else {
			rounds[1]++
		}
		if i%4 == 3 && min(rounds[0], rounds[1]) >= minRounds && (pruneTook != 0 || pruning.elapsed >= maxActive) {
			break
		}
	}
	signal(without, syscall.SIGCONT)
	without.Stop()
	if pruneTook == 0 {
		t.Errorf("the pass did not end within %v of load", pruning.elapsed)
		waitFor(maxActive, 250*time.Millisecond, func() bool { return prunedRE.MatchString(with.Logs()) })
	}
	m := prunedRE.FindStringSubmatch(with.Logs())
	// Kept: the last tenth and everything the load created.
	b, _ := retrieveBatch(t, with.URL(), tokenOp, map[string]any{"limit": 1})
	if want := n - old + len(pruning.created); *b.Count != want {
		t.Errorf("after pruning: %d tasks, want %d (%d kept + %d created by the load); log: %v",
			*b.Count, want, n-old, len(pruning.created), m)
	}
	sample := append([]string{lrID(old), lrID(n - 1)}, pruning.created[:min(100, len(pruning.created))]...)
	got := fetchByIDs(t, with.URL(), append([]string{lrID(0), lrID(old - 1)}, sample...))
	for _, id := range []string{lrID(0), lrID(old - 1)} {
		if _, ok := got[id]; ok {
			t.Errorf("task %s, older than the retention, was not pruned", id)
		}
	}
	for _, id := range sample {
		if _, ok := got[id]; !ok {
			t.Errorf("task %s, newer than the retention, is gone", id)
		}
	}
	// The file once pruning and any vacuum have settled (unchanged for 3 s).
	settle := pick(20*time.Second, 5*time.Minute)
	last, since, t0 := fileSize(db), time.Now(), time.Now()
	for time.Since(since) < 3*time.Second && time.Since(t0) < settle {
		time.Sleep(250 * time.Millisecond)
		if sz := fileSize(db); sz != last {
			last, since = sz, time.Now()
		}
	}
	walAfter := fileSize(db + "-wal")
	with.Stop()
	sizeAfter := fileSize(db)
	if res := integrityCheck(t, db); res != "ok" {
		t.Errorf("PRAGMA integrity_check: %s", res)
	}
	for _, st := range []*loadStats{pruning, control} {
		for _, f := range st.failures {
			t.Error(f)
		}
	}
	t.Logf("prune: %d of %d tasks older than -retention 24h; the pass ended within %v of load (%d rounds of %v each way) (%v)",
		old, n, pruneTook.Round(100*time.Millisecond), rounds[0], round, m)
	t.Logf("prune: with pruning:    %v", pruning)
	t.Logf("prune: without pruning: %v", control)
	p99w, p99o := pct(pruning.submitOK, 0.99), pct(control.submitOK, 0.99)
	t.Logf("prune: 429 with / without pruning: %d / %d; submit p99 ratio %.2fx; accepted submits ratio %.2fx",
		pruning.queueFull, control.queueFull, float64(p99w)/float64(max(p99o, 1)),
		float64(len(pruning.submitOK))/float64(max(len(control.submitOK), 1)))
	t.Logf("prune: file %.1f MB before, %.1f MB after pruning (%.0f%%; settled %v after the rounds); WAL %.1f MB",
		float64(sizeBefore)/1e6, float64(sizeAfter)/1e6, 100*float64(sizeAfter)/float64(sizeBefore),
		since.Sub(t0).Round(100*time.Millisecond), float64(walAfter)/1e6)
}

// TestLongRunRestart: a SQLite file holds many unfinished tasks (as a
// process killed under load leaves them: started, leases held, callbacks
// to a receiver) and tasksd starts on it. Measured: the time from the
// process start to the first answer of a retrieve and of a submit, the
// time until every task is finished, the log lines the recovery wrote.
// Asserted: every old task ends "interrupted" and is called back; the tasks
// submitted while it recovers are not interrupted (they succeed); the
// recovery logs at most a few lines, not one per task.
func TestLongRunRestart(t *testing.T) {
	n := pick(5_000, 122_558)
	rcv := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{})
	db := filepath.Join(t.TempDir(), "restart.db")
	now := time.Now()
	buildDB(t, db, n, func(i int) taskstore.Task {
		return lrTask(i, now.Add(-time.Minute+time.Duration(i)*time.Microsecond), false, rcv.URL+"/cb", now.Add(time.Minute))
	})
	// A fixed port, so that the clients can knock before tasksd says it
	// listens.
	addr := freeAddr(t)
	url := "http://" + addr

	var (
		firstLookup, firstSubmit atomic.Int64 // ns after start; 0: not yet
		submitted                []string
		mu                       sync.Mutex
	)
	start := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // retrieve an old task until answered
		defer wg.Done()
		for ctx.Err() == nil {
			c, cc := context.WithTimeout(ctx, 100*time.Millisecond)
			a, err := postJSON(c, url+"/openai/tasks", tokenA, map[string]any{"action": "retrieve", "id": lrID(n / 2)})
			cc()
			if err == nil && a.status == 200 && a.str("id") == lrID(n/2) {
				firstLookup.Store(int64(time.Since(start)))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	go func() { // submit until 50 are accepted, the first as soon as possible
		defer wg.Done()
		accepted := 0
		for i := 0; ctx.Err() == nil && accepted < 50; i++ {
			timeout := 100 * time.Millisecond
			if accepted > 0 {
				timeout = 10 * time.Second
			}
			c, cc := context.WithTimeout(ctx, timeout)
			a, err := postJSON(c, url+"/openai/images/generations", tokenA, map[string]any{
				"prompt": fmt.Sprintf("during recovery %d", i), "callback_url": rcv.URL + "/cb"})
			cc()
			if err == nil && a.status == 200 {
				if accepted == 0 {
					firstSubmit.Store(int64(time.Since(start)))
				}
				accepted++
				mu.Lock()
				submitted = append(submitted, a.str("task_id"))
				mu.Unlock()
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	d := tasksdtest.Start(t, nil, "-addr", addr, "-db", db, "-tokens", writeTokens(t), "-allow-private-callbacks",
		"-standin-delay", "10ms", "-callback-schedule", "0s,100ms,200ms,400ms,800ms,1s,1s,1s,1s,1s", "-callback-timeout", "2s")
	listening := time.Since(start)

	// Every old task finishes as interrupted; the count of unfinished
	// tasks falls to zero.
	deadline := pick(2*time.Minute, 10*time.Minute)
	unfinished := func() int {
		total := 0
		for _, st := range []string{"pending", "running"} {
			b, _ := retrieveBatch(t, d.URL(), tokenOp, map[string]any{"limit": 1, "status": st})
			total += *b.Count
		}
		return total
	}
	if !waitFor(deadline, 100*time.Millisecond, func() bool { return unfinished() == 0 }) {
		t.Fatalf("%d tasks still unfinished %v after start", unfinished(), deadline)
	}
	recovered := time.Since(start)
	// The clients go on until each has had an answer.
	waitFor(deadline, 10*time.Millisecond, func() bool { return firstLookup.Load() != 0 && firstSubmit.Load() != 0 })
	cancel()
	wg.Wait()
	b, _ := retrieveBatch(t, d.URL(), tokenOp, map[string]any{"limit": 1, "status": "failed"})
	if *b.Count < n {
		t.Errorf("%d tasks failed, want at least the %d interrupted", *b.Count, n)
	}
	for _, id := range []string{lrID(0), lrID(n / 2), lrID(n - 1)} {
		got := fetchByIDs(t, d.URL(), []string{id})
		if o := outcome(got[id].Response); o != "failure:interrupted" {
			t.Errorf("old task %s: %s, want failure:interrupted", id, o)
		}
	}
	mu.Lock()
	ids := slices.Clone(submitted)
	mu.Unlock()
	got := fetchByIDs(t, d.URL(), ids)
	waitFor(deadline, 250*time.Millisecond, func() bool {
		got = fetchByIDs(t, d.URL(), ids)
		for _, id := range ids {
			if got[id].FinishedAt == "" {
				return false
			}
		}
		return true
	})
	for _, id := range ids {
		if o := outcome(got[id].Response); o != "success" {
			t.Errorf("task %s, submitted while the old tasks were recovered, finished %s", id, o)
		}
	}
	// Every callback arrives (the old tasks' and the new ones').
	if !waitFor(deadline, 250*time.Millisecond, func() bool { return len(rcv.Delivered()) >= n+len(ids) }) {
		t.Errorf("callbacks delivered: %d, want %d", len(rcv.Delivered()), n+len(ids))
	}
	delivered := time.Since(start)
	logs := d.Logs()
	d.Stop()

	lines, recLines := 0, 0
	for _, l := range strings.Split(logs, "\n") {
		if l == "" {
			continue
		}
		lines++
		if strings.Contains(l, "interrupted") || strings.Contains(l, "abandoned") || strings.Contains(l, "previous process") {
			recLines++
		}
	}
	if recLines > 5 {
		t.Errorf("the recovery of %d tasks wrote %d log lines, want one summary (at most 5)", n, recLines)
	}
	fl, fs := time.Duration(firstLookup.Load()), time.Duration(firstSubmit.Load())
	t.Logf("restart: %d unfinished tasks; tasksd logged listening after %v; first retrieve answered after %v, first submit after %v",
		n, listening.Round(time.Millisecond), fl.Round(time.Millisecond), fs.Round(time.Millisecond))
	t.Logf("restart: every task finished after %v, every callback delivered after %v (%d submitted meanwhile, all succeeded)",
		recovered.Round(10*time.Millisecond), delivered.Round(10*time.Millisecond), len(ids))
	t.Logf("restart: log: %d lines (%.1f KB), %d of them about the recovery", lines, float64(len(logs))/1e3, recLines)
}

// TestLongRunWAL: the size of the SQLite WAL file, sampled every 50 ms
// under the 16-client load on a fresh database. Reported: its median,
// 90th percentile and largest size. Asserted: no failed request.
func TestLongRunWAL(t *testing.T) {
	dur := pick(3*time.Second, 2*time.Minute)
	rcv := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{})
	db := filepath.Join(t.TempDir(), "wal.db")
	d := tasksdtest.Start(t, nil, "-db", db, "-tokens", writeTokens(t), "-allow-private-callbacks", "-standin-delay", "0s",
		"-callback-schedule", "0s,100ms,200ms", "-callback-timeout", "2s")
	var (
		mu      sync.Mutex
		samples []int64
	)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tk.C:
				mu.Lock()
				samples = append(samples, fileSize(db+"-wal"))
				mu.Unlock()
			}
		}
	}()
	st := runLoad(d.URL(), rcv.URL+"/cb", nil, func(el time.Duration) bool { return el >= dur })
	close(stop)
	<-sampled
	d.Stop()
	for _, f := range st.failures {
		t.Error(f)
	}
	if res := integrityCheck(t, db); res != "ok" {
		t.Errorf("PRAGMA integrity_check: %s", res)
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	mb := func(v int64) string { return fmt.Sprintf("%.1f MB", float64(v)/1e6) }
	q := func(p float64) int64 { return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))] }
	shrinks := 0
	for i := 1; i < len(samples); i++ {
		if samples[i] < samples[i-1] {
			shrinks++
		}
	}
	t.Logf("wal: %v", st)
	t.Logf("wal: %d samples over %v: median %s, p90 %s, max %s; the file shrank %d times; database %s",
		len(samples), dur, mb(q(0.5)), mb(q(0.9)), mb(sorted[len(sorted)-1]), shrinks, mb(fileSize(db)))
}

// freeAddr returns a loopback address with a port free at the time of the
// call.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// submitMany sends n async submits with a request of about 200 bytes
// (lrTask's) from lrClients clients and returns how many were accepted.
func submitMany(t *testing.T, url string, n int) int {
	t.Helper()
	var (
		next, ok atomic.Int64
		wg       sync.WaitGroup
	)
	for range lrClients {
		wg.Go(func() {
			for i := int(next.Add(1)); i <= n; i = int(next.Add(1)) {
				body := map[string]any{"model": "gpt-image-1", "prompt": fmt.Sprintf("long run %d: a watercolor of a lighthouse at dusk, soft light, fine detail", i),
					"size": "1024x1024", "quality": "high", "n": 1, "async": true}
				a, err := postJSON(context.Background(), url+"/openai/images/generations", tokenA, body)
				if err == nil && a.status == 200 {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return int(ok.Load())
}

// rss reads the daemon's resident memory after a pause (so that the last
// answers' garbage is no different from the first measure's).
func rss(t *testing.T, d *tasksdtest.Daemon) int64 {
	t.Helper()
	time.Sleep(500 * time.Millisecond)
	m, err := d.Memory()
	if err != nil {
		t.Skipf("no memory figures here: %v", err)
	}
	return m.RSS
}

// TestLongRunMemory measures what a task costs in resident memory: while
// it waits in the queue (tasksd on SQLite with one worker held by a task
// that takes an hour), and for as long as it is kept by -db :memory:, with
// Go's defaults and with GOMEMLIMIT. Reported, not asserted, apart from
// every submit being accepted.
func TestLongRunMemory(t *testing.T) {
	n := pick(2_000, 100_000)
	const warm = 200
	args := []string{"-tokens", writeTokens(t), "-retention", "0", "-grace", "1s"}

	// Queued.
	db := filepath.Join(t.TempDir(), "queue.db")
	d := tasksdtest.Start(t, nil, append(args, "-db", db, "-workers", "1", "-queue", fmt.Sprint(n+warm+10),
		"-tenant-queue", fmt.Sprint(n+warm+10), "-standin-delay", "1h", "-task-timeout", "2h")...)
	if got := submitMany(t, d.URL(), warm); got != warm {
		t.Fatalf("%d of %d warm-up submits accepted", got, warm)
	}
	before := rss(t, d)
	if got := submitMany(t, d.URL(), n); got != n {
		t.Fatalf("%d of %d submits accepted", got, n)
	}
	after := rss(t, d)
	d.Kill()
	perQueued := float64(after-before) / float64(n)

	t.Logf("memory: a queued task costs %.1f KB of RSS (%d queued: %.1f MB more)", perQueued/1e3, n, float64(n)*perQueued/1e6)

	// Kept by memstore: with Go's defaults, then with GOMEMLIMIT at a
	// kilobyte per task above the idle process.
	var idle int64
	for _, limit := range []bool{false, true} {
		var env []string
		if limit {
			env = []string{fmt.Sprintf("GOMEMLIMIT=%d", idle+int64(n)*1000)}
		}
		d := tasksdtest.Start(t, env, append(args, "-db", ":memory:", "-standin-delay", "0s")...)
		if got := submitMany(t, d.URL(), warm); got != warm {
			t.Fatalf("%d of %d warm-up submits accepted", got, warm)
		}
		done := func(want int) bool {
			b, _ := retrieveBatch(t, d.URL(), tokenOp, map[string]any{"limit": 1, "status": "succeeded"})
			return *b.Count >= want
		}
		waitFor(time.Minute, 50*time.Millisecond, func() bool { return done(warm) })
		before := rss(t, d)
		idle = before
		if got := submitMany(t, d.URL(), n); got != n {
			t.Fatalf("%d of %d submits accepted", got, n)
		}
		if !waitFor(5*time.Minute, 100*time.Millisecond, func() bool { return done(warm + n) }) {
			t.Fatalf("the %d tasks did not finish", n)
		}
		after := rss(t, d)
		b, _ := retrieveBatch(t, d.URL(), tokenOp, map[string]any{"limit": 1})
		one := b.Items[0]
		payload := len(one.ID) + len(one.TraceID) + len(one.Type) + len(one.Request) + len(one.Response) +
			len(one.ApplicationID) + len(one.UserID) + len("cred-a")
		m, _ := d.Memory()
		d.Stop()
		perKept := float64(after-before) / float64(n)
		t.Logf("memory: a task kept by -db :memory: %v costs %.1f KB of RSS, %.1fx its %d bytes of payload (%d tasks: %.1f MB more; peak RSS %.1f MB)",
			env, perKept/1e3, perKept/float64(payload), payload, n, float64(n)*perKept/1e6, float64(m.Peak)/1e6)
	}
}
