// Package storetest is the conformance suite every taskstore.Store must pass.
//
// A backend's test file is a few lines:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) taskstore.Store {
//			s := mystore.New()
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// Run gives every subtest a fresh, empty store from newStore, and checks the
// rules stated in the doc comments of taskstore.Store: validation, byte-exact
// round trips, filters alone and combined, counts, ordering and paging,
// exactly-once finishing (one task at a time and in bulk, FinishMany),
// deletion, pruning, leases, the callback outbox and its deferrals, the task
// and callback statuses (filters and counts through every state change),
// redelivery and its races with claims and attempts, repeated writes (Start,
// Finish and RecordAttempt called again with the same arguments), walks in
// (CreatedAt, ID) order with the claims they show, pages bounded in bytes,
// the recorder names that keep several recorders' claims, sweeps and
// recoveries apart (Recorders/*), and a concurrent run under load. The suite closes each store itself at the
// end of the subtest (Close must be idempotent, so a Cleanup that closes it
// again is fine).
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// base is a fixed, millisecond-aligned instant the suite builds times from.
var base = time.Date(2025, 11, 14, 17, 50, 7, 967_000_000, time.UTC)

// Run runs the conformance suite against stores made by newStore.
func Run(t *testing.T, newStore func(t *testing.T) taskstore.Store) {
	t.Helper()
	open := func(t *testing.T) taskstore.Store {
		t.Helper()
		s := newStore(t)
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if err := s.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
		})
		return s
	}
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, taskstore.Store)
	}{
		{"CreateGet/RoundTrip", testRoundTrip},
		{"CreateGet/Minimal", testMinimal},
		{"CreateGet/TruncatesToMillis", testTruncates},
		{"CreateGet/DefaultCreatedAt", testDefaultCreatedAt},
		{"CreateGet/Invalid", testInvalid},
		{"CreateGet/UnicodeAtLimit", testUnicodeAtLimit},
		{"CreateGet/Duplicate", testDuplicate},
		{"Get/ErrNotFound", testGetNotFound},
		{"Get/ReturnsCopy", testReturnsCopy},
		{"Create/CallerMutationAfterCreate", testCreateCopies},
		{"Find/EachFilter", testFindEachFilter},
		{"Find/Combined", testFindCombined},
		{"Find/CountVsPage", testCountVsPage},
		{"Find/OrderTieBreak", testOrder},
		{"Find/Paging", testPaging},
		{"Find/WindowInclusive", testWindow},
		{"Find/SharedTraceID", testSharedTrace},
		{"Find/Invalid", testFindInvalid},
		{"Find/Empty", testFindEmpty},
		{"Start", testStart},
		{"Finish/Once", testFinishOnce},
		{"Finish/Invalid", testFinishInvalid},
		{"Delete", testDelete},
		{"Prune", testPrune},
		{"Leases", testLeases},
		{"Outbox/OrderAndClaim", testOutboxOrder},
		{"Outbox/Attempts", testOutboxAttempts},
		{"Outbox/Conflicts", testOutboxConflicts},
		{"Find/EmptyTraceID", testFindEmptyTraceID},
		{"Find/DuplicateTypes", testFindDuplicateTypes},
		{"Find/ManyTypes", testFindManyTypes},
		{"Prune/AnyState", testPruneAnyState},
		{"ZeroTimeMeansNow", testZeroTimeMeansNow},
		{"BeforeWithFraction", testBeforeWithFraction},
		{"Closed", testClosed},
		{"Context/Cancelled", testCancelled},
		{"Concurrent", testConcurrent},
		{"Concurrent/FinishOnce", testFinishRace},
		{"Concurrent/CreateOnce", testCreateRace},
		{"Leases/TieBreak", testAbandonedTieBreak},
		{"Outbox/ReturnsCopy", testClaimReturnsCopy},
		{"Status/Find", testFindStatus},
		{"Status/Transitions", testStatusTransitions},
		{"Redeliver", testRedeliver},
		{"Redeliver/InFlight", testRedeliverInFlight},
		{"Redeliver/Failed", testRedeliverFailed},
		{"Concurrent/RedeliverVsClaim", testRedeliverClaimRace},
		{"Concurrent/RedeliverVsRecord", testRedeliverRecordRace},
		{"Concurrent/RedeliverTwice", testRedeliverTwice},
		{"Status/SuccessBit", testStatusSuccessBit},         // status_extra.go
		{"Redeliver/FailedSince", testRedeliverFailedSince}, // status_extra.go
		{"Status/EscapedResponses", testStatusEscapedResponses},
		{"Walk/Order", testWalkOrder},                               // walk.go
		{"Walk/Invalid", testWalkInvalid},                           // walk.go
		{"Walk/Claimed", testWalkClaimed},                           // walk.go
		{"Walk/ConcurrentChanges", testWalkConcurrentChanges},       // walk.go
		{"Outbox/Defer", testDeferDeliveries},                       // defer.go
		{"Find/PageBytes", testPageBytes},                           // pagebytes.go
		{"FinishMany", testFinishMany},                              // finishmany.go
		{"FinishMany/Edges", testFinishManyEdges},                   // finishmany.go
		{"FinishMany/Invalid", testFinishManyInvalid},               // finishmany.go
		{"Concurrent/FinishManyOnce", testFinishManyRace},           // finishmany.go
		{"Repeat/Start", testRepeatStart},                           // repeat.go
		{"Repeat/Finish", testRepeatFinish},                         // repeat.go
		{"Repeat/Attempt", testRepeatAttempt},                       // repeat.go
		{"Recorders/RoundTrip", testRecordersRoundTrip},             // recorders.go
		{"Recorders/Claim", testRecordersClaim},                     // recorders.go
		{"Recorders/Abandoned", testRecordersAbandoned},             // recorders.go
		{"Recorders/RedeliverFailed", testRecordersRedeliverFailed}, // recorders.go
		{"Recorders/Interleaved", testRecordersInterleaved},         // recorders.go
		{"Recorders/Invalid", testRecordersInvalid},                 // recorders.go
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
}

var ctx = context.Background()

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustCreate(t *testing.T, s taskstore.Store, tasks ...taskstore.Task) {
	t.Helper()
	for _, task := range tasks {
		if err := s.Create(ctx, task); err != nil {
			t.Fatalf("Create(%s): %v", task.ID, err)
		}
	}
}

