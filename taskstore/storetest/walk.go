package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// walkAll walks s from the start in calls of limit tasks and returns the
// records, checking that every call but the last returns limit of them.
func walkAll(t *testing.T, s taskstore.Store, from taskstore.Cursor, limit int) []taskstore.Record {
	t.Helper()
	var all []taskstore.Record
	for calls := 0; ; calls++ {
		page, err := s.Walk(ctx, from, limit)
		if err != nil {
			t.Fatalf("Walk(%+v, %d): %v", from, limit, err)
		}
		if page == nil {
			t.Fatalf("Walk(%+v, %d): nil answer, want non-nil", from, limit)
		}
		if len(page) > limit {
			t.Fatalf("Walk(%+v, %d) returned %d records", from, limit, len(page))
		}
		all = append(all, page...)
		if len(page) < limit {
			return all
		}
		from = page[len(page)-1].Cursor()
		if calls > 10_000 {
			t.Fatal("Walk does not end")
		}
	}
}

func recordIDs(rs []taskstore.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID
	}
	return out
}

// walkOrder sorts tasks as Walk lists them.
func walkOrder(tasks []taskstore.Task) []string {
	tasks = slices.Clone(tasks)
	slices.SortFunc(tasks, func(a, b taskstore.Task) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return ids(tasks)
}

// Walk lists every task once, ascending by creation time then by id (byte
// order: upper case before lower case, non-ASCII last), across ties in one
// millisecond and tasks created before 1970, in calls of any size, and each
// record is the task as Get returns it.
func testWalkOrder(t *testing.T, s taskstore.Store) {
	if got, err := s.Walk(ctx, taskstore.Cursor{}, 10); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Walk of an empty store = %v, %v; want an empty, non-nil answer", got, err)
	}
	var all []taskstore.Task
	add := func(x taskstore.Task) {
		mustCreate(t, s, x)
		all = append(all, x)
	}
	for i, id := range []string{"b", "a", "B", "é", "a0", "z", "Z", "0"} {
		add(task(id, 5)) // one millisecond shared by eight tasks
		add(task(id+"-"+string(rune('a'+i)), i*7%11))
	}
	old := task("before-1970", 0)
	old.CreatedAt = time.Date(1969, 7, 20, 20, 17, 40, 0, time.UTC)
	add(old)
	full := task("full", 3)
	full.TraceID, full.ApplicationID, full.UserID, full.CredentialID = "tr", "app", "user", "cred"
	full.Response, full.StartedAt, full.FinishedAt = json.RawMessage(`{"success":true}`), base, base.Add(time.Second)
	full.Callback = taskstore.Callback{URL: "https://example.com/cb", Attempts: 3, NextAttemptAt: base.Add(time.Hour),
		LastStatus: 503, LastError: "status 503"}
	add(full)
	leased := task("leased", 4)
	leased.LeaseUntil = base.Add(time.Minute)
	add(leased)

	want := walkOrder(all)
	for _, limit := range []int{1, 2, 3, 7, len(all) - 1, len(all), len(all) + 1, 1000} {
		got := walkAll(t, s, taskstore.Cursor{}, limit)
		if !slices.Equal(recordIDs(got), want) {
			t.Fatalf("walk in calls of %d = %v, want %v", limit, recordIDs(got), want)
		}
	}
	for _, r := range walkAll(t, s, taskstore.Cursor{}, 5) {
		equal(t, r.Task, mustGet(t, s, r.ID))
		if r.Claimed {
			t.Fatalf("%s: Claimed without a claim", r.ID)
		}
	}

	// A walk may start anywhere: after a task's position, after a deleted
	// task's position, and at a millisecond with no id (before its tasks).
	mid := slices.Index(want, "a")
	got := walkAll(t, s, mustGet(t, s, "a").Cursor(), 4)
	if !slices.Equal(recordIDs(got), want[mid+1:]) {
		t.Fatalf("walk after a = %v, want %v", recordIDs(got), want[mid+1:])
	}
	cur := mustGet(t, s, "a0").Cursor()
	must(t, s.Delete(ctx, "a0"))
	got = walkAll(t, s, cur, 4)
	if i := slices.Index(want, "a0"); !slices.Equal(recordIDs(got), want[i+1:]) {
		t.Fatalf("walk after the deleted a0 = %v, want %v", recordIDs(got), want[i+1:])
	}
	got = walkAll(t, s, taskstore.Cursor{CreatedAt: base.Add(5 * time.Millisecond)}, 100)
	if first := recordIDs(got)[0]; first != "0" || len(got) == 0 {
		t.Fatalf("walk from (base+5ms, \"\") starts at %s, want 0 (the first id of that millisecond)", first)
	}
	// A cursor with a finer fraction than a millisecond is at its
	// millisecond, as stored times are.
	got = walkAll(t, s, taskstore.Cursor{CreatedAt: base.Add(5*time.Millisecond + 999*time.Microsecond)}, 100)
	if first := recordIDs(got)[0]; first != "0" {
		t.Fatalf("walk from (base+5.999ms, \"\") starts at %s, want 0", first)
	}
	after := walkAll(t, s, mustGet(t, s, want[len(want)-1]).Cursor(), 3)
	if len(after) != 0 {
		t.Fatalf("walk after the last task = %v, want none", recordIDs(after))
	}
}

