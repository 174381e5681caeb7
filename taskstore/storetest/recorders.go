package storetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// The recorder names the Recorders tests use: the default one and two
// others, one of them at the length limit.
var (
	recA = "svc-a"
	recB = strings.Repeat("b", taskstore.MaxRecorderLength)
)

// named returns task(id, ms) of the given recorder.
func named(id string, ms int, recorder string) taskstore.Task {
	x := task(id, ms)
	x.Recorder = recorder
	return x
}

// finishedOf creates tasks of recorder with a callback, finished at
// base+ms: their callbacks are due at that time.
func finishedOf(t *testing.T, s taskstore.Store, recorder string, spec map[string]int) {
	t.Helper()
	for id, ms := range spec {
		x := named(id, 0, recorder)
		x.Callback.URL = "https://example.com/" + id
		mustCreate(t, s, x)
		must(t, s.Finish(ctx, id, json.RawMessage(`{"id":"`+id+`"}`), base.Add(time.Duration(ms)*time.Millisecond)))
	}
}

// testRecordersRoundTrip: the recorder name is stored as given and read
// back by Get, Find, Walk and a claim; the default name is "".
func testRecordersRoundTrip(t *testing.T, s taskstore.Store) {
	want := map[string]string{"d": "", "a": recA, "b": recB, "odd": " ~!/{}"}
	for id, name := range want {
		x := named(id, 0, name)
		x.Callback.URL = "https://example.com/" + id
		mustCreate(t, s, x)
		if got := mustGet(t, s, id); got.Recorder != name {
			t.Fatalf("Get(%s).Recorder = %q, want %q", id, got.Recorder, name)
		}
	}
	page, _, err := s.Find(ctx, taskstore.Filter{Limit: 10})
	must(t, err)
	for _, x := range page {
		if x.Recorder != want[x.ID] {
			t.Fatalf("Find: %s has recorder %q, want %q", x.ID, x.Recorder, want[x.ID])
		}
	}
	recs, err := s.Walk(ctx, taskstore.Cursor{}, 10)
	must(t, err)
	for _, r := range recs {
		if r.Recorder != want[r.ID] {
			t.Fatalf("Walk: %s has recorder %q, want %q", r.ID, r.Recorder, want[r.ID])
		}
	}
	for id, name := range want {
		must(t, s.Finish(ctx, id, json.RawMessage(`{}`), base))
		claimed, err := s.ClaimDeliveries(ctx, name, base.Add(time.Second), time.Minute, 10)
		must(t, err)
		if len(claimed) != 1 || claimed[0].ID != id || claimed[0].Recorder != name {
			t.Fatalf("ClaimDeliveries(%q) = %v, want [%s] of that recorder", name, ids(claimed), id)
		}
	}
	if b, err := json.Marshal(mustGet(t, s, "a")); err != nil || strings.Contains(string(b), recA) {
		t.Fatalf("the recorder name is in the task's JSON: %s, %v", b, err)
	}
}

// testRecordersClaim: ClaimDeliveries returns and claims only the due
// callbacks of the recorder it names, earliest due first; another
// recorder's due callbacks stay due, untouched.
func testRecordersClaim(t *testing.T, s taskstore.Store) {
	finishedOf(t, s, "", map[string]int{"d1": 30, "d2": 10})
	finishedOf(t, s, recA, map[string]int{"a1": 20, "a2": 5, "a3": 40})
	finishedOf(t, s, recB, map[string]int{"b1": 1})
	now := base.Add(time.Second)

	got, err := s.ClaimDeliveries(ctx, recA, now, time.Minute, 10)
	must(t, err)
	if !slices.Equal(ids(got), []string{"a2", "a1", "a3"}) {
		t.Fatalf("ClaimDeliveries(%q) = %v, want [a2 a1 a3]", recA, ids(got))
	}
	for _, id := range []string{"d1", "d2", "b1"} {
		x := mustGet(t, s, id)
		if x.CallbackStatus() != taskstore.CallbackPending || x.Callback.NextAttemptAt.After(now) {
			t.Fatalf("%s of another recorder was touched by the claim: due at %v", id, x.Callback.NextAttemptAt)
		}
	}
	got, err = s.ClaimDeliveries(ctx, "", now, time.Minute, 1)
	must(t, err)
	if !slices.Equal(ids(got), []string{"d2"}) {
		t.Fatalf("ClaimDeliveries(\"\", limit 1) = %v, want [d2]", ids(got))
	}
	got, err = s.ClaimDeliveries(ctx, "", now, time.Minute, 10)
	must(t, err)
	if !slices.Equal(ids(got), []string{"d1"}) {
		t.Fatalf("ClaimDeliveries(\"\") = %v, want [d1]", ids(got))
	}
	if got, err := s.ClaimDeliveries(ctx, "nobody", now, time.Minute, 10); err != nil || len(got) != 0 {
		t.Fatalf("ClaimDeliveries of a recorder without tasks = %v, %v", ids(got), err)
	}
	got, err = s.ClaimDeliveries(ctx, recB, now, time.Minute, 10)
	must(t, err)
	if !slices.Equal(ids(got), []string{"b1"}) {
		t.Fatalf("ClaimDeliveries(recB) = %v, want [b1]", ids(got))
	}
	for _, name := range []string{"", recA, recB} {
		if got, err := s.ClaimDeliveries(ctx, name, now, time.Minute, 10); err != nil || len(got) != 0 {
			t.Fatalf("second ClaimDeliveries(%q) = %v, %v; all claimed", name, ids(got), err)
		}
	}
}

