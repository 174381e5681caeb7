package callback_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/taskstore"
)

// Wait returns a task once its response is recorded: by this recorder (at
// once), or by anyone else sharing the store (at its next look).
func TestWait(t *testing.T) {
	store := newMemStore(t)
	rec := newRecorder(t, store, callback.Options{})
	ctx := context.Background()
	release := make(chan struct{})
	id, err := rec.Submit(ctx, callback.Submission{Type: "t", Request: json.RawMessage(`{}`)},
		func(context.Context) (json.RawMessage, error) {
			<-release
			return json.RawMessage(`{"data":1}`), nil
		})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan taskstore.Task, 1)
	go func() {
		x, err := rec.Wait(ctx, id)
		if err != nil {
			t.Error(err)
		}
		got <- x
	}()
	select {
	case x := <-got:
		t.Fatalf("Wait returned before the task finished: %+v", x)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	x := <-got
	if x.Status() != taskstore.StatusSucceeded || string(x.Response) != `{"success":true,"task_id":"`+id+`","data":1}` {
		t.Fatalf("Wait returned %s %s", x.Status(), x.Response)
	}
	// Already finished: at once.
	if x, err := rec.Wait(ctx, id); err != nil || !x.Finished() {
		t.Fatalf("Wait on a finished task: %+v %v", x, err)
	}

	// Finished by someone else (here, straight in the store).
	other := taskstore.Task{ID: "elsewhere", Type: "t", Request: json.RawMessage(`{}`)}
	if err := store.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(20*time.Millisecond, func() { store.Finish(ctx, "elsewhere", json.RawMessage(`{"success":false}`), time.Time{}) })
	if x, err := rec.Wait(ctx, "elsewhere"); err != nil || x.Status() != taskstore.StatusFailed {
		t.Fatalf("Wait on a task finished elsewhere: %+v %v", x, err)
	}

	if _, err := rec.Wait(ctx, "missing"); !errors.Is(err, taskstore.ErrNotFound) {
		t.Fatalf("Wait on a missing task: %v", err)
	}
	if err := store.Create(ctx, taskstore.Task{ID: "never", Type: "t", Request: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if _, err := rec.Wait(cctx, "never"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait past its context: %v", err)
	}
}
