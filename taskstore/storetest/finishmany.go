package storetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// FinishMany finishes the unfinished tasks among those listed, each exactly
// as Finish would have (response byte for byte, FinishedAt, lease cleared,
// callback due, status), skips unknown and finished ones, keeps the first
// response of an id listed twice, and answers the ids it finished in the
// order given.
func testFinishMany(t *testing.T, s taskstore.Store) {
	at := base.Add(time.Minute + 7)
	cb := task("cb", 0) // a callback, a lease, started
	cb.Callback.URL = "https://example.com/cb"
	cb.LeaseUntil = base.Add(time.Hour)
	cb.StartedAt = base.Add(time.Second)
	plain := task("plain", 1) // no callback, never started
	plain.UserID = "u1"
	done := task("done", 2) // finished already
	other := task("other", 3)
	mustCreate(t, s, cb, plain, done, other)
	must(t, s.Finish(ctx, "done", json.RawMessage(`{"first":true}`), base))
	doneBefore := mustGet(t, s, "done")

	// Responses with escapes, white space and characters a JSON encoder
	// might rewrite must come back byte for byte.
	resp := map[string]json.RawMessage{
		"cb":    json.RawMessage(" {\"success\":true, \"e\":\"\\u003c\\u2028 \u2028 \\\\ \\\" <&>\",\"n\":1.50}\n"),
		"plain": failResponse,
	}
	got, err := s.FinishMany(ctx, []taskstore.Outcome{
		{ID: "missing", Response: okResponse},
		{ID: "plain", Response: resp["plain"]},
		{ID: "done", Response: okResponse},
		{ID: "cb", Response: resp["cb"]},
		{ID: "plain", Response: okResponse}, // listed twice: the first wins
	}, at)
	must(t, err)
	if want := []string{"plain", "cb"}; !slices.Equal(got, want) {
		t.Fatalf("FinishMany answered %v, want %v", got, want)
	}

	wantCB := cb
	wantCB.Response, wantCB.FinishedAt, wantCB.LeaseUntil = resp["cb"], storekit.Millis(at), time.Time{}
	wantCB.Callback.NextAttemptAt = storekit.Millis(at)
	equal(t, mustGet(t, s, "cb"), wantCB)
	wantPlain := plain
	wantPlain.Response, wantPlain.FinishedAt = resp["plain"], storekit.Millis(at)
	equal(t, mustGet(t, s, "plain"), wantPlain)
	equal(t, mustGet(t, s, "done"), doneBefore)
	if x := mustGet(t, s, "other"); x.Finished() {
		t.Fatalf("an unlisted task was finished: %s", x.Response)
	}
	if st := mustGet(t, s, "plain").Status(); st != taskstore.StatusFailed {
		t.Fatalf("plain: status %v, want failed (its response is a failure)", st)
	}
	statusCounts(t, s, []string{"cb", "plain", "done", "other"}, "FinishMany")

	// The callback is due, as after Finish.
	claimed, err := s.ClaimDeliveries(ctx, "", at, time.Minute, 10)
	must(t, err)
	if want := []string{"cb"}; !slices.Equal(ids(claimed), want) {
		t.Fatalf("claimed %v after FinishMany, want %v", ids(claimed), want)
	}
	// Finished tasks are out of the leases: Abandoned no longer sees them.
	abandoned, err := s.Abandoned(ctx, "", base.Add(2*time.Hour), 10)
	must(t, err)
	if want := []string{"other"}; !slices.Equal(ids(abandoned), want) {
		t.Fatalf("Abandoned after FinishMany = %v, want %v", ids(abandoned), want)
	}

	// Again: nothing left to finish among them.
	got, err = s.FinishMany(ctx, []taskstore.Outcome{{ID: "cb", Response: okResponse}, {ID: "plain", Response: okResponse}}, at)
	must(t, err)
	if len(got) != 0 {
		t.Fatalf("second FinishMany answered %v, want none", got)
	}
	if x := mustGet(t, s, "cb"); string(x.Response) != string(wantCB.Response) || !x.FinishedAt.Equal(wantCB.FinishedAt) {
		t.Fatalf("second FinishMany changed cb: %s at %v", x.Response, x.FinishedAt)
	}

	// An empty list is a no-op.
	for _, list := range [][]taskstore.Outcome{nil, {}} {
		got, err := s.FinishMany(ctx, list, at)
		must(t, err)
		if len(got) != 0 {
			t.Fatalf("FinishMany(%v) answered %v", list, got)
		}
	}
}