func mustGet(t *testing.T, s taskstore.Store, id string) taskstore.Task {
	t.Helper()
	got, err := s.Get(ctx, id)
	if err != nil {
		t.Fatalf("Get(%s): %v", id, err)
	}
	return got
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

// task returns a minimal valid task created at base+ms.
func task(id string, ms int) taskstore.Task {
	return taskstore.Task{
		ID: id, Type: "images_generations",
		Request:   json.RawMessage(`{"prompt":"` + id + `"}`),
		CreatedAt: base.Add(time.Duration(ms) * time.Millisecond),
	}
}

// equal compares two tasks field by field, JSON byte-exact, times with Equal.
func equal(t *testing.T, got, want taskstore.Task) {
	t.Helper()
	var diffs []string
	cmpS := func(name, g, w string) {
		if g != w {
			diffs = append(diffs, fmt.Sprintf("%s = %q, want %q", name, g, w))
		}
	}
	cmpT := func(name string, g, w time.Time) {
		if !g.Equal(w) {
			diffs = append(diffs, fmt.Sprintf("%s = %v, want %v", name, g, w))
		}
		if !g.IsZero() && g.Location() != time.UTC {
			diffs = append(diffs, fmt.Sprintf("%s location = %v, want UTC", name, g.Location()))
		}
	}
	cmpS("ID", got.ID, want.ID)
	cmpS("TraceID", got.TraceID, want.TraceID)
	cmpS("Type", got.Type, want.Type)
	cmpS("Request", string(got.Request), string(want.Request))
	cmpS("Response", string(got.Response), string(want.Response))
	if (got.Response == nil) != (want.Response == nil) {
		diffs = append(diffs, fmt.Sprintf("Response nil = %v, want %v", got.Response == nil, want.Response == nil))
	}
	cmpT("CreatedAt", got.CreatedAt, want.CreatedAt)
	cmpT("StartedAt", got.StartedAt, want.StartedAt)
	cmpT("FinishedAt", got.FinishedAt, want.FinishedAt)
	cmpS("ApplicationID", got.ApplicationID, want.ApplicationID)
	cmpS("UserID", got.UserID, want.UserID)
	cmpS("CredentialID", got.CredentialID, want.CredentialID)
	cmpS("Callback.URL", got.Callback.URL, want.Callback.URL)
	if got.Callback.Attempts != want.Callback.Attempts {
		diffs = append(diffs, fmt.Sprintf("Callback.Attempts = %d, want %d", got.Callback.Attempts, want.Callback.Attempts))
	}
	cmpT("Callback.NextAttemptAt", got.Callback.NextAttemptAt, want.Callback.NextAttemptAt)
	cmpT("Callback.DeliveredAt", got.Callback.DeliveredAt, want.Callback.DeliveredAt)
	if got.Callback.LastStatus != want.Callback.LastStatus {
		diffs = append(diffs, fmt.Sprintf("Callback.LastStatus = %d, want %d", got.Callback.LastStatus, want.Callback.LastStatus))
	}
	cmpS("Callback.LastError", got.Callback.LastError, want.Callback.LastError)
	cmpT("LeaseUntil", got.LeaseUntil, want.LeaseUntil)
	cmpS("Recorder", got.Recorder, want.Recorder)
	if len(diffs) > 0 {
		t.Fatalf("task %s differs:\n  %s", want.ID, strings.Join(diffs, "\n  "))
	}
}

func ids(tasks []taskstore.Task) []string {
	out := make([]string, len(tasks))
	for i, t := range tasks {
		out[i] = t.ID
	}
	return out
}

func find(t *testing.T, s taskstore.Store, f taskstore.Filter) ([]string, int) {
	t.Helper()
	page, total, err := s.Find(ctx, f)
	if err != nil {
		t.Fatalf("Find(%+v): %v", f, err)
	}
	if page == nil {
		t.Fatalf("Find(%+v): nil page, want non-nil", f)
	}
	return ids(page), total
}

func testRoundTrip(t *testing.T, s taskstore.Store) {
	// Whitespace, key order, escapes and non-ASCII must survive byte for byte.
	full := taskstore.Task{
		ID: "7489df4c-ef03-4de0-b598-e9a590793434", TraceID: "my-trace-001", Type: "images_edits",
		Request:       json.RawMessage("{\"z\":1, \"a\" : [1,2,{\"b\":null}],\n\"u\":\"caf\\u00e9 \u732b \\\"q\\\"\"}"),
		Response:      json.RawMessage(`{"success":true,"task_id":"7489df4c","data":[{"url":"https://x/y.png"}],"n":1.50}`),
		CreatedAt:     base,
		StartedAt:     base.Add(3 * time.Millisecond),
		FinishedAt:    base.Add(29437 * time.Millisecond),
		ApplicationID: "app-1", UserID: "user-1", CredentialID: "cred-1",
		Callback: taskstore.Callback{
			URL: "https://example.com/cb?x=1", Attempts: 2,
			NextAttemptAt: base.Add(time.Hour), LastStatus: 503, LastError: "status 503",
		},
	}
	mustCreate(t, s, full)
	equal(t, mustGet(t, s, full.ID), full)

	delivered := task("delivered", 1)
	delivered.Response = json.RawMessage(`{}`)
	delivered.FinishedAt = base.Add(time.Second)
	delivered.Callback = taskstore.Callback{URL: "http://r/", Attempts: 1, DeliveredAt: base.Add(2 * time.Second), LastStatus: 200}
	mustCreate(t, s, delivered)
	equal(t, mustGet(t, s, delivered.ID), delivered)

	leased := task("leased", 2)
	leased.LeaseUntil = base.Add(time.Minute)
	leased.Callback.URL = "http://r/"
	mustCreate(t, s, leased)
	equal(t, mustGet(t, s, leased.ID), leased)
}

func testMinimal(t *testing.T, s taskstore.Store) {
	min := task("m", 0)
	mustCreate(t, s, min)
	got := mustGet(t, s, "m")
	equal(t, got, min)
	if got.Finished() || got.CallbackStatus() != taskstore.CallbackNone {
		t.Fatalf("minimal task: finished=%v state=%v", got.Finished(), got.CallbackStatus())
	}
}

func testTruncates(t *testing.T, s taskstore.Store) {
	in := task("t", 0)
	in.CreatedAt = time.Date(2025, 1, 2, 3, 4, 5, 678_999_999, time.FixedZone("X", 3600))
	in.StartedAt = in.CreatedAt.Add(-time.Microsecond)
	mustCreate(t, s, in)
	got := mustGet(t, s, "t")
	want := time.Date(2025, 1, 2, 2, 4, 5, 678_000_000, time.UTC)
	if !got.CreatedAt.Equal(want) || got.CreatedAt.Location() != time.UTC {
		t.Fatalf("CreatedAt = %v, want %v (UTC)", got.CreatedAt, want)
	}
	if !got.StartedAt.Equal(want) {
		t.Fatalf("StartedAt = %v, want %v", got.StartedAt, want)
	}
}

func testDefaultCreatedAt(t *testing.T, s taskstore.Store) {
	before := time.Now().Add(-time.Millisecond)
	in := task("d", 0)
	in.CreatedAt = time.Time{}
	mustCreate(t, s, in)
	got := mustGet(t, s, "d")
	if got.CreatedAt.Before(before) || got.CreatedAt.After(time.Now().Add(time.Millisecond)) {
		t.Fatalf("CreatedAt = %v, want about now", got.CreatedAt)
	}
}

func testInvalid(t *testing.T, s taskstore.Store) {
	long := strings.Repeat("x", taskstore.MaxIDLength+1)
	for _, tc := range []struct {
		name  string
		edit  func(*taskstore.Task)
		field string
	}{
		{"EmptyID", func(x *taskstore.Task) { x.ID = "" }, "id"},
		{"LongID", func(x *taskstore.Task) { x.ID = long }, "id"},
		{"BadUTF8ID", func(x *taskstore.Task) { x.ID = "a\xffb" }, "id"},
		{"LongTraceID", func(x *taskstore.Task) { x.TraceID = long }, "trace_id"},
		{"LongUnicodeTraceID", func(x *taskstore.Task) { x.TraceID = strings.Repeat("é", taskstore.MaxIDLength+1) }, "trace_id"},
		{"EmptyType", func(x *taskstore.Task) { x.Type = "" }, "type"},
		{"NoRequest", func(x *taskstore.Task) { x.Request = nil }, "request"},
		{"RequestNotJSON", func(x *taskstore.Task) { x.Request = json.RawMessage(`{"a":`) }, "request"},
		// JSON text is UTF-8; json.Valid alone accepts these bytes.
		{"RequestNotUTF8", func(x *taskstore.Task) { x.Request = json.RawMessage("{\"a\":\"\xff\"}") }, "request"},
		{"ResponseNotJSON", func(x *taskstore.Task) {
			x.Response, x.FinishedAt = json.RawMessage(`nope`), base
		}, "response"},
		{"ResponseWithoutFinish", func(x *taskstore.Task) { x.Response = json.RawMessage(`{}`) }, "finished_at"},
		{"FinishWithoutResponse", func(x *taskstore.Task) { x.FinishedAt = base }, "response"},
		{"NegativeAttempts", func(x *taskstore.Task) { x.Callback.Attempts = -1 }, "attempts"},
		// One more than a 32-bit integer column holds (where int is 32 bits
		// the increment wraps to a negative count, also invalid).
		{"HugeAttempts", func(x *taskstore.Task) { x.Callback.Attempts = math.MaxInt32; x.Callback.Attempts++ }, "attempts"},
		{"NegativeLastStatus", func(x *taskstore.Task) { x.Callback.LastStatus = -1 }, "last_status"},
		{"HugeLastStatus", func(x *taskstore.Task) { x.Callback.LastStatus = 1000 }, "last_status"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := task("inv", 0)
			tc.edit(&in)
			err := s.Create(ctx, in)
			wantErr(t, "Create", err, taskstore.ErrInvalid)
			if !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %q does not name the field %q", err, tc.field)
			}
			if in.ID != "" {
				if _, err := s.Get(ctx, in.ID); !errors.Is(err, taskstore.ErrNotFound) {
					t.Fatalf("invalid task was stored (Get: %v)", err)
				}
			}
		})
	}
}

