package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// Responses that read as a success and as a failure (taskstore.Succeeded).
var (
	okResponse   = json.RawMessage(`{"success":true,"data":[{"url":"https://cdn.example.com/a.png"}]}`)
	failResponse = json.RawMessage(`{"success":false,"error":{"code":"timeout","message":"too slow"}}`)
)

// inState returns x put into one of the states a task can be stored in,
// chosen by k: every task status, with and without a callback, and every
// callback status.
func inState(x taskstore.Task, k int) taskstore.Task {
	at := x.CreatedAt.Add(time.Second)
	started := func() { x.StartedAt = x.CreatedAt.Add(time.Millisecond) }
	finish := func(resp json.RawMessage) { started(); x.FinishedAt, x.Response = at, resp }
	cb := func() { x.Callback.URL = "https://hooks.example.com/" + x.ID }
	switch k % 12 {
	case 0: // pending
	case 1: // pending, callback waiting
		cb()
	case 2: // running, callback waiting
		started()
		cb()
	case 3: // running
		started()
	case 4: // succeeded, callback pending (first attempt due)
		finish(okResponse)
		cb()
		x.Callback.NextAttemptAt = at
	case 5: // succeeded, callback delivered
		finish(okResponse)
		cb()
		x.Callback.Attempts, x.Callback.LastStatus, x.Callback.DeliveredAt = 1, 204, at.Add(time.Second)
	case 6: // failed, callback failed
		finish(failResponse)
		cb()
		x.Callback.Attempts, x.Callback.LastStatus, x.Callback.LastError = 3, 500, "status 500"
	case 7: // succeeded, no callback
		finish(okResponse)
	case 8: // failed, callback pending (a retry scheduled)
		finish(failResponse)
		cb()
		x.Callback.Attempts, x.Callback.LastStatus, x.Callback.NextAttemptAt = 1, 0, at.Add(time.Minute)
	case 9: // succeeded, callback failed (410)
		finish(okResponse)
		cb()
		x.Callback.Attempts, x.Callback.LastStatus, x.Callback.LastError = 1, 410, "gone"
	case 10: // failed, no callback; never started (interrupted in the queue)
		x.FinishedAt, x.Response = at, failResponse
	case 11: // failed, callback delivered
		finish(failResponse)
		cb()
		x.Callback.Attempts, x.Callback.LastStatus, x.Callback.DeliveredAt = 2, 200, at.Add(time.Second)
	}
	return x
}

// statusCorpus stores n tasks of corpus's shape, spread over every state.
func statusCorpus(t *testing.T, s taskstore.Store, n int) []taskstore.Task {
	t.Helper()
	apps := []string{"app-a", "app-b", ""}
	users := []string{"u1", "u2", "u3", ""}
	types := []string{"images_generations", "images_edits", "chat_completions_image"}
	traces := []string{"tr-1", "tr-2", "", ""}
	var all []taskstore.Task
	for i := range n {
		x := task(fmt.Sprintf("id-%03d", i), i*7%50)
		x.ApplicationID = apps[i%len(apps)]
		x.UserID = users[i/3%len(users)]
		x.Type = types[i/2%len(types)]
		x.TraceID = traces[i%len(traces)]
		all = append(all, inState(x, i*5))
	}
	mustCreate(t, s, all...)
	return all
}

