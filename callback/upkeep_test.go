package callback_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/internal/logtest"
	"github.com/tasksapi/tasks/taskstore"
)

// infoLogger logs at Info and above to buf.
func infoLogger(buf *logtest.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// countStatus is how many tasks of the store have the given status.
func countStatus(t testing.TB, s taskstore.Store, st taskstore.Status) int {
	t.Helper()
	_, n, err := s.Find(context.Background(), taskstore.Filter{Status: st})
	if err != nil {
		t.Fatalf("Find: %v", err)
	}
	return n
}

// A SoleOwner recorder takes tasks at once, however many a previous process
// left unfinished: those are finished as interrupted in the background (the
// ones with a lease far ahead too), in batches, with one log line; the
// tasks submitted meanwhile are not touched, and they run and succeed.
func TestRecoveryInBackground(t *testing.T) {
	forEachStore(t, func(t *testing.T, store taskstore.Store) {
		const expiring, farLeases = 1200, 60 // more than a read and a write of the sweep
		now := time.Now()
		var old []taskstore.Task
		for i := range expiring + farLeases {
			task := taskstore.Task{
				ID: fmt.Sprintf("old-%04d", i), TraceID: fmt.Sprintf("tr-%d", i), Type: "images_generations",
				Request: json.RawMessage(`{"prompt":"p"}`), CreatedAt: now.Add(-time.Hour + time.Duration(i)*time.Millisecond),
				StartedAt: now.Add(-time.Minute), LeaseUntil: now.Add(30 * time.Second),
			}
			if i >= expiring {
				task.LeaseUntil = now.Add(time.Hour) // a previous process with a longer lease
			}
			old = append(old, task)
		}
		if s, ok := store.(interface {
			Import(context.Context, []taskstore.Task) error
		}); ok {
			if err := s.Import(context.Background(), old); err != nil {
				t.Fatal(err)
			}
		} else {
			for _, task := range old {
				if err := store.Create(context.Background(), task); err != nil {
					t.Fatal(err)
				}
			}
		}

		var logs logtest.Buffer
		gate := make(chan struct{})
		var gateOnce sync.Once
		open := func() { gateOnce.Do(func() { close(gate) }) }
		t.Cleanup(open)
		rec := newRecorder(t, store, callback.Options{SoleOwner: true, Logger: infoLogger(&logs)})
		var ran atomic.Int64
		var mine []string
		for i := range 5 {
			id, err := rec.Submit(context.Background(), callback.Submission{Type: "t", TraceID: fmt.Sprintf("new-%d", i),
				Request: json.RawMessage(`{}`)}, func(ctx context.Context) (json.RawMessage, error) {
				ran.Add(1)
				<-gate
				return json.RawMessage(`{"done":true}`), nil
			})
			if err != nil {
				t.Fatalf("Submit while recovering: %v", err)
			}
			mine = append(mine, id)
		}

		eventually(t, "every old task finished", func() bool {
			return countStatus(t, store, taskstore.StatusFailed) == len(old)
		})
		for _, task := range []taskstore.Task{old[0], old[expiring-1], old[expiring], old[len(old)-1]} {
			got := getTask(t, store, task.ID)
			want := `{"success":false,"task_id":"` + task.ID + `","trace_id":"` + task.TraceID +
				`","error":{"code":"interrupted","message":"the task was interrupted: the process running it stopped before it finished"}}`
			if string(got.Response) != want {
				t.Errorf("task %s: response %s", task.ID, got.Response)
			}
		}
		eventually(t, "the summary line", func() bool { return strings.Contains(logs.String(), "previous process") })
		for _, id := range mine {
			if task := getTask(t, store, id); task.Finished() {
				t.Errorf("task %s, submitted to this recorder, was finished while it waited: %s", id, task.Response)
			}
		}
		open()
		for _, id := range mine {
			if task := waitFinished(t, store, id); !strings.Contains(string(task.Response), `"success":true`) {
				t.Errorf("task %s: response %s", id, task.Response)
			}
		}
		lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
		summary := 0
		for _, l := range lines {
			if strings.Contains(l, "interrupted") {
				summary++
				if !strings.Contains(l, fmt.Sprintf("tasks=%d ", len(old))) || !strings.Contains(l, "took=") {
					t.Errorf("summary line %q, want tasks=%d and took=", l, len(old))
				}
			}
		}
		if summary != 1 {
			t.Errorf("%d log lines about the recovery, want 1:\n%s", summary, logs.String())
		}
		if st := rec.Stats(); st.TasksFinished < uint64(len(old)) {
			t.Errorf("stats: %d tasks finished, want at least %d", st.TasksFinished, len(old))
		}
	})
}

// failFinishMany fails FinishMany while fail is set.
type failFinishMany struct {
	taskstore.Store
	fail  atomic.Bool
	calls atomic.Int64
}

func (s *failFinishMany) FinishMany(ctx context.Context, o []taskstore.Outcome, at time.Time) ([]string, error) {
	s.calls.Add(1)
	if s.fail.Load() {
		return nil, errors.New("injected failure")
	}
	return s.Store.FinishMany(ctx, o, at)
}

// When the store fails during the recovery, the sweeper logs it and tries
// the recovery again a lease later, lease or no lease.
func TestRecoveryRetried(t *testing.T) {
	inner := newMemStore(t)
	left := storeTask(t, inner, func(task *taskstore.Task) { task.LeaseUntil = time.Now().Add(time.Hour) })
	store := &failFinishMany{Store: inner}
	store.fail.Store(true)
	var logs logtest.Buffer
	newRecorder(t, store, callback.Options{SoleOwner: true, Logger: infoLogger(&logs),
		Lease: 300 * time.Millisecond, AttemptTimeout: 100 * time.Millisecond})
	eventually(t, "the failure logged", func() bool { return strings.Contains(logs.String(), "injected failure") })
	if getTask(t, inner, left.ID).Finished() {
		t.Fatal("finished through a failing store")
	}
	store.fail.Store(false)
	waitFinished(t, inner, left.ID)
}

// The pruner deletes every task older than the retention in batches and
// logs one line for the pass.
func TestPrunerBatches(t *testing.T) {
	store := newMemStore(t)
	const old, recent = 1100, 10
	for i := range old + recent {
		storeTask(t, store, func(task *taskstore.Task) {
			task.CreatedAt = time.Now().Add(-48*time.Hour + time.Duration(i)*time.Millisecond)
			if i >= old {
				task.CreatedAt = time.Now().Add(-time.Hour)
			}
		})
	}
	var logs logtest.Buffer
	newRecorder(t, store, callback.Options{Retention: 24 * time.Hour, Logger: infoLogger(&logs)})
	eventually(t, "the old tasks pruned", func() bool { return countTasks(t, store) == recent })
	eventually(t, "the pass logged", func() bool { return strings.Contains(logs.String(), "pruned old tasks") })
	if n := strings.Count(logs.String(), "pruned old tasks"); n != 1 {
		t.Errorf("%d log lines for one pass:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), fmt.Sprintf("deleted=%d ", old)) {
		t.Errorf("log %q, want deleted=%d", logs.String(), old)
	}
}