// testRecordersAbandoned: Abandoned returns only the recorder's unfinished
// tasks whose lease ended, oldest lease first.
func testRecordersAbandoned(t *testing.T, s taskstore.Store) {
	for i, spec := range []struct {
		id, recorder string
		lease        int // seconds after base; 0: no lease
	}{
		{"d1", "", 3}, {"a1", recA, 2}, {"b1", recB, 1}, {"a2", recA, 0}, {"d2", "", 0}, {"a3", recA, 100},
	} {
		x := named(spec.id, i, spec.recorder)
		if spec.lease > 0 {
			x.LeaseUntil = base.Add(time.Duration(spec.lease) * time.Second)
		}
		mustCreate(t, s, x)
	}
	// A finished task of recA: never abandoned.
	mustCreate(t, s, named("a-done", 0, recA))
	must(t, s.Finish(ctx, "a-done", json.RawMessage(`{}`), base))
	before := base.Add(time.Minute)
	for _, tc := range []struct {
		name string
		want []string
	}{
		{recA, []string{"a2", "a1"}},
		{"", []string{"d2", "d1"}},
		{recB, []string{"b1"}},
		{"nobody", []string{}},
	} {
		got, err := s.Abandoned(ctx, tc.name, before, 10)
		must(t, err)
		if !slices.Equal(ids(got), tc.want) {
			t.Fatalf("Abandoned(%q) = %v, want %v", tc.name, ids(got), tc.want)
		}
		for _, x := range got {
			if x.Recorder != tc.name {
				t.Fatalf("Abandoned(%q) returned %s of recorder %q", tc.name, x.ID, x.Recorder)
			}
		}
	}
	if got, err := s.Abandoned(ctx, recA, before, 1); err != nil || !slices.Equal(ids(got), []string{"a2"}) {
		t.Fatalf("Abandoned(recA, limit 1) = %v, %v", ids(got), err)
	}
}

// testRecordersRedeliverFailed: RedeliverFailed makes due only the
// recorder's failed callbacks; another recorder's stay failed.
func testRecordersRedeliverFailed(t *testing.T, s taskstore.Store) {
	names := []string{"", recA, recB}
	want := map[string][]string{}
	for i := range 18 {
		name := names[i%3]
		id := fmt.Sprintf("f-%02d", i)
		finishedOf(t, s, name, map[string]int{id: i})
		claimed, err := s.ClaimDeliveries(ctx, name, base.Add(time.Minute), time.Minute, 10)
		must(t, err)
		if len(claimed) != 1 || claimed[0].ID != id {
			t.Fatalf("claim of %s: %v", id, ids(claimed))
		}
		must(t, s.RecordAttempt(ctx, id, taskstore.Attempt{At: base.Add(time.Minute), Status: 410, Error: "gone"}))
		want[name] = append(want[name], id)
	}
	at := base.Add(time.Hour)
	got, err := s.RedeliverFailed(ctx, recA, base, at, 4)
	must(t, err)
	more, err := s.RedeliverFailed(ctx, recA, base, at, 4)
	must(t, err)
	got = append(got, more...)
	slices.Sort(got)
	if !slices.Equal(got, want[recA]) {
		t.Fatalf("RedeliverFailed(recA) = %v, want %v", got, want[recA])
	}
	for _, name := range []string{"", recB} {
		for _, id := range want[name] {
			if st := mustGet(t, s, id).CallbackStatus(); st != taskstore.CallbackFailed {
				t.Fatalf("%s of recorder %q is %s after recA's RedeliverFailed, want failed", id, name, st)
			}
		}
	}
	// recA's are due again, for recA alone.
	if c, err := s.ClaimDeliveries(ctx, "", at, time.Minute, 100); err != nil || len(c) != 0 {
		t.Fatalf("the default recorder claims %v, %v after recA's RedeliverFailed", ids(c), err)
	}
	c, err := s.ClaimDeliveries(ctx, recA, at, time.Minute, 100)
	must(t, err)
	if len(c) != len(want[recA]) {
		t.Fatalf("recA claims %v, want %v", ids(c), want[recA])
	}
	got, err = s.RedeliverFailed(ctx, "", base, at, 100)
	must(t, err)
	slices.Sort(got)
	if !slices.Equal(got, want[""]) {
		t.Fatalf("RedeliverFailed(\"\") = %v, want %v", got, want[""])
	}
}

