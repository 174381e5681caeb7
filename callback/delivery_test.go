package callback_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/taskstore"
)

// submitAsync posts a callback-mode request answered {"data":[]} and returns
// the task id.
func submitCallback(t testing.TB, rec *callback.Recorder, url string) string {
	t.Helper()
	h := rec.Wrap("images_generations", jsonHandler(nil, 200, `{"data":[]}`))
	return acceptedID(t, post(h, "application/json", `{"prompt":"p","callback_url":"`+url+`"}`), "")
}

func TestReceiverDownThenUp(t *testing.T) {
	t.Run("claim ahead", func(t *testing.T) { receiverDownThenUp(t, callback.Options{}) })
	// A lease shorter than 3×AttemptTimeout: deliveries are claimed one
	// per free slot (claimEach) rather than ahead.
	t.Run("claim each", func(t *testing.T) {
		receiverDownThenUp(t, callback.Options{Lease: 300 * time.Millisecond, AttemptTimeout: 150 * time.Millisecond})
	})
}

func receiverDownThenUp(t *testing.T, o callback.Options) {
	store := newMemStore(t)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		switch n {
		case 1: // no answer at all: the connection drops
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
			}
		case 2:
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	var events atomic.Int32
	o.Hooks.DeliveryAttempted = func(_ context.Context, _ callback.DeliveryEvent) { events.Add(1) }
	rec := newRecorder(t, store, o)
	id := submitCallback(t, rec, rc.URL+"/hook")
	task := waitDelivery(t, store, id)

	if task.CallbackStatus() != taskstore.CallbackDelivered || task.Callback.Attempts != 3 ||
		task.Callback.LastStatus != 200 || task.Callback.LastError != "" || task.Callback.DeliveredAt.IsZero() {
		t.Errorf("callback %v %+v", task.CallbackStatus(), task.Callback)
	}
	ds := rc.deliveries()
	if len(ds) != 3 {
		t.Fatalf("receiver got %d attempts, want 3", len(ds))
	}
	for i, d := range ds {
		if d.header.Get("webhook-id") != id {
			t.Errorf("attempt %d webhook-id %q, want %q", i+1, d.header.Get("webhook-id"), id)
		}
		if string(d.body) != string(task.Response) {
			t.Errorf("attempt %d body %s", i+1, d.body)
		}
	}
	st := rec.Stats()
	if st.DeliveriesAttempted != 3 || st.Delivered != 1 || st.GivenUp != 0 || events.Load() != 3 {
		t.Errorf("stats %+v, hook events %d", st, events.Load())
	}
}

func TestGoneStops(t *testing.T) {
	store := newMemStore(t)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusGone) })
	rec := newRecorder(t, store, callback.Options{})
	id := submitCallback(t, rec, rc.URL)
	task := waitDelivery(t, store, id)
	if task.CallbackStatus() != taskstore.CallbackFailed || task.Callback.Attempts != 1 || task.Callback.LastStatus != 410 || task.Callback.LastError == "" {
		t.Errorf("callback %v %+v", task.CallbackStatus(), task.Callback)
	}
	// Given up is final: no attempt can follow.
	if n := rc.count(); n != 1 {
		t.Errorf("receiver got %d attempts", n)
	}
	if st := rec.Stats(); st.GivenUp != 1 || st.Delivered != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestAttemptsExhausted(t *testing.T) {
	store := newMemStore(t)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	rec := newRecorder(t, store, callback.Options{Schedule: callback.Schedule{0, 10 * time.Millisecond}})
	id := submitCallback(t, rec, rc.URL)
	task := waitDelivery(t, store, id)
	if task.CallbackStatus() != taskstore.CallbackFailed || task.Callback.Attempts != 2 || task.Callback.LastStatus != 500 {
		t.Errorf("callback %v %+v", task.CallbackStatus(), task.Callback)
	}
	if n := rc.count(); n != 2 {
		t.Errorf("receiver got %d attempts, want 2", n)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	store := newMemStore(t)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
	})
	// A frozen clock: the attempt is made at exactly t0, and the retry,
	// due at least a second later, is never reached.
	t0 := time.Now().Truncate(time.Millisecond)
	var events atomic.Int32
	rec := newRecorder(t, store, callback.Options{
		Schedule: callback.Schedule{0, 10 * time.Millisecond, 10 * time.Millisecond},
		Now:      func() time.Time { return t0 },
		Hooks:    callback.Hooks{DeliveryAttempted: func(_ context.Context, _ callback.DeliveryEvent) { events.Add(1) }},
	})
	id := submitCallback(t, rec, rc.URL)
	var task taskstore.Task
	eventually(t, "the first attempt is recorded", func() bool {
		task = getTask(t, store, id)
		return task.Callback.Attempts == 1
	})
	if task.CallbackStatus() != taskstore.CallbackPending || task.Callback.LastStatus != 429 {
		t.Errorf("callback %v %+v", task.CallbackStatus(), task.Callback)
	}
	if next := task.Callback.NextAttemptAt; next.Before(t0.Add(time.Second)) {
		t.Errorf("next attempt at %v, less than Retry-After (1s) after the attempt at %v", next, t0)
	}
	eventually(t, "the hook ran", func() bool { return events.Load() == 1 })
}