// Each status and callback status filter alone, then with every other
// filter.
func testFindStatus(t *testing.T, s taskstore.Store) {
	all := statusCorpus(t, s, 120)
	for _, x := range all {
		if got := mustGet(t, s, x.ID); got.Status() != x.Status() || got.CallbackStatus() != x.CallbackStatus() {
			t.Fatalf("task %s stored as %s/%q, created as %s/%q", x.ID, got.Status(), got.CallbackStatus(), x.Status(), x.CallbackStatus())
		}
	}
	for _, st := range append([]taskstore.Status{""}, taskstore.Statuses[:]...) {
		for _, cs := range append([]taskstore.CallbackStatus{""}, taskstore.CallbackStatuses[:]...) {
			check(t, s, all, taskstore.Filter{Status: st, CallbackStatus: cs, Limit: 200})
			check(t, s, all, taskstore.Filter{Status: st, CallbackStatus: cs, Limit: 3, Offset: 2})
			check(t, s, all, taskstore.Filter{Status: st, CallbackStatus: cs, Limit: 0})
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	pick := func(opts ...string) string { return opts[rng.IntN(len(opts))] }
	for range 400 {
		var f taskstore.Filter
		if rng.IntN(2) == 0 {
			f.Status = taskstore.Statuses[rng.IntN(len(taskstore.Statuses))]
		}
		if rng.IntN(2) == 0 {
			f.CallbackStatus = taskstore.CallbackStatuses[rng.IntN(len(taskstore.CallbackStatuses))]
		}
		if rng.IntN(6) == 0 {
			for j := rng.IntN(6); j >= 0; j-- {
				f.IDs = append(f.IDs, fmt.Sprintf("id-%03d", rng.IntN(125)))
			}
		}
		if rng.IntN(6) == 0 {
			f.TraceIDs = []string{pick("tr-1", "tr-2", "tr-3")}
		}
		if rng.IntN(3) == 0 {
			f.ApplicationID = pick("app-a", "app-b")
		}
		if rng.IntN(3) == 0 {
			f.UserID = pick("u1", "u2", "u3")
		}
		if rng.IntN(3) == 0 {
			f.Types = []string{pick("images_generations", "images_edits", "chat_completions_image")}
			if rng.IntN(3) == 0 {
				f.Types = append(f.Types, pick("images_generations", "images_edits"))
			}
		}
		if rng.IntN(4) == 0 {
			f.CreatedMin = base.Add(time.Duration(rng.IntN(50)) * time.Millisecond)
		}
		if rng.IntN(4) == 0 {
			f.CreatedMax = base.Add(time.Duration(rng.IntN(50)) * time.Millisecond)
		}
		f.Offset, f.Limit = rng.IntN(5), rng.IntN(13)
		check(t, s, all, f)
	}
	_, _, err := s.Find(ctx, taskstore.Filter{Status: "done", Limit: 1})
	wantErr(t, "Find with an unknown status", err, taskstore.ErrInvalid)
	_, _, err = s.Find(ctx, taskstore.Filter{CallbackStatus: "gave_up", Limit: 1})
	wantErr(t, "Find with an unknown callback status", err, taskstore.ErrInvalid)
}

// statusCounts checks that Find's totals for every status and callback
// status (alone, together, and within each user) agree with the states Get
// reports for the given ids, and that the pages hold exactly those tasks.
func statusCounts(t *testing.T, s taskstore.Store, ids []string, step string) {
	t.Helper()
	var all []taskstore.Task
	for _, id := range ids {
		x, err := s.Get(ctx, id)
		if err == nil {
			all = append(all, x)
		}
	}
	for _, user := range []string{"", "u1", "u2"} {
		for _, st := range append([]taskstore.Status{""}, taskstore.Statuses[:]...) {
			for _, cs := range append([]taskstore.CallbackStatus{""}, taskstore.CallbackStatuses[:]...) {
				f := taskstore.Filter{UserID: user, Status: st, CallbackStatus: cs, Limit: 500}
				gotIDs, gotTotal := find(t, s, f)
				wantIDs, wantTotal := expect(all, f)
				if gotTotal != wantTotal || !slices.Equal(gotIDs, wantIDs) {
					t.Fatalf("after %s: Find(user %q, status %q, callback %q)\n got %d %v\nwant %d %v",
						step, user, st, cs, gotTotal, gotIDs, wantTotal, wantIDs)
				}
			}
		}
	}
}

// Random sequences of every state change keep the status filters and their
// counts right: Create in any state, Start, Finish with a success or a
// failure, claims, attempts that deliver, retry or give up, Redeliver,
// RedeliverFailed, Delete and Prune.
func testStatusTransitions(t *testing.T, s taskstore.Store) {
	rng := rand.New(rand.NewPCG(5, 6))
	var ids []string
	now := base.Add(time.Hour)
	users := []string{"u1", "u2", ""}
	for step := range 250 {
		now = now.Add(time.Second)
		var what string
		switch op := rng.IntN(10); {
		case op < 3 || len(ids) == 0:
			x := task(fmt.Sprintf("t-%03d", step), step*1000)
			x.UserID = users[rng.IntN(len(users))]
			k := rng.IntN(12)
			if rng.IntN(2) == 0 {
				k = rng.IntN(3) // mostly tasks that still have a life ahead
			}
			mustCreate(t, s, inState(x, k))
			ids = append(ids, x.ID)
			what = "create " + x.ID
		default:
			id := ids[rng.IntN(len(ids))]
			what = fmt.Sprintf("op %d on %s", op, id)
			var err error
			switch op {
			case 3:
				err = s.Start(ctx, id, now)
			case 4:
				resp := okResponse
				if rng.IntN(2) == 0 {
					resp = failResponse
				}
				err = s.Finish(ctx, id, resp, now)
			case 5:
				_, err = s.ClaimDeliveries(ctx, "", now, time.Minute, 3)
			case 6:
				a := taskstore.Attempt{At: now, Status: 500, Error: "status 500"}
				switch rng.IntN(3) {
				case 0:
					a = taskstore.Attempt{At: now, Status: 204, Delivered: true}
				case 1:
					a.Next = now.Add(time.Duration(rng.IntN(3)) * time.Second)
				}
				err = s.RecordAttempt(ctx, id, a)
			case 7:
				_, err = s.Redeliver(ctx, []string{id, ids[rng.IntN(len(ids))]}, now)
			case 8:
				if rng.IntN(4) == 0 {
					_, err = s.RedeliverFailed(ctx, "", base, now, 2)
				} else {
					err = s.Delete(ctx, id)
				}
			case 9:
				_, err = s.Prune(ctx, base.Add(time.Duration(rng.IntN(step+1))*time.Second), 1+rng.IntN(3))
			}
			if err != nil && !isSentinel(err) {
				t.Fatalf("%s: %v", what, err)
			}
		}
		if step%5 == 0 || step > 230 {
			statusCounts(t, s, ids, what)
		}
	}
}

func isSentinel(err error) bool {
	return errors.Is(err, taskstore.ErrNotFound) || errors.Is(err, taskstore.ErrConflict)
}

// Redeliver makes a finished task's callback due again whatever its
// status, keeps the attempts counting, and leaves out every task it cannot
// redeliver.
func testRedeliver(t *testing.T, s taskstore.Store) {
	mk := func(id string, k int) taskstore.Task { return inState(task(id, 0), k) }
	all := []taskstore.Task{
		mk("pend", 0), mk("waiting", 1), mk("running", 2), mk("due", 4), mk("delivered", 5),
		mk("failed", 6), mk("nocb", 7), mk("retry", 8), mk("gone", 9), mk("delivered2", 11),
	}
	mustCreate(t, s, all...)
	at := base.Add(time.Hour)

	got, err := s.Redeliver(ctx, nil, at)
	must(t, err)
	if len(got) != 0 {
		t.Fatalf("Redeliver(nil) = %v", got)
	}
	got, err = s.Redeliver(ctx, []string{"gone", "missing", "pend", "waiting", "running", "nocb", "delivered", "gone", "failed", "retry", "due"}, at)
	must(t, err)
	if want := []string{"gone", "delivered", "failed", "retry", "due"}; !slices.Equal(got, want) {
		t.Fatalf("Redeliver = %v, want %v (given order, each once, only finished tasks with a callback)", got, want)
	}
	for _, x := range all {
		stored := mustGet(t, s, x.ID)
		want, err := storekit.Normalize(x, base)
		must(t, err)
		if slices.Contains(got, x.ID) {
			// Due at once; a pending callback already due earlier keeps
			// its place.
			want.Callback.DeliveredAt = time.Time{}
			if want.Callback.NextAttemptAt.IsZero() || want.Callback.NextAttemptAt.After(at) {
				want.Callback.NextAttemptAt = at
			}
		}
		equal(t, stored, want)
		if slices.Contains(got, x.ID) && stored.CallbackStatus() != taskstore.CallbackPending {
			t.Fatalf("%s after Redeliver: %q, want pending", x.ID, stored.CallbackStatus())
		}
	}

	// They are due at once, and the attempts count on.
	claimed, err := s.ClaimDeliveries(ctx, "", at, time.Minute, 10)
	must(t, err)
	if want := []string{"due", "retry", "delivered", "failed", "gone"}; !slices.Equal(ids(claimed), want) {
		t.Fatalf("claimed after Redeliver = %v, want %v", ids(claimed), want)
	}
	must(t, s.RecordAttempt(ctx, "gone", taskstore.Attempt{At: at, Status: 204, Delivered: true}))
	if g := mustGet(t, s, "gone"); g.Callback.Attempts != 2 || g.CallbackStatus() != taskstore.CallbackDelivered || g.Callback.LastStatus != 204 {
		t.Fatalf("after redelivery: %+v", g.Callback)
	}
	// A zero time means now.
	before := time.Now()
	got, err = s.Redeliver(ctx, []string{"gone"}, time.Time{})
	must(t, err)
	if g := mustGet(t, s, "gone"); len(got) != 1 || g.Callback.NextAttemptAt.Before(before.Truncate(time.Millisecond)) ||
		g.Callback.NextAttemptAt.After(time.Now()) {
		t.Fatalf("Redeliver with a zero time: %v, next attempt %v", got, g.Callback.NextAttemptAt)
	}
	// Ids no stored task can have are simply left out.
	got, err = s.Redeliver(ctx, []string{"\xff", string(make([]byte, 300))}, at)
	if err != nil || len(got) != 0 {
		t.Fatalf("Redeliver of impossible ids = %v, %v", got, err)
	}
}

// A delivery in flight (claimed, the claim not expired) is never handed
// out twice because of a Redeliver; once its claim expires it is due again
// like any other.
func testRedeliverInFlight(t *testing.T, s taskstore.Store) {
	finished(t, s, map[string]int{"f": 0})
	now := base.Add(time.Second)
	claimed, err := s.ClaimDeliveries(ctx, "", now, time.Minute, 10)
	must(t, err)
	if len(claimed) != 1 {
		t.Fatalf("claimed %v", ids(claimed))
	}
	got, err := s.Redeliver(ctx, []string{"f"}, now.Add(time.Second))
	must(t, err)
	if !slices.Equal(got, []string{"f"}) {
		t.Fatalf("Redeliver of a delivery in flight = %v, want [f] (under way)", got)
	}
	if g := mustGet(t, s, "f"); !g.Callback.NextAttemptAt.Equal(now.Add(time.Minute)) {
		t.Fatalf("Redeliver moved a claimed delivery to %v", g.Callback.NextAttemptAt)
	}
	again, err := s.ClaimDeliveries(ctx, "", now.Add(2*time.Second), time.Minute, 10)
	must(t, err)
	if len(again) != 0 {
		t.Fatalf("delivery in flight claimed again after Redeliver: %v", ids(again))
	}
	// The attempt in flight fails and is rescheduled far ahead: Redeliver
	// now makes it due at once (no attempt is in flight any more).
	must(t, s.RecordAttempt(ctx, "f", taskstore.Attempt{At: now, Status: 503, Error: "status 503", Next: now.Add(time.Hour)}))
	at := now.Add(3 * time.Second)
	got, err = s.Redeliver(ctx, []string{"f"}, at)
	must(t, err)
	if g := mustGet(t, s, "f"); len(got) != 1 || !g.Callback.NextAttemptAt.Equal(at) || g.Callback.Attempts != 1 {
		t.Fatalf("Redeliver of a scheduled retry: %v, %+v", got, g.Callback)
	}
	claimed, err = s.ClaimDeliveries(ctx, "", at, time.Minute, 10)
	must(t, err)
	if len(claimed) != 1 {
		t.Fatalf("claimed %v after Redeliver of a retry", ids(claimed))
	}
	// The claim expires (its claimer died): Redeliver makes it due at once.
	late := at.Add(2 * time.Minute)
	got, err = s.Redeliver(ctx, []string{"f"}, late)
	must(t, err)
	if g := mustGet(t, s, "f"); len(got) != 1 || !g.Callback.NextAttemptAt.Equal(late) {
		t.Fatalf("Redeliver after the claim expired: %v, %+v", got, g.Callback)
	}
	claimed, err = s.ClaimDeliveries(ctx, "", late, time.Minute, 10)
	must(t, err)
	if len(claimed) != 1 {
		t.Fatalf("claimed %v after an expired claim was redelivered", ids(claimed))
	}
	// A claim ended by a recorded attempt is no longer in flight.
	must(t, s.RecordAttempt(ctx, "f", taskstore.Attempt{At: late, Status: 204, Delivered: true}))
	got, err = s.Redeliver(ctx, []string{"f"}, late)
	must(t, err)
	if g := mustGet(t, s, "f"); len(got) != 1 || g.CallbackStatus() != taskstore.CallbackPending || g.Callback.Attempts != 2 {
		t.Fatalf("Redeliver after delivery: %v, %+v", got, g.Callback)
	}
}

// RedeliverFailed takes the failed callbacks of tasks finished since a
// time, in bounded batches, and nothing else.
func testRedeliverFailed(t *testing.T, s taskstore.Store) {
	_, err := s.RedeliverFailed(ctx, "", base, base, 0)
	wantErr(t, "RedeliverFailed with limit 0", err, taskstore.ErrInvalid)
	var want []string
	for i := range 25 {
		x := inState(task(fmt.Sprintf("t-%02d", i), i*1000), []int{6, 9, 5, 4, 8}[i%5]) // finished at created+1s
		mustCreate(t, s, x)
		if x.CallbackStatus() == taskstore.CallbackFailed && i >= 5 {
			want = append(want, x.ID)
		}
	}
	since := base.Add(6 * time.Second) // tasks 5.. finished at or after it
	at := base.Add(time.Hour)
	var got []string
	for range 20 {
		batch, err := s.RedeliverFailed(ctx, "", since, at, 3)
		must(t, err)
		if len(batch) > 3 {
			t.Fatalf("RedeliverFailed(limit 3) returned %d", len(batch))
		}
		got = append(got, batch...)
		if len(batch) < 3 {
			break
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("RedeliverFailed redelivered %v, want %v", got, want)
	}
	for i := range 25 {
		id := fmt.Sprintf("t-%02d", i)
		g := mustGet(t, s, id)
		wantSt := inState(task(id, i*1000), []int{6, 9, 5, 4, 8}[i%5]).CallbackStatus()
		if slices.Contains(want, id) {
			wantSt = taskstore.CallbackPending
			if !g.Callback.NextAttemptAt.Equal(at) {
				t.Fatalf("%s next attempt %v, want %v", id, g.Callback.NextAttemptAt, at)
			}
		}
		if g.CallbackStatus() != wantSt {
			t.Fatalf("%s callback %q, want %q", id, g.CallbackStatus(), wantSt)
		}
	}
	if batch, err := s.RedeliverFailed(ctx, "", since, at, 3); err != nil || len(batch) != 0 {
		t.Fatalf("second RedeliverFailed = %v, %v; want nothing left", batch, err)
	}
}

// Redeliver racing ClaimDeliveries (in many goroutines): a redelivered
// callback is claimed exactly once, never twice while in flight.
func testRedeliverClaimRace(t *testing.T, s taskstore.Store) {
	finished(t, s, map[string]int{"r": 0})
	now := base.Add(time.Second)
	for round := range 20 {
		// Deliver the callback (or give it up), then race.
		claimed, err := s.ClaimDeliveries(ctx, "", now, time.Hour, 10)
		must(t, err)
		if len(claimed) != 1 {
			t.Fatalf("round %d: claimed %v before the race", round, ids(claimed))
		}
		a := taskstore.Attempt{At: now, Status: 204, Delivered: true}
		if round%2 == 1 {
			a = taskstore.Attempt{At: now, Status: 410, Error: "gone"}
		}
		must(t, s.RecordAttempt(ctx, "r", a))
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			count int
			errs  []error
		)
		for g := range 8 {
			wg.Go(func() {
				var err error
				if g%2 == 0 {
					_, err = s.Redeliver(ctx, []string{"r"}, now)
				} else {
					var c []taskstore.Task
					c, err = s.ClaimDeliveries(ctx, "", now, time.Hour, 10)
					mu.Lock()
					count += len(c)
					mu.Unlock()
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(errs) > 0 {
			t.Fatalf("round %d: %v", round, errs)
		}
		c, err := s.ClaimDeliveries(ctx, "", now, time.Hour, 10)
		must(t, err)
		if count+len(c) != 1 {
			t.Fatalf("round %d: the redelivered callback was claimed %d times during the race and %d after, want once in all", round, count, len(c))
		}
		// That claim is in flight until it expires: the next round starts
		// after it has.
		now = now.Add(2 * time.Hour)
	}
}

// Redeliver racing RecordAttempt of the attempt in flight: the attempt is
// always recorded, and the end state is either its outcome or, when the
// redelivery came second, pending again.
func testRedeliverRecordRace(t *testing.T, s taskstore.Store) {
	finished(t, s, map[string]int{"r": 0})
	now := base.Add(time.Second)
	for round := range 20 {
		claimed, err := s.ClaimDeliveries(ctx, "", now, time.Hour, 10)
		must(t, err)
		if len(claimed) != 1 {
			t.Fatalf("round %d: claimed %v", round, ids(claimed))
		}
		var recErr, redErr error
		var wg sync.WaitGroup
		wg.Go(func() {
			recErr = s.RecordAttempt(ctx, "r", taskstore.Attempt{At: now, Status: 204, Delivered: true})
		})
		wg.Go(func() { _, redErr = s.Redeliver(ctx, []string{"r"}, now) })
		wg.Wait()
		if recErr != nil || redErr != nil {
			t.Fatalf("round %d: RecordAttempt %v, Redeliver %v", round, recErr, redErr)
		}
		g := mustGet(t, s, "r")
		if g.Callback.Attempts != round+1 {
			t.Fatalf("round %d: attempts %d, want %d", round, g.Callback.Attempts, round+1)
		}
		switch g.CallbackStatus() {
		case taskstore.CallbackDelivered: // Redeliver found the attempt in flight
			_, err := s.Redeliver(ctx, []string{"r"}, now)
			must(t, err)
		case taskstore.CallbackPending: // Redeliver came after the record
			if !g.Callback.NextAttemptAt.Equal(now) {
				t.Fatalf("round %d: pending, next attempt %v", round, g.Callback.NextAttemptAt)
			}
		default:
			t.Fatalf("round %d: callback %q", round, g.CallbackStatus())
		}
	}
}

// Two Redelivers at once leave one due delivery, attempts unchanged.
func testRedeliverTwice(t *testing.T, s taskstore.Store) {
	for i := range 10 {
		mustCreate(t, s, inState(task(fmt.Sprintf("f-%d", i), i), 6))
	}
	list := []string{"f-0", "f-1", "f-2", "f-3", "f-4", "f-5", "f-6", "f-7", "f-8", "f-9"}
	at := base.Add(time.Hour)
	var wg sync.WaitGroup
	res := make([][]string, 4)
	errs := make([]error, 4)
	for i := range 4 {
		wg.Go(func() {
			l := slices.Clone(list)
			if i%2 == 1 {
				slices.Reverse(l)
			}
			res[i], errs[i] = s.Redeliver(ctx, l, at)
		})
	}
	wg.Wait()
	for i := range 4 {
		must(t, errs[i])
		if len(res[i]) != len(list) {
			t.Fatalf("Redeliver %d = %v", i, res[i])
		}
	}
	claimed, err := s.ClaimDeliveries(ctx, "", at, time.Minute, 100)
	must(t, err)
	if len(claimed) != len(list) {
		t.Fatalf("claimed %d, want %d", len(claimed), len(list))
	}
	for _, x := range claimed {
		if x.Callback.Attempts != 3 {
			t.Fatalf("%s attempts %d, want 3", x.ID, x.Callback.Attempts)
		}
	}
}
