package metrics_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/internal/metrics"
	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/taskstore"
)

// countingStore counts Find calls.
type countingStore struct {
	taskstore.Store
	finds atomic.Int64
}

func (s *countingStore) Find(ctx context.Context, f taskstore.Filter) ([]taskstore.Task, int, error) {
	s.finds.Add(1)
	return s.Store.Find(ctx, f)
}

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, httptest.NewRequest("GET", "/metrics", nil))
	if rr.Code != 200 {
		t.Fatalf("scrape: %d %s", rr.Code, rr.Body)
	}
	return rr.Body.String()
}

func mustContain(t *testing.T, text string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(text, l+"\n") {
			t.Errorf("exposition lacks %q", l)
		}
	}
}

// finishedTask stores a task finished at finished, with a callback
// delivered at delivered (pending when zero).
func finishedTask(t *testing.T, s taskstore.Store, id string, created, finished, delivered time.Time) {
	t.Helper()
	ctx := context.Background()
	x := taskstore.Task{ID: id, Type: "images_generations", Request: json.RawMessage(`{}`), CreatedAt: created}
	x.Callback.URL = "https://receiver.example/" + id
	if err := s.Create(ctx, x); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(ctx, id, json.RawMessage(`{"success":true}`), finished); err != nil {
		t.Fatal(err)
	}
	if !delivered.IsZero() {
		if err := s.RecordAttempt(ctx, id, taskstore.Attempt{At: delivered, Status: 200, Delivered: true}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestHooksAndMiddleware(t *testing.T) {
	store := memstore.New()
	defer store.Close()
	base := time.Now().Add(-time.Minute)
	finishedTask(t, store, "task-delivered-0001", base, base.Add(time.Second), base.Add(3*time.Second))
	m := metrics.New(metrics.Options{Store: store})
	defer m.Close()
	m.WatchRecorder(func() callback.Stats { return callback.Stats{Queued: 3, Running: 2} })

	h := m.Hooks()
	ctx := t.Context()
	h.TaskCreated(ctx, callback.TaskEvent{ID: "task-secret-id-1", Type: "images_generations", TraceID: "trace-secret"})
	h.TaskCreated(ctx, callback.TaskEvent{ID: "task-secret-id-2", Type: "images_edits"})
	for _, ev := range []callback.TaskEvent{
		{ID: "a", Type: "images_generations", Success: true, Duration: 1500 * time.Millisecond},
		{ID: "b", Type: "images_generations", Code: "content_policy_violation", Duration: time.Second},
		{ID: "c", Type: "images_generations", Code: callback.CodeTimeout, Duration: time.Minute},
		{ID: "d", Type: "images_edits", Code: callback.CodeInterrupted}, // never ran
	} {
		h.TaskFinished(ctx, ev)
	}
	h.DeliveryAttempted(ctx, callback.DeliveryEvent{TaskID: "x", Status: 500, Next: time.Now()})
	h.DeliveryAttempted(ctx, callback.DeliveryEvent{TaskID: "y", Status: 410, GaveUp: true})
	h.DeliveryAttempted(ctx, callback.DeliveryEvent{TaskID: "task-delivered-0001", Status: 200, Delivered: true, Duration: 500 * time.Millisecond})

	api := m.Middleware("/openai/tasks", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("fail") != "" {
			w.WriteHeader(http.StatusTooManyRequests)
		}
		io.WriteString(w, "ok")
	}))
	for _, q := range []string{"?id=user-secret", "", "?fail=1"} {
		api.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/openai/tasks"+q, nil))
	}

	// The latency is read in the background.
	deadline := time.Now().Add(10 * time.Second)
	var text string
	for {
		text = scrape(t, m.Handler())
		if strings.Contains(text, "tasksd_callback_delivery_latency_seconds_count 1\n") || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mustContain(t, text,
		`tasksd_tasks_created_total{type="images_generations"} 1`,
		`tasksd_tasks_created_total{type="images_edits"} 1`,
		`tasksd_tasks_finished_total{outcome="succeeded",type="images_generations"} 1`,
		`tasksd_tasks_finished_total{outcome="failed",type="images_generations"} 1`,
		`tasksd_tasks_finished_total{outcome="timeout",type="images_generations"} 1`,
		`tasksd_tasks_finished_total{outcome="interrupted",type="images_edits"} 1`,
		`tasksd_task_duration_seconds_count{type="images_generations"} 3`,
		`tasksd_task_duration_seconds_sum{type="images_generations"} 62.5`,
		`tasksd_callback_attempts_total{outcome="delivered"} 1`,
		`tasksd_callback_attempts_total{outcome="retry"} 1`,
		`tasksd_callback_attempts_total{outcome="given_up"} 1`,
		`tasksd_callback_delivery_latency_seconds_count 1`,
		`tasksd_callback_delivery_latency_seconds_sum 2.5`,
		`tasksd_queue_length 3`,
		`tasksd_running_tasks 2`,
		`tasksd_callbacks_pending 0`,
		`tasksd_oldest_pending_callback_age_seconds 0`,
		`tasksd_http_requests_total{code="200",route="/openai/tasks"} 2`,
		`tasksd_http_requests_total{code="429",route="/openai/tasks"} 1`,
		`tasksd_http_request_duration_seconds_count{route="/openai/tasks"} 3`,
	)
	if strings.Contains(text, `tasksd_task_duration_seconds_count{type="images_edits"}`) {
		t.Error("a task that never ran has a duration")
	}
	for _, family := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total"} {
		if !strings.Contains(text, "\n"+family+" ") {
			t.Errorf("no %s", family)
		}
	}
	for _, secret := range []string{"task-secret", "trace-secret", "user-secret", "task-delivered", "receiver.example", "content_policy"} {
		if strings.Contains(text, secret) {
			t.Errorf("the exposition contains %q", secret)
		}
	}
}

// The store gauges: the pending count and the age of the oldest-created
// pending callback since its finish, read once per CacheFor.
func TestStoreGauges(t *testing.T) {
	mem := memstore.New()
	defer mem.Close()
	store := &countingStore{Store: mem}
	now := time.Now().Truncate(time.Second)
	clock := atomic.Pointer[time.Time]{}
	clock.Store(&now)
	m := metrics.New(metrics.Options{Store: store, CacheFor: 5 * time.Second, Now: func() time.Time { return *clock.Load() }})
	defer m.Close()

	// Created first, finished 40 s ago: the one reported, although the
	// second finished earlier.
	finishedTask(t, store, "p1", now.Add(-10*time.Minute), now.Add(-40*time.Second), time.Time{})
	finishedTask(t, store, "p2", now.Add(-9*time.Minute), now.Add(-100*time.Second), time.Time{})
	finishedTask(t, store, "p3", now.Add(-time.Minute), now.Add(-10*time.Second), time.Time{})
	finishedTask(t, store, "d1", now.Add(-20*time.Minute), now.Add(-19*time.Minute), now.Add(-18*time.Minute))

	text := scrape(t, m.Handler())
	mustContain(t, text, "tasksd_callbacks_pending 3", "tasksd_oldest_pending_callback_age_seconds 40")
	finds := store.finds.Load()
	if finds != 2 {
		t.Errorf("a refresh made %d Find calls, want 2", finds)
	}
	// Scrapes within CacheFor reuse the values.
	for range 5 {
		scrape(t, m.Handler())
	}
	if store.finds.Load() != finds {
		t.Errorf("cached scrapes called Find %d more times", store.finds.Load()-finds)
	}
	later := now.Add(6 * time.Second)
	clock.Store(&later)
	mustContain(t, scrape(t, m.Handler()), "tasksd_callbacks_pending 3", "tasksd_oldest_pending_callback_age_seconds 46")

	// A failing store gives no value rather than a wrong one.
	mem.Close()
	later2 := later.Add(6 * time.Second)
	clock.Store(&later2)
	if text := scrape(t, m.Handler()); strings.Contains(text, "tasksd_callbacks_pending") {
		t.Errorf("a closed store still reports pending callbacks")
	}
}