func TestRestartResumesDelivery(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	var down atomic.Bool
	down.Store(true)
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	// Recorder A finishes the tasks while the receiver is down, then stops.
	storeA := openSQLite(t, path)
	long := callback.Schedule{0, 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond,
		50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, time.Hour}
	// HostFailures: every task gets its failed attempt (the receiver's
	// pause is another test's subject).
	recA, err := startRecorder(t, storeA, callback.Options{Schedule: long, HostFailures: 1000})
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 5)
	for i := range ids {
		ids[i] = submitCallback(t, recA, rc.URL+"/cb")
	}
	for _, id := range ids {
		eventually(t, "a failed attempt of "+id, func() bool { return getTask(t, storeA, id).Callback.Attempts >= 1 })
	}
	if err := recA.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := storeA.Close(); err != nil {
		t.Fatal(err)
	}

	// Recorder B on the same file delivers them.
	down.Store(false)
	storeB := openSQLite(t, path)
	newRecorder(t, storeB, callback.Options{Schedule: long})
	for _, id := range ids {
		task := waitDelivery(t, storeB, id)
		if task.CallbackStatus() != taskstore.CallbackDelivered {
			t.Errorf("task %s: %v %+v", id, task.CallbackStatus(), task.Callback)
		}
	}
	byID := map[string]int{}
	for _, d := range rc.deliveries() {
		byID[d.header.Get("webhook-id")]++
	}
	for _, id := range ids {
		if byID[id] < 2 {
			t.Errorf("task %s: %d attempts reached the receiver, want a failed one and the delivery", id, byID[id])
		}
	}
}

// TestSSRFGuard: with the guard on, a callback to a refused address that
// reached the store anyway (stored by a recorder that allowed private
// networks, or before callback_url was checked at submit; a name resolving
// to one) is refused at connect time and given up after one attempt.
// TestPrivateCallbackURLAtSubmit covers the submit-time check.
func TestSSRFGuard(t *testing.T) {
	store := newMemStore(t)
	rc := newReceiver(t, nil)
	_, port, _ := net.SplitHostPort(rc.Listener.Addr().String())
	urls := []string{
		rc.URL + "/cb",                            // 127.0.0.1
		"http://localhost:" + port + "/cb",        // a name resolving to loopback
		"http://[::1]:" + port + "/cb",            // IPv6 loopback
		"http://[::ffff:127.0.0.1]:" + port,       // IPv4-mapped loopback
		"http://10.0.0.1/cb",                      // private (refused before dialing)
		"http://192.168.1.1/cb",                   // private
		"http://169.254.169.254/latest/meta-data", // cloud metadata
		"http://0.0.0.0:" + port + "/cb",          // unspecified
	}
	ctx := context.Background()
	now := time.Now()
	ids := make([]string, len(urls))
	for i, u := range urls {
		ids[i] = fmt.Sprintf("00000000-0000-7000-8000-%012d", i)
		if err := store.Create(ctx, taskstore.Task{ID: ids[i], Type: "images_generations",
			Request: []byte(`{"prompt":"p"}`), Callback: taskstore.Callback{URL: u}, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
		if err := store.Finish(ctx, ids[i], []byte(`{"success":true}`), now); err != nil {
			t.Fatal(err)
		}
	}
	newRecorder(t, store, callback.Options{}, guardOn)
	for i, id := range ids {
		task := waitDelivery(t, store, id)
		if task.CallbackStatus() != taskstore.CallbackFailed || task.Callback.Attempts != 1 || task.Callback.LastError == "" {
			t.Errorf("%s: %v %+v", urls[i], task.CallbackStatus(), task.Callback)
		}
	}
	if n := rc.count(); n != 0 {
		t.Errorf("the loopback receiver was reached %d times", n)
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	store := newMemStore(t)
	target := newReceiver(t, nil)
	redirect := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/private", http.StatusFound)
	})
	rec := newRecorder(t, store, callback.Options{Schedule: callback.Schedule{0}})
	id := submitCallback(t, rec, redirect.URL)
	task := waitDelivery(t, store, id)
	if task.CallbackStatus() != taskstore.CallbackFailed || task.Callback.LastStatus != http.StatusFound {
		t.Errorf("callback %v %+v", task.CallbackStatus(), task.Callback)
	}
	if target.count() != 0 {
		t.Errorf("the redirect was followed")
	}
}

func TestAttemptTimeout(t *testing.T) {
	store := newMemStore(t)
	release := make(chan struct{})
	rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	})
	t.Cleanup(func() { close(release) })
	rec := newRecorder(t, store, callback.Options{AttemptTimeout: 100 * time.Millisecond})
	id := submitCallback(t, rec, rc.URL)
	task := waitDelivery(t, store, id)
	if task.CallbackStatus() != taskstore.CallbackDelivered || task.Callback.Attempts != 2 {
		t.Errorf("callback %v %+v", task.CallbackStatus(), task.Callback)
	}
}