// Length limits count characters, not bytes.
func testUnicodeAtLimit(t *testing.T, s taskstore.Store) {
	in := task(strings.Repeat("猫", taskstore.MaxIDLength), 0)
	in.TraceID = strings.Repeat("é", taskstore.MaxIDLength)
	in.UserID = strings.Repeat("ü", taskstore.MaxIDLength)
	mustCreate(t, s, in)
	equal(t, mustGet(t, s, in.ID), in)
	if got, total := find(t, s, taskstore.Filter{TraceIDs: []string{in.TraceID}, UserID: in.UserID, Limit: 1}); total != 1 || len(got) != 1 {
		t.Fatalf("find by long unicode trace and user: %v %d", got, total)
	}
}

func testDuplicate(t *testing.T, s taskstore.Store) {
	first := task("dup", 0)
	mustCreate(t, s, first)
	second := task("dup", 5)
	second.Request = json.RawMessage(`{"other":true}`)
	wantErr(t, "Create duplicate", s.Create(ctx, second), taskstore.ErrConflict)
	equal(t, mustGet(t, s, "dup"), first)
	if _, total := find(t, s, taskstore.Filter{}); total != 1 {
		t.Fatalf("total after duplicate = %d, want 1", total)
	}
}

func testGetNotFound(t *testing.T, s taskstore.Store) {
	_, err := s.Get(ctx, "missing")
	wantErr(t, "Get", err, taskstore.ErrNotFound)
	_, err = s.Get(ctx, "")
	if !errors.Is(err, taskstore.ErrNotFound) && !errors.Is(err, taskstore.ErrInvalid) {
		t.Fatalf("Get(\"\") = %v, want ErrNotFound or ErrInvalid", err)
	}
}

func testReturnsCopy(t *testing.T, s taskstore.Store) {
	in := task("c", 0)
	in.Response = json.RawMessage(`{"ok":1}`)
	in.FinishedAt = base.Add(time.Second)
	mustCreate(t, s, in)
	got := mustGet(t, s, "c")
	got.Request[2] = 'X'
	got.Response[2] = 'X'
	got.TraceID = "changed"
	page, _, err := s.Find(ctx, taskstore.Filter{Limit: 10})
	must(t, err)
	page[0].Request[2] = 'Y'
	page[0].Response[2] = 'Y'
	equal(t, mustGet(t, s, "c"), in)
}

func testCreateCopies(t *testing.T, s taskstore.Store) {
	req := []byte(`{"prompt":"a"}`)
	in := task("cc", 0)
	in.Request = req
	mustCreate(t, s, in)
	req[2] = 'X'
	if got := mustGet(t, s, "cc"); string(got.Request) != `{"prompt":"a"}` {
		t.Fatalf("stored request aliases the caller's slice: %s", got.Request)
	}
}

// corpus builds a deterministic set of tasks covering every filter axis.
func corpus(t *testing.T, s taskstore.Store, n int) []taskstore.Task {
	t.Helper()
	apps := []string{"app-a", "app-b", ""}
	users := []string{"u1", "u2", "u3", ""}
	types := []string{"images_generations", "images_edits", "chat_completions_image"}
	traces := []string{"tr-1", "tr-2", "", ""}
	var all []taskstore.Task
	for i := 0; i < n; i++ {
		x := task(fmt.Sprintf("id-%03d", i), i*7%50) // repeated timestamps: tie-breaks matter
		x.ApplicationID = apps[i%len(apps)]
		x.UserID = users[i/3%len(users)]
		x.Type = types[i/2%len(types)]
		x.TraceID = traces[i%len(traces)]
		all = append(all, x)
	}
	mustCreate(t, s, all...)
	return all
}

// expect computes the reference answer for f over all.
func expect(all []taskstore.Task, f taskstore.Filter) ([]string, int) {
	minMs, maxMs, empty := storekit.CreatedRange(f)
	var match []taskstore.Task
	for _, x := range all {
		ms := x.CreatedAt.UnixMilli()
		switch {
		case empty:
			continue
		case len(f.IDs) > 0 && !slices.Contains(f.IDs, x.ID),
			len(f.TraceIDs) > 0 && !slices.Contains(f.TraceIDs, x.TraceID),
			f.ApplicationID != "" && f.ApplicationID != x.ApplicationID,
			f.UserID != "" && f.UserID != x.UserID,
			len(f.Types) > 0 && !slices.Contains(f.Types, x.Type),
			f.Status != "" && x.Status() != f.Status,
			f.CallbackStatus != "" && x.CallbackStatus() != f.CallbackStatus,
			ms < minMs || ms > maxMs:
			continue
		}
		match = append(match, x)
	}
	sort.Slice(match, func(i, j int) bool {
		a, b := match[i], match[j]
		if !a.CreatedAt.Equal(b.CreatedAt) {
			return a.CreatedAt.After(b.CreatedAt)
		}
		return a.ID > b.ID
	})
	total := len(match)
	lo := min(f.Offset, total)
	hi := min(lo+f.Limit, total)
	return ids(match[lo:hi]), total
}

func check(t *testing.T, s taskstore.Store, all []taskstore.Task, f taskstore.Filter) {
	t.Helper()
	gotIDs, gotTotal := find(t, s, f)
	wantIDs, wantTotal := expect(all, f)
	if gotTotal != wantTotal || !slices.Equal(gotIDs, wantIDs) {
		t.Fatalf("Find(%+v)\n got %d %v\nwant %d %v", f, gotTotal, gotIDs, wantTotal, wantIDs)
	}
}

func testFindEachFilter(t *testing.T, s taskstore.Store) {
	all := corpus(t, s, 60)
	for _, f := range []taskstore.Filter{
		{},
		{IDs: []string{"id-001", "id-017", "id-059", "nope"}},
		{IDs: []string{"id-001", "id-001"}},
		{TraceIDs: []string{"tr-1"}},
		{TraceIDs: []string{"tr-1", "tr-2", "tr-x"}},
		{ApplicationID: "app-a"},
		{ApplicationID: "nope"},
		{UserID: "u2"},
		{Types: []string{"images_edits"}},
		{Types: []string{"images_edits", "chat_completions_image"}},
		{CreatedMin: base.Add(10 * time.Millisecond)},
		{CreatedMax: base.Add(10 * time.Millisecond)},
		{CreatedMin: base.Add(10 * time.Millisecond), CreatedMax: base.Add(20 * time.Millisecond)},
	} {
		f.Limit = 100
		check(t, s, all, f)
	}
}