// testRecordersInterleaved: two recorders' tasks, created and due
// interleaved, each drained by its own claims one at a time; the methods
// that take ids (Redeliver, DeferDeliveries, RecordAttempt) act whatever
// the recorder, and what they make due stays with the task's recorder.
func testRecordersInterleaved(t *testing.T, s taskstore.Store) {
	names := []string{recA, ""}
	want := map[string][]string{}
	for i := range 20 {
		name := names[i%2]
		id := fmt.Sprintf("i-%02d", i)
		x := named(id, i, name)
		x.Callback.URL = "https://example.com/" + id
		mustCreate(t, s, x)
		must(t, s.Finish(ctx, id, json.RawMessage(`{}`), base.Add(time.Duration(i)*time.Millisecond)))
		want[name] = append(want[name], id)
	}
	now := base.Add(time.Second)
	got := map[string][]string{}
	for range 10 {
		for _, name := range names {
			c, err := s.ClaimDeliveries(ctx, name, now, time.Minute, 1)
			must(t, err)
			if len(c) != 1 || c[0].Recorder != name {
				t.Fatalf("ClaimDeliveries(%q, limit 1) = %v", name, ids(c))
			}
			got[name] = append(got[name], c[0].ID)
			if len(got[name])%2 == 0 {
				must(t, s.RecordAttempt(ctx, c[0].ID, taskstore.Attempt{At: now, Status: 204, Delivered: true}))
			} else {
				n, err := s.DeferDeliveries(ctx, []taskstore.Deferral{{ID: c[0].ID, ClaimedUntil: c[0].Callback.NextAttemptAt, Next: now.Add(time.Hour)}})
				must(t, err)
				if n != 1 {
					t.Fatalf("DeferDeliveries(%s) = %d", c[0].ID, n)
				}
			}
		}
	}
	for _, name := range names {
		if !slices.Equal(got[name], want[name]) {
			t.Fatalf("recorder %q claimed %v, want %v", name, got[name], want[name])
		}
	}
	// Redeliver by id: a delivered task of recA is due again, for recA.
	done, err := s.Redeliver(ctx, []string{"i-02", "i-03"}, now)
	must(t, err)
	if !slices.Equal(done, []string{"i-02", "i-03"}) {
		t.Fatalf("Redeliver = %v", done)
	}
	later := now.Add(2 * time.Hour) // the deferred ones are due too
	c, err := s.ClaimDeliveries(ctx, recA, later, time.Minute, 100)
	must(t, err)
	for _, x := range c {
		if x.Recorder != recA {
			t.Fatalf("recA claimed %s of %q", x.ID, x.Recorder)
		}
	}
	if !slices.Contains(ids(c), "i-02") || slices.Contains(ids(c), "i-03") {
		t.Fatalf("recA claims %v after Redeliver, want i-02 and not i-03", ids(c))
	}
	c, err = s.ClaimDeliveries(ctx, "", later, time.Minute, 100)
	must(t, err)
	if !slices.Contains(ids(c), "i-03") || slices.Contains(ids(c), "i-02") {
		t.Fatalf("the default recorder claims %v after Redeliver, want i-03 and not i-02", ids(c))
	}
}

// testRecordersInvalid: a recorder name longer than MaxRecorderLength or
// with a byte outside printable ASCII gives ErrInvalid, on Create and on
// every method that takes a name, and changes nothing.
func testRecordersInvalid(t *testing.T, s taskstore.Store) {
	finishedOf(t, s, "", map[string]int{"x": 0})
	for _, bad := range []string{strings.Repeat("r", taskstore.MaxRecorderLength+1), "tab\there", "nul\x00", "é", "\x7f"} {
		x := named("bad", 0, bad)
		wantErr(t, fmt.Sprintf("Create with recorder %q", bad), s.Create(ctx, x), taskstore.ErrInvalid)
		_, err := s.ClaimDeliveries(ctx, bad, base.Add(time.Second), time.Minute, 10)
		wantErr(t, fmt.Sprintf("ClaimDeliveries(%q)", bad), err, taskstore.ErrInvalid)
		_, err = s.Abandoned(ctx, bad, base.Add(time.Second), 10)
		wantErr(t, fmt.Sprintf("Abandoned(%q)", bad), err, taskstore.ErrInvalid)
		_, err = s.RedeliverFailed(ctx, bad, base, base, 10)
		wantErr(t, fmt.Sprintf("RedeliverFailed(%q)", bad), err, taskstore.ErrInvalid)
	}
	if _, err := s.Get(ctx, "bad"); err == nil {
		t.Fatal("a task with an invalid recorder name was stored")
	}
	if got := mustGet(t, s, "x"); !got.Callback.NextAttemptAt.Equal(base) {
		t.Fatalf("an invalid claim moved x: due at %v", got.Callback.NextAttemptAt)
	}
}
