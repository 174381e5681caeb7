package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback/callbacktest"
	"github.com/tasksapi/tasks/internal/pgtest"
	"github.com/tasksapi/tasks/internal/tasksdtest"
)

// TestPostgresFaults runs two tasksd replicas on a PostgreSQL server of the
// test's own (pgtest.Cluster, skipped without the server programs) and
// breaks the database under them:
//
//   - Restart: `pg_ctl restart -m fast` while clients submit and retrieve
//     and a few hundred tasks are in flight;
//   - Cut: a loopback proxy cuts the connection in the middle of Finish
//     and of RecordAttempt, before the statement reaches the server and
//     after the server ran it;
//   - WaitAtStart: tasksd started before its database waits for it, then
//     serves; with a wait of 0 it exits at once with the connection error.
//
// In Restart and Cut every acknowledged task must be retrievable and
// finished with its real result (the stand-in's success: no
// "interrupted"), its callback delivered exactly once (the receiver
// answers 2xx to every first try), no answer may be a 500 (503 with
// Retry-After is allowed while the database is out), and no replica may
// have dropped a write of its own as somebody else's (the warnings "task
// not run", "task response not recorded", "delivery attempt not recorded",
// logged when a repeat after a lost answer finds the write already there
// and takes it for a conflict: the task's events and counters are lost).
//
// The wait settings are passed as TASKSD_* variables rather than flags, so
// that the same test runs against an older build (TASKSDTEST_BINARY) to
// measure the "before" of RELIABILITY.md.
func TestPostgresFaults(t *testing.T) {
	tasksdtest.Binary(t) // skip under -short before making a cluster
	c := pgtest.NewCluster(t)
	tokens := writeTokens(t)
	t.Run("Restart", func(t *testing.T) { testPostgresRestart(t, c, tokens) })
	t.Run("Cut", func(t *testing.T) { testPostgresCut(t, c, tokens) })
	t.Run("WaitAtStart", func(t *testing.T) { testPostgresWaitAtStart(t, c, tokens) })
}

// freshDatabase creates a database on the cluster and returns its URL.
func freshDatabase(t *testing.T, c *pgtest.Cluster, name string) string {
	t.Helper()
	pgtest.Exec(t, c.URL("postgres"), "DROP DATABASE IF EXISTS "+name, "CREATE DATABASE "+name)
	return c.URL(name)
}

// pgArgs are the flags of the replicas: a lease that outlasts a restart
// (about a second) several times over, quick delivery retries.
func pgArgs(dbURL, tokens string, lease time.Duration, standin time.Duration) []string {
	return []string{"-db", dbURL, "-tokens", tokens, "-allow-private-callbacks",
		"-lease", lease.String(), "-callback-timeout", "2s", "-standin-delay", standin.String(),
		"-callback-schedule", "0s,200ms,400ms,800ms,1s,1s,1s,1s,1s,1s", "-workers", "16", "-grace", "5s"}
}

// pgLoad is what clients saw while a fault test ran.
type pgLoad struct {
	mu        sync.Mutex
	acked     []string    // task ids answered 200, in order
	submits   map[int]int // submit answers by status
	retrieves map[int]int // retrieve answers by status
	bad       []string    // answers that break the contract (5xx other than 503, transport errors)
	onAck     func(i int, id string)
	noRetry   map[string]int // 503s without Retry-After, by route
}

func newPGLoad(onAck func(i int, id string)) *pgLoad {
	return &pgLoad{submits: map[int]int{}, retrieves: map[int]int{}, noRetry: map[string]int{}, onAck: onAck}
}

func (l *pgLoad) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// run has clients submit callback-mode tasks to the replicas in turn, and
// retrieve tasks already acknowledged, until stop is set. (A request is
// never abandoned half way: a task stored for a client that gave up would
// be neither acknowledged nor lost.)
func (l *pgLoad) run(stop *atomic.Bool, clients int, urls []string, callbackURL string) {
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 20))
			for i := 0; !stop.Load(); i++ {
				u := urls[(g+i)%len(urls)]
				a, err := postJSON(ctx, u+"/openai/images/generations", tokenA, map[string]any{
					"prompt": fmt.Sprintf("pg %d-%d", g, i), "callback_url": callbackURL,
				})
				l.record(l.submits, "submit", a, err)
				if err == nil && a.status == http.StatusOK {
					l.mu.Lock()
					l.acked = append(l.acked, a.str("task_id"))
					n := len(l.acked)
					l.mu.Unlock()
					if l.onAck != nil {
						l.onAck(n-1, a.str("task_id"))
					}
				}
				if i%3 == 2 {
					l.mu.Lock()
					id := ""
					if len(l.acked) > 0 {
						id = l.acked[rng.IntN(len(l.acked))]
					}
					l.mu.Unlock()
					a, err := postJSON(ctx, u+"/openai/tasks", tokenA, map[string]any{"id": id})
					l.record(l.retrieves, "retrieve", a, err)
				}
			}
		})
	}
	wg.Wait()
}