func testFindCombined(t *testing.T, s taskstore.Store) {
	all := corpus(t, s, 90)
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(opts ...string) string { return opts[rng.IntN(len(opts))] }
	for i := 0; i < 300; i++ {
		var f taskstore.Filter
		if rng.IntN(4) == 0 {
			for j := rng.IntN(6); j >= 0; j-- {
				f.IDs = append(f.IDs, fmt.Sprintf("id-%03d", rng.IntN(95)))
			}
		}
		if rng.IntN(4) == 0 {
			f.TraceIDs = []string{pick("tr-1", "tr-2", "tr-3")}
		}
		if rng.IntN(2) == 0 {
			f.ApplicationID = pick("app-a", "app-b")
		}
		if rng.IntN(2) == 0 {
			f.UserID = pick("u1", "u2", "u3")
		}
		if rng.IntN(3) == 0 {
			f.Types = []string{pick("images_generations", "images_edits", "chat_completions_image")}
		}
		if rng.IntN(3) == 0 {
			f.CreatedMin = base.Add(time.Duration(rng.IntN(50)) * time.Millisecond)
		}
		if rng.IntN(3) == 0 {
			f.CreatedMax = base.Add(time.Duration(rng.IntN(50)) * time.Millisecond)
		}
		f.Offset, f.Limit = rng.IntN(5), 1+rng.IntN(12)
		check(t, s, all, f)
	}
	// Everything at once.
	check(t, s, all, taskstore.Filter{
		IDs: []string{"id-000", "id-003", "id-012", "id-036"}, TraceIDs: []string{"tr-1"},
		ApplicationID: "app-a", UserID: "u1", Types: []string{"images_generations", "images_edits"},
		CreatedMin: base, CreatedMax: base.Add(49 * time.Millisecond), Limit: 10,
	})
}

func testCountVsPage(t *testing.T, s taskstore.Store) {
	all := corpus(t, s, 40)
	for _, f := range []taskstore.Filter{
		{Limit: 0}, {Limit: 3}, {Offset: 38, Limit: 5}, {Offset: 100, Limit: 5},
		{UserID: "u1", Limit: 2}, {ApplicationID: "app-b", Types: []string{"images_edits"}, Limit: 1},
	} {
		check(t, s, all, f)
	}
	got, total := find(t, s, taskstore.Filter{UserID: "u1", Limit: 0})
	if len(got) != 0 || total == 0 {
		t.Fatalf("Limit 0: got %d items total %d, want 0 items and the count", len(got), total)
	}
}

func testOrder(t *testing.T, s taskstore.Store) {
	// Inserted out of order, several sharing a millisecond.
	mustCreate(t, s, task("b", 5), task("a", 5), task("z", 1), task("c", 5), task("y", 9), task("m", 1))
	got, _ := find(t, s, taskstore.Filter{Limit: 10})
	want := []string{"y", "c", "b", "a", "z", "m"}
	if !slices.Equal(got, want) {
		t.Fatalf("order = %v, want %v", got, want)
	}
}

func testPaging(t *testing.T, s taskstore.Store) {
	all := corpus(t, s, 57)
	var seen []string
	for off := 0; ; off += 7 {
		page, total := find(t, s, taskstore.Filter{Offset: off, Limit: 7})
		if total != len(all) {
			t.Fatalf("total = %d, want %d", total, len(all))
		}
		if len(page) == 0 {
			break
		}
		seen = append(seen, page...)
	}
	want, _ := expect(all, taskstore.Filter{Limit: 1000})
	if !slices.Equal(seen, want) {
		t.Fatalf("pages joined = %v\nwant %v (no overlap, no gap)", seen, want)
	}
}

func testWindow(t *testing.T, s taskstore.Store) {
	mustCreate(t, s, task("t0", 0), task("t1", 1), task("t2", 2), task("t3", 3))
	at := func(ms int, extraNs int) time.Time {
		return base.Add(time.Duration(ms)*time.Millisecond + time.Duration(extraNs))
	}
	for _, tc := range []struct {
		name     string
		min, max time.Time
		want     []string
	}{
		{"BothInclusive", at(1, 0), at(2, 0), []string{"t2", "t1"}},
		{"Point", at(2, 0), at(2, 0), []string{"t2"}},
		{"MinFractionRoundsUp", at(1, 1), time.Time{}, []string{"t3", "t2"}},
		{"MaxFractionRoundsDown", time.Time{}, at(1, 999_999), []string{"t1", "t0"}},
		{"InsideOneMillisecond", at(1, 1), at(1, 999_999), []string{}},
		{"Inverted", at(3, 0), at(1, 0), []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, total := find(t, s, taskstore.Filter{CreatedMin: tc.min, CreatedMax: tc.max, Limit: 10})
			if !slices.Equal(got, tc.want) || total != len(tc.want) {
				t.Fatalf("got %v (total %d), want %v", got, total, tc.want)
			}
		})
	}
}

func testSharedTrace(t *testing.T, s taskstore.Store) {
	a, b, c := task("a", 1), task("b", 3), task("c", 2)
	a.TraceID, b.TraceID, c.TraceID = "shared", "shared", "other"
	b.UserID = "u9"
	mustCreate(t, s, a, b, c)
	got, total := find(t, s, taskstore.Filter{TraceIDs: []string{"shared"}, Limit: 1})
	if total != 2 || !slices.Equal(got, []string{"b"}) {
		t.Fatalf("newest by trace: %v total %d, want [b] total 2", got, total)
	}
	got, total = find(t, s, taskstore.Filter{TraceIDs: []string{"shared"}, UserID: "u9", Limit: 5})
	if total != 1 || !slices.Equal(got, []string{"b"}) {
		t.Fatalf("trace+user: %v total %d", got, total)
	}
	got, _ = find(t, s, taskstore.Filter{TraceIDs: []string{"shared"}, IDs: []string{"a", "c"}, Limit: 5})
	if !slices.Equal(got, []string{"a"}) {
		t.Fatalf("trace+ids: %v, want [a]", got)
	}
}

func testFindInvalid(t *testing.T, s taskstore.Store) {
	_, _, err := s.Find(ctx, taskstore.Filter{Limit: -1})
	wantErr(t, "Find limit -1", err, taskstore.ErrInvalid)
	if !strings.Contains(err.Error(), "limit") {
		t.Fatalf("error %q does not name limit", err)
	}
	_, _, err = s.Find(ctx, taskstore.Filter{Offset: -1, Limit: 1})
	wantErr(t, "Find offset -1", err, taskstore.ErrInvalid)
}

func testFindEmpty(t *testing.T, s taskstore.Store) {
	got, total := find(t, s, taskstore.Filter{Limit: 12})
	if len(got) != 0 || total != 0 {
		t.Fatalf("empty store: %v %d", got, total)
	}
	mustCreate(t, s, task("x", 0))
	got, total = find(t, s, taskstore.Filter{UserID: "nobody", Limit: 12})
	if len(got) != 0 || total != 0 {
		t.Fatalf("no match: %v %d", got, total)
	}
}

func testStart(t *testing.T, s taskstore.Store) {
	mustCreate(t, s, task("s", 0))
	at := base.Add(1500*time.Millisecond + 42)
	must(t, s.Start(ctx, "s", at))
	if got := mustGet(t, s, "s"); !got.StartedAt.Equal(storekit.Millis(at)) {
		t.Fatalf("StartedAt = %v, want %v", got.StartedAt, storekit.Millis(at))
	}
	wantErr(t, "Start twice", s.Start(ctx, "s", at.Add(time.Second)), taskstore.ErrConflict)
	if got := mustGet(t, s, "s"); !got.StartedAt.Equal(storekit.Millis(at)) {
		t.Fatalf("second Start changed StartedAt to %v", got.StartedAt)
	}
	wantErr(t, "Start missing", s.Start(ctx, "missing", at), taskstore.ErrNotFound)

	mustCreate(t, s, task("f", 0))
	must(t, s.Finish(ctx, "f", json.RawMessage(`{}`), at))
	wantErr(t, "Start finished", s.Start(ctx, "f", at), taskstore.ErrConflict)
}

