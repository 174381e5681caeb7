package callback_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// gated is an upstream that blocks until its gate is closed (ignoring its
// context), counting the runs that started.
type gated struct {
	gate    chan struct{}
	started atomic.Int32
	once    sync.Once
}

func newGated(t testing.TB) *gated {
	g := &gated{gate: make(chan struct{})}
	t.Cleanup(g.open)
	return g
}

func (g *gated) open() { g.once.Do(func() { close(g.gate) }) }

func (g *gated) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.started.Add(1)
	<-g.gate
	io.WriteString(w, `{"done":true}`)
}

func TestQueueFull(t *testing.T) {
	store := newMemStore(t)
	rc := newReceiver(t, nil)
	g := newGated(t)
	rec := newRecorder(t, store, callback.Options{Workers: 1, Queue: 1})
	h := rec.Wrap("images_generations", g)
	body := `{"prompt":"p","callback_url":"` + rc.URL + `"}`

	running := acceptedID(t, post(h, "application/json", body), "")
	eventually(t, "the first task runs", func() bool { return g.started.Load() == 1 })
	queued := acceptedID(t, post(h, "application/json", body), "")
	errorBody(t, post(h, "application/json", body), http.StatusTooManyRequests, "too_many_requests", "")
	if _, err := rec.Submit(context.Background(), callback.Submission{Type: "t", Request: json.RawMessage(`{}`)},
		func(context.Context) (json.RawMessage, error) { return nil, nil }); !errors.Is(err, callback.ErrQueueFull) {
		t.Errorf("Submit with a full queue: %v, want ErrQueueFull", err)
	}
	if n := countTasks(t, store); n != 2 {
		t.Errorf("%d tasks stored, want 2 (the refused one must not be)", n)
	}
	if st := rec.Stats(); st.Queued != 1 || st.Running != 1 || st.TasksCreated != 2 {
		t.Errorf("stats %+v", st)
	}

	g.open()
	for _, id := range []string{running, queued} {
		if task := waitDelivery(t, store, id); task.CallbackStatus() != taskstore.CallbackDelivered {
			t.Errorf("task %s: %v", id, task.CallbackStatus())
		}
	}
	// Room again.
	acceptedID(t, post(h, "application/json", body), "")
}

