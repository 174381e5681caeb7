package reliability

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/handler"
	"github.com/tasksapi/tasks/internal/tasksdtest"
	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/sqlitestore"
	"github.com/tasksapi/tasks/taskstore"
)

// TestStoreFaults drives callback mode and the Tasks API in-process over a
// FaultStore that fails a share of the calls of every method the recorder
// and the handler use, before or after passing them on. While the store
// fails: every answer is 200, 500 api_error or 429 too_many_requests; every
// task_id answered is stored (checked on the wrapped store at once); nothing
// panics. Once the faults stop, the recorder finishes the bookkeeping: every
// stored task — including those whose Create was stored but reported as
// failed — is finished and its callback delivered and recorded.
func TestStoreFaults(t *testing.T) {
	for _, b := range []struct {
		name string
		open func(t *testing.T) taskstore.Store
	}{
		{"memstore", func(t *testing.T) taskstore.Store { return memstore.New() }},
		{"sqlitestore", func(t *testing.T) taskstore.Store {
			s, err := sqlitestore.Open(filepath.Join(t.TempDir(), "tasks.db"))
			if err != nil {
				t.Fatal(err)
			}
			return s
		}},
	} {
		t.Run(b.name, func(t *testing.T) {
			inner := b.open(t)
			defer inner.Close()
			testStoreFaults(t, inner)
		})
	}
}

// recoverPanics answers 500 to a panicking handler and counts it, so that a
// panic fails the test instead of being logged by net/http.
func recoverPanics(n *atomic.Int64, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				n.Add(1)
				w.WriteHeader(599)
			}
		}()
		h.ServeHTTP(w, r)
	})
}