func testFinishOnce(t *testing.T, s taskstore.Store) {
	in := task("f", 0)
	in.Callback.URL = "https://example.com/cb"
	in.LeaseUntil = base.Add(time.Minute)
	mustCreate(t, s, in)
	at := base.Add(29437*time.Millisecond + 999)
	resp := json.RawMessage(`{"success":true, "task_id":"f","data":[]}`)
	must(t, s.Finish(ctx, "f", resp, at))

	want := in
	want.Response = resp
	want.FinishedAt = storekit.Millis(at)
	want.LeaseUntil = time.Time{}
	want.Callback.NextAttemptAt = storekit.Millis(at)
	got := mustGet(t, s, "f")
	equal(t, got, want)
	if got.CallbackStatus() != taskstore.CallbackPending {
		t.Fatalf("state after finish = %v, want pending", got.CallbackStatus())
	}

	wantErr(t, "Finish twice", s.Finish(ctx, "f", json.RawMessage(`{"other":1}`), at.Add(time.Second)), taskstore.ErrConflict)
	equal(t, mustGet(t, s, "f"), want)
	wantErr(t, "Finish missing", s.Finish(ctx, "missing", resp, at), taskstore.ErrNotFound)

	// Without a callback URL nothing becomes due.
	mustCreate(t, s, task("nocb", 0))
	must(t, s.Finish(ctx, "nocb", json.RawMessage(`{}`), at))
	if got := mustGet(t, s, "nocb"); !got.Callback.NextAttemptAt.IsZero() || got.CallbackStatus() != taskstore.CallbackNone {
		t.Fatalf("no-callback task: next=%v state=%v", got.Callback.NextAttemptAt, got.CallbackStatus())
	}
}

func testFinishInvalid(t *testing.T, s taskstore.Store) {
	mustCreate(t, s, task("f", 0))
	for _, resp := range []string{"", "{", "nope", "{\"a\":\"\xff\"}"} {
		err := s.Finish(ctx, "f", json.RawMessage(resp), base)
		wantErr(t, fmt.Sprintf("Finish(%q)", resp), err, taskstore.ErrInvalid)
	}
	if got := mustGet(t, s, "f"); got.Finished() {
		t.Fatal("invalid Finish changed the task")
	}
}

func testDelete(t *testing.T, s taskstore.Store) {
	a, b := task("a", 0), task("b", 1)
	a.UserID, b.UserID = "u", "u"
	a.TraceID = "tr"
	a.Callback.URL = "http://r/"
	mustCreate(t, s, a, b)
	must(t, s.Finish(ctx, "a", json.RawMessage(`{}`), base))
	must(t, s.Delete(ctx, "a"))
	wantErr(t, "Delete twice", s.Delete(ctx, "a"), taskstore.ErrNotFound)
	_, err := s.Get(ctx, "a")
	wantErr(t, "Get deleted", err, taskstore.ErrNotFound)
	for _, f := range []taskstore.Filter{
		{UserID: "u", Limit: 10}, {TraceIDs: []string{"tr"}, Limit: 10}, {IDs: []string{"a"}, Limit: 10}, {Limit: 10},
	} {
		got, total := find(t, s, f)
		if slices.Contains(got, "a") || total != len(got) {
			t.Fatalf("deleted task still found by %+v: %v total %d", f, got, total)
		}
	}
	claimed, err := s.ClaimDeliveries(ctx, "", base.Add(time.Hour), time.Minute, 10)
	must(t, err)
	if len(claimed) != 0 {
		t.Fatalf("deleted task's delivery still claimable: %v", ids(claimed))
	}
	// Re-creating a deleted id works.
	mustCreate(t, s, task("a", 2))
}

func testPrune(t *testing.T, s taskstore.Store) {
	for i := 0; i < 25; i++ {
		x := task(fmt.Sprintf("p%02d", i), i*10)
		x.UserID = "u"
		x.TraceID = "tr"
		mustCreate(t, s, x)
	}
	_, err := s.Prune(ctx, base, 0)
	wantErr(t, "Prune limit 0", err, taskstore.ErrInvalid)
	before := base.Add(125 * time.Millisecond) // p00..p12 are older
	n, err := s.Prune(ctx, before, 5)
	must(t, err)
	if n != 5 {
		t.Fatalf("first batch pruned %d, want 5", n)
	}
	// Oldest first: p00..p04 are gone, p05 is not.
	if _, err := s.Get(ctx, "p04"); !errors.Is(err, taskstore.ErrNotFound) {
		t.Fatalf("p04 not pruned first: %v", err)
	}
	mustGet(t, s, "p05")
	total := n
	for {
		n, err := s.Prune(ctx, before, 5)
		must(t, err)
		total += n
		if n < 5 {
			break
		}
	}
	if total != 13 {
		t.Fatalf("pruned %d in all, want 13", total)
	}
	mustGet(t, s, "p13")
	got, count := find(t, s, taskstore.Filter{UserID: "u", Limit: 100})
	if count != 12 || len(got) != 12 {
		t.Fatalf("after prune: %d items, count %d, want 12", len(got), count)
	}
	if _, count := find(t, s, taskstore.Filter{TraceIDs: []string{"tr"}}); count != 12 {
		t.Fatalf("trace count after prune = %d, want 12", count)
	}
}

func testLeases(t *testing.T, s taskstore.Store) {
	old, fresh, none, done := task("old", 0), task("fresh", 1), task("none", 2), task("done", 3)
	old.LeaseUntil = base.Add(time.Second)
	fresh.LeaseUntil = base.Add(time.Hour)
	done.LeaseUntil = base.Add(time.Second)
	mustCreate(t, s, old, fresh, none, done)
	must(t, s.Finish(ctx, "done", json.RawMessage(`{}`), base))

	now := base.Add(time.Minute)
	got, err := s.Abandoned(ctx, "", now, 10)
	must(t, err)
	if want := []string{"none", "old"}; !slices.Equal(ids(got), want) {
		t.Fatalf("Abandoned = %v, want %v (zero lease first, then oldest; no live or finished ones)", ids(got), want)
	}
	got, err = s.Abandoned(ctx, "", now, 1)
	must(t, err)
	if len(got) != 1 {
		t.Fatalf("Abandoned limit 1 returned %d", len(got))
	}
	_, err = s.Abandoned(ctx, "", now, 0)
	wantErr(t, "Abandoned limit 0", err, taskstore.ErrInvalid)

	must(t, s.RenewLeases(ctx, []string{"old", "none", "done", "missing"}, now.Add(time.Hour)))
	must(t, s.RenewLeases(ctx, nil, now))
	got, err = s.Abandoned(ctx, "", now, 10)
	must(t, err)
	if len(got) != 0 {
		t.Fatalf("after renewal Abandoned = %v, want none", ids(got))
	}
	if g := mustGet(t, s, "old"); !g.LeaseUntil.Equal(now.Add(time.Hour)) {
		t.Fatalf("renewed lease = %v", g.LeaseUntil)
	}
	if g := mustGet(t, s, "done"); !g.LeaseUntil.IsZero() {
		t.Fatalf("finished task got a lease: %v", g.LeaseUntil)
	}
	got, err = s.Abandoned(ctx, "", now.Add(2*time.Hour), 10)
	must(t, err)
	if len(got) != 3 {
		t.Fatalf("after expiry Abandoned = %v, want 3", ids(got))
	}
}

// finished creates tasks with callbacks and finishes them at the given offsets.
func finished(t *testing.T, s taskstore.Store, spec map[string]int) {
	t.Helper()
	for id, ms := range spec {
		x := task(id, 0)
		x.Callback.URL = "https://example.com/" + id
		mustCreate(t, s, x)
		must(t, s.Finish(ctx, id, json.RawMessage(`{"id":"`+id+`"}`), base.Add(time.Duration(ms)*time.Millisecond)))
	}
}