func (l *pgLoad) record(m map[int]int, what string, a answer, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err != nil:
		l.bad = append(l.bad, fmt.Sprintf("%s: %v", what, err))
		return
	case a.status == http.StatusServiceUnavailable && a.header.Get("Retry-After") == "":
		l.noRetry[what]++
	}
	m[a.status]++
	if a.status >= 500 && a.status != http.StatusServiceUnavailable {
		l.bad = append(l.bad, fmt.Sprintf("%s: %d %.200s", what, a.status, a.raw))
	}
}

// pgOutcome is what became of the acknowledged tasks.
type pgOutcome struct {
	acked, success, interrupted, otherFailure, unfinished, missing int
	delivered, duplicates, undelivered                             int
	unackedDeliveries                                              int
}

// settle waits until every acknowledged task is finished and called back
// (or wait passes), then reads the tasks and the receiver.
func settle(t *testing.T, url string, rcv *tasksdtest.Receiver, ids []string, wait time.Duration) pgOutcome {
	t.Helper()
	done := func() bool {
		got := rcv.Delivered()
		for _, id := range ids {
			if got[id] == 0 {
				return false
			}
		}
		return true
	}
	waitFor(wait, 200*time.Millisecond, done)
	time.Sleep(500 * time.Millisecond) // room for a late duplicate to arrive
	tasks := fetchByIDs(t, url, ids)
	hits, _, _ := rcv.Snapshot()
	o := pgOutcome{acked: len(ids)}
	mine := make(map[string]bool, len(ids))
	for _, id := range ids {
		mine[id] = true
		task, ok := tasks[id]
		switch out := outcome(task.Response); {
		case !ok:
			o.missing++
		case out == "success":
			o.success++
		case out == "failure:interrupted":
			o.interrupted++
		case out == "unfinished":
			o.unfinished++
		default:
			o.otherFailure++
		}
		switch n := hits[id]; {
		case n == 0:
			o.undelivered++
		default:
			o.delivered++
			o.duplicates += n - 1
		}
	}
	for id, n := range hits {
		if !mine[id] {
			o.unackedDeliveries += n
		}
	}
	return o
}

// check logs the figures of a fault test and fails it on any broken
// promise.
func (l *pgLoad) check(t *testing.T, o pgOutcome, rcv *tasksdtest.Receiver) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("submits by status %v, retrieves by status %v, 503 without Retry-After %v", l.submits, l.retrieves, l.noRetry)
	t.Logf("acknowledged %d: success %d, interrupted %d, other failures %d, unfinished %d, not retrievable %d",
		o.acked, o.success, o.interrupted, o.otherFailure, o.unfinished, o.missing)
	t.Logf("callbacks: delivered %d, duplicate deliveries %d, never delivered %d; deliveries of tasks never acknowledged %d",
		o.delivered, o.duplicates, o.undelivered, o.unackedDeliveries)
	if len(l.bad) > 0 {
		t.Errorf("%d answers broke the contract, e.g. %s", len(l.bad), l.bad[0])
	}
	if len(l.noRetry) > 0 {
		t.Errorf("503 answers without Retry-After: %v", l.noRetry)
	}
	if o.success != o.acked {
		t.Errorf("%d of %d acknowledged tasks did not finish with their real result (interrupted %d, other %d, unfinished %d, missing %d)",
			o.acked-o.success, o.acked, o.interrupted, o.otherFailure, o.unfinished, o.missing)
	}
	if o.duplicates > 0 || o.undelivered > 0 {
		t.Errorf("callbacks: %d duplicate deliveries, %d never delivered; want each delivered exactly once", o.duplicates, o.undelivered)
	}
	if p := rcv.Problems(); len(p) > 0 {
		t.Errorf("callbacks break the contract: %v", p)
	}
}

