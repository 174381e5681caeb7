package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// Outage lets RunUnavailable cut a store off from its data and restore it,
// as a database server going away and coming back would.
type Outage struct {
	// Store is open and reaches its data when RunUnavailable is called.
	Store taskstore.Store
	// Cut makes the data unreachable (say, a proxy in front of the
	// database refuses connections and drops the open ones); Restore
	// makes it reachable again.
	Cut, Restore func()
}

// RunUnavailable checks what a store that keeps its tasks elsewhere (a
// database server) promises about taskstore.ErrUnavailable, with a fresh
// Outage for each subtest:
//
//   - while cut, every method fails with an error that wraps
//     ErrUnavailable (and no other sentinel: a task the store cannot
//     reach is not "not found"), within ten seconds (give the store a
//     shorter retry grace than that);
//   - once restored, the store works again without being reopened, and
//     the writes that failed while cut did not happen, except those
//     whose answer may have been lost;
//   - Start, Finish and RecordAttempt repeated after the outage, with the
//     arguments of calls that failed during it, succeed whether or not the
//     failed call was applied.
//
// Stores that keep their data in-process (memstore, sqlitestore) have no
// such outage and need not run it.
func RunUnavailable(t *testing.T, newOutage func(t *testing.T) Outage) {
	t.Helper()
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, Outage)
	}{
		{"EveryMethod", testUnavailableEveryMethod},
		{"RepeatAfterOutage", testUnavailableRepeat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newOutage(t)
			t.Cleanup(func() {
				o.Restore()
				o.Store.Close()
			})
			tc.fn(t, o)
		})
	}
}

// unavailableWithin is how long a call may take to report the outage.
const unavailableWithin = 10 * time.Second

func testUnavailableEveryMethod(t *testing.T, o Outage) {
	s := o.Store
	x := task("x", 0)
	x.Callback.URL = "http://r/"
	mustCreate(t, s, x)
	o.Cut()
	for name, call := range everyMethod(s) {
		c, cancel := context.WithTimeout(ctx, unavailableWithin)
		began := time.Now()
		err := call(c)
		cancel()
		switch {
		case !errors.Is(err, taskstore.ErrUnavailable):
			t.Errorf("%s while cut off: %v, want an error wrapping ErrUnavailable", name, err)
		case isSentinel(err), errors.Is(err, taskstore.ErrInvalid), errors.Is(err, taskstore.ErrClosed):
			t.Errorf("%s while cut off: %v, also wraps another sentinel", name, err)
		case time.Since(began) >= unavailableWithin:
			t.Errorf("%s while cut off took %v", name, time.Since(began))
		}
	}
	o.Restore()
	// The store works again, and the task is as it was: Delete, Start,
	// Finish and RecordAttempt did not reach it (a cut store's calls fail
	// before sending anything, or their answer is lost: either way the
	// writes of everyMethod on "x" would show).
	got := mustGet(t, s, "x")
	if !got.StartedAt.IsZero() || got.Finished() {
		t.Fatalf("a write that failed while cut off was applied: %+v", got)
	}
	if _, err := s.Get(ctx, "new"); err != nil && !errors.Is(err, taskstore.ErrNotFound) {
		t.Fatalf("Get after the outage: %v", err)
	}
	must(t, s.Start(ctx, "x", base))
	must(t, s.Finish(ctx, "x", json.RawMessage(`{"ok":true}`), base.Add(time.Second)))
}

func testUnavailableRepeat(t *testing.T, o Outage) {
	s := o.Store
	x := task("x", 0)
	x.Callback.URL = "http://r/"
	mustCreate(t, s, x)
	start, resp, finish := base.Add(time.Second), json.RawMessage(`{"success":true,"n":1}`), base.Add(2*time.Second)
	a := taskstore.Attempt{At: base.Add(3 * time.Second), Status: 204, Delivered: true}

	o.Cut()
	c, cancel := context.WithTimeout(ctx, unavailableWithin)
	defer cancel()
	for what, err := range map[string]error{
		"Start":  s.Start(c, "x", start),
		"Finish": s.Finish(c, "x", resp, finish),
	} {
		wantErr(t, what+" while cut off", err, taskstore.ErrUnavailable)
	}
	o.Restore()
	must(t, s.Start(ctx, "x", start))
	must(t, s.Start(ctx, "x", start))
	must(t, s.Finish(ctx, "x", resp, finish))
	must(t, s.Finish(ctx, "x", resp, finish))

	o.Cut()
	wantErr(t, "RecordAttempt while cut off", s.RecordAttempt(c, "x", a), taskstore.ErrUnavailable)
	o.Restore()
	must(t, s.RecordAttempt(ctx, "x", a))
	must(t, s.RecordAttempt(ctx, "x", a))
	got := mustGet(t, s, "x")
	if got.Callback.Attempts != 1 || got.CallbackStatus() != taskstore.CallbackDelivered ||
		!got.StartedAt.Equal(start) || !got.FinishedAt.Equal(finish) || string(got.Response) != string(resp) {
		t.Fatalf("after the repeats: %+v", got)
	}
}