func testOutboxOrder(t *testing.T, s taskstore.Store) {
	finished(t, s, map[string]int{"c": 30, "a": 10, "b": 20, "later": 5000})
	mustCreate(t, s, task("nocb", 0)) // no callback: never in the outbox
	must(t, s.Finish(ctx, "nocb", json.RawMessage(`{}`), base))
	unfinished := task("unfinished", 0)
	unfinished.Callback.URL = "https://example.com/u"
	mustCreate(t, s, unfinished)

	now := base.Add(time.Second)
	_, err := s.ClaimDeliveries(ctx, "", now, time.Minute, 0)
	wantErr(t, "Claim limit 0", err, taskstore.ErrInvalid)
	_, err = s.ClaimDeliveries(ctx, "", time.Time{}, time.Minute, 10)
	wantErr(t, "Claim with a zero now", err, taskstore.ErrInvalid)
	_, err = s.ClaimDeliveries(ctx, "", now, -time.Second, 10)
	wantErr(t, "Claim with a negative lease", err, taskstore.ErrInvalid)
	got, err := s.ClaimDeliveries(ctx, "", now, time.Minute, 2)
	must(t, err)
	if !slices.Equal(ids(got), []string{"a", "b"}) {
		t.Fatalf("first claim = %v, want [a b] (earliest due first, bounded)", ids(got))
	}
	for _, x := range got {
		if !x.Callback.NextAttemptAt.Equal(now.Add(time.Minute)) {
			t.Fatalf("claimed %s NextAttemptAt = %v, want now+lease", x.ID, x.Callback.NextAttemptAt)
		}
		if string(x.Response) != `{"id":"`+x.ID+`"}` || x.Callback.URL == "" {
			t.Fatalf("claimed task lacks response or URL: %+v", x)
		}
	}
	got, err = s.ClaimDeliveries(ctx, "", now, time.Minute, 10)
	must(t, err)
	if !slices.Equal(ids(got), []string{"c"}) {
		t.Fatalf("second claim = %v, want [c] (claimed ones are not handed out again)", ids(got))
	}
	got, err = s.ClaimDeliveries(ctx, "", now, time.Minute, 10)
	must(t, err)
	if len(got) != 0 {
		t.Fatalf("third claim = %v, want none", ids(got))
	}
	// When the claim expires the delivery is due again (the claimer died).
	got, err = s.ClaimDeliveries(ctx, "", now.Add(time.Minute), time.Minute, 10)
	must(t, err)
	if !slices.Equal(ids(got), []string{"later", "a", "b", "c"}) {
		t.Fatalf("after expiry = %v, want [later a b c] (due time, then id)", ids(got))
	}
}

func testOutboxAttempts(t *testing.T, s taskstore.Store) {
	finished(t, s, map[string]int{"r": 0, "d": 0, "g": 0})
	now := base.Add(time.Second)
	_, err := s.ClaimDeliveries(ctx, "", now, time.Minute, 10)
	must(t, err)

	// r: fails, is rescheduled, then delivered.
	next := now.Add(5 * time.Second)
	must(t, s.RecordAttempt(ctx, "r", taskstore.Attempt{At: now, Status: 503, Error: "status 503", Next: next}))
	got := mustGet(t, s, "r")
	if got.Callback.Attempts != 1 || got.Callback.LastStatus != 503 || got.Callback.LastError != "status 503" ||
		!got.Callback.NextAttemptAt.Equal(next) || got.CallbackStatus() != taskstore.CallbackPending {
		t.Fatalf("after failed attempt: %+v state %v", got.Callback, got.CallbackStatus())
	}
	claimed, err := s.ClaimDeliveries(ctx, "", next.Add(-time.Millisecond), time.Minute, 10)
	must(t, err)
	if len(claimed) != 0 {
		t.Fatalf("rescheduled delivery claimed early: %v", ids(claimed))
	}
	claimed, err = s.ClaimDeliveries(ctx, "", next, time.Minute, 10)
	must(t, err)
	if !slices.Equal(ids(claimed), []string{"r"}) {
		t.Fatalf("rescheduled claim = %v, want [r]", ids(claimed))
	}
	at := next.Add(time.Second)
	must(t, s.RecordAttempt(ctx, "r", taskstore.Attempt{At: at, Status: 200, Delivered: true}))
	got = mustGet(t, s, "r")
	if got.Callback.Attempts != 2 || got.Callback.LastStatus != 200 || got.Callback.LastError != "" ||
		!got.Callback.DeliveredAt.Equal(at) || !got.Callback.NextAttemptAt.IsZero() || got.CallbackStatus() != taskstore.CallbackDelivered {
		t.Fatalf("after delivery: %+v state %v", got.Callback, got.CallbackStatus())
	}

	// d: delivered at once. g: gives up (410).
	must(t, s.RecordAttempt(ctx, "d", taskstore.Attempt{At: now, Status: 204, Delivered: true}))
	must(t, s.RecordAttempt(ctx, "g", taskstore.Attempt{At: now, Status: 410, Error: "gone"}))
	got = mustGet(t, s, "g")
	if got.CallbackStatus() != taskstore.CallbackFailed || got.Callback.Attempts != 1 || got.Callback.LastStatus != 410 {
		t.Fatalf("gave up: %+v state %v", got.Callback, got.CallbackStatus())
	}
	claimed, err = s.ClaimDeliveries(ctx, "", now.Add(100*time.Hour), time.Minute, 10)
	must(t, err)
	if len(claimed) != 0 {
		t.Fatalf("delivered or given-up callbacks claimed: %v", ids(claimed))
	}
	// A given-up callback is settled: another attempt conflicts and changes
	// nothing.
	wantErr(t, "attempt after giving up", s.RecordAttempt(ctx, "g", taskstore.Attempt{At: now, Status: 200, Delivered: true}), taskstore.ErrConflict)
	if got := mustGet(t, s, "g"); got.CallbackStatus() != taskstore.CallbackFailed || got.Callback.Attempts != 1 || got.Callback.LastStatus != 410 {
		t.Fatalf("attempt after giving up changed the task: %+v", got.Callback)
	}
}

// Finish is exactly once even when many callers race (Abandoned relies on
// it when several processes finish the same task as interrupted): one
// wins, the others get ErrConflict, and the stored response is the
// winner's.
func testFinishRace(t *testing.T, s taskstore.Store) {
	mustCreate(t, s, task("race", 0))
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = s.Finish(ctx, "race", json.RawMessage(fmt.Sprintf(`{"by":%d}`, i)), base.Add(time.Second))
		})
	}
	wg.Wait()
	winner := oneWinner(t, "Finish", errs)
	if got := mustGet(t, s, "race"); string(got.Response) != fmt.Sprintf(`{"by":%d}`, winner) {
		t.Fatalf("stored response %s, want the winner's (%d)", got.Response, winner)
	}
}

// Concurrent Creates of one id store exactly one task; the others get
// ErrConflict.
func testCreateRace(t *testing.T, s taskstore.Store) {
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			x := task("dup", 0)
			x.Request = json.RawMessage(fmt.Sprintf(`{"by":%d}`, i))
			errs[i] = s.Create(ctx, x)
		})
	}
	wg.Wait()
	winner := oneWinner(t, "Create", errs)
	if got := mustGet(t, s, "dup"); string(got.Request) != fmt.Sprintf(`{"by":%d}`, winner) {
		t.Fatalf("stored request %s, want the winner's (%d)", got.Request, winner)
	}
}

// oneWinner checks that exactly one of racing calls succeeded and all the
// others got ErrConflict, and returns the winner's index.
func oneWinner(t *testing.T, what string, errs []error) int {
	t.Helper()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("%s succeeded for callers %d and %d", what, winner, i)
		case err == nil:
			winner = i
		default:
			wantErr(t, fmt.Sprintf("%s by caller %d", what, i), err, taskstore.ErrConflict)
		}
	}
	if winner < 0 {
		t.Fatalf("no %s succeeded", what)
	}
	return winner
}