func testPostgresRestart(t *testing.T, c *pgtest.Cluster, tokens string) {
	url := freshDatabase(t, c, "restart")
	total := pick(450, 2000)
	outage := pick(6*time.Second, 20*time.Second)
	rcv := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{})
	// The lease outlasts the long outage by half again: leases renewed
	// just before it are still valid when the database comes back.
	args := pgArgs(url, tokens, outage*5/2, 300*time.Millisecond)
	d1 := tasksdtest.Start(t, nil, args...)
	d2 := tasksdtest.Start(t, nil, args...)

	load := newPGLoad(nil)
	var stop atomic.Bool
	defer stop.Store(true)
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		load.run(&stop, 8, []string{d1.URL(), d2.URL()}, rcv.URL+"/cb")
	}()
	reach := func(n int) {
		if !waitFor(60*time.Second, 5*time.Millisecond, func() bool { return load.ackedCount() >= n }) {
			t.Fatalf("only %d tasks acknowledged in 60 s", load.ackedCount())
		}
	}
	// A restart, as an operator makes it: about 0.3 s on this small
	// cluster, well within pgstore's retry grace (5 s).
	reach(total / 3)
	inFlight := load.ackedCount() - len(rcv.Delivered())
	took := c.Restart()
	t.Logf("pg_ctl restart -m fast took %v, with %d tasks acknowledged and about %d in flight (not yet called back)",
		took.Round(time.Millisecond), load.ackedCount(), inFlight)
	// A longer outage, past pgstore's grace: submits may get 503, and the
	// recorders hold results in memory until the database is back.
	reach(2 * total / 3)
	inFlight = load.ackedCount() - len(rcv.Delivered())
	c.Stop()
	time.Sleep(outage)
	c.Start()
	t.Logf("stopped (-m fast) for %v, then started, with %d tasks acknowledged and about %d in flight",
		outage, load.ackedCount(), inFlight)
	reach(total)
	stop.Store(true)
	<-loaded

	load.mu.Lock()
	ids := slices.Clone(load.acked)
	load.mu.Unlock()
	o := settle(t, d1.URL(), rcv, ids, 3*outage*5/2)
	load.check(t, o, rcv)
	for i, d := range []*tasksdtest.Daemon{d1, d2} {
		logs := d.Logs()
		t.Logf("replica %d logged: the database unavailable %d times, recorder writes waiting for the store %d times",
			i+1, strings.Count(logs, "database unavailable"), strings.Count(logs, "store unavailable; retrying"))
	}
	checkNotDropped(t, d1, d2)
}

// checkNotDropped fails the test if a replica logged that it dropped a
// write of its own (see TestPostgresFaults).
func checkNotDropped(t *testing.T, daemons ...*tasksdtest.Daemon) {
	t.Helper()
	for i, d := range daemons {
		logs := d.Logs()
		notRun, response, attempt := strings.Count(logs, "task not run"), strings.Count(logs, "task response not recorded"),
			strings.Count(logs, "delivery attempt not recorded")
		t.Logf("replica %d: %d tasks not run, %d responses and %d delivery attempts taken for another's", i+1, notRun, response, attempt)
		if notRun+response+attempt > 0 {
			t.Errorf("replica %d took its own writes for another's: %d starts, %d responses, %d delivery attempts", i+1, notRun, response, attempt)
		}
	}
}

// cutKind is where a Cut test task has its connection cut.
type cutKind int

const (
	cutNone cutKind = iota
	cutFinishBefore
	cutFinishAfter
	cutRecordBefore
	cutRecordAfter
)

var cutNames = map[cutKind]string{cutFinishBefore: "Finish, before the server", cutFinishAfter: "Finish, after the server",
	cutRecordBefore: "RecordAttempt, before the server", cutRecordAfter: "RecordAttempt, after the server"}

