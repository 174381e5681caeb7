package pgstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// importTasks returns n tasks in every state a copy meets: finished with a
// delivered, pending, given-up callback or none, and unfinished with a
// lease; request and response with whitespace and escapes that must come
// back byte for byte.
func importTasks(n int, prefix string) []taskstore.Task {
	base := time.UnixMilli(1_700_000_000_000).UTC()
	out := make([]taskstore.Task, n)
	for i := range out {
		created := base.Add(time.Duration(i) * time.Millisecond)
		t := taskstore.Task{
			ID: fmt.Sprintf("%s-%05d", prefix, i), TraceID: fmt.Sprintf("trace-%d", i%7), Type: "images_generations",
			Request:   json.RawMessage(fmt.Sprintf("{\"prompt\" : \"caf\\u00e9 %d\",\n \"n\":1}", i)),
			CreatedAt: created, ApplicationID: "app", UserID: fmt.Sprintf("user-%d", i%3), CredentialID: "cred",
		}
		switch i % 5 {
		case 0: // succeeded, delivered
			t.Response, t.StartedAt, t.FinishedAt = json.RawMessage(`{"success":true, "x":[1,2]}`), created.Add(time.Millisecond), created.Add(time.Second)
			t.Callback = taskstore.Callback{URL: "https://example.com/cb", Attempts: 1, DeliveredAt: created.Add(2 * time.Second), LastStatus: 204}
		case 1: // failed, callback pending a retry
			t.Response, t.StartedAt, t.FinishedAt = json.RawMessage(`{"success":false}`), created.Add(time.Millisecond), created.Add(time.Second)
			t.Callback = taskstore.Callback{URL: "https://example.com/cb", Attempts: 2, NextAttemptAt: created.Add(time.Hour),
				LastStatus: 503, LastError: "status 503"}
		case 2: // failed callback
			t.Response, t.FinishedAt = json.RawMessage(`{"success":true}`), created.Add(time.Second)
			t.Callback = taskstore.Callback{URL: "https://example.com/cb", Attempts: 7, LastStatus: 500, LastError: "status 500"}
		case 3: // running, leased
			t.StartedAt, t.LeaseUntil = created.Add(time.Millisecond), created.Add(time.Minute)
			t.Callback.URL = "https://example.com/cb"
		case 4: // succeeded, no callback
			t.Response, t.FinishedAt = json.RawMessage(`{"success":true}`), created.Add(time.Second)
		}
		out[i] = t
	}
	return out
}

func sameTask(a, b taskstore.Task) bool {
	return string(a.AppendJSON(nil)) == string(b.AppendJSON(nil)) && a.Callback == b.Callback &&
		a.LeaseUntil.Equal(b.LeaseUntil) && (a.Response == nil) == (b.Response == nil) &&
		a.Callback.NextAttemptAt.Equal(b.Callback.NextAttemptAt) && a.Callback.DeliveredAt.Equal(b.Callback.DeliveredAt)
}

func TestImport(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	tasks := importTasks(3000, "a")
	if err := s.Import(ctx, tasks); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1, 2, 3, 4, 1234, 2999} {
		got, err := s.Get(ctx, tasks[i].ID)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := storekit.Normalize(tasks[i], time.Now())
		if !sameTask(got, want) {
			t.Errorf("Get = %+v\nwant %+v", got, want)
		}
	}
	// The counters kept by triggers include imported tasks, per status.
	for _, f := range []taskstore.Filter{
		{UserID: "user-1"}, {Status: taskstore.StatusRunning}, {CallbackStatus: taskstore.CallbackFailed},
		{Status: taskstore.StatusFailed}, {},
	} {
		want := 0
		for _, x := range tasks {
			if (f.UserID == "" || x.UserID == f.UserID) && (f.Status == "" || x.Status() == f.Status) &&
				(f.CallbackStatus == "" || x.CallbackStatus() == f.CallbackStatus) {
				want++
			}
		}
		if _, total, err := s.Find(ctx, f); err != nil || total != want {
			t.Errorf("Find(%+v) total = %d, %v; want %d", f, total, err, want)
		}
	}
	// Imported pending callbacks are due at their time, unclaimed.
	claimed, err := s.ClaimDeliveries(ctx, "", time.UnixMilli(1_800_000_000_000), time.Minute, 10)
	if err != nil || len(claimed) != 10 || claimed[0].ID != tasks[1].ID {
		t.Errorf("ClaimDeliveries = %d tasks, %v", len(claimed), err)
	}
	if err := s.Import(ctx, nil); err != nil {
		t.Errorf("Import(nil) = %v", err)
	}
}

// Import is all or nothing: a duplicate (stored, or twice in the batch) or
// an invalid task stores none of the batch.
func TestImportAllOrNothing(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	if err := s.Import(ctx, importTasks(10, "a")); err != nil {
		t.Fatal(err)
	}
	fresh := importTasks(5, "b")
	nul := importTasks(1, "c")[0]
	nul.UserID = "a\x00b"
	for name, tc := range map[string]struct {
		tasks []taskstore.Task
		want  error
	}{
		"stored":   {append(fresh, importTasks(1, "a")...), taskstore.ErrConflict},
		"twice":    {append(fresh, fresh[2]), taskstore.ErrConflict},
		"invalid":  {append(fresh, taskstore.Task{ID: "x", Type: "t", Request: json.RawMessage(`{`)}), taskstore.ErrInvalid},
		"nul text": {append(fresh, nul), taskstore.ErrInvalid},
	} {
		if err := s.Import(ctx, tc.tasks); !errors.Is(err, tc.want) {
			t.Errorf("%s: Import = %v, want %v", name, err, tc.want)
		}
		if _, total, err := s.Find(ctx, taskstore.Filter{}); err != nil || total != 10 {
			t.Errorf("%s: %d tasks stored after a failed Import, want 10 (%v)", name, total, err)
		}
	}
	c, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Import(c, fresh); !errors.Is(err, context.Canceled) {
		t.Errorf("Import with a cancelled context = %v", err)
	}
}