// Abandoned orders tasks with the same lease by ID.
func testAbandonedTieBreak(t *testing.T, s taskstore.Store) {
	for _, id := range []string{"t-c", "t-a", "t-b"} {
		x := task(id, 0)
		x.LeaseUntil = base.Add(time.Second)
		mustCreate(t, s, x)
	}
	got, err := s.Abandoned(ctx, "", base.Add(time.Minute), 10)
	must(t, err)
	if want := []string{"t-a", "t-b", "t-c"}; !slices.Equal(ids(got), want) {
		t.Fatalf("Abandoned = %v, want %v (same lease: by id)", ids(got), want)
	}
}

// Tasks returned by Abandoned and ClaimDeliveries are copies too.
func testClaimReturnsCopy(t *testing.T, s taskstore.Store) {
	finished(t, s, map[string]int{"cp": 0})
	leased := task("lease", 0)
	leased.LeaseUntil = base.Add(time.Second)
	mustCreate(t, s, leased)
	claimed, err := s.ClaimDeliveries(ctx, "", base.Add(time.Second), time.Minute, 10)
	must(t, err)
	abandoned, err := s.Abandoned(ctx, "", base.Add(time.Minute), 10)
	must(t, err)
	if len(claimed) != 1 || len(abandoned) != 1 {
		t.Fatalf("claimed %v, abandoned %v", ids(claimed), ids(abandoned))
	}
	claimed[0].Request[2], claimed[0].Response[2], claimed[0].Callback.URL = 'X', 'X', "changed"
	abandoned[0].Request[2], abandoned[0].TraceID = 'X', "changed"
	if got := mustGet(t, s, "cp"); string(got.Request) != `{"prompt":"cp"}` || string(got.Response) != `{"id":"cp"}` ||
		got.Callback.URL != "https://example.com/cp" {
		t.Fatalf("changing a claimed task changed the store: %+v", got)
	}
	equal(t, mustGet(t, s, "lease"), leased)
}

func testOutboxConflicts(t *testing.T, s taskstore.Store) {
	finished(t, s, map[string]int{"d": 0})
	must(t, s.RecordAttempt(ctx, "d", taskstore.Attempt{At: base, Status: 200, Delivered: true}))
	wantErr(t, "attempt after delivery", s.RecordAttempt(ctx, "d", taskstore.Attempt{At: base, Status: 500, Next: base}), taskstore.ErrConflict)
	if got := mustGet(t, s, "d"); got.Callback.Attempts != 1 || got.CallbackStatus() != taskstore.CallbackDelivered {
		t.Fatalf("conflicting attempt changed the task: %+v", got.Callback)
	}
	wantErr(t, "attempt on missing", s.RecordAttempt(ctx, "missing", taskstore.Attempt{At: base}), taskstore.ErrNotFound)
	u := task("u", 0)
	u.Callback.URL = "http://r/"
	mustCreate(t, s, u, task("n", 0))
	wantErr(t, "attempt on unfinished", s.RecordAttempt(ctx, "u", taskstore.Attempt{At: base}), taskstore.ErrConflict)
	must(t, s.Finish(ctx, "n", json.RawMessage(`{}`), base))
	wantErr(t, "attempt without URL", s.RecordAttempt(ctx, "n", taskstore.Attempt{At: base}), taskstore.ErrConflict)
}

// everyMethod calls each method of s once, on the task "x".
func everyMethod(s taskstore.Store) map[string]func(context.Context) error {
	return map[string]func(context.Context) error{
		"Create": func(c context.Context) error { return s.Create(c, task("new", 0)) },
		"Get":    func(c context.Context) error { _, err := s.Get(c, "x"); return err },
		"Find": func(c context.Context) error {
			_, _, err := s.Find(c, taskstore.Filter{Limit: 1})
			return err
		},
		"Start":  func(c context.Context) error { return s.Start(c, "x", base) },
		"Finish": func(c context.Context) error { return s.Finish(c, "x", json.RawMessage(`{}`), base) },
		"FinishMany": func(c context.Context) error {
			_, err := s.FinishMany(c, []taskstore.Outcome{{ID: "x", Response: json.RawMessage(`{}`)}}, base)
			return err
		},
		"Delete":      func(c context.Context) error { return s.Delete(c, "x") },
		"Prune":       func(c context.Context) error { _, err := s.Prune(c, base, 1); return err },
		"RenewLeases": func(c context.Context) error { return s.RenewLeases(c, []string{"x"}, base) },
		"Abandoned":   func(c context.Context) error { _, err := s.Abandoned(c, "", base, 1); return err },
		"ClaimDeliveries": func(c context.Context) error {
			_, err := s.ClaimDeliveries(c, "", base, time.Minute, 1)
			return err
		},
		"RecordAttempt": func(c context.Context) error {
			return s.RecordAttempt(c, "x", taskstore.Attempt{At: base, Delivered: true})
		},
		"Redeliver": func(c context.Context) error { _, err := s.Redeliver(c, []string{"x"}, base); return err },
		"DeferDeliveries": func(c context.Context) error {
			_, err := s.DeferDeliveries(c, []taskstore.Deferral{{ID: "x", ClaimedUntil: base, Next: base}})
			return err
		},
		"RedeliverFailed": func(c context.Context) error {
			_, err := s.RedeliverFailed(c, "", base, base, 1)
			return err
		},
	}
}

func testClosed(t *testing.T, s taskstore.Store) {
	mustCreate(t, s, task("x", 0))
	must(t, s.Close())
	must(t, s.Close())
	for name, call := range everyMethod(s) {
		wantErr(t, name+" after Close", call(ctx), taskstore.ErrClosed)
	}
}

func testCancelled(t *testing.T, s taskstore.Store) {
	x := task("x", 0)
	x.Callback.URL = "http://r/"
	mustCreate(t, s, x)
	c, cancel := context.WithCancel(ctx)
	cancel()
	for name, call := range everyMethod(s) {
		if err := call(c); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context = %v, want context.Canceled", name, err)
		}
	}
	// None of them changed anything.
	if _, err := s.Get(ctx, "new"); !errors.Is(err, taskstore.ErrNotFound) {
		t.Fatalf("Create with cancelled ctx stored the task (Get: %v)", err)
	}
	want, err := storekit.Normalize(x, base)
	must(t, err)
	equal(t, mustGet(t, s, "x"), want)
}

// An empty string among the trace ids matches the tasks without a trace id,
// like any other value.
func testFindEmptyTraceID(t *testing.T, s taskstore.Store) {
	a, b, c := task("a", 0), task("b", 1), task("c", 2)
	a.TraceID, b.TraceID = "tr", "other"
	mustCreate(t, s, a, b, c)
	page, total := find(t, s, taskstore.Filter{TraceIDs: []string{"", "tr"}, Limit: 10})
	if total != 2 || !slices.Equal(page, []string{"c", "a"}) {
		t.Fatalf("got %v total %d, want [c a] total 2", page, total)
	}
}

// A type listed twice counts and pages like a type listed once.
func testFindDuplicateTypes(t *testing.T, s taskstore.Store) {
	x1, y1, x2 := task("x1", 0), task("y1", 1), task("x2", 2)
	x1.Type, y1.Type, x2.Type = "x", "y", "x"
	mustCreate(t, s, x1, y1, x2)
	for _, offset := range []int{0, 1, 2} {
		want, wantTotal := find(t, s, taskstore.Filter{Types: []string{"x", "y"}, Offset: offset, Limit: 10})
		got, total := find(t, s, taskstore.Filter{Types: []string{"x", "x", "y"}, Offset: offset, Limit: 10})
		if total != wantTotal || wantTotal != 3 || !slices.Equal(got, want) {
			t.Fatalf("offset %d: [x x y] gave %v total %d; [x y] gave %v total %d (want 3)",
				offset, got, total, want, wantTotal)
		}
	}
}