func testStoreFaults(t *testing.T, inner taskstore.Store) {
	requests := pick(600, 6000)
	const clients = 16
	fs := NewFaultStore(inner)
	rcv := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{})
	logs := &tasksdtest.Buffer{}
	schedule, _ := callback.ParseSchedule("0s,50ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms")
	rec, err := callback.New(fs, callback.Options{
		Workers: 8, Queue: 64, Schedule: schedule, AllowPrivateNetworks: true,
		AttemptTimeout: 500 * time.Millisecond, PollInterval: 50 * time.Millisecond, Lease: 1500 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			rec.Close(context.Background())
		}
		if t.Failed() {
			t.Logf("recorder logs (last 4 KiB):\n%s", tail(logs.String(), 4<<10))
		}
	}()
	var upstreamRuns atomic.Int64
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamRuns.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"created":1721626477,"data":[{"url":"https://example.com/x.png"}]}`))
	})
	var panics atomic.Int64
	mux := http.NewServeMux()
	mux.Handle("/images", recoverPanics(&panics, handler.Authenticate(handler.InsecureAnyoneIsOperator, rec.Wrap("images_generations", upstream))))
	mux.Handle("/tasks", recoverPanics(&panics, handler.New(fs, handler.InsecureAnyoneIsOperator,
		handler.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for i, op := range []Op{OpCreate, OpGet, OpFind, OpStart, OpFinish, OpClaimDeliveries, OpRecordAttempt, OpRenewLeases, OpAbandoned, OpFinishMany} {
		fs.Fail(op, Randomly(uint64(i+1), 0.2, 0.05))
	}

	ctx := context.Background()
	var (
		mu       sync.Mutex
		acked    []string
		failures []string
		answers  = map[string]int{}
		next     atomic.Int64
	)
	failf := func(format string, args ...any) {
		mu.Lock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
		mu.Unlock()
	}
	// checkFailure accepts only the failures the contract allows while the
	// store fails: 500 api_error, and 429 too_many_requests for submissions.
	checkFailure := func(op string, a answer) {
		switch {
		case a.status == 500:
			if p := checkErrorBody(a.raw, "api_error"); p != "" {
				failf("%s: 500 body %s: %s", op, a.raw, p)
			}
			if bytes.Contains(a.raw, []byte("injected")) {
				failf("%s: the store error leaks into the answer: %s", op, a.raw)
			}
		case a.status == 429 && op == "submit":
			if p := checkErrorBody(a.raw, "too_many_requests"); p != "" {
				failf("%s: 429 body %s: %s", op, a.raw, p)
			}
		default:
			failf("%s: %d %.200s", op, a.status, a.raw)
		}
	}
	submit := func(n int64) (answer, error) {
		return postJSON(ctx, srv.URL+"/images", "x", map[string]any{
			"prompt": fmt.Sprintf("fault %d", n), "callback_url": rcv.URL + "/cb", "trace_id": fmt.Sprintf("f-%d", n%20),
		})
	}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 3))
			for {
				n := next.Add(1)
				if n > int64(requests) {
					return
				}
				var op string
				var a answer
				var err error
				switch p := rng.IntN(100); {
				case p < 60:
					op = "submit"
					if a, err = submit(n); err != nil || a.status != 200 {
						break
					}
					id := a.str("task_id")
					// The acknowledgement promise: a task_id is answered
					// only once the task is stored.
					if _, gerr := inner.Get(ctx, id); gerr != nil {
						failf("task_id %s was answered but the store has no such task: %v", id, gerr)
					}
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
				case p < 85:
					op = "retrieve"
					mu.Lock()
					id := "none"
					if len(acked) > 0 {
						id = acked[rng.IntN(len(acked))]
					}
					mu.Unlock()
					a, err = postJSON(ctx, srv.URL+"/tasks", "x", map[string]any{"action": "retrieve", "id": id})
					if err == nil && a.status == 200 && id != "none" && a.str("id") != id {
						failf("retrieve %s answered %.200s", id, a.raw)
					}
				default:
					op = "retrieve_batch"
					a, err = postJSON(ctx, srv.URL+"/tasks", "x", map[string]any{"action": "retrieve_batch", "limit": 10})
				}
				if err != nil {
					failf("%s: %v", op, err)
					continue
				}
				mu.Lock()
				answers[fmt.Sprintf("%s %d", op, a.status)]++
				mu.Unlock()
				if a.status != 200 {
					checkFailure(op, a)
				}
			}
		}()
	}
	wg.Wait()
	injected := fs.Injected()

	// The faults stop: new work is accepted, and everything stored gets
	// finished and called back.
	fs.Heal()
	for i := range 10 {
		var a answer
		ok := waitFor(10*time.Second, 50*time.Millisecond, func() bool {
			a, err = submit(int64(requests + i))
			return err == nil && a.status != 429
		})
		if !ok || a.status != 200 {
			t.Fatalf("submission after the faults stopped: %d %s %v", a.status, a.raw, err)
		}
		acked = append(acked, a.str("task_id"))
	}
	var stored []taskstore.Task
	settled := func() bool {
		var err error
		stored, _, err = inner.Find(ctx, taskstore.Filter{Limit: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range stored {
			if task.CallbackStatus() != taskstore.CallbackDelivered {
				return false
			}
		}
		return true
	}
	if !waitFor(30*time.Second, 100*time.Millisecond, settled) {
		t.Errorf("the recorder did not finish the bookkeeping after the faults stopped")
	}

	for _, f := range failures {
		t.Error(f)
	}
	if n := panics.Load(); n > 0 {
		t.Errorf("%d handler panics", n)
	}
	byID := map[string]taskstore.Task{}
	outcomes := map[string]int{}
	hits, _, problems := rcv.Snapshot()
	for _, p := range problems {
		t.Errorf("receiver: %s", p)
	}
	for _, task := range stored {
		byID[task.ID] = task
		o := outcome(task.Response)
		outcomes[o]++
		switch {
		case o != "success" && o != "failure:interrupted":
			t.Errorf("task %s: finished with %s: %s", task.ID, o, task.Response)
		case task.CallbackStatus() != taskstore.CallbackDelivered:
			t.Errorf("task %s: callback %s after %d attempts (last error %q)", task.ID, task.CallbackStatus(), task.Callback.Attempts, task.Callback.LastError)
		case hits[task.ID] == 0:
			t.Errorf("task %s: recorded as delivered, but the receiver never saw it", task.ID)
		}
	}
	for _, id := range acked {
		if _, ok := byID[id]; !ok {
			t.Errorf("acknowledged task %s is not stored", id)
		}
	}
	ctxClose, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	closed = true
	if err := rec.Close(ctxClose); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close: %v", err)
	}
	dups := 0
	for _, n := range hits {
		dups += max(n-1, 0)
	}
	t.Logf("store faults: %d requests from %d clients; injected failures %v; answers %v", requests, clients, injected, answers)
	t.Logf("store faults: %d tasks acknowledged, %d stored (the rest were stored but their Create reported failure), outcomes %v; "+
		"%d callbacks delivered, %d duplicate deliveries; upstream ran %d times",
		len(acked), len(stored), outcomes, len(hits), dups, upstreamRuns.Load())
}
