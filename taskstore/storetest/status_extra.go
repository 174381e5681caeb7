package storetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// A finished task's status is taskstore.Succeeded of its response, whether
// Create or Finish stored it, for responses a JSON function of a database
// may read otherwise: duplicate "success" members (the last counts), an
// escaped key, a string or nested "success", a document that is no object.
// Find by status agrees with it.
func testStatusSuccessBit(t *testing.T, s taskstore.Store) {
	responses := []string{
		`{"success":true}`,
		`{ "success" : true , "data" : [] }`,
		`{"success":false,"success":true}`,
		`{"success":true,"success":false}`,
		`{"\u0073uccess":true}`,
		`{"success":"true"}`,
		`{"success":1}`,
		`{"data":{"success":true}}`,
		`[{"success":true}]`,
		`true`,
		`{}`,
	}
	want := map[taskstore.Status][]string{}
	at := base.Add(time.Minute)
	for i, r := range responses {
		resp := json.RawMessage(r)
		st := taskstore.StatusFailed
		if taskstore.Succeeded(resp) {
			st = taskstore.StatusSucceeded
		}
		created := task(fmt.Sprintf("c-%02d", i), 2*i)
		created.FinishedAt, created.Response = at, resp
		mustCreate(t, s, created)
		finished := task(fmt.Sprintf("f-%02d", i), 2*i+1)
		mustCreate(t, s, finished)
		must(t, s.Finish(ctx, finished.ID, resp, at))
		for _, id := range []string{created.ID, finished.ID} {
			if got := mustGet(t, s, id).Status(); got != st {
				t.Fatalf("%s with response %s: status %s, want %s", id, r, got, st)
			}
			want[st] = append([]string{id}, want[st]...) // newest first
		}
	}
	for _, st := range []taskstore.Status{taskstore.StatusSucceeded, taskstore.StatusFailed} {
		got, total := find(t, s, taskstore.Filter{Status: st, Limit: 100})
		if total != len(want[st]) || !slices.Equal(got, want[st]) {
			t.Fatalf("Find(status %s) = %d %v\nwant %d %v", st, total, got, len(want[st]), want[st])
		}
	}
}

// RedeliverFailed takes the tasks finished at or after since to the
// nanosecond, though stores keep milliseconds: since inside a millisecond
// leaves out the tasks finished at its start.
func testRedeliverFailedSince(t *testing.T, s taskstore.Store) {
	finishedAt := base.Add(time.Second) // whole milliseconds
	for _, id := range []string{"a", "b"} {
		x := task(id, 0)
		x.Callback.URL = "https://hooks.example.com/" + id
		x.FinishedAt, x.Response = finishedAt, json.RawMessage(`{"success":false}`)
		x.Callback.Attempts, x.Callback.LastStatus = 1, 410
		mustCreate(t, s, x)
	}
	at := base.Add(time.Hour)
	got, err := s.RedeliverFailed(ctx, "", finishedAt.Add(500*time.Microsecond), at, 10)
	must(t, err)
	if len(got) != 0 {
		t.Fatalf("RedeliverFailed(since half a millisecond after they finished) = %v, want none", got)
	}
	got, err = s.RedeliverFailed(ctx, "", finishedAt.Add(-500*time.Microsecond), at, 1)
	must(t, err)
	if len(got) != 1 {
		t.Fatalf("RedeliverFailed(since half a millisecond before, limit 1) = %v, want one", got)
	}
	got2, err := s.RedeliverFailed(ctx, "", finishedAt, at, 10)
	must(t, err)
	if len(got2) != 1 || got2[0] == got[0] {
		t.Fatalf("RedeliverFailed(since the very millisecond) = %v after %v, want the other one", got2, got)
	}
	for _, id := range []string{"a", "b"} {
		if g := mustGet(t, s, id); g.CallbackStatus() != taskstore.CallbackPending || !g.Callback.NextAttemptAt.Equal(at) {
			t.Fatalf("%s after RedeliverFailed: %q due %v", id, g.CallbackStatus(), g.Callback.NextAttemptAt)
		}
	}
}
