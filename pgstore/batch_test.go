package pgstore

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

// pending returns a call of kind k waiting to be batched.
func pending(id string, args ...any) *pendingUpdate {
	return &pendingUpdate{ctx: context.Background(), id: id, args: args, done: make(chan struct{})}
}

// TestUpdateBatch writes batches of each kind with one statement: every
// call gets its own answer, a second call for an id in the batch is written
// after it (and so conflicts, or repeats), a missing id changes nothing,
// and a row the server refuses fails alone.
func TestUpdateBatch(t *testing.T) {
	s, _ := openInternal(t)
	ctx := context.Background()
	now := time.Now().Truncate(time.Millisecond)
	ms := now.UnixMilli()
	for i := range 6 {
		x := taskstore.Task{ID: fmt.Sprint("b", i), Type: "t", Request: json.RawMessage(`{}`), Callback: taskstore.Callback{URL: "http://r/"}}
		if err := s.Create(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	run := func(k *updateKind, batch ...*pendingUpdate) {
		t.Helper()
		s.updateBatch(k, batch)
		for _, p := range batch {
			<-p.done
		}
	}

	starts := []*pendingUpdate{pending("b0", ms), pending("b1", ms), pending("b2", ms), pending("b0", ms+1), pending("missing", ms)}
	run(s.starts, starts...)
	for i, want := range []bool{true, true, true, false, false} {
		if p := starts[i]; p.changed != want || p.err != nil {
			t.Errorf("start %d (%s): changed %v, err %v; want changed %v", i, p.id, p.changed, p.err, want)
		}
	}

	resp := func(i int) string { return fmt.Sprintf(`{"success":true,"n":%d}`, i) }
	finishes := []*pendingUpdate{pending("b0", resp(0), ms, true), pending("b1", resp(1), ms, true),
		pending("b0", resp(9), ms, true), pending("b3", "{\"bad\":\"\xff\"}", ms, false), pending("b4", resp(4), ms, true)}
	run(s.finishes, finishes...)
	for i, p := range finishes {
		switch {
		case i == 2 && (p.changed || p.err != nil): // written after, as a second finish: nothing changes
			t.Errorf("second finish of b0: changed %v, err %v", p.changed, p.err)
		case i == 3 && !errors.Is(p.err, taskstore.ErrInvalid):
			t.Errorf("finish with invalid UTF-8: err %v, want ErrInvalid", p.err)
		case i != 2 && i != 3 && (!p.changed || p.err != nil):
			t.Errorf("finish %d (%s): changed %v, err %v", i, p.id, p.changed, p.err)
		}
	}
	if got, _ := s.Get(ctx, "b0"); string(got.Response) != resp(0) || !got.StartedAt.Equal(now) {
		t.Errorf("b0: response %s, started %v; want the first finish's, started at %v", got.Response, got.StartedAt, now)
	}

	if _, err := s.ClaimDeliveries(ctx, "", now, time.Minute, 10); err != nil {
		t.Fatal(err)
	}
	records := []*pendingUpdate{pending("b0", 204, "", ms, int64(0)), pending("b1", 503, "status 503", int64(0), ms+5000),
		pending("b4", 410, "gone", int64(0), int64(0)), pending("b2", 204, "", ms, int64(0))}
	run(s.records, records...)
	for i, want := range []bool{true, true, true, false} { // b2 is unfinished
		if p := records[i]; p.changed != want || p.err != nil {
			t.Errorf("record %d (%s): changed %v, err %v; want changed %v", i, p.id, p.changed, p.err, want)
		}
	}
	for id, want := range map[string]taskstore.CallbackStatus{"b0": taskstore.CallbackDelivered,
		"b1": taskstore.CallbackPending, "b4": taskstore.CallbackFailed} {
		if got, _ := s.Get(ctx, id); got.CallbackStatus() != want || got.Callback.Attempts != 1 {
			t.Errorf("%s: callback %v after %d attempts, want %v after 1", id, got.CallbackStatus(), got.Callback.Attempts, want)
		}
	}
	checkCounters(t, s)
}

// TestUpdatesGrouped: many concurrent Starts, Finishes and RecordAttempts
// on distinct tasks, and racing Finishes on one task, all get the single
// call's answers.
func TestUpdatesGrouped(t *testing.T) {
	s, _ := openInternal(t)
	ctx := context.Background()
	const n = 200
	now := time.Now()
	for i := range n {
		x := taskstore.Task{ID: fmt.Sprintf("g%03d", i), Type: "t", Request: json.RawMessage(`{}`), Callback: taskstore.Callback{URL: "http://r/"}}
		if err := s.Create(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	parallel := func(what string, f func(i int) error) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() { errs[i] = f(i) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	parallel("Start", func(i int) error { return s.Start(ctx, fmt.Sprintf("g%03d", i), now) })
	parallel("Finish", func(i int) error {
		return s.Finish(ctx, fmt.Sprintf("g%03d", i), json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)), now)
	})
	claimed, err := s.ClaimDeliveries(ctx, "", now.Add(time.Second), time.Minute, n)
	if err != nil || len(claimed) != n {
		t.Fatalf("claimed %d, %v", len(claimed), err)
	}
	parallel("RecordAttempt", func(i int) error {
		return s.RecordAttempt(ctx, fmt.Sprintf("g%03d", i), taskstore.Attempt{At: now, Status: 204, Delivered: true})
	})
	for i := range n {
		got, err := s.Get(ctx, fmt.Sprintf("g%03d", i))
		if err != nil || string(got.Response) != fmt.Sprintf(`{"n":%d}`, i) || got.CallbackStatus() != taskstore.CallbackDelivered ||
			got.Callback.Attempts != 1 || got.StartedAt.IsZero() {
			t.Fatalf("g%03d: %+v, %v", i, got, err)
		}
	}
	// Racing finishes of one task: one wins, whatever the batches.
	var wg sync.WaitGroup
	errs := make([]error, 32)
	x := taskstore.Task{ID: "race", Type: "t", Request: json.RawMessage(`{}`)}
	if err := s.Create(ctx, x); err != nil {
		t.Fatal(err)
	}
	for i := range errs {
		wg.Go(func() { errs[i] = s.Finish(ctx, "race", json.RawMessage(fmt.Sprintf(`{"by":%d}`, i)), now) })
	}
	wg.Wait()
	winners := 0
	for i, err := range errs {
		switch {
		case err == nil:
			winners++
			if got, _ := s.Get(ctx, "race"); string(got.Response) != fmt.Sprintf(`{"by":%d}`, i) {
				t.Errorf("finish %d won, but the response stored is %s", i, got.Response)
			}
		case !errors.Is(err, taskstore.ErrConflict):
			t.Errorf("finish %d: %v", i, err)
		}
	}
	if winners != 1 {
		t.Fatalf("%d finishes of one task succeeded, want 1", winners)
	}
	checkCounters(t, s)
}
