package storetest

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// testRepeatStart: a Start repeated with the same time succeeds and changes
// nothing; another time, or a finished task, still conflicts.
func testRepeatStart(t *testing.T, s taskstore.Store) {
	mustCreate(t, s, task("s", 0))
	at := base.Add(2*time.Second + 7*time.Millisecond + 300) // truncated to the millisecond
	must(t, s.Start(ctx, "s", at))
	want := mustGet(t, s, "s")
	must(t, s.Start(ctx, "s", at))
	must(t, s.Start(ctx, "s", storekit.Millis(at)))
	equal(t, mustGet(t, s, "s"), want)
	wantErr(t, "Start at another time", s.Start(ctx, "s", at.Add(time.Millisecond)), taskstore.ErrConflict)
	equal(t, mustGet(t, s, "s"), want)

	must(t, s.Finish(ctx, "s", json.RawMessage(`{}`), at))
	wantErr(t, "Start repeated on a finished task", s.Start(ctx, "s", at), taskstore.ErrConflict)
}

// testRepeatFinish: a Finish repeated with the same response bytes and the
// same time succeeds and changes nothing, with or without a callback; any
// other response (even one differing in white space only) or time
// conflicts.
func testRepeatFinish(t *testing.T, s taskstore.Store) {
	x := task("f", 0)
	x.Callback.URL = "https://example.com/cb"
	x.LeaseUntil = base.Add(time.Minute)
	mustCreate(t, s, x, task("nocb", 0))
	at := base.Add(3 * time.Second)
	resp := json.RawMessage(`{"success":true,"task_id":"f","data":[{"url":"https://cdn.example.com/x.png"}]}`)
	for _, id := range []string{"f", "nocb"} {
		must(t, s.Finish(ctx, id, resp, at))
		want := mustGet(t, s, id)
		must(t, s.Finish(ctx, id, resp, at))
		equal(t, mustGet(t, s, id), want)
		for what, err := range map[string]error{
			"another time":          s.Finish(ctx, id, resp, at.Add(time.Millisecond)),
			"white space added":     s.Finish(ctx, id, json.RawMessage(string(resp)+" "), at),
			"another response":      s.Finish(ctx, id, json.RawMessage(`{"success":false}`), at),
			"keys in another order": s.Finish(ctx, id, json.RawMessage(`{"task_id":"f","success":true,"data":[{"url":"https://cdn.example.com/x.png"}]}`), at),
		} {
			wantErr(t, id+": Finish with "+what, err, taskstore.ErrConflict)
		}
		equal(t, mustGet(t, s, id), want)
	}
	// The repeat leaves the callback as the first finish made it, even
	// once it is delivered.
	must(t, s.RecordAttempt(ctx, "f", taskstore.Attempt{At: at, Status: 204, Delivered: true}))
	want := mustGet(t, s, "f")
	must(t, s.Finish(ctx, "f", resp, at))
	equal(t, mustGet(t, s, "f"), want)
}

// testRepeatAttempt: RecordAttempt repeated with the same attempt succeeds
// and changes nothing (Attempts does not grow), for each outcome; an
// attempt that differs is recorded, or conflicts, as usual.
func testRepeatAttempt(t *testing.T, s taskstore.Store) {
	finished(t, s, map[string]int{"d": 0, "r": 0, "g": 0})
	now := base.Add(time.Second)
	claimed, err := s.ClaimDeliveries(ctx, "", now, time.Minute, 10)
	must(t, err)
	if len(claimed) != 3 {
		t.Fatalf("claimed %v, want d, g and r", ids(claimed))
	}
	next := now.Add(5 * time.Second)
	attempts := map[string]taskstore.Attempt{
		"d": {At: now, Status: 204, Delivered: true},
		"r": {At: now, Status: 503, Error: "status 503", Next: next},
		"g": {At: now, Status: 410, Error: "status 410: gone"},
	}
	for id, a := range attempts {
		must(t, s.RecordAttempt(ctx, id, a))
		want := mustGet(t, s, id)
		if want.Callback.Attempts != 1 {
			t.Fatalf("%s: Attempts = %d after one attempt", id, want.Callback.Attempts)
		}
		must(t, s.RecordAttempt(ctx, id, a))
		equal(t, mustGet(t, s, id), want)
	}

	// A delivered or given-up callback takes no other attempt.
	for what, err := range map[string]error{
		"delivered at another time": s.RecordAttempt(ctx, "d", taskstore.Attempt{At: now.Add(time.Millisecond), Status: 204, Delivered: true}),
		"delivered, another status": s.RecordAttempt(ctx, "d", taskstore.Attempt{At: now, Status: 200, Delivered: true}),
		"given up, another error":   s.RecordAttempt(ctx, "g", taskstore.Attempt{At: now, Status: 410, Error: "gone"}),
		"given up, then delivered":  s.RecordAttempt(ctx, "g", taskstore.Attempt{At: now, Status: 204, Delivered: true}),
	} {
		wantErr(t, what, err, taskstore.ErrConflict)
	}
	// A pending callback takes an attempt that is not the same one.
	must(t, s.RecordAttempt(ctx, "r", taskstore.Attempt{At: now, Status: 503, Error: "status 503", Next: next.Add(time.Second)}))
	if got := mustGet(t, s, "r"); got.Callback.Attempts != 2 || !got.Callback.NextAttemptAt.Equal(next.Add(time.Second)) {
		t.Fatalf("another attempt on the pending callback: %+v", got.Callback)
	}

	// A claimed callback whose claim ends at the attempt's Next is not
	// taken for a repeat: the claim marks a new attempt.
	claimed, err = s.ClaimDeliveries(ctx, "", next.Add(time.Second), 4*time.Second, 10)
	must(t, err)
	if len(claimed) != 1 || claimed[0].ID != "r" {
		t.Fatalf("claimed %v, want r", ids(claimed))
	}
	a := taskstore.Attempt{At: now, Status: 503, Error: "status 503", Next: claimed[0].Callback.NextAttemptAt}
	must(t, s.RecordAttempt(ctx, "r", a))
	if got := mustGet(t, s, "r"); got.Callback.Attempts != 3 {
		t.Fatalf("an attempt after a claim ending at its Next: Attempts = %d, want 3", got.Callback.Attempts)
	}
	must(t, s.RecordAttempt(ctx, "r", a))
	if got := mustGet(t, s, "r"); got.Callback.Attempts != 3 {
		t.Fatalf("its repeat: Attempts = %d, want 3", got.Callback.Attempts)
	}
}
