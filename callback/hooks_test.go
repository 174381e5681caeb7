package callback_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/internal/logtest"
	"github.com/tasksapi/tasks/taskstore"
)

// logBuffer is a log destination safe for concurrent use that can pick out
// lines.
type logBuffer struct{ logtest.Buffer }

// lines returns the log lines that contain every one of the parts.
func (l *logBuffer) lines(parts ...string) []string {
	var out []string
	for line := range strings.Lines(l.String()) {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// TestHookPanicsAreRecovered: every hook panics. The panics are logged at
// Error level with the hook's name and a stack, as a handler's panic is,
// and the recorder goes on: the task runs, its response is recorded, its
// callback is delivered, the redelivery is made, and Close returns.
func TestHookPanicsAreRecovered(t *testing.T) {
	store := newMemStore(t)
	rcv := newReceiver(t, nil)
	var logs logBuffer
	var calls sync.Map // hook name → true once called
	boom := func(name string) {
		calls.Store(name, true)
		panic(name + " hook exploded")
	}
	rec, err := startRecorder(t, store, callback.Options{
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Hooks: callback.Hooks{
			TaskCreated:       func(context.Context, callback.TaskEvent) { boom("TaskCreated") },
			TaskStarted:       func(context.Context, callback.TaskEvent) { boom("TaskStarted") },
			TaskFinished:      func(context.Context, callback.TaskEvent) { boom("TaskFinished") },
			DeliveryAttempted: func(context.Context, callback.DeliveryEvent) { boom("DeliveryAttempted") },
			Redelivered:       func(context.Context, []string) { boom("Redelivered") },
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	id := acceptedID(t, post(rec.Wrap("images_generations", jsonHandler(nil, 200, `{"data":[]}`)),
		"application/json", `{"prompt":"p","callback_url":"`+rcv.URL+`"}`), "")
	task := waitDelivery(t, store, id)
	if task.CallbackStatus() != taskstore.CallbackDelivered || !strings.Contains(string(task.Response), `"success":true`) {
		t.Fatalf("task %s, callback %v", task.Response, task.CallbackStatus())
	}
	if _, err := rec.Redeliver(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the redelivery", func() bool { return rcv.count() == 2 })
	eventually(t, "the second attempt recorded", func() bool { return rec.Stats().DeliveriesAttempted == 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rec.Close(ctx); err != nil {
		t.Fatalf("Close = %v", err)
	}
	st := rec.Stats()
	if st.TasksCreated != 1 || st.TasksFinished != 1 || st.Delivered != 2 || st.Redelivered != 1 {
		t.Errorf("Stats = %+v: the bookkeeping after the hooks was skipped", st)
	}
	for _, name := range []string{"TaskCreated", "TaskStarted", "TaskFinished", "DeliveryAttempted", "Redelivered"} {
		if _, ok := calls.Load(name); !ok {
			t.Errorf("hook %s not called", name)
		}
		lines := logs.lines("level=ERROR", `msg="callback: hook panicked"`, "hook="+name, `panic="`+name+` hook exploded"`, "stack=")
		if len(lines) == 0 {
			t.Errorf("no Error log line for the %s panic; log:\n%s", name, logs.String())
		}
	}
}

type ctxKey struct{}

// TestHooksGetContexts: TaskCreated gets the request's values without its
// cancellation; TaskStarted the task's run context (the one the handler
// gets); TaskFinished its values; DeliveryAttempted the attempt's context,
// and the task's type and trace id.
func TestHooksGetContexts(t *testing.T) {
	store := newMemStore(t)
	rcv := newReceiver(t, nil)
	type seen struct {
		value    any
		id       string
		hasID    bool
		deadline bool
		err      error
	}
	var (
		mu       sync.Mutex
		got      = map[string]seen{}
		attempt  callback.DeliveryEvent
		runCtx   context.Context
		startCtx context.Context
	)
	look := func(name string, ctx context.Context) {
		id, ok := callback.TaskID(ctx)
		_, dl := ctx.Deadline()
		mu.Lock()
		got[name] = seen{value: ctx.Value(ctxKey{}), id: id, hasID: ok, deadline: dl, err: ctx.Err()}
		if name == "TaskStarted" {
			startCtx = ctx
		}
		mu.Unlock()
	}
	rec := newRecorder(t, store, callback.Options{Hooks: callback.Hooks{
		TaskCreated:  func(ctx context.Context, _ callback.TaskEvent) { look("TaskCreated", ctx) },
		TaskStarted:  func(ctx context.Context, _ callback.TaskEvent) { look("TaskStarted", ctx) },
		TaskFinished: func(ctx context.Context, _ callback.TaskEvent) { look("TaskFinished", ctx) },
		DeliveryAttempted: func(ctx context.Context, ev callback.DeliveryEvent) {
			look("DeliveryAttempted", ctx)
			mu.Lock()
			attempt = ev
			mu.Unlock()
		},
	}})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		runCtx = r.Context()
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{}`))
	})
	// The client's request context, cancelled as soon as it is answered.
	reqCtx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "request value"))
	req, _ := http.NewRequestWithContext(reqCtx, http.MethodPost, "/v1/images/generations",
		strings.NewReader(`{"prompt":"p","trace_id":"trace-7","callback_url":"`+rcv.URL+`"}`))
	req.Header.Set("Content-Type", "application/json")
	w := &responseRecorder{header: http.Header{}}
	rec.Wrap("images_generations", handler).ServeHTTP(w, req)
	cancel()
	var answer struct {
		TaskID string `json:"task_id"`
	}
	if err := json.Unmarshal(w.body.Bytes(), &answer); err != nil || answer.TaskID == "" {
		t.Fatalf("answer %d %s", w.status, w.body.Bytes())
	}
	id := answer.TaskID
	waitDelivery(t, store, id)
	eventually(t, "the DeliveryAttempted hook", func() bool {
		mu.Lock()
		defer mu.Unlock()
		_, ok := got["DeliveryAttempted"]
		return ok
	})

	mu.Lock()
	defer mu.Unlock()
	for _, name := range []string{"TaskCreated", "TaskStarted", "TaskFinished"} {
		s := got[name]
		if s.value != "request value" || s.id != id || s.err != nil {
			t.Errorf("%s context: value %v, task id %q (%v), err %v; want the request's value, task id %s, not cancelled",
				name, s.value, s.id, s.hasID, s.err, id)
		}
	}
	if !got["TaskStarted"].deadline {
		t.Errorf("TaskStarted context has no deadline: not the run context (TaskTimeout)")
	}
	if runCtx == nil || startCtx == nil || runCtx.Value(ctxKey{}) != startCtx.Value(ctxKey{}) {
		t.Errorf("the handler's context and TaskStarted's differ")
	}
	d1, _ := runCtx.Deadline()
	if d2, _ := startCtx.Deadline(); !d1.Equal(d2) {
		t.Errorf("handler deadline %v, TaskStarted's %v: not the same run context", d1, d2)
	}
	if s := got["DeliveryAttempted"]; s.id != id {
		t.Errorf("DeliveryAttempted context carries task id %q, want %s", s.id, id)
	}
	if attempt.TaskID != id || attempt.Type != "images_generations" || attempt.TraceID != "trace-7" || !attempt.Delivered || attempt.Attempt != 1 {
		t.Errorf("DeliveryEvent = %+v", attempt)
	}
}

// responseRecorder is a minimal http.ResponseWriter.
type responseRecorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *responseRecorder) Header() http.Header { return w.header }
func (w *responseRecorder) WriteHeader(s int)   { w.status = s }
func (w *responseRecorder) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.body.Write(p)
}

// TestWrapTransport: the wrapper sees every delivery attempt, with the
// attempt's context (the task id), and the recorder's own dialer still
// makes the connections: with the guard on, a callback to a host name that
// resolves to a loopback address is refused at connect time and given up,
// the wrapper notwithstanding.
func TestWrapTransport(t *testing.T) {
	store := newMemStore(t)
	rcv := newReceiver(t, nil)
	port := rcv.URL[strings.LastIndexByte(rcv.URL, ':')+1:]
	var (
		mu   sync.Mutex
		seen []string // task ids of the requests the wrapper saw
		errs []string
	)
	var built atomic.Int32
	wrap := func(next http.RoundTripper) http.RoundTripper {
		built.Add(1)
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			id, _ := callback.TaskID(r.Context())
			resp, err := next.RoundTrip(r)
			mu.Lock()
			seen = append(seen, id)
			if err != nil {
				errs = append(errs, err.Error())
			}
			mu.Unlock()
			return resp, err
		})
	}
	lookup := func(context.Context, string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	run := func(context.Context) (json.RawMessage, error) { return json.RawMessage(`{}`), nil }

	// Guard off (loopback receivers allowed): delivered through the wrapper.
	open := newRecorder(t, store, callback.Options{WrapTransport: wrap})
	callback.SetLookup(open, lookup)
	id, err := open.Submit(context.Background(), callback.Submission{Type: "t", Request: json.RawMessage(`{}`),
		CallbackURL: "http://receiver.test:" + port + "/cb"}, run)
	if err != nil {
		t.Fatal(err)
	}
	if task := waitDelivery(t, store, id); task.CallbackStatus() != taskstore.CallbackDelivered {
		t.Fatalf("callback %v, last error %q", task.CallbackStatus(), task.Callback.LastError)
	}

	// Guard on: the same name, resolving to loopback, is refused. (A
	// recorder of its own name on the store: each delivers its own tasks
	// with its own guard.)
	guarded := newRecorder(t, store, callback.Options{Name: "guarded", WrapTransport: wrap}, guardOn)
	callback.SetLookup(guarded, lookup)
	refused, err := guarded.Submit(context.Background(), callback.Submission{Type: "t", Request: json.RawMessage(`{}`),
		CallbackURL: "http://internal.test:" + port + "/cb"}, run)
	if err != nil {
		t.Fatal(err)
	}
	task := waitDelivery(t, store, refused)
	if task.CallbackStatus() != taskstore.CallbackFailed || !strings.Contains(task.Callback.LastError, "not allowed") {
		t.Fatalf("guarded callback %v, last error %q; want given up, refused by the guard", task.CallbackStatus(), task.Callback.LastError)
	}
	if n := rcv.count(); n != 1 {
		t.Errorf("receiver got %d callbacks, want 1 (the guarded one never connects)", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 || seen[0] != id || seen[1] != refused {
		t.Errorf("the wrapper saw requests of tasks %v, want [%s %s]", seen, id, refused)
	}
	if len(errs) != 1 || !strings.Contains(errs[0], "not allowed") {
		t.Errorf("errors through the wrapper: %q, want the guard's refusal", errs)
	}
	if n := built.Load(); n != 2 {
		t.Errorf("WrapTransport called %d times for two recorders", n)
	}

	_, err = callback.New(store, callback.Options{WrapTransport: func(http.RoundTripper) http.RoundTripper { return nil }})
	if err == nil || !strings.Contains(err.Error(), "WrapTransport") {
		t.Errorf("New with a WrapTransport returning nil: %v", err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestDefaultScheduleIsFresh: DefaultSchedule returns a new slice each
// time, so changing one changes neither the next nor a recorder's default;
// Schedule's methods format, count and parse it.
func TestDefaultScheduleIsFresh(t *testing.T) {
	a := callback.DefaultSchedule()
	want := callback.Schedule{0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour}
	if a.String() != want.String() {
		t.Fatalf("DefaultSchedule() = %v, want %v", a, want)
	}
	a[1] = time.Hour
	a = append(a[:1], a[2:]...)
	if b := callback.DefaultSchedule(); b.String() != want.String() {
		t.Fatalf("after changing one, DefaultSchedule() = %v", b)
	}
	if s := callback.DefaultSchedule(); s.Attempts() != 7 || s.Validate() != nil {
		t.Errorf("Attempts %d, Validate %v", s.Attempts(), s.Validate())
	}
	if s := callback.DefaultSchedule().String(); s != "0s,5s,5m0s,30m0s,2h0m0s,5h0m0s,10h0m0s" {
		t.Errorf("String() = %q", s)
	}
	p, err := callback.ParseSchedule("0s, 1s,1m")
	if err != nil || p.Attempts() != 3 || p[2] != time.Minute {
		t.Errorf("ParseSchedule = %v, %v", p, err)
	}
	var f callback.Schedule
	if err := f.Set("0s,10ms"); err != nil || f.String() != "0s,10ms" {
		t.Errorf("Set: %v, %v", f, err)
	}
	if err := f.Set("0s,-1s"); err == nil || f.String() != "0s,10ms" {
		t.Errorf("Set of a negative delay: %v, left %v", err, f)
	}
	if err := (callback.Schedule{}).Validate(); err == nil {
		t.Error("an empty schedule validated")
	}
	if _, err := callback.New(newMemStore(t), callback.Options{Schedule: callback.Schedule{time.Second, -time.Second}}); err == nil {
		t.Error("New accepted a negative delay")
	} else if !strings.Contains(err.Error(), "negative") {
		t.Errorf("New: %v", err)
	}
}