func testPostgresCut(t *testing.T, c *pgtest.Cluster, tokens string) {
	url := freshDatabase(t, c, "cut")
	p := pgtest.NewProxy(t, c.Addr())
	total := pick(160, 800)
	var (
		mu    sync.Mutex
		kind  = map[string]cutKind{}
		cuts  = map[cutKind][]*pgtest.Cut{}
		armed = map[string]bool{} // RecordAttempt cuts armed at the callback
	)
	arm := func(k cutKind, match string) {
		cut := &pgtest.Cut{Match: []byte(match), AfterSend: k == cutFinishAfter || k == cutRecordAfter, Done: make(chan struct{})}
		cuts[k] = append(cuts[k], cut)
		p.Cut(cut)
	}
	rcv := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{Status: func(d callbacktest.Delivery) int {
		mu.Lock()
		defer mu.Unlock()
		if k := kind[d.ID]; (k == cutRecordBefore || k == cutRecordAfter) && !armed[d.ID] {
			armed[d.ID] = true
			arm(k, d.ID) // the replica's next statement naming the task records this attempt
		}
		return http.StatusNoContent
	}})
	// A lease that no renewal tick falls into while tasks wait to start (the
	// renewal names the task too), and a stand-in slow enough for the
	// Finish cut to be armed before the task finishes.
	args := pgArgs(p.URL(url), tokens, 9*time.Second, 300*time.Millisecond)
	d1 := tasksdtest.Start(t, nil, args...)
	d2 := tasksdtest.Start(t, nil, args...)

	load := newPGLoad(func(i int, id string) {
		k := cutKind(i%6 + 1)
		if k > cutRecordAfter {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		kind[id] = k
		if k == cutFinishBefore || k == cutFinishAfter {
			arm(k, `"task_id":"`+id+`"`) // only Finish sends the response, which names the task
		}
	})
	var stop atomic.Bool
	defer stop.Store(true)
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		load.run(&stop, 4, []string{d1.URL(), d2.URL()}, rcv.URL+"/cb")
	}()
	waitFor(60*time.Second, 5*time.Millisecond, func() bool { return load.ackedCount() >= total })
	stop.Store(true)
	<-loaded
	load.mu.Lock()
	ids := slices.Clone(load.acked)
	load.mu.Unlock()
	o := settle(t, d1.URL(), rcv, ids, 40*time.Second)

	mu.Lock()
	for _, k := range []cutKind{cutFinishBefore, cutFinishAfter, cutRecordBefore, cutRecordAfter} {
		made := 0
		for _, cut := range cuts[k] {
			select {
			case <-cut.Done:
				made++
			default:
			}
		}
		t.Logf("cuts in %s: %d armed, %d made", cutNames[k], len(cuts[k]), made)
		if made == 0 {
			t.Errorf("no connection was cut in %s", cutNames[k])
		}
	}
	mu.Unlock()
	load.check(t, o, rcv)
	checkNotDropped(t, d1, d2)
}

func testPostgresWaitAtStart(t *testing.T, c *pgtest.Cluster, tokens string) {
	url := freshDatabase(t, c, "waitstart")
	args := pgArgs(url, tokens, 6*time.Second, 10*time.Millisecond)
	c.Stop()
	t.Cleanup(func() { c.Boot() })

	// With a wait of 0, tasksd exits at once with the connection error.
	cmd := exec.Command(tasksdtest.Binary(t), append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(cmd.Environ(), "TASKSD_DB_WAIT=0s")
	began := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(began)
	exit := -1
	if ee, ok := err.(*exec.ExitError); ok {
		exit = ee.ExitCode()
	}
	t.Logf("-db-wait 0 with the database down: exit status %d after %v: %s", exit, took.Round(time.Millisecond), lastLine(string(out)))
	if exit != 1 || took > 10*time.Second || !strings.Contains(string(out), "tasksd: pgstore: connect: failed to connect to") ||
		!strings.Contains(string(out), "connection refused") {
		t.Errorf("-db-wait 0: exit %d after %v, output %q; want exit 1 at once with the connection error", exit, took, tail(string(out), 600))
	}

	// With a wait, it waits for the database, then serves.
	started := make(chan error, 1)
	time.AfterFunc(2*time.Second, func() { started <- c.Boot() })
	began = time.Now()
	d := tasksdtest.Start(t, []string{"TASKSD_DB_WAIT=30s"}, args...)
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	waits := strings.Count(d.Logs(), "waiting for the database")
	t.Logf("tasksd started %v before its database: listening after %v, %d waits logged",
		2*time.Second, time.Since(began).Round(time.Millisecond), waits)
	if waits == 0 {
		t.Errorf("no wait logged:\n%s", tail(d.Logs(), 2000))
	}
	a := mustPost(t, d.URL()+"/openai/images/generations", tokenA, map[string]any{"prompt": "late", "async": true})
	if a.status != http.StatusOK {
		t.Fatalf("submit after the wait: %d %s", a.status, a.raw)
	}
	id := a.str("task_id")
	var finished atomic.Bool
	waitFor(20*time.Second, 50*time.Millisecond, func() bool {
		r := mustPost(t, d.URL()+"/openai/tasks", tokenA, map[string]any{"id": id})
		finished.Store(outcome(r.obj["response"]) == "success")
		return finished.Load()
	})
	if !finished.Load() {
		t.Fatalf("task %s did not finish", id)
	}
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