func testWalkInvalid(t *testing.T, s taskstore.Store) {
	mustCreate(t, s, task("x", 0))
	for _, limit := range []int{0, -1} {
		_, err := s.Walk(ctx, taskstore.Cursor{}, limit)
		wantErr(t, "Walk with a limit below 1", err, taskstore.ErrInvalid)
	}
	c, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Walk(c, taskstore.Cursor{}, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Walk with a cancelled context = %v, want context.Canceled", err)
	}
	must(t, s.Close())
	_, err := s.Walk(ctx, taskstore.Cursor{}, 1)
	wantErr(t, "Walk after Close", err, taskstore.ErrClosed)
}

// Record.Claimed shows a claim on a pending callback from ClaimDeliveries
// until RecordAttempt or Redeliver ends it, expired or not (every claim
// here has expired by the wall clock), and nothing else.
func testWalkClaimed(t *testing.T, s taskstore.Store) {
	finished(t, s, map[string]int{"claimed": 0, "retried": 0, "delivered": 0, "gaveup": 0, "redelivered": 0,
		"inflight": 0, "again": 0})
	mustCreate(t, s, task("nocallback", 0))
	waiting := task("waiting", 0)
	waiting.Callback.URL = "https://example.com/w"
	mustCreate(t, s, waiting)
	now := base.Add(time.Second)
	got, err := s.ClaimDeliveries(ctx, "", now, time.Minute, 100)
	must(t, err)
	if len(got) != 7 {
		t.Fatalf("claimed %v, want the seven finished tasks", ids(got))
	}
	must(t, s.RecordAttempt(ctx, "retried", taskstore.Attempt{At: now, Status: 503, Error: "x", Next: now.Add(time.Hour)}))
	must(t, s.RecordAttempt(ctx, "delivered", taskstore.Attempt{At: now, Status: 200, Delivered: true}))
	must(t, s.RecordAttempt(ctx, "gaveup", taskstore.Attempt{At: now, Status: 410, Error: "gone"}))
	must(t, s.RecordAttempt(ctx, "again", taskstore.Attempt{At: now, Status: 200, Delivered: true}))
	for id, at := range map[string]time.Time{
		"redelivered": now.Add(2 * time.Minute), // its claim has expired: made due, claim ended
		"inflight":    now.Add(time.Second),     // in flight: left alone, claim kept
		"again":       now.Add(time.Second),     // delivered: pending again, unclaimed
	} {
		if got, err := s.Redeliver(ctx, []string{id}, at); err != nil || len(got) != 1 {
			t.Fatalf("Redeliver(%s) = %v, %v", id, got, err)
		}
	}
	want := map[string]bool{"claimed": true, "inflight": true}
	records := walkAll(t, s, taskstore.Cursor{}, 4)
	if len(records) != 9 {
		t.Fatalf("walk = %v, want 9 tasks", recordIDs(records))
	}
	for _, r := range records {
		if r.Claimed != want[r.ID] {
			t.Errorf("%s: Claimed = %v, want %v (callback %s)", r.ID, r.Claimed, want[r.ID], r.CallbackStatus())
		}
		equal(t, r.Task, mustGet(t, s, r.ID))
		if r.Claimed && !r.Callback.NextAttemptAt.Equal(now.Add(time.Minute)) {
			t.Errorf("%s: NextAttemptAt = %v, want the claim's expiry %v", r.ID, r.Callback.NextAttemptAt, now.Add(time.Minute))
		}
	}
}

// A walk reads the store as it is at each call: a task created after the
// walk's position is listed, one created before it is not, and a deleted
// one is gone.
func testWalkConcurrentChanges(t *testing.T, s taskstore.Store) {
	for i := range 10 {
		mustCreate(t, s, task(string(rune('a'+i)), i*10))
	}
	page, err := s.Walk(ctx, taskstore.Cursor{}, 5) // a…e
	must(t, err)
	mustCreate(t, s, task("early", 1)) // before the position: not listed
	mustCreate(t, s, task("late", 95)) // after it: listed
	must(t, s.Delete(ctx, "g"))
	rest := walkAll(t, s, page[len(page)-1].Cursor(), 5)
	if got, want := recordIDs(rest), []string{"f", "h", "i", "j", "late"}; !slices.Equal(got, want) {
		t.Fatalf("rest of the walk = %v, want %v", got, want)
	}
}