// A zero time means now; ids that no stored task can have are simply
// unknown.
func testFinishManyEdges(t *testing.T, s taskstore.Store) {
	mustCreate(t, s, task("z", 0))
	before := time.Now().Add(-time.Second)
	long := string(make([]byte, taskstore.MaxIDLength+1))
	got, err := s.FinishMany(ctx, []taskstore.Outcome{
		{ID: "", Response: okResponse}, {ID: "bad\xff", Response: okResponse}, {ID: "nul\x00", Response: okResponse},
		{ID: long, Response: okResponse}, {ID: "z", Response: okResponse},
	}, time.Time{})
	must(t, err)
	if want := []string{"z"}; !slices.Equal(got, want) {
		t.Fatalf("FinishMany answered %v, want %v", got, want)
	}
	if f := mustGet(t, s, "z").FinishedAt; f.Before(before) || f.After(time.Now().Add(time.Second)) {
		t.Fatalf("zero at: FinishedAt %v, want about now", f)
	}
}

// One invalid response fails the whole call with ErrInvalid and finishes
// nothing.
func testFinishManyInvalid(t *testing.T, s taskstore.Store) {
	mustCreate(t, s, task("a", 0), task("b", 1))
	for _, bad := range []string{"", "{", "nope", "{\"a\":\"\xff\"}"} {
		_, err := s.FinishMany(ctx, []taskstore.Outcome{
			{ID: "a", Response: okResponse}, {ID: "b", Response: json.RawMessage(bad)},
		}, base)
		wantErr(t, fmt.Sprintf("FinishMany with response %q", bad), err, taskstore.ErrInvalid)
	}
	for _, id := range []string{"a", "b"} {
		if mustGet(t, s, id).Finished() {
			t.Fatalf("an invalid FinishMany finished %s", id)
		}
	}
}

// FinishMany racing Finish and other FinishMany calls on the same tasks:
// each task is finished exactly once, by whoever claims it in its answer
// (or a Finish that returned nil), with that caller's response.
func testFinishManyRace(t *testing.T, s taskstore.Store) {
	const tasks, callers = 20, 8
	var all []string
	for i := range tasks {
		id := fmt.Sprintf("r-%02d", i)
		mustCreate(t, s, task(id, i))
		all = append(all, id)
	}
	won := make([][]string, callers)
	var wg sync.WaitGroup
	for c := range callers {
		wg.Go(func() {
			resp := json.RawMessage(fmt.Sprintf(`{"by":%d}`, c))
			if c%2 == 0 {
				for _, id := range all {
					if err := s.Finish(ctx, id, resp, base.Add(time.Second)); err == nil {
						won[c] = append(won[c], id)
					} else if !isSentinel(err) {
						t.Errorf("Finish: %v", err)
					}
				}
				return
			}
			list := make([]taskstore.Outcome, 0, tasks)
			for i := range tasks {
				list = append(list, taskstore.Outcome{ID: all[(i+c)%tasks], Response: resp})
			}
			got, err := s.FinishMany(ctx, list, base.Add(time.Second))
			if err != nil {
				t.Errorf("FinishMany: %v", err)
			}
			won[c] = got
		})
	}
	wg.Wait()
	winner := map[string]int{}
	for c, ids := range won {
		for _, id := range ids {
			if w, ok := winner[id]; ok {
				t.Fatalf("task %s finished by callers %d and %d", id, w, c)
			}
			winner[id] = c
		}
	}
	for _, id := range all {
		w, ok := winner[id]
		if !ok {
			t.Fatalf("task %s: no caller finished it", id)
		}
		if got := mustGet(t, s, id); string(got.Response) != fmt.Sprintf(`{"by":%d}`, w) {
			t.Fatalf("task %s: response %s, want the winner's (%d)", id, got.Response, w)
		}
	}
}
