package callback_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/taskstore"
)

// outageStore wraps a store whose chosen methods fail, while down, with an
// error wrapping taskstore.ErrUnavailable, as pgstore's do while PostgreSQL
// restarts: either before the call (nothing written) or after it (written,
// the answer lost).
type outageStore struct {
	taskstore.Store
	mu     sync.Mutex
	down   map[string]bool
	after  bool
	failed map[string]int
}

func newOutageStore(inner taskstore.Store, after bool) *outageStore {
	return &outageStore{Store: inner, after: after, down: map[string]bool{}, failed: map[string]int{}}
}

func (s *outageStore) set(method string, down bool) {
	s.mu.Lock()
	s.down[method] = down
	s.mu.Unlock()
}

func (s *outageStore) failures(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed[method]
}

// call runs f unless method is down: then it fails, after running f when
// the outage loses answers.
func (s *outageStore) call(method string, f func() error) error {
	s.mu.Lock()
	down := s.down[method]
	if down {
		s.failed[method]++
	}
	s.mu.Unlock()
	if !down {
		return f()
	}
	if s.after {
		f()
	}
	return fmt.Errorf("outage: %s: connection reset: %w", method, taskstore.ErrUnavailable)
}

func (s *outageStore) Start(ctx context.Context, id string, at time.Time) error {
	return s.call("Start", func() error { return s.Store.Start(ctx, id, at) })
}

func (s *outageStore) Finish(ctx context.Context, id string, resp json.RawMessage, at time.Time) error {
	return s.call("Finish", func() error { return s.Store.Finish(ctx, id, resp, at) })
}

func (s *outageStore) RecordAttempt(ctx context.Context, id string, a taskstore.Attempt) error {
	return s.call("RecordAttempt", func() error { return s.Store.RecordAttempt(ctx, id, a) })
}

func (s *outageStore) RenewLeases(ctx context.Context, ids []string, until time.Time) error {
	return s.call("RenewLeases", func() error { return s.Store.RenewLeases(ctx, ids, until) })
}

// events counts a recorder's hook calls.
type events struct {
	finished, delivered atomic.Int64
	mu                  sync.Mutex
	codes               []string
}

func (e *events) hooks() callback.Hooks {
	return callback.Hooks{
		TaskFinished: func(_ context.Context, ev callback.TaskEvent) {
			e.finished.Add(1)
			e.mu.Lock()
			e.codes = append(e.codes, ev.Code)
			e.mu.Unlock()
		},
		DeliveryAttempted: func(_ context.Context, ev callback.DeliveryEvent) {
			if ev.Delivered {
				e.delivered.Add(1)
			}
		},
	}
}

var lossModes = []struct {
	name  string
	after bool
}{{"NotWritten", false}, {"AnswerLost", true}}

// TestFinishOutlivesOutage: the store is unavailable for Finish for longer
// than the lease; the response waits in memory and is recorded once the
// store answers, while the lease, renewed meanwhile, keeps a second
// recorder's sweeper from finishing the task as interrupted.
func TestFinishOutlivesOutage(t *testing.T) {
	for _, mode := range lossModes {
		t.Run(mode.name, func(t *testing.T) {
			mem := newMemStore(t)
			out := newOutageStore(mem, mode.after)
			var ea, eb events
			lease := 900 * time.Millisecond
			a := newRecorder(t, out, callback.Options{Lease: lease, AttemptTimeout: 300 * time.Millisecond, Hooks: ea.hooks()})
			newRecorder(t, mem, callback.Options{Lease: lease, AttemptTimeout: 300 * time.Millisecond, Hooks: eb.hooks()})
			out.set("Finish", true)
			id, err := a.Submit(context.Background(), callback.Submission{Type: "t", Request: json.RawMessage(`{}`)},
				func(context.Context) (json.RawMessage, error) { return json.RawMessage(`{"answer":42}`), nil })
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, "Finish failing", func() bool { return out.failures("Finish") >= 3 })
			time.Sleep(2 * lease) // the lease would have run out twice over
			out.set("Finish", false)
			task := waitFinished(t, mem, id)
			eventually(t, "the TaskFinished hook", func() bool { return ea.finished.Load() == 1 })
			if !strings.Contains(string(task.Response), `"answer":42`) || task.Status() != taskstore.StatusSucceeded {
				t.Fatalf("response %s (status %s), want the run's answer", task.Response, task.Status())
			}
			if eb.finished.Load() != 0 {
				t.Fatalf("the other recorder finished the task (codes %v)", eb.codes)
			}
		})
	}
}

