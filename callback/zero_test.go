package callback_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/taskstore"
)

// A Recorder not made by New answers ErrNotNew instead of panicking (Wrap,
// which has no error to return, panics at once with that message).
func TestZeroRecorder(t *testing.T) {
	var r callback.Recorder
	ctx := context.Background()
	if err := r.Close(ctx); !errors.Is(err, callback.ErrNotNew) {
		t.Errorf("Close: %v", err)
	}
	_, err := r.Submit(ctx, callback.Submission{Type: "t", Request: json.RawMessage(`{}`)},
		func(context.Context) (json.RawMessage, error) { return nil, nil })
	if !errors.Is(err, callback.ErrNotNew) {
		t.Errorf("Submit: %v", err)
	}
	if _, err := r.Redeliver(ctx, "x"); !errors.Is(err, callback.ErrNotNew) {
		t.Errorf("Redeliver: %v", err)
	}
	if _, err := r.Recover(ctx, time.Time{}); !errors.Is(err, callback.ErrNotNew) {
		t.Errorf("Recover: %v", err)
	}
	if _, err := r.Wait(ctx, "x"); !errors.Is(err, callback.ErrNotNew) {
		t.Errorf("Wait: %v", err)
	}
	if st := r.Stats(); st != (callback.Stats{}) {
		t.Errorf("Stats: %+v", st)
	}
	func() {
		defer func() {
			if v := recover(); v == nil || !strings.Contains(v.(string), "not created with New") {
				t.Errorf("Wrap on a zero Recorder: %v", v)
			}
		}()
		r.Wrap("t", http.NotFoundHandler())
	}()
}

// A closed store is a shutdown, reported as ErrClosed (which is also
// taskstore.ErrClosed): one sentinel for both.
func TestClosedStoreIsErrClosed(t *testing.T) {
	store := newMemStore(t)
	rec := newRecorder(t, store, callback.Options{})
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err := rec.Submit(ctx, callback.Submission{Type: "t", Request: json.RawMessage(`{}`)},
		func(context.Context) (json.RawMessage, error) { return nil, nil })
	if !errors.Is(err, callback.ErrClosed) || !errors.Is(err, taskstore.ErrClosed) {
		t.Errorf("Submit over a closed store: %v", err)
	}
	if _, err := rec.Redeliver(ctx, "x"); !errors.Is(err, callback.ErrClosed) {
		t.Errorf("Redeliver over a closed store: %v", err)
	}
	if _, err := rec.Wait(ctx, "x"); !errors.Is(err, callback.ErrClosed) {
		t.Errorf("Wait over a closed store: %v", err)
	}
	w := post(rec.Wrap("t", http.NotFoundHandler()), "application/json", `{"prompt":"x","async":true}`)
	errorBody(t, w, http.StatusTooManyRequests, "too_many_requests", "")
}