func TestCloseInterruptsWhenContextEnds(t *testing.T) {
	store := newMemStore(t)
	rc := newReceiver(t, nil)
	g := newGated(t)
	rec, err := startRecorder(t, store, callback.Options{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	h := rec.Wrap("images_generations", g)
	body := `{"prompt":"p","trace_id":"tr","callback_url":"` + rc.URL + `"}`
	running := acceptedID(t, post(h, "application/json", body), "tr")
	eventually(t, "the first task runs", func() bool { return g.started.Load() == 1 })
	queued := acceptedID(t, post(h, "application/json", body), "tr")

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := rec.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want the context's error", err)
	}
	for _, id := range []string{running, queued} {
		task := getTask(t, store, id)
		want := `{"success":false,"task_id":"` + id + `","trace_id":"tr","error":{"code":"interrupted","message":"the task was interrupted by a server shutdown"}}`
		if string(task.Response) != want {
			t.Errorf("response\n got %s\nwant %s", task.Response, want)
		}
		if st := task.CallbackStatus(); st != taskstore.CallbackPending && st != taskstore.CallbackDelivered {
			t.Errorf("callback state %v: it must stay due for the next start", st)
		}
	}
	if g.started.Load() != 1 {
		t.Errorf("the queued task ran after Close gave up")
	}

	// Closed: callback mode is refused, plain requests still pass through.
	errorBody(t, post(h, "application/json", body), http.StatusTooManyRequests, "too_many_requests", "")
	if w := post(rec.Wrap("images_generations", jsonHandler(nil, 200, `sync`)), "application/json", `{"prompt":"p"}`); w.Body.String() != "sync" {
		t.Errorf("passthrough after Close answered %d %q", w.Code, w.Body)
	}
	if _, err := rec.Submit(context.Background(), callback.Submission{Type: "t", Request: json.RawMessage(`{}`)},
		func(context.Context) (json.RawMessage, error) { return nil, nil }); !errors.Is(err, callback.ErrClosed) {
		t.Errorf("Submit after Close: %v, want ErrClosed", err)
	}
	if err := rec.Close(context.Background()); err != nil {
		t.Errorf("second Close = %v", err)
	}

	// The next start delivers what is still due.
	newRecorder(t, store, callback.Options{})
	for _, id := range []string{running, queued} {
		if task := waitDelivery(t, store, id); task.CallbackStatus() != taskstore.CallbackDelivered {
			t.Errorf("task %s after restart: %v", id, task.CallbackStatus())
		}
	}
}

func TestCloseWaitsForRunningTasks(t *testing.T) {
	store := newMemStore(t)
	g := newGated(t)
	rec, err := startRecorder(t, store, callback.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := rec.Wrap("images_generations", g)
	id := acceptedID(t, post(h, "application/json", `{"async":true}`), "")
	eventually(t, "the task runs", func() bool { return g.started.Load() == 1 })

	closed := make(chan error, 1)
	go func() { closed <- rec.Close(context.Background()) }()
	eventually(t, "Close refuses new tasks", func() bool {
		return post(h, "application/json", `{"async":true}`).Code == http.StatusTooManyRequests
	})
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a task was running", err)
	default:
	}
	g.open()
	if err := <-closed; err != nil {
		t.Errorf("Close = %v", err)
	}
	if task := getTask(t, store, id); string(task.Response) != `{"success":true,"task_id":"`+id+`","done":true}` {
		t.Errorf("response %s", task.Response)
	}
}

// storeTask puts a task directly in the store, as a previous process would
// have left it.
func storeTask(t testing.TB, s taskstore.Store, mutate func(*taskstore.Task)) taskstore.Task {
	t.Helper()
	task := taskstore.Task{
		ID: uuid.NewString(), Type: "images_generations", Request: json.RawMessage(`{"prompt":"p"}`),
		CreatedAt: time.Now().Add(-time.Hour),
	}
	mutate(&task)
	if err := s.Create(context.Background(), task); err != nil {
		t.Fatalf("Create: %v", err)
	}
	return task
}

func TestSoleOwnerRecovery(t *testing.T) {
	store := newMemStore(t)
	rc := newReceiver(t, nil)
	// Left running by a crashed process; its lease has not even expired.
	left := storeTask(t, store, func(task *taskstore.Task) {
		task.TraceID = "crashed"
		task.Callback.URL = rc.URL
		task.LeaseUntil = time.Now().Add(time.Hour)
	})
	if err := store.Start(context.Background(), left.ID, time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(t, store, callback.Options{SoleOwner: true})

	// The sweeper finishes it in the background, lease or not.
	task := waitFinished(t, store, left.ID)
	want := `{"success":false,"task_id":"` + left.ID + `","trace_id":"crashed","error":{"code":"interrupted","message":"the task was interrupted: the process running it stopped before it finished"}}`
	if string(task.Response) != want {
		t.Fatalf("response\n got %s\nwant %s", task.Response, want)
	}
	task = waitDelivery(t, store, left.ID)
	if task.CallbackStatus() != taskstore.CallbackDelivered || string(rc.deliveries()[0].body) != want {
		t.Errorf("callback %v, body %s", task.CallbackStatus(), rc.deliveries()[0].body)
	}
	if st := rec.Stats(); st.TasksFinished != 1 || st.TasksFailed != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestSweeperFinishesExpiredLeasesOnly(t *testing.T) {
	store := newMemStore(t)
	expired := storeTask(t, store, func(task *taskstore.Task) { task.LeaseUntil = time.Now().Add(-time.Minute) })
	held := storeTask(t, store, func(task *taskstore.Task) { task.LeaseUntil = time.Now().Add(time.Hour) })
	newRecorder(t, store, callback.Options{})
	if task := waitFinished(t, store, expired.ID); !strings.Contains(string(task.Response), `"code":"interrupted"`) {
		t.Errorf("response %s", task.Response)
	}
	// The sweep that finished the expired task has looked at every task
	// whose lease expired; the held one was not among them.
	if task := getTask(t, store, held.ID); task.Finished() {
		t.Errorf("a task whose lease is held by another process was finished: %s", task.Response)
	}
}

func TestLeaseRenewed(t *testing.T) {
	store := newMemStore(t)
	g := newGated(t)
	rec := newRecorder(t, store, callback.Options{Lease: 300 * time.Millisecond, AttemptTimeout: 100 * time.Millisecond})
	id := acceptedID(t, post(rec.Wrap("images_generations", g), "application/json", `{"async":true}`), "")
	first := getTask(t, store, id).LeaseUntil
	eventually(t, "the lease is renewed", func() bool { return getTask(t, store, id).LeaseUntil.After(first) })
	g.open()
	if task := waitFinished(t, store, id); !task.LeaseUntil.IsZero() {
		t.Errorf("lease %v after finishing", task.LeaseUntil)
	}
}

func TestRetentionPrunes(t *testing.T) {
	store := newMemStore(t)
	old := storeTask(t, store, func(task *taskstore.Task) { task.CreatedAt = time.Now().Add(-48 * time.Hour) })
	recent := storeTask(t, store, func(task *taskstore.Task) { task.CreatedAt = time.Now().Add(-time.Hour) })
	newRecorder(t, store, callback.Options{Retention: 24 * time.Hour})
	eventually(t, "the old task is pruned", func() bool {
		_, err := store.Get(context.Background(), old.ID)
		return isNotFound(err)
	})
	if _, err := store.Get(context.Background(), recent.ID); err != nil {
		t.Errorf("recent task: %v", err)
	}
}

// A retention far below the pruning period (nanoseconds, say a unit
// forgotten) prunes everything older than it and does not bring the
// process down (a zero ticker period would panic in the background).
func TestRetentionTiny(t *testing.T) {
	store := newMemStore(t)
	old := storeTask(t, store, func(task *taskstore.Task) { task.CreatedAt = time.Now().Add(-time.Second) })
	newRecorder(t, store, callback.Options{Retention: 7})
	eventually(t, "the task is pruned", func() bool {
		_, err := store.Get(context.Background(), old.ID)
		return isNotFound(err)
	})
}

func TestSubmit(t *testing.T) {
	store := newMemStore(t)
	rc := newReceiver(t, nil)
	rec := newRecorder(t, store, callback.Options{})
	caller := taskstore.Principal{ApplicationID: "a", UserID: "u", CredentialID: "c"}
	type seen struct {
		principal taskstore.Principal
		taskID    string
		ctxErr    error
	}
	submit := func(t *testing.T, traceID string, run func(context.Context) (json.RawMessage, error)) taskstore.Task {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		id, err := rec.Submit(ctx, callback.Submission{
			Type: "images_generations", TraceID: traceID, CallbackURL: rc.URL,
			Request: json.RawMessage(`{"prompt":"p"}`), Principal: caller,
		}, run)
		cancel() // the caller going away does not cancel the task
		if err != nil {
			t.Fatalf("Submit: %v", err)
		}
		return waitDelivery(t, store, id)
	}

	t.Run("Success", func(t *testing.T) {
		seenc := make(chan seen, 1)
		task := submit(t, "tr", func(ctx context.Context) (json.RawMessage, error) {
			p, _ := taskstore.FromContext(ctx)
			id, _ := callback.TaskID(ctx)
			time.Sleep(time.Millisecond)
			seenc <- seen{p, id, ctx.Err()}
			return json.RawMessage(`{"b":2, "a":1}`), nil
		})
		if want := `{"success":true,"task_id":"` + task.ID + `","trace_id":"tr","b":2,"a":1}`; string(task.Response) != want {
			t.Errorf("response %s, want %s", task.Response, want)
		}
		if string(task.Request) != `{"prompt":"p"}` || task.ApplicationID != "a" || task.UserID != "u" || task.CredentialID != "c" || task.Type != "images_generations" {
			t.Errorf("task %+v", task)
		}
		if s := <-seenc; s.principal != caller || s.taskID != task.ID || s.ctxErr != nil {
			t.Errorf("run context: %+v", s)
		}
		if task.CallbackStatus() != taskstore.CallbackDelivered {
			t.Errorf("callback %v", task.CallbackStatus())
		}
	})
	t.Run("TaskError", func(t *testing.T) {
		task := submit(t, "", func(context.Context) (json.RawMessage, error) {
			return nil, &callback.TaskError{Code: "content_policy_violation", Message: "rejected"}
		})
		if want := `{"success":false,"task_id":"` + task.ID + `","error":{"code":"content_policy_violation","message":"rejected"}}`; string(task.Response) != want {
			t.Errorf("response %s, want %s", task.Response, want)
		}
	})
	t.Run("OtherError", func(t *testing.T) {
		task := submit(t, "", func(context.Context) (json.RawMessage, error) {
			return nil, errors.New("dial tcp 10.1.2.3:5432: secret internals")
		})
		if want := `{"success":false,"task_id":"` + task.ID + `","error":{"code":"api_error","message":"task failed"}}`; string(task.Response) != want {
			t.Errorf("response %s, want %s", task.Response, want)
		}
	})
	t.Run("NotAnObject", func(t *testing.T) {
		task := submit(t, "", func(context.Context) (json.RawMessage, error) { return json.RawMessage(`"done"`), nil })
		if !strings.Contains(string(task.Response), `"message":"upstream response is not a JSON object"`) {
			t.Errorf("response %s", task.Response)
		}
	})
	t.Run("Refused", func(t *testing.T) {
		run := func(context.Context) (json.RawMessage, error) { return json.RawMessage(`{}`), nil }
		before := countTasks(t, store)
		_, err := rec.Submit(context.Background(), callback.Submission{Type: "t", CallbackURL: "file:///etc/passwd", Request: json.RawMessage(`{}`)}, run)
		if !errors.Is(err, callback.ErrBadCallbackURL) {
			t.Errorf("bad URL: %v", err)
		}
		_, err = rec.Submit(context.Background(), callback.Submission{Request: json.RawMessage(`{}`)}, run)
		if !errors.Is(err, taskstore.ErrInvalid) {
			t.Errorf("no type: %v", err)
		}
		if _, err = rec.Submit(context.Background(), callback.Submission{Type: "t", Request: json.RawMessage(`{}`)}, nil); err == nil {
			t.Errorf("nil run accepted")
		}
		if n := countTasks(t, store); n != before {
			t.Errorf("%d tasks stored by refused submissions", n-before)
		}
	})
}

func TestStatsAndHooks(t *testing.T) {
	store := newMemStore(t)
	rc := newReceiver(t, nil)
	var mu sync.Mutex
	var created, finished []callback.TaskEvent
	var attempts []callback.DeliveryEvent
	var finishedFirst []string // tasks whose TaskFinished came before their TaskCreated
	rec := newRecorder(t, store, callback.Options{Hooks: callback.Hooks{
		TaskCreated: func(_ context.Context, e callback.TaskEvent) { mu.Lock(); created = append(created, e); mu.Unlock() },
		TaskFinished: func(_ context.Context, e callback.TaskEvent) {
			mu.Lock()
			defer mu.Unlock()
			if !slices.ContainsFunc(created, func(c callback.TaskEvent) bool { return c.ID == e.ID }) {
				finishedFirst = append(finishedFirst, e.ID)
			}
			finished = append(finished, e)
		},
		DeliveryAttempted: func(_ context.Context, e callback.DeliveryEvent) {
			mu.Lock()
			attempts = append(attempts, e)
			mu.Unlock()
		},
	}})
	ok := acceptedID(t, post(rec.Wrap("a", jsonHandler(nil, 200, `{}`)), "application/json", `{"callback_url":"`+rc.URL+`"}`), "")
	bad := acceptedID(t, post(rec.Wrap("b", jsonHandler(nil, 500, `{}`)), "application/json", `{"callback_url":"`+rc.URL+`","trace_id":"x"}`), "x")
	waitDelivery(t, store, ok)
	waitDelivery(t, store, bad)
	eventually(t, "hooks ran", func() bool { mu.Lock(); defer mu.Unlock(); return len(attempts) == 2 })

	if st := rec.Stats(); st != (callback.Stats{TasksCreated: 2, TasksFinished: 2, TasksFailed: 1, DeliveriesAttempted: 2, Delivered: 2}) {
		t.Errorf("stats %+v", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(created) != 2 || len(finished) != 2 {
		t.Fatalf("hooks: %d created, %d finished", len(created), len(finished))
	}
	if len(finishedFirst) > 0 {
		t.Errorf("TaskFinished before TaskCreated for %v", finishedFirst)
	}
	for _, e := range finished {
		switch e.ID {
		case ok:
			if !e.Success || e.Type != "a" || e.Code != "" {
				t.Errorf("finished event %+v", e)
			}
		case bad:
			if e.Success || e.Type != "b" || e.TraceID != "x" || e.Code != "api_error" {
				t.Errorf("finished event %+v", e)
			}
		default:
			t.Errorf("finished event for unknown task %+v", e)
		}
	}
	for _, e := range attempts {
		if !e.Delivered || e.GaveUp || e.Attempt != 1 || e.Status != 200 {
			t.Errorf("delivery event %+v", e)
		}
	}
}

func TestOptionsValidated(t *testing.T) {
	store := newMemStore(t)
	for name, o := range map[string]callback.Options{
		"NegativeWorkers":    {Workers: -1},
		"NegativeSchedule":   {Schedule: callback.Schedule{0, -time.Second}},
		"LeaseBelowAttempt":  {Lease: time.Second, AttemptTimeout: 2 * time.Second},
		"MalformedSecret":    {Secret: "not-a-secret"},
		"NegativeRetention":  {Retention: -time.Hour},
		"NegativeMaxBody":    {MaxBodyBytes: -1},
		"NegativePollPeriod": {PollInterval: -time.Second},
		"NegativeRequest":    {MaxRequestBytes: -1},
		"NegativeQueueBytes": {QueueBytes: -1},
		"NegativeTenantQ":    {QueuePerPrincipal: -1},
		"NegativePerHost":    {DeliveriesPerHost: -1},
		"NegativeFirstByte":  {FirstByteTimeout: -time.Second},
		"NegativeHostPause":  {HostPause: -time.Second},
		"MaxPauseBelowPause": {HostPause: time.Minute, MaxHostPause: time.Second},
		"NegativeLogPeriod":  {LogInterval: -time.Second},
	} {
		if rec, err := callback.New(store, o); err == nil {
			rec.Close(context.Background())
			t.Errorf("%s: New accepted %+v", name, o)
		}
	}
	if _, err := callback.New(nil, callback.Options{}); err == nil {
		t.Errorf("New accepted a nil store")
	}
}

// failingStore fails Create with err.
type failingStore struct {
	taskstore.Store
	err error
}

func (s failingStore) Create(ctx context.Context, t taskstore.Task) error { return s.err }

func TestStoreFailureNotAcknowledged(t *testing.T) {
	mem := newMemStore(t)
	cases := []struct {
		name     string
		err      error
		status   int
		code     string
		message  string
		mustHide string
	}{
		{"SystemFailure", errors.New("sqlitestore: disk I/O error at /var/lib/secret/tasks.db"), 500, "api_error", "", "/var/lib"},
		{"Invalid", storekit.Invalidf("user_id must be at most 128 bytes"), 400, "bad_request", "user_id must be at most 128 bytes", ""},
		{"Unavailable", fmt.Errorf("pgstore: create: failed to connect to 10.9.8.7:5432: %w", taskstore.ErrUnavailable),
			503, "api_error", "the task store is unavailable; retry later", "10.9.8.7"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var up upstream
			rec := newRecorder(t, failingStore{mem, tc.err}, callback.Options{})
			w := post(rec.Wrap("images_generations", jsonHandler(&up, 200, `{}`)), "application/json", `{"async":true}`)
			errorBody(t, w, tc.status, tc.code, tc.message)
			if ra := w.Header().Get("Retry-After"); (tc.status == 503) != (ra != "") {
				t.Errorf("status %d with Retry-After %q", tc.status, ra)
			}
			if tc.mustHide != "" && strings.Contains(w.Body.String(), tc.mustHide) {
				t.Errorf("the answer leaks the store error: %s", w.Body)
			}
			if st := rec.Stats(); st.Queued != 0 || st.TasksCreated != 0 {
				t.Errorf("stats %+v: the slot was not released", st)
			}
			if up.count() != 0 {
				t.Errorf("the upstream ran")
			}
			_, err := rec.Submit(context.Background(), callback.Submission{Type: "t", Request: json.RawMessage(`{}`)},
				func(context.Context) (json.RawMessage, error) { return nil, nil })
			if !errors.Is(err, tc.err) {
				t.Errorf("Submit error %v, want it to wrap %v", err, tc.err)
			}
		})
	}
}

// cancelInCreate cancels the caller's context while Create runs, as a
// caller that gives up mid-store would.
type cancelInCreate struct {
	taskstore.Store
	cancel context.CancelFunc
}

func (c *cancelInCreate) Create(ctx context.Context, t taskstore.Task) error {
	c.cancel()
	return c.Store.Create(ctx, t)
}

// Once Submit has begun storing, the caller's cancellation does not stop it:
// the task is stored, queued and run (a task stored but reported as failed
// would later be called back to a client told it failed). A context already
// done stores nothing.
func TestSubmitCancelledWhileStoring(t *testing.T) {
	inner := newMemStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	rec := newRecorder(t, &cancelInCreate{Store: inner, cancel: cancel}, callback.Options{})
	run := func(context.Context) (json.RawMessage, error) { return json.RawMessage(`{"ok":true}`), nil }
	sub := callback.Submission{Type: "images_generations", Request: json.RawMessage(`{}`)}
	id, err := rec.Submit(ctx, sub, run)
	if err != nil {
		t.Fatalf("Submit cancelled while storing: %v", err)
	}
	if task := waitFinished(t, inner, id); !strings.Contains(string(task.Response), `"success":true`) {
		t.Errorf("response %s", task.Response)
	}
	if _, err := rec.Submit(ctx, sub, run); !errors.Is(err, context.Canceled) {
		t.Errorf("Submit with a cancelled context: %v", err)
	}
	if n := countTasks(t, inner); n != 1 {
		t.Errorf("%d tasks stored, want 1", n)
	}
}