// A list of many types (stores may plan long lists differently from short
// ones) pages newest first and counts every match, alone and with a user.
func testFindManyTypes(t *testing.T, s taskstore.Store) {
	var all []taskstore.Task
	for i := range 24 {
		x := task(fmt.Sprintf("m%02d", i), i)
		x.Type, x.UserID = fmt.Sprintf("type-%02d", i%12), []string{"u1", "u2"}[i%2]
		all = append(all, x)
	}
	mustCreate(t, s, all...)
	types := make([]string, 0, 11)
	for i := range 11 { // every type but type-11
		types = append(types, fmt.Sprintf("type-%02d", i))
	}
	for _, f := range []taskstore.Filter{
		{Types: types, Limit: 5},
		{Types: types, Limit: 5, Offset: 7},
		{Types: types, UserID: "u2", Limit: 100},
	} {
		var want []string
		for i := len(all) - 1; i >= 0; i-- { // newest first
			x := all[i]
			if x.Type != "type-11" && (f.UserID == "" || x.UserID == f.UserID) {
				want = append(want, x.ID)
			}
		}
		wantTotal := len(want)
		want = want[min(f.Offset, len(want)):min(f.Offset+f.Limit, len(want))]
		got, total := find(t, s, f)
		if total != wantTotal || !slices.Equal(got, want) {
			t.Fatalf("Find(%d types, user %q, offset %d) = %v total %d, want %v total %d",
				len(f.Types), f.UserID, f.Offset, got, total, want, wantTotal)
		}
	}
}

// Prune deletes old tasks whatever their state: unfinished and leased,
// finished with a delivery pending.
func testPruneAnyState(t *testing.T, s taskstore.Store) {
	leased := task("leased", 0)
	leased.LeaseUntil = base.Add(time.Hour)
	mustCreate(t, s, leased)
	finished(t, s, map[string]int{"pending": 1})
	n, err := s.Prune(ctx, base.Add(time.Second), 10)
	must(t, err)
	if n != 2 {
		t.Fatalf("Prune deleted %d, want 2", n)
	}
	for _, id := range []string{"leased", "pending"} {
		if _, err := s.Get(ctx, id); !errors.Is(err, taskstore.ErrNotFound) {
			t.Errorf("%s after Prune: %v", id, err)
		}
	}
	if claimed, err := s.ClaimDeliveries(ctx, "", base.Add(time.Hour), time.Minute, 10); err != nil || len(claimed) != 0 {
		t.Errorf("deliveries of pruned tasks: %v, %v", ids(claimed), err)
	}
}

// A zero time for Start, Finish and a delivered attempt means now.
func testZeroTimeMeansNow(t *testing.T, s taskstore.Store) {
	x := task("x", 0)
	x.Callback.URL = "http://r/"
	mustCreate(t, s, x)
	before := time.Now().Add(-time.Millisecond)
	must(t, s.Start(ctx, "x", time.Time{}))
	must(t, s.Finish(ctx, "x", json.RawMessage(`{}`), time.Time{}))
	must(t, s.RecordAttempt(ctx, "x", taskstore.Attempt{Status: 200, Delivered: true}))
	got := mustGet(t, s, "x")
	after := time.Now().Add(time.Millisecond)
	for name, v := range map[string]time.Time{
		"StartedAt": got.StartedAt, "FinishedAt": got.FinishedAt, "DeliveredAt": got.Callback.DeliveredAt,
	} {
		if v.Before(before) || v.After(after) {
			t.Errorf("%s = %v, want about now", name, v)
		}
	}
}

// "Strictly before" is exact for times with a fraction of a millisecond.
func testBeforeWithFraction(t *testing.T, s taskstore.Store) {
	x := task("x", 5)
	x.LeaseUntil = base.Add(7 * time.Millisecond)
	mustCreate(t, s, x)
	if got, err := s.Abandoned(ctx, "", base.Add(7*time.Millisecond+500*time.Microsecond), 10); err != nil || len(got) != 1 {
		t.Fatalf("Abandoned(lease+0.5ms) = %v, %v; want the task", ids(got), err)
	}
	if got, err := s.Abandoned(ctx, "", base.Add(7*time.Millisecond), 10); err != nil || len(got) != 0 {
		t.Fatalf("Abandoned(lease) = %v, %v; want none", ids(got), err)
	}
	if n, err := s.Prune(ctx, base.Add(5*time.Millisecond), 10); err != nil || n != 0 {
		t.Fatalf("Prune(created) = %d, %v; want 0", n, err)
	}
	if n, err := s.Prune(ctx, base.Add(5*time.Millisecond+time.Microsecond), 10); err != nil || n != 1 {
		t.Fatalf("Prune(created+1µs) = %d, %v; want 1", n, err)
	}
}

func testConcurrent(t *testing.T, s taskstore.Store) {
	const workers, each = 32, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	var claimedMu sync.Mutex
	claimed := map[string]bool{} // by the workers' claims, all in one window
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			user := fmt.Sprintf("u%d", w%4)
			for i := 0; i < each; i++ {
				x := task(fmt.Sprintf("w%02d-%03d", w, i), i)
				x.UserID = user
				x.Callback.URL = "http://r/"
				if err := s.Create(ctx, x); err != nil {
					errs <- fmt.Errorf("create: %w", err)
					return
				}
				if i%2 == 0 {
					if err := s.Finish(ctx, x.ID, json.RawMessage(`{"ok":true}`), base.Add(time.Second)); err != nil {
						errs <- fmt.Errorf("finish: %w", err)
						return
					}
				}
				if _, total, err := s.Find(ctx, taskstore.Filter{UserID: user, Limit: 12}); err != nil || total < i+1 {
					errs <- fmt.Errorf("find: total %d after %d own creates, err %v", total, i+1, err)
					return
				}
				if i%5 == 0 {
					got, err := s.ClaimDeliveries(ctx, "", base.Add(time.Minute), time.Hour, 5)
					if err != nil {
						errs <- fmt.Errorf("claim: %w", err)
						return
					}
					claimedMu.Lock()
					for _, c := range got {
						if claimed[c.ID] {
							errs <- fmt.Errorf("%s claimed twice within one claim window", c.ID)
						}
						claimed[c.ID] = true
					}
					claimedMu.Unlock()
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if _, total := find(t, s, taskstore.Filter{}); total != workers*each {
		t.Fatalf("total = %d, want %d", total, workers*each)
	}
	for u := 0; u < 4; u++ {
		if _, total := find(t, s, taskstore.Filter{UserID: fmt.Sprintf("u%d", u)}); total != workers/4*each {
			t.Fatalf("user u%d total = %d, want %d", u, total, workers/4*each)
		}
	}
	// Every finished task was claimed at most once per claim window: claim
	// the rest and count pending deliveries.
	rest, err := s.ClaimDeliveries(ctx, "", base.Add(2*time.Hour), time.Hour, workers*each)
	must(t, err)
	if len(rest) != workers*((each+1)/2) {
		t.Fatalf("pending deliveries = %d, want %d", len(rest), workers*((each+1)/2))
	}
}

// RunZero checks that zero, a store that was not made by its constructor
// (the zero value of its type), answers every method, Close included, with
// an error instead of a panic.
func RunZero(t *testing.T, zero taskstore.Store) {
	t.Helper()
	calls := everyMethod(zero)
	calls["Close"] = func(context.Context) error { return zero.Close() }
	for name, call := range calls {
		func() {
			defer func() {
				if v := recover(); v != nil {
					t.Errorf("%s on a zero store panicked: %v", name, v)
				}
			}()
			if err := call(ctx); err == nil {
				t.Errorf("%s on a zero store succeeded", name)
			}
		}()
	}
}