// TestStartOutlivesOutage: a task whose start cannot be recorded waits for
// the store, then runs and finishes.
func TestStartOutlivesOutage(t *testing.T) {
	mem := newMemStore(t)
	out := newOutageStore(mem, true)
	rec := newRecorder(t, out, callback.Options{})
	out.set("Start", true)
	var ran atomic.Bool
	id, err := rec.Submit(context.Background(), callback.Submission{Type: "t", Request: json.RawMessage(`{}`)},
		func(context.Context) (json.RawMessage, error) { ran.Store(true); return json.RawMessage(`{}`), nil })
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "Start failing", func() bool { return out.failures("Start") >= 3 })
	out.set("Start", false)
	if task := waitFinished(t, mem, id); task.Status() != taskstore.StatusSucceeded || task.StartedAt.IsZero() || !ran.Load() {
		t.Fatalf("task %+v, ran %v", task, ran.Load())
	}
}

// TestDeliveredNotResent: the receiver accepts the callback, then recording
// it fails while the store is unavailable; the outcome waits in memory and
// is recorded once the store answers. The callback is sent once.
func TestDeliveredNotResent(t *testing.T) {
	for _, mode := range lossModes {
		t.Run(mode.name, func(t *testing.T) {
			mem := newMemStore(t)
			out := newOutageStore(mem, mode.after)
			var ev events
			rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
				out.set("RecordAttempt", true) // down from the moment it is accepted
				w.WriteHeader(http.StatusNoContent)
			})
			rec := newRecorder(t, out, callback.Options{Lease: 3 * time.Second, AttemptTimeout: time.Second, Hooks: ev.hooks()})
			id, err := rec.Submit(context.Background(), callback.Submission{Type: "t", Request: json.RawMessage(`{}`), CallbackURL: rc.URL},
				func(context.Context) (json.RawMessage, error) { return json.RawMessage(`{}`), nil })
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, "RecordAttempt failing", func() bool { return out.failures("RecordAttempt") >= 3 })
			time.Sleep(500 * time.Millisecond)
			out.set("RecordAttempt", false)
			task := waitDelivery(t, mem, id)
			eventually(t, "the DeliveryAttempted hook", func() bool { return ev.delivered.Load() == 1 })
			if task.CallbackStatus() != taskstore.CallbackDelivered || task.Callback.Attempts != 1 || rc.count() != 1 {
				t.Fatalf("callback %+v after %d deliveries; want delivered once, one attempt", task.Callback, rc.count())
			}
		})
	}
}

// TestCloseDuringOutage: Close does not wait for the store grace: once its
// context ends, the writes waiting for the store are dropped (the task is
// left to be finished as interrupted once its lease expires).
func TestCloseDuringOutage(t *testing.T) {
	mem := newMemStore(t)
	out := newOutageStore(mem, false)
	rec, err := startRecorder(t, out, callback.Options{StoreGrace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	out.set("Finish", true)
	if _, err := rec.Submit(context.Background(), callback.Submission{Type: "t", Request: json.RawMessage(`{}`)},
		func(context.Context) (json.RawMessage, error) { return json.RawMessage(`{}`), nil }); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Finish failing", func() bool { return out.failures("Finish") >= 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- rec.Close(ctx) }()
	select {
	case err := <-closed:
		if err == nil {
			t.Fatal("Close returned nil although a task could not be recorded")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Close waited for the store grace")
	}
}

func TestStoreGraceValidated(t *testing.T) {
	if _, err := callback.New(newMemStore(t), callback.Options{StoreGrace: -time.Second}); err == nil {
		t.Fatal("New accepted a negative StoreGrace")
	}
}
