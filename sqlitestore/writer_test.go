package sqlitestore

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// holdWriter occupies the writer goroutine until the returned release is
// called, so that the calls submitted meanwhile queue up and then run as
// one batch.
func holdWriter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	taken, unblock := make(chan struct{}), make(chan struct{})
	go s.write(context.Background(), false, func(*writer) error {
		close(taken)
		<-unblock
		return nil
	})
	<-taken
	var once sync.Once
	release = func() { once.Do(func() { close(unblock) }) }
	t.Cleanup(release)
	return release
}

// waitQueued waits until n calls are queued for the writer.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); len(s.w.ch) < n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d calls queued, want %d", len(s.w.ch), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func mkTask(id string) taskstore.Task {
	return taskstore.Task{ID: id, Type: "t", Request: json.RawMessage(`{}`), UserID: "u"}
}

// TestGroupCommit runs several calls in one transaction, one of which fails
// with a system error: that call gets its error, the constraint and
// not-found failures stay with their own calls, and every other call is
// committed.
func TestGroupCommit(t *testing.T) {
	s := openInternal(t)
	ctx := context.Background()
	release := holdWriter(t, s)

	boom := errors.New("boom")
	var boomRuns atomic.Int32
	calls := []struct {
		name string
		call func() error
		want error
	}{
		{"create a", func() error { return s.Create(ctx, mkTask("a")) }, nil},
		{"create a again", func() error { return s.Create(ctx, mkTask("a")) }, taskstore.ErrConflict},
		{"create b", func() error { return s.Create(ctx, mkTask("b")) }, nil},
		{"finish missing", func() error { return s.Finish(ctx, "missing", json.RawMessage(`{}`), time.Now()) }, taskstore.ErrNotFound},
		{"system failure", func() error {
			return s.write(ctx, false, func(*writer) error { boomRuns.Add(1); return boom })
		}, boom},
		{"create c", func() error { return s.Create(ctx, mkTask("c")) }, nil},
	}
	errs := make([]error, len(calls))
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = c.call() }()
		waitQueued(t, s, i+1) // keep the queue in this order
	}
	commits, rollbacks := s.w.commits.Load(), s.w.rollbacks.Load()
	release()
	wg.Wait()
	// One transaction rolled back at the system failure, one committing
	// the five other calls.
	if c, r := s.w.commits.Load()-commits, s.w.rollbacks.Load()-rollbacks; c != 1 || r != 1 {
		t.Errorf("the batch took %d commits and %d rollbacks, want 1 and 1", c, r)
	}
	for i, c := range calls {
		if (c.want == nil) != (errs[i] == nil) || (c.want != nil && !errors.Is(errs[i], c.want)) {
			t.Errorf("%s: got %v, want %v", c.name, errs[i], c.want)
		}
	}
	if n := boomRuns.Load(); n != 1 {
		t.Errorf("failing call ran %d times, want 1", n)
	}
	for _, id := range []string{"a", "b", "c"} {
		if _, err := s.Get(ctx, id); err != nil {
			t.Errorf("Get(%s) after the batch: %v", id, err)
		}
	}
	if _, total, _ := s.Find(ctx, taskstore.Filter{UserID: "u"}); total != 3 {
		t.Errorf("total = %d, want 3", total)
	}
}

// TestCancelledWhileQueued: a call whose context ends while it waits for the
// writer returns the context's error and never runs.
func TestCancelledWhileQueued(t *testing.T) {
	s := openInternal(t)
	release := holdWriter(t, s)
	c, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Create(c, mkTask("x")) }()
	waitQueued(t, s, 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Create = %v, want context.Canceled", err)
	}
	release()
	if err := s.Create(context.Background(), mkTask("y")); err != nil { // the writer goes on
		t.Fatal(err)
	}
	if _, err := s.Get(context.Background(), "x"); !errors.Is(err, taskstore.ErrNotFound) {
		t.Fatalf("cancelled Create was stored: Get = %v", err)
	}
}

// Once the writer has taken a call, the caller gets the call's true result
// even if its context ends meanwhile: a write never happens behind the back
// of a caller told it failed.
func TestCancelledWhileRunning(t *testing.T) {
	s := openInternal(t)
	c, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := s.submit(c, true, false, func(w *writer) error {
		cancel() // the caller gives up while its write runs
		_, err := w.insert.Exec(insertArgs(mustNormalize(t, mkTask("taken")))...)
		return err
	})
	if err != nil {
		t.Fatalf("write = %v, want its own result (nil)", err)
	}
	if _, err := s.Get(context.Background(), "taken"); err != nil {
		t.Fatalf("the write that ran is not stored: Get = %v", err)
	}
}

func mustNormalize(t *testing.T, x taskstore.Task) taskstore.Task {
	t.Helper()
	n, err := storekit.Normalize(x, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return n
}
