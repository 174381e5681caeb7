package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// openAtVersion creates a database at path with the schema of the first
// version migrations, as a release of that schema left it, and returns it
// opened with rawOpen.
func openAtVersion(t *testing.T, path string, version int) *sql.DB {
	t.Helper()
	db := rawOpen(t, path)
	for _, m := range migrations[:version] {
		if _, err := db.Exec(m.SQL); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(fmt.Sprintf("PRAGMA user_version = %d", version)); err != nil {
		t.Fatal(err)
	}
	return db
}

func rawOpen(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func userVersion(t *testing.T, db *sql.DB) int {
	t.Helper()
	var v int
	if err := db.QueryRow("PRAGMA user_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMigrationsNumbered(t *testing.T) {
	if SchemaVersion() < 2 {
		t.Fatalf("SchemaVersion() = %d, want at least 2", SchemaVersion())
	}
	for i, m := range migrations {
		if m.Version != i+1 || !strings.HasPrefix(m.Name, fmt.Sprintf("%04d_", i+1)) || m.SQL == "" {
			t.Errorf("migration %d: %+v", i, m)
		}
	}
}

// TestMigrateFromV1 writes a version 1 database by hand (the tasks table,
// no counters), then opens it: Open must bring it to the current version
// and fill the counters from the existing rows.
func TestMigrateFromV1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	db := rawOpen(t, path)
	if _, err := db.Exec(migrations[0].SQL); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("PRAGMA user_version = 1"); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		_, err := db.Exec(`INSERT INTO tasks (id, type, created_ms, application_id, user_id, request)
			VALUES (?, ?, ?, ?, ?, '{}')`,
			fmt.Sprintf("t%02d", i), []string{"a", "b"}[i%2], 1_700_000_000_000+i, "app", fmt.Sprintf("u%d", i%3))
		if err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v := userVersion(t, rawOpen(t, path)); v != SchemaVersion() {
		t.Fatalf("user_version after Open = %d, want %d", v, SchemaVersion())
	}
	ctx := context.Background()
	for _, tc := range []struct {
		f    taskstore.Filter
		want int
	}{
		{taskstore.Filter{}, 30},
		{taskstore.Filter{ApplicationID: "app"}, 30},
		{taskstore.Filter{UserID: "u1"}, 10},
		{taskstore.Filter{Types: []string{"b"}}, 15},
		{taskstore.Filter{UserID: "u0", Types: []string{"a"}}, 5},
	} {
		if q, _ := buildFind(tc.f); !strings.Contains(q.countSQL, "task_counts") && !strings.Contains(q.countSQL, "task_totals") {
			t.Fatalf("filter %+v is not counted from the counters", tc.f)
		}
		_, total, err := s.Find(ctx, tc.f)
		if err != nil || total != tc.want {
			t.Errorf("Find(%+v) total = %d (err %v), want %d", tc.f, total, err, tc.want)
		}
	}
	// The triggers run on the migrated database too.
	if err := s.Create(ctx, taskstore.Task{ID: "new", Type: "a", Request: []byte(`{}`), UserID: "u1", ApplicationID: "app"}); err != nil {
		t.Fatal(err)
	}
	if _, total, _ := s.Find(ctx, taskstore.Filter{UserID: "u1"}); total != 11 {
		t.Fatalf("after Create, u1 total = %d, want 11", total)
	}
}

func TestOpenNewerSchemaFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	newer := SchemaVersion() + 1
	db := rawOpen(t, path)
	if _, err := db.Exec("PRAGMA user_version = " + strconv.Itoa(newer)); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, err = Open(path)
	if err == nil {
		s.Close()
		t.Fatal("Open of a database from a newer version succeeded")
	}
	for _, want := range []string{"newer", strconv.Itoa(newer), strconv.Itoa(SchemaVersion())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if v := userVersion(t, rawOpen(t, path)); v != newer {
		t.Fatalf("failed Open changed user_version to %d", v)
	}
}

func TestReopenKeepsVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	for range 3 {
		s, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	if v := userVersion(t, rawOpen(t, path)); v != SchemaVersion() {
		t.Fatalf("user_version = %d, want %d", v, SchemaVersion())
	}
}

// stateOf is the state column's value for a normalized task, computed from
// the task as Task.Status and Task.CallbackStatus see it.
func stateOf(t taskstore.Task) int {
	return 10*statusDigit[t.Status()] + callbackDigit[t.CallbackStatus()]
}

// v2Insert is the INSERT of schema version 2 (before the status columns).
const v2Insert = `INSERT INTO tasks (id, trace_id, type, created_ms, started_ms, finished_ms,
	application_id, user_id, credential_id, callback_url, attempts, next_attempt_ms,
	delivered_ms, last_status, last_error, lease_ms, request, response)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

// migrationResponses are responses a task of the previous release may have
// stored, each with whether taskstore.Succeeded reads it as a success.
var migrationResponses = []struct {
	body string
	ok   bool
}{
	{`{"success":true,"data":[{"url":"https://cdn.example.com/a.png"}]}`, true},
	{`{"success":false,"error":{"code":"timeout","message":"too slow"}}`, false},
	{`{"success":false,"success":true}`, true}, // the last duplicate wins
	{`{"success":true,"success":false}`, false},
	{` { "\u0073uccess" : true }`, true},
	{`{"data":{"success":true}}`, false}, // not at the top level
	{`{"success":"true"}`, false},
	{`[{"success":true}]`, false},
	{`null`, false},
}

// v2Task is task i of TestMigrateFromV2: its state cycles through every
// task status and callback status, its response through
// migrationResponses, its user, application and type through a few values.
func v2Task(i int) taskstore.Task {
	created := time.UnixMilli(1_700_000_000_000 + int64(i)*1000).UTC()
	at := created.Add(500 * time.Millisecond)
	t := taskstore.Task{
		ID: fmt.Sprintf("t%03d", i), Type: []string{"a", "b", "c"}[i%3], Request: []byte(`{"prompt":"x"}`),
		CreatedAt: created, ApplicationID: []string{"app1", "app2"}[i%2], UserID: fmt.Sprintf("u%d", i/2%3),
	}
	if i%5 == 0 {
		t.TraceID = fmt.Sprintf("tr-%d", i%3)
	}
	resp := []byte(migrationResponses[i%len(migrationResponses)].body)
	finish := func() { t.StartedAt, t.FinishedAt, t.Response = created.Add(time.Millisecond), at, resp }
	cb := func() { t.Callback.URL = "https://hooks.example.com/" + t.ID }
	switch i / len(migrationResponses) % 8 {
	case 0: // pending; half with a callback (waiting)
		if i%2 == 0 {
			cb()
		}
		t.LeaseUntil = at
	case 1: // running
		t.StartedAt = created.Add(time.Millisecond)
		if i%2 == 0 {
			cb()
		}
	case 2: // finished, no callback
		finish()
	case 3: // callback pending, first attempt due
		finish()
		cb()
		t.Callback.NextAttemptAt = at
	case 4: // callback pending, claimed or retrying
		finish()
		cb()
		t.Callback.Attempts, t.Callback.LastStatus, t.Callback.NextAttemptAt = 1, 503, at.Add(time.Hour)
	case 5: // callback delivered
		finish()
		cb()
		t.Callback.Attempts, t.Callback.LastStatus, t.Callback.DeliveredAt = 1, 204, at.Add(time.Second)
	case 6, 7: // callback given up
		finish()
		cb()
		t.Callback.Attempts, t.Callback.LastStatus, t.Callback.LastError = 2, 410, "gone"
	}
	return t
}

// TestMigrateFromV2 builds a database with the schema of the previous
// release (migrations 1 and 2, as that release applied them) holding tasks
// in every state, with responses of every shape, then opens it: Open must
// give each finished task its success bit from its stored response and
// its callback status, so that Find answers every status and callback
// status filter, alone and with a key, with the right pages and totals, the
// counters agree with the rows, and the migrated rows go on changing state
// with the counters following.
func TestMigrateFromV2(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v2.db")
	db := openAtVersion(t, path, 2)
	const n = 8 * 9 * 2 // every state with every response, twice
	var all []taskstore.Task
	for i := range n {
		x, err := storekit.Normalize(v2Task(i), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(v2Insert, insertArgs(x)[:18]...); err != nil {
			t.Fatal(err)
		}
		all = append(all, x)
	}
	db.Close()

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v := userVersion(t, rawOpen(t, path)); v != SchemaVersion() {
		t.Fatalf("user_version after Open = %d, want %d", v, SchemaVersion())
	}
	ctx := context.Background()
	seen := map[int]int{}
	for i, x := range all {
		st := stateOf(x)
		seen[st]++
		if x.Finished() {
			want := taskstore.StatusFailed
			if migrationResponses[i%len(migrationResponses)].ok {
				want = taskstore.StatusSucceeded
			}
			if x.Status() != want {
				t.Fatalf("%s: response %s reads as %s, want %s", x.ID, x.Response, x.Status(), want)
			}
		}
	}
	if len(seen) != len(allStates) {
		t.Fatalf("the tasks cover states %v, want all of %v", seen, allStates)
	}
	checkStatusFilters(t, s, path, all)

	// The migrated rows go on: start, finish (a failure), deliver, give up,
	// redeliver; the filters and counters follow.
	at := time.UnixMilli(1_800_000_000_000)
	var pend, run, due, gone string
	for _, x := range all {
		switch stateOf(x) {
		case 0:
			pend = x.ID
		case 11:
			run = x.ID
		case 22:
			due = x.ID
		case 24:
			gone = x.ID
		}
	}
	steps := []func() error{
		func() error { return s.Start(ctx, pend, at) },
		func() error { return s.Finish(ctx, run, []byte(`{"success":false}`), at) },
		func() error {
			return s.RecordAttempt(ctx, due, taskstore.Attempt{At: at, Status: 204, Delivered: true})
		},
		func() error {
			_, err := s.Redeliver(ctx, []string{gone}, at)
			return err
		},
		func() error {
			return s.RecordAttempt(ctx, gone, taskstore.Attempt{At: at, Status: 410, Error: "gone"})
		},
		func() error {
			got, err := s.RedeliverFailed(ctx, "", time.Time{}, at, 1000)
			if err == nil && len(got) != seen[24]+seen[34] {
				err = fmt.Errorf("RedeliverFailed redelivered %d, want %d", len(got), seen[24]+seen[34])
			}
			return err
		},
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		for j, x := range all {
			if all[j], err = s.Get(ctx, x.ID); err != nil {
				t.Fatal(err)
			}
		}
		checkStatusFilters(t, s, path, all)
	}
}

// checkStatusFilters checks Find with every status and callback status
// filter, alone and with a user, an application, a type or a window,
// against the states Get reports for all (every stored task), and that
// task_counts holds exactly the counts of the rows.
func checkStatusFilters(t *testing.T, s *Store, path string, all []taskstore.Task) {
	t.Helper()
	ctx := context.Background()
	keys := []taskstore.Filter{
		{}, {UserID: "u1"}, {ApplicationID: "app2"}, {Types: []string{"b"}}, {Types: []string{"a", "c"}},
		{ApplicationID: "app1", UserID: "u0"},
		{CreatedMin: time.UnixMilli(1_700_000_030_000), CreatedMax: time.UnixMilli(1_700_000_100_000)},
		{TraceIDs: []string{""}}, {TraceIDs: []string{"", "tr-1"}, UserID: "u1"}, {TraceIDs: []string{"tr-2"}},
		{IDs: []string{"t001", "t004", "t050", "t100", "t143", "nope"}},
	}
	for _, k := range keys {
		for _, st := range append([]taskstore.Status{""}, taskstore.Statuses[:]...) {
			for _, cb := range append([]taskstore.CallbackStatus{""}, taskstore.CallbackStatuses[:]...) {
				for _, lim := range []struct{ offset, limit int }{{0, 500}, {2, 3}, {0, 0}} {
					f := k
					f.Status, f.CallbackStatus, f.Offset, f.Limit = st, cb, lim.offset, lim.limit
					var want []string
					for _, x := range all {
						if matches(x, f) {
							want = append(want, x.ID)
						}
					}
					slices.SortFunc(want, func(a, b string) int { return strings.Compare(b, a) }) // ids grow with creation
					total := len(want)
					want = want[min(f.Offset, len(want)):]
					want = want[:min(f.Limit, len(want))]
					page, gotTotal, err := s.Find(ctx, f)
					if err != nil {
						t.Fatal(err)
					}
					var got []string
					for _, x := range page {
						got = append(got, x.ID)
					}
					if gotTotal != total || !slices.Equal(got, want) {
						t.Fatalf("Find(%+v) = %d %v, want %d %v", f, gotTotal, got, total, want)
					}
				}
			}
		}
	}
	rows, err := rawOpen(t, path).Query(`SELECT application_id, user_id, type, n, s00, s01, s10, s11, s20, s22, s23, s24,
		s30, s32, s33, s34 FROM task_counts`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]int{}
	for rows.Next() {
		var app, user, typ string
		v := make([]int, 13)
		if err := rows.Scan(&app, &user, &typ, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8],
			&v[9], &v[10], &v[11], &v[12]); err != nil {
			t.Fatal(err)
		}
		for i, c := range v {
			if c != 0 {
				key := "n"
				if i > 0 {
					key = strconv.Itoa(allStates[i-1])
				}
				got[app+"/"+user+"/"+typ+"/"+key] = c
			}
		}
	}
	want := map[string]int{}
	for _, x := range all {
		k := x.ApplicationID + "/" + x.UserID + "/" + x.Type + "/"
		want[k+"n"]++
		want[k+strconv.Itoa(stateOf(x))]++
	}
	if !maps.Equal(got, want) {
		t.Fatalf("task_counts = %v\nwant %v", got, want)
	}
	// task_totals holds the sums of the same counters.
	v := make([]int, 13)
	if err := rawOpen(t, path).QueryRow(`SELECT n, s00, s01, s10, s11, s20, s22, s23, s24, s30, s32, s33, s34
		FROM task_totals`).Scan(&v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10], &v[11], &v[12]); err != nil {
		t.Fatal(err)
	}
	wantTotals := make([]int, 13)
	for _, x := range all {
		wantTotals[0]++
		wantTotals[1+slices.Index(allStates, stateOf(x))]++
	}
	if !slices.Equal(v, wantTotals) {
		t.Fatalf("task_totals = %v, want %v (n, then the states %v)", v, wantTotals, allStates)
	}
}

// matches is Find's filter, in Go, for the fields checkStatusFilters sets.
func matches(x taskstore.Task, f taskstore.Filter) bool {
	minMs, maxMs, _ := storekit.CreatedRange(f)
	ms := x.CreatedAt.UnixMilli()
	return (len(f.IDs) == 0 || slices.Contains(f.IDs, x.ID)) &&
		(len(f.TraceIDs) == 0 || slices.Contains(f.TraceIDs, x.TraceID)) &&
		(f.UserID == "" || x.UserID == f.UserID) &&
		(f.ApplicationID == "" || x.ApplicationID == f.ApplicationID) &&
		(len(f.Types) == 0 || slices.Contains(f.Types, x.Type)) &&
		ms >= minMs && ms <= maxMs &&
		(f.Status == "" || x.Status() == f.Status) &&
		(f.CallbackStatus == "" || x.CallbackStatus() == f.CallbackStatus)
}

// TestMigrateFromV3 opens a database of schema version 3 (before recorder
// names): every task belongs to the default recorder "", whose claims,
// abandoned tasks and failed callbacks are those the previous release had,
// and the outbox and lease indexes are rebuilt led by the recorder.
func TestMigrateFromV3(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v3.db")
	db := openAtVersion(t, path, 3)
	const v3Insert = `INSERT INTO tasks (id, trace_id, type, created_ms, started_ms, finished_ms,
		application_id, user_id, credential_id, callback_url, attempts, next_attempt_ms,
		delivered_ms, last_status, last_error, lease_ms, request, response, failed, gave_up)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	at := time.UnixMilli(1_700_000_000_000).UTC()
	tasks := []taskstore.Task{
		{ID: "due", Type: "t", Request: json.RawMessage(`{}`), CreatedAt: at, FinishedAt: at,
			Response: json.RawMessage(`{"success":true}`), Callback: taskstore.Callback{URL: "https://x/", NextAttemptAt: at}},
		{ID: "failed", Type: "t", Request: json.RawMessage(`{}`), CreatedAt: at, FinishedAt: at,
			Response: json.RawMessage(`{"success":true}`), Callback: taskstore.Callback{URL: "https://x/", Attempts: 1, LastStatus: 410}},
		{ID: "left", Type: "t", Request: json.RawMessage(`{}`), CreatedAt: at, LeaseUntil: at},
	}
	for _, x := range tasks {
		n, err := storekit.Normalize(x, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(v3Insert, insertArgs(n)[:20]...); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	raw := rawOpen(t, path)
	if v := userVersion(t, raw); v != SchemaVersion() || v < 4 {
		t.Fatalf("user_version after Open = %d, want %d", v, SchemaVersion())
	}
	for _, ix := range []string{"tasks_outbox", "tasks_lease", "tasks_failed"} {
		var def string
		if err := raw.QueryRow(`SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?`, ix).Scan(&def); err != nil {
			t.Fatalf("%s: %v", ix, err)
		}
		if !strings.Contains(def, "(recorder,") {
			t.Fatalf("%s is not led by the recorder: %s", ix, def)
		}
	}
	ctx := context.Background()
	for _, x := range tasks {
		got, err := s.Get(ctx, x.ID)
		if err != nil || got.Recorder != "" {
			t.Fatalf("Get(%s) = recorder %q, %v; want the default recorder", x.ID, got.Recorder, err)
		}
	}
	later := at.Add(time.Hour)
	if got, err := s.ClaimDeliveries(ctx, "other", later, time.Minute, 10); err != nil || len(got) != 0 {
		t.Fatalf("another recorder claims %d, %v", len(got), err)
	}
	if got, err := s.ClaimDeliveries(ctx, "", later, time.Minute, 10); err != nil || len(got) != 1 || got[0].ID != "due" {
		t.Fatalf("the default recorder claims %v, %v; want [due]", got, err)
	}
	if got, err := s.Abandoned(ctx, "", later, 10); err != nil || len(got) != 1 || got[0].ID != "left" {
		t.Fatalf("Abandoned(\"\") = %v, %v; want [left]", got, err)
	}
	if got, err := s.RedeliverFailed(ctx, "", time.Time{}, later, 10); err != nil || len(got) != 1 || got[0] != "failed" {
		t.Fatalf("RedeliverFailed(\"\") = %v, %v; want [failed]", got, err)
	}
}
