package reliability

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasksapi/tasks/internal/tasksdtest"
)

// crashFlags are the tasksd flags of the crash test: short leases and
// retries so that recovery fits in a test.
const (
	crashLease    = 3 * time.Second
	crashSchedule = "0s,100ms,200ms,400ms,800ms,1s,1s,1s,1s,1s"
)

// TestCrashRecovery: tasksd on SQLite under a stream of callback-mode
// submissions is killed with SIGKILL at random moments and restarted on the
// same database file. Every task_id a client received is retrievable and
// finished (success, or failure "interrupted"); the receiver saw every such
// task's callback at least once, each carrying its task id as webhook-id,
// duplicates with the same webhook-id and body; the database passes
// PRAGMA integrity_check.
func TestCrashRecovery(t *testing.T) {
	kills := pick(5, 25)
	submitters := pick(4, 8)
	lifeMin, lifeMax := pick(300*time.Millisecond, 500*time.Millisecond), pick(1200*time.Millisecond, 3*time.Second)

	rcv := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{})
	db := filepath.Join(t.TempDir(), "tasks.db")
	args := []string{
		"-db", db, "-tokens", writeTokens(t), "-allow-private-callbacks",
		"-lease", crashLease.String(), "-callback-timeout", "2s", "-standin-delay", "40ms",
		"-callback-schedule", crashSchedule, "-grace", "5s",
	}
	d := tasksdtest.Start(t, nil, args...)

	var (
		current  atomic.Pointer[string] // the running daemon's URL; nil while down
		mu       sync.Mutex
		received []string // task_ids clients received, in order
		traceOf  = map[string]string{}
		bad      []string // answers that break the contract
		lost     atomic.Int64
		refused  atomic.Int64
	)
	u := d.URL()
	current.Store(&u)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for g := range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for i := 0; ctx.Err() == nil; i++ {
				u := current.Load()
				if u == nil {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				trace := fmt.Sprintf("crash-%d-%d", g, i)
				a, err := postJSON(ctx, *u+"/openai/images/generations", tokenA, map[string]any{
					"prompt": "crash " + trace, "callback_url": rcv.URL + "/cb", "trace_id": trace,
				})
				switch {
				case err != nil:
					lost.Add(1) // killed mid-request: no task_id received
				case a.status == 200:
					id := a.str("task_id")
					mu.Lock()
					if !uuidRE.MatchString(id) || a.str("trace_id") != trace || len(a.obj) != 2 {
						bad = append(bad, fmt.Sprintf("submit answer %s", a.raw))
					} else {
						received = append(received, id)
						traceOf[id] = trace
					}
					mu.Unlock()
				case a.status == 429:
					refused.Add(1)
				default:
					mu.Lock()
					bad = append(bad, fmt.Sprintf("submit: %d %s", a.status, a.raw))
					mu.Unlock()
				}
				time.Sleep(time.Duration(rng.IntN(8)) * time.Millisecond)
			}
		}()
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	perLife := make([]int, 0, kills+1)
	before := 0
	for k := range kills {
		time.Sleep(lifeMin + time.Duration(rng.Int64N(int64(lifeMax-lifeMin))))
		current.Store(nil)
		d.Kill()
		mu.Lock()
		perLife = append(perLife, len(received)-before)
		before = len(received)
		mu.Unlock()
		t.Logf("kill %d/%d: %d task_ids received so far", k+1, kills, before)
		d = tasksdtest.Start(t, nil, args...)
		u := d.URL()
		current.Store(&u)
	}
	time.Sleep(lifeMin) // the last life takes submissions too
	cancel()
	wg.Wait()
	mu.Lock()
	perLife = append(perLife, len(received)-before)
	ids := slices.Clone(received)
	mu.Unlock()
	if len(bad) > 0 {
		t.Fatalf("%d bad submit answers, e.g. %s", len(bad), bad[0])
	}
	if slices.Contains(perLife[:len(perLife)-1], 0) {
		t.Logf("note: some lives received no task_id before the kill: %v", perLife)
	}
	if len(ids) == 0 {
		t.Fatal("no task was submitted")
	}

	// Recovery: every received task finishes and is called back.
	var tasks map[string]wireTask
	var missingCB []string
	ok := waitFor(crashLease+pick(20*time.Second, 60*time.Second), 250*time.Millisecond, func() bool {
		tasks = fetchByIDs(t, d.URL(), ids)
		hits, _, _ := rcv.Snapshot()
		missingCB = missingCB[:0]
		for _, id := range ids {
			if hits[id] == 0 {
				missingCB = append(missingCB, id)
			}
		}
		if len(missingCB) > 0 || len(tasks) < len(ids) {
			return false
		}
		for _, id := range ids {
			if tasks[id].FinishedAt == "" {
				return false
			}
		}
		return true
	})
	hits, requests, problems := rcv.Snapshot()
	for _, p := range problems {
		t.Errorf("receiver: %s", p)
	}
	outcomes := map[string]int{}
	for _, id := range ids {
		task, found := tasks[id]
		switch {
		case !found:
			t.Errorf("task %s: a client received its task_id but it is not retrievable", id)
			continue
		case task.FinishedAt == "":
			t.Errorf("task %s is not finished", id)
			continue
		case task.TraceID != traceOf[id] || task.ApplicationID != "app-a":
			t.Errorf("task %s: stored trace_id %q, application_id %q", id, task.TraceID, task.ApplicationID)
		}
		o := outcome(task.Response)
		outcomes[o]++
		if o != "success" && o != "failure:interrupted" {
			t.Errorf("task %s finished with %s: %s", id, o, task.Response)
		}
		if hits[id] == 0 {
			t.Errorf("task %s: no callback received", id)
		} else if cb := rcv.Body(id); !bytes.Equal(cb, task.Response) {
			t.Errorf("task %s: callback body %s differs from the stored response %s", id, cb, task.Response)
		}
	}
	if !ok && !t.Failed() {
		t.Errorf("recovery did not complete: %d callbacks missing", len(missingCB))
	}

	d.Stop()
	if res := integrityCheck(t, db); res != "ok" {
		t.Errorf("PRAGMA integrity_check: %s", res)
	}

	dups, extra := 0, 0
	mu.Lock()
	for id, n := range hits {
		if n > 1 {
			dups += n - 1
		}
		if _, ok := traceOf[id]; !ok {
			extra++ // stored, but the answer was lost to a kill
		}
	}
	mu.Unlock()
	t.Logf("crash: %d task_ids received over %d lives (%v), %d kills survived; %d requests lost to kills, %d refused (429)",
		len(ids), kills+1, perLife, kills, lost.Load(), refused.Load())
	t.Logf("crash: outcomes %v; callbacks: %d distinct webhook-ids (%d of them for tasks whose answer was lost), %d requests, %d duplicates",
		outcomes, len(hits), extra, requests, dups)
}