// claimCounter counts ClaimDeliveries calls.
type claimCounter struct {
	taskstore.Store
	calls atomic.Int32
}

func (c *claimCounter) ClaimDeliveries(ctx context.Context, recorder string, now time.Time, lease time.Duration, limit int) ([]taskstore.Task, error) {
	c.calls.Add(1)
	return c.Store.ClaimDeliveries(ctx, recorder, now, lease, limit)
}

// A backlog is claimed in batches of DeliveryWorkers, not one claim (one
// store write) per delivery as slots free up.
func TestBacklogClaimedInBatches(t *testing.T) {
	const n, workers = 48, 4
	inner := newMemStore(t)
	rc := newReceiver(t, func(int, http.ResponseWriter, *http.Request) {
		time.Sleep(2 * time.Millisecond) // keep every slot busy for a while
	})
	storeDue(t, inner, n, rc.URL+"/cb")
	store := &claimCounter{Store: inner}
	newRecorder(t, store, callback.Options{DeliveryWorkers: workers, DeliveriesPerHost: workers, DeliveriesPerPrincipal: workers})
	eventually(t, "every callback delivered", func() bool { return rc.count() >= n })
	// n/workers batches, plus the claims that found nothing left.
	if calls := store.calls.Load(); calls > n/workers+4 {
		t.Fatalf("%d claims for %d deliveries with %d workers; want about %d", calls, n, workers, n/workers)
	}
}

// recordGate holds every RecordAttempt until open is closed.
type recordGate struct {
	taskstore.Store
	waiting atomic.Int32
	open    chan struct{}
}

func (g *recordGate) RecordAttempt(ctx context.Context, id string, a taskstore.Attempt) error {
	g.waiting.Add(1)
	<-g.open
	return g.Store.RecordAttempt(ctx, id, a)
}

// An attempt frees its slot once its POST is over, so that the next POST
// need not wait for the store to record the last one; at most
// 4×DeliveryWorkers attempts wait to be recorded, and then finished attempts
// keep their slots: with 2 workers and a store that records nothing, 8
// attempts wait in RecordAttempt and 2 more hold the slots, 10 POSTs in all.
func TestAttemptsRecordedBehindTheSlots(t *testing.T) {
	const n, workers = 30, 2
	inner := newMemStore(t)
	rc := newReceiver(t, nil)
	storeDue(t, inner, n, rc.URL+"/cb")
	store := &recordGate{Store: inner, open: make(chan struct{})}
	// One receiver may use every slot here (the per-receiver cap is
	// another test's subject).
	newRecorder(t, store, callback.Options{DeliveryWorkers: workers, DeliveriesPerHost: workers, DeliveriesPerPrincipal: workers})
	var opened sync.Once
	open := func() { opened.Do(func() { close(store.open) }) }
	t.Cleanup(open) // before the recorder's Close: a failed test must not leave attempts stuck
	eventually(t, "10 POSTs while nothing is recorded", func() bool { return rc.count() == 10 && store.waiting.Load() == 8 })
	time.Sleep(50 * time.Millisecond)
	if got := rc.count(); got != 10 {
		t.Fatalf("%d POSTs while the store recorded nothing; want 10", got)
	}
	open()
	eventually(t, "every callback delivered", func() bool { return rc.count() >= n })
	for i := range n {
		id := fmt.Sprintf("t%02d", i)
		if st := waitDelivery(t, inner, id).CallbackStatus(); st != taskstore.CallbackDelivered {
			t.Errorf("%s: %v", id, st)
		}
	}
}

// storeDue stores n finished tasks, t00, t01…, whose callbacks to url are
// due.
func storeDue(t *testing.T, s taskstore.Store, n int, url string) {
	t.Helper()
	now := time.Now()
	for i := range n {
		if err := s.Create(context.Background(), taskstore.Task{
			ID: fmt.Sprintf("t%02d", i), Type: "images_generations", Request: json.RawMessage(`{}`),
			Response: json.RawMessage(`{"success":true}`), CreatedAt: now, FinishedAt: now,
			Callback: taskstore.Callback{URL: url, NextAttemptAt: now.Add(-time.Second)},
		}); err != nil {
			t.Fatal(err)
		}
	}
}
