package sqlitestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

func importTasks(n int, prefix string) []taskstore.Task {
	out := make([]taskstore.Task, n)
	for i := range out {
		created := time.UnixMilli(1_700_000_000_000 + int64(i))
		out[i] = taskstore.Task{
			ID: fmt.Sprintf("%s-%05d", prefix, i), TraceID: "trace", Type: "images_generations",
			Request:   json.RawMessage(`{"prompt":"a cat"}`),
			Response:  json.RawMessage(`{"success":true}`),
			CreatedAt: created, StartedAt: created.Add(time.Millisecond), FinishedAt: created.Add(time.Second),
			ApplicationID: "app", UserID: "user", CredentialID: "cred",
			Callback: taskstore.Callback{URL: "https://example.com/cb", NextAttemptAt: created.Add(time.Second)},
		}
	}
	return out
}

func TestImport(t *testing.T) {
	s := openInternal(t)
	ctx := context.Background()
	tasks := importTasks(3000, "a")
	commits := s.w.commits.Load()
	if err := s.Import(ctx, tasks); err != nil {
		t.Fatal(err)
	}
	if c := s.w.commits.Load() - commits; c != 1 {
		t.Errorf("Import committed %d transactions, want 1", c)
	}
	got, err := s.Get(ctx, tasks[1234].ID)
	if err != nil {
		t.Fatal(err)
	}
	want := tasks[1234]
	if string(got.AppendJSON(nil)) != string(want.AppendJSON(nil)) ||
		got.Callback.URL != want.Callback.URL || !got.Callback.NextAttemptAt.Equal(want.Callback.NextAttemptAt) {
		t.Errorf("Get = %+v\nwant %+v", got, want)
	}
	// The counters kept by triggers include imported tasks.
	if _, total, err := s.Find(ctx, taskstore.Filter{UserID: "user"}); err != nil || total != 3000 {
		t.Errorf("Find total = %d, %v; want 3000", total, err)
	}
	// Imported finished tasks with a callback are pending deliveries.
	claimed, err := s.ClaimDeliveries(ctx, "", time.UnixMilli(1_800_000_000_000), time.Minute, 10)
	if err != nil || len(claimed) != 10 || claimed[0].ID != tasks[0].ID {
		t.Errorf("ClaimDeliveries = %d tasks, %v", len(claimed), err)
	}
	if err := s.Import(ctx, nil); err != nil {
		t.Errorf("Import(nil) = %v", err)
	}
}

func TestImportAllOrNothing(t *testing.T) {
	s := openInternal(t)
	ctx := context.Background()
	if err := s.Create(ctx, importTasks(1, "dup")[0]); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		t.Helper()
		_, total, err := s.Find(ctx, taskstore.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		return total
	}

	t.Run("ErrConflict", func(t *testing.T) {
		tasks := append(importTasks(10, "x"), importTasks(1, "dup")...)
		err := s.Import(ctx, tasks)
		if !errors.Is(err, taskstore.ErrConflict) {
			t.Fatalf("Import = %v, want ErrConflict", err)
		}
		if n := count(); n != 1 {
			t.Errorf("%d tasks stored after a failed import, want 1", n)
		}
	})
	t.Run("DuplicateInBatch", func(t *testing.T) {
		tasks := append(importTasks(5, "y"), importTasks(5, "y")...)
		if err := s.Import(ctx, tasks); !errors.Is(err, taskstore.ErrConflict) {
			t.Fatalf("Import = %v, want ErrConflict", err)
		}
		if n := count(); n != 1 {
			t.Errorf("%d tasks stored after a failed import, want 1", n)
		}
	})
	t.Run("ErrInvalid", func(t *testing.T) {
		tasks := importTasks(5, "z")
		tasks[3].Type = ""
		err := s.Import(ctx, tasks)
		if !errors.Is(err, taskstore.ErrInvalid) || taskstore.Reason(err) == "" {
			t.Fatalf("Import = %v, want ErrInvalid with a reason", err)
		}
		if n := count(); n != 1 {
			t.Errorf("%d tasks stored after a failed import, want 1", n)
		}
	})
	t.Run("Cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := s.Import(cctx, importTasks(5, "c")); !errors.Is(err, context.Canceled) {
			t.Fatalf("Import = %v, want context.Canceled", err)
		}
	})
}

// TestImportWithConcurrentWrites runs imports next to Creates: the Creates
// are grouped among themselves, never into an import's transaction, and
// every write lands.
func TestImportWithConcurrentWrites(t *testing.T) {
	s := openInternal(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			if err := s.Import(ctx, importTasks(500, fmt.Sprintf("imp%d", g))); err != nil {
				t.Error(err)
			}
		})
		wg.Go(func() {
			for _, task := range importTasks(100, fmt.Sprintf("cre%d", g)) {
				if err := s.Create(ctx, task); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if _, total, err := s.Find(ctx, taskstore.Filter{}); err != nil || total != 4*600 {
		t.Errorf("Find total = %d, %v; want %d", total, err, 4*600)
	}
}
