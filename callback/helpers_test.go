package callback_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/internal/pgtest"
	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/pgstore"
	"github.com/tasksapi/tasks/sqlitestore"
	"github.com/tasksapi/tasks/taskstore"
)

// testSchedule retries quickly so that no test sleeps for real backoff.
var testSchedule = callback.Schedule{0, 20 * time.Millisecond, 40 * time.Millisecond}

func newMemStore(t testing.TB) taskstore.Store {
	t.Helper()
	s := memstore.New()
	t.Cleanup(func() { s.Close() })
	return s
}

func openSQLite(t testing.TB, path string) *sqlitestore.Store {
	t.Helper()
	s, err := sqlitestore.Open(path)
	if err != nil {
		t.Fatalf("sqlitestore.Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openPG opens a pgstore in a fresh schema of the TASKS_PG_URL server
// (skipping without one, see internal/pgtest), closed at the end.
func openPG(t testing.TB) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(context.Background(), pgtest.FreshSchema(t, pgtest.URL(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newSQLiteStore(t testing.TB) taskstore.Store {
	t.Helper()
	return openSQLite(t, filepath.Join(t.TempDir(), "tasks.db"))
}

// testLogger writes warnings and errors to the test log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// newRecorder starts a recorder with test-friendly defaults (loopback
// receivers allowed, short schedule and poll interval) for any zero field,
// then applies the changes, and closes it when the test ends.
func newRecorder(t testing.TB, store taskstore.Store, o callback.Options, changes ...func(*callback.Options)) *callback.Recorder {
	t.Helper()
	rec, err := startRecorder(t, store, o, changes...)
	if err != nil {
		t.Fatalf("callback.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rec.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return rec
}

// guardOn turns the SSRF guard back on.
func guardOn(o *callback.Options) { o.AllowPrivateNetworks = false }

func startRecorder(t testing.TB, store taskstore.Store, o callback.Options, changes ...func(*callback.Options)) (*callback.Recorder, error) {
	t.Helper()
	o.AllowPrivateNetworks = true
	if o.Schedule == nil {
		o.Schedule = testSchedule
	}
	if o.PollInterval == 0 {
		o.PollInterval = 20 * time.Millisecond
	}
	if o.AttemptTimeout == 0 {
		o.AttemptTimeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	for _, c := range changes {
		c(&o)
	}
	return callback.New(store, o)
}

// eventually polls cond until it holds, failing the test after a generous
// deadline. It never asserts on timing: the deadline only bounds a hang.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// getTask reads a task, failing the test on error.
func getTask(t testing.TB, s taskstore.Store, id string) taskstore.Task {
	t.Helper()
	task, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return task
}

// waitFinished waits until the task has a response and returns it.
func waitFinished(t testing.TB, s taskstore.Store, id string) taskstore.Task {
	t.Helper()
	var task taskstore.Task
	eventually(t, "task "+id+" finished", func() bool {
		task = getTask(t, s, id)
		return task.Finished()
	})
	return task
}

// waitDelivery waits until the task's callback is settled (delivered or
// given up) and returns the task.
func waitDelivery(t testing.TB, s taskstore.Store, id string) taskstore.Task {
	t.Helper()
	var task taskstore.Task
	eventually(t, "callback of "+id+" settled", func() bool {
		task = getTask(t, s, id)
		st := task.CallbackStatus()
		return st == taskstore.CallbackDelivered || st == taskstore.CallbackFailed
	})
	return task
}

// countTasks returns how many tasks the store holds.
func countTasks(t testing.TB, s taskstore.Store) int {
	t.Helper()
	_, n, err := s.Find(context.Background(), taskstore.Filter{})
	if err != nil {
		t.Fatalf("Find: %v", err)
	}
	return n
}

// delivery is one request a receiver got.
type delivery struct {
	header http.Header
	body   []byte
	at     time.Time
}

// receiver is a callback receiver on loopback. respond chooses the answer
// to the n-th delivery (n from 1); nil answers 200.
type receiver struct {
	*httptest.Server
	mu      sync.Mutex
	got     []delivery
	respond func(n int, w http.ResponseWriter, r *http.Request)
}

func newReceiver(t testing.TB, respond func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	rc := &receiver{respond: respond}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, delivery{header: r.Header.Clone(), body: body, at: time.Now()})
		n := len(rc.got)
		rc.mu.Unlock()
		if rc.respond != nil {
			rc.respond(n, w, r)
		}
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.got...)
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.got)
}

// upstream records what the wrapped image handler saw.
type upstream struct {
	mu     sync.Mutex
	bodies [][]byte
	reqs   []*http.Request
}

func (u *upstream) record(r *http.Request) []byte {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.bodies = append(u.bodies, body)
	u.reqs = append(u.reqs, r)
	u.mu.Unlock()
	return body
}

func (u *upstream) last() (*http.Request, []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		return nil, nil
	}
	return u.reqs[len(u.reqs)-1], u.bodies[len(u.bodies)-1]
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

// jsonHandler answers status with body.
func jsonHandler(u *upstream, status int, body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u != nil {
			u.record(r)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	})
}

// post sends a JSON body through h and returns the recorded answer.
func post(h http.Handler, contentType, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/v1/images/generations", strings.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

// acceptedID checks an accepted answer and returns the task id.
func acceptedID(t testing.TB, w *httptest.ResponseRecorder, traceID string) string {
	t.Helper()
	if w.Code != http.StatusOK {
		t.Fatalf("status %d, body %s", w.Code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var a struct {
		TaskID string `json:"task_id"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
		t.Fatalf("answer %q: %v", w.Body, err)
	}
	want := `{"task_id":"` + a.TaskID + `"}`
	if traceID != "" {
		want = `{"task_id":"` + a.TaskID + `","trace_id":"` + traceID + `"}`
	}
	if got := w.Body.String(); got != want {
		t.Fatalf("answer %s, want %s", got, want)
	}
	if len(a.TaskID) != 36 {
		t.Fatalf("task_id %q is not a UUID", a.TaskID)
	}
	return a.TaskID
}

// errorBody checks a contract error answer.
func errorBody(t testing.TB, w *httptest.ResponseRecorder, status int, code, message string) {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status %d, want %d (body %s)", w.Code, status, w.Body)
	}
	var e struct {
		Error   struct{ Code, Message string } `json:"error"`
		TraceID string                         `json:"trace_id"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body %q: %v", w.Body, err)
	}
	if e.Error.Code != code || (message != "" && e.Error.Message != message) || e.TraceID == "" {
		t.Fatalf("error body %s, want code %q message %q", w.Body, code, message)
	}
}

func compact(t testing.TB, s string) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatalf("compact %q: %v", s, err)
	}
	return b.String()
}

func isNotFound(err error) bool { return errors.Is(err, taskstore.ErrNotFound) }

// forEachStore runs fn as a subtest over a fresh memstore, sqlitestore and
// (with TASKS_PG_URL) pgstore.
func forEachStore(t *testing.T, fn func(t *testing.T, store taskstore.Store)) {
	t.Helper()
	for _, s := range []struct {
		name string
		open func(testing.TB) taskstore.Store
	}{
		{"memstore", newMemStore},
		{"sqlitestore", newSQLiteStore},
		{"pgstore", func(tb testing.TB) taskstore.Store { return openPG(tb) }},
	} {
		t.Run(s.name, func(t *testing.T) { fn(t, s.open(t)) })
	}
}
