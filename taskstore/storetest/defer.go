package storetest

import (
	"slices"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// testDeferDeliveries: DeferDeliveries hands a claim's deliveries back
// without counting an attempt, and touches nothing that claim does not
// hold.
func testDeferDeliveries(t *testing.T, s taskstore.Store) {
	finished(t, s, map[string]int{"a": 0, "b": 0, "c": 0, "d": 0})
	mustCreate(t, s, task("nocb", 0))
	now := base.Add(time.Second)

	// d has had a failed attempt: its Last* must survive a deferral.
	claimed, err := s.ClaimDeliveries(ctx, "", now, time.Minute, 10)
	must(t, err)
	if len(claimed) != 4 {
		t.Fatalf("claimed %v, want the four due deliveries", ids(claimed))
	}
	until := claimed[0].Callback.NextAttemptAt
	must(t, s.RecordAttempt(ctx, "d", taskstore.Attempt{At: now, Status: 503, Error: "status 503", Next: now}))
	dClaim, err := s.ClaimDeliveries(ctx, "", now, 2*time.Minute, 10)
	must(t, err)
	if !slices.Equal(ids(dClaim), []string{"d"}) {
		t.Fatalf("claim after d's retry = %v, want [d]", ids(dClaim))
	}
	dUntil := dClaim[0].Callback.NextAttemptAt

	_, err = s.DeferDeliveries(ctx, []taskstore.Deferral{{ID: "a", ClaimedUntil: until, Next: now}, {ID: "b", Next: now}})
	wantErr(t, "DeferDeliveries with a zero ClaimedUntil", err, taskstore.ErrInvalid)
	_, err = s.DeferDeliveries(ctx, []taskstore.Deferral{{ID: "a", ClaimedUntil: until}})
	wantErr(t, "DeferDeliveries with a zero Next", err, taskstore.ErrInvalid)
	if got := mustGet(t, s, "a"); !got.Callback.NextAttemptAt.Equal(until) {
		t.Fatalf("an invalid DeferDeliveries changed a: due at %v", got.Callback.NextAttemptAt)
	}
	if n, err := s.DeferDeliveries(ctx, nil); err != nil || n != 0 {
		t.Fatalf("DeferDeliveries of nothing = %d, %v; want 0, nil", n, err)
	}

	// a and b are handed back; the unknown id, the task without a callback
	// and d (held by another claim) are left alone; so is c when named with
	// the wrong claim.
	next := now.Add(10 * time.Second)
	defer1 := func(id string, until, next time.Time) taskstore.Deferral {
		return taskstore.Deferral{ID: id, ClaimedUntil: until, Next: next}
	}
	n, err := s.DeferDeliveries(ctx, []taskstore.Deferral{
		defer1("a", until, next), defer1("unknown", until, next), defer1("nocb", until, next),
		defer1("b", until, next.Add(time.Second)), defer1("d", until, next), defer1("c", until.Add(time.Millisecond), next),
	})
	must(t, err)
	if n != 2 {
		t.Fatalf("DeferDeliveries deferred %d, want 2 (a and b)", n)
	}
	for id, want := range map[string]time.Time{"a": next, "b": next.Add(time.Second)} {
		got := mustGet(t, s, id)
		if got.Callback.Attempts != 0 || !got.Callback.NextAttemptAt.Equal(want) || got.CallbackStatus() != taskstore.CallbackPending ||
			got.Callback.LastStatus != 0 || got.Callback.LastError != "" {
			t.Fatalf("%s after DeferDeliveries: %+v (%v); want pending at %v, no attempt", id, got.Callback, got.CallbackStatus(), want)
		}
	}
	if got := mustGet(t, s, "c"); !got.Callback.NextAttemptAt.Equal(until) {
		t.Fatalf("c, not deferred, is due at %v, want its claim's end %v", got.Callback.NextAttemptAt, until)
	}
	// A deferred delivery is no longer in flight: it is claimed again once
	// due, not before, and another deferral with the old claim does nothing.
	if got, err := s.ClaimDeliveries(ctx, "", next.Add(-time.Millisecond), time.Minute, 10); err != nil || len(got) != 0 {
		t.Fatalf("claim before the deferred time = %v, %v; want none", ids(got), err)
	}
	again, err := s.ClaimDeliveries(ctx, "", next.Add(time.Second), time.Minute, 10)
	must(t, err)
	if !slices.Equal(ids(again), []string{"a", "b"}) {
		t.Fatalf("claim at the deferred times = %v, want [a b] (earliest due first)", ids(again))
	}
	if n, err := s.DeferDeliveries(ctx, []taskstore.Deferral{defer1("a", until, next), defer1("b", until, next)}); err != nil || n != 0 {
		t.Fatalf("DeferDeliveries with the expired claim = %d, %v; want 0 (the new claim holds them)", n, err)
	}

	// d keeps its attempt count and last outcome.
	if n, err := s.DeferDeliveries(ctx, []taskstore.Deferral{defer1("d", dUntil, next), defer1("d", dUntil, next)}); err != nil || n != 1 {
		t.Fatalf("DeferDeliveries of d = %d, %v; want 1", n, err)
	}
	got := mustGet(t, s, "d")
	if got.Callback.Attempts != 1 || got.Callback.LastStatus != 503 || got.Callback.LastError != "status 503" || !got.Callback.NextAttemptAt.Equal(next) {
		t.Fatalf("d after DeferDeliveries: %+v; want 1 attempt, 503, due at %v", got.Callback, next)
	}
	// A recorded attempt ends the claim: nothing left to defer.
	aUntil := again[0].Callback.NextAttemptAt
	must(t, s.RecordAttempt(ctx, "a", taskstore.Attempt{At: next, Status: 204, Delivered: true}))
	if n, err := s.DeferDeliveries(ctx, []taskstore.Deferral{defer1("a", aUntil, next.Add(time.Hour))}); err != nil || n != 0 {
		t.Fatalf("DeferDeliveries after delivery = %d, %v; want 0", n, err)
	}
	if got := mustGet(t, s, "a"); got.CallbackStatus() != taskstore.CallbackDelivered {
		t.Fatalf("a after a deferral of its settled delivery: %v, want delivered", got.CallbackStatus())
	}
	// A deferred delivery is not in flight for Redeliver: it becomes due at
	// the redelivery time.
	if _, err := s.Redeliver(ctx, []string{"d"}, now); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, s, "d"); !got.Callback.NextAttemptAt.Equal(now) {
		t.Fatalf("d redelivered after a deferral is due at %v, want %v", got.Callback.NextAttemptAt, now)
	}
	if n, err := s.DeferDeliveries(ctx, []taskstore.Deferral{defer1("gone", until, next), defer1("bad\xff", until, next)}); err != nil || n != 0 {
		t.Fatalf("DeferDeliveries of unknown ids = %d, %v; want 0, nil", n, err)
	}
}
