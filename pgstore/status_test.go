package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/internal/pgtest"
	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// trickyResponses are responses whose success bit is easy to get wrong:
// repeated keys (the last wins), escaped keys, a "true" that is a string or
// nested, non-objects, and escapes that PostgreSQL's json operators cannot
// unescape (\u0000, lone surrogates) next to the member that decides.
var trickyResponses = []string{
	`{"success":true}`,
	`{"success":false}`,
	`{"success":true,"success":false}`,
	`{"success":false,"success":true}`,
	`{"success":false,"x":1,"success":true,"y":[1,{"success":false}]}`,
	`{"succ\u0065ss":true}`,
	`{"\u0073uccess":false,"success":true,"\u0073uccess":false}`,
	`{"success\u0000":true}`,
	`{"success":"true"}`,
	`{"success":1}`,
	`{"success":null}`,
	`{"success":[true]}`,
	`{"a":{"success":true}}`,
	`[{"success":true}]`,
	`"success"`,
	`true`,
	`null`,
	`{}`,
	" \n{ \"success\" :\ttrue\r\n}\n",
	`{"success":true,"e":"\u0000"}`,
	`{"e\u0000":1,"success":true}`,
	`{"success":true,"e":"\ud800"}`,
	`{"e\udc00x":"\ud800","success":true}`,
	`{"success":true,"e":"\\u0000 \\\u0000 \\\\u0000"}`,
	`{"success":true,"e":"\\","f":"\\\\"}`,
	`{"success":true,"x":"é \u00e9 \uD83D\uDE00 \u20ac"}`,
	`{"succ\u00e9ss":true}`,
	`{"success":false,"error":{"code":"api_error","message":"upstream said \u0000\ud800"}}`,
	`{"success":true,"task_id":"7489df4c","trace_id":"t","created":1763142637,"data":[{"url":"https://x/y.png"}]}`,
}

// randomResponse builds a JSON object from parts chosen to collide with the
// rules of taskstore.Succeeded.
func randomResponse(rng *rand.Rand) string {
	keys := []string{`"success"`, `"succ\u0065ss"`, `"\u0073uccess"`, `"a"`, `"success\u0000"`, `"e\ud800"`, `"success "`, `"Success"`}
	values := []string{`true`, `false`, `"true"`, `1`, `null`, `{"success":true}`, `[true]`, `"\u0000"`, `"\\u0000"`, `"\ud800"`, `"\\"`, `{}`}
	ws := []string{"", " ", "\n", "\t "}
	var b strings.Builder
	b.WriteString(ws[rng.IntN(len(ws))] + "{")
	for i := range rng.IntN(5) {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(ws[rng.IntN(len(ws))] + keys[rng.IntN(len(keys))] + ws[rng.IntN(len(ws))] + ":" +
			ws[rng.IntN(len(ws))] + values[rng.IntN(len(values))] + ws[rng.IntN(len(ws))])
	}
	b.WriteString("}")
	return b.String()
}

// tasks_succeeded, which fills the success bit of rows written without it
// (by the migration and for older programs), agrees with taskstore.Succeeded,
// which the store uses for its own writes.
func TestSucceededInSQL(t *testing.T) {
	s, _ := openInternal(t)
	ctx := context.Background()
	cases := slices.Clone(trickyResponses)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		cases = append(cases, randomResponse(rng))
	}
	for _, c := range cases {
		if !json.Valid([]byte(c)) {
			t.Fatalf("test case %q is not JSON", c)
		}
		var got bool
		if err := s.db.QueryRowContext(ctx, `SELECT tasks_succeeded($1::json)`, c).Scan(&got); err != nil {
			t.Fatalf("tasks_succeeded(%s): %v", c, err)
		}
		if want := taskstore.Succeeded(json.RawMessage(c)); got != want {
			t.Errorf("tasks_succeeded(%s) = %v, taskstore.Succeeded = %v", c, got, want)
		}
	}
	var null bool
	if err := s.db.QueryRowContext(ctx, `SELECT tasks_succeeded(NULL)`).Scan(&null); err != nil || null {
		t.Errorf("tasks_succeeded(NULL) = %v, %v; want false", null, err)
	}
}

// Rows written as the previous release writes them (no success column in
// its statements) get their success bit from their response and are
// counted; the store's own writes give the bit from Go.
func TestOlderWriters(t *testing.T) {
	s, _ := openInternal(t)
	ctx := context.Background()
	for i, resp := range trickyResponses {
		id := fmt.Sprint("old-", i)
		// The previous release's Create of a finished task and its
		// Finish, word for word but for the id.
		if _, err := s.db.ExecContext(ctx, `INSERT INTO tasks (id, type, created_ms, finished_ms, request, response)
			VALUES ($1, 't', 1, 2, '{}', $2)`, id, resp); err != nil {
			t.Fatal(err)
		}
		if _, err := s.db.ExecContext(ctx, `INSERT INTO tasks (id, type, created_ms, request) VALUES ($1, 't', 1, '{}')`, id+"u"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.db.ExecContext(ctx, `UPDATE tasks SET response = $2, finished_ms = $3, lease_ms = 0,
			next_attempt_ms = CASE WHEN callback_url <> '' THEN $3 ELSE next_attempt_ms END
			WHERE id = $1 AND finished_ms = 0`, id+"u", resp, 5); err != nil {
			t.Fatal(err)
		}
		want := taskstore.Succeeded(json.RawMessage(resp))
		for _, id := range []string{id, id + "u"} {
			var got *bool
			if err := s.db.QueryRowContext(ctx, `SELECT success FROM tasks WHERE id = $1`, id).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got == nil || *got != want {
				t.Errorf("%s (%s): success %v, want %v", id, resp, got, want)
			}
		}
	}
	// The store's own writes carry the bit, and an unfinished task has none.
	x := taskstore.Task{ID: "new", Type: "t", Request: json.RawMessage(`{}`)}
	if err := s.Create(ctx, x); err != nil {
		t.Fatal(err)
	}
	var bit *bool
	if err := s.db.QueryRowContext(ctx, `SELECT success FROM tasks WHERE id = 'new'`).Scan(&bit); err != nil || bit != nil {
		t.Fatalf("unfinished task: success %v, %v; want NULL", bit, err)
	}
	if err := s.Finish(ctx, "new", json.RawMessage(`{"success":true}`), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := s.db.QueryRowContext(ctx, `SELECT success FROM tasks WHERE id = 'new'`).Scan(&bit); err != nil || bit == nil || !*bit {
		t.Fatalf("after Finish: success %v, %v; want true", bit, err)
	}
	checkCounters(t, s)
}

// oldTask is a task in one of the states the previous release could store.
func oldTasks() []taskstore.Task {
	base := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	var out []taskstore.Task
	users := []string{"u1", "u2", ""}
	for i := range 120 {
		x := taskstore.Task{
			ID: fmt.Sprintf("v2-%03d", i), Type: []string{"images_generations", "images_edits"}[i%2],
			Request:   json.RawMessage(fmt.Sprintf(`{"prompt":"task %d"}`, i)),
			CreatedAt: base.Add(time.Duration(i*7%50) * time.Second), ApplicationID: []string{"app", ""}[i/2%2],
			UserID: users[i/4%len(users)],
		}
		at := x.CreatedAt.Add(time.Minute)
		resp := json.RawMessage(trickyResponses[i%len(trickyResponses)])
		if i%2 == 0 {
			x.Callback.URL = "https://hooks.example.com/" + x.ID
		}
		switch i % 9 {
		case 0: // pending
			x.LeaseUntil = at
		case 1: // running
			x.StartedAt, x.LeaseUntil = x.CreatedAt.Add(time.Second), at
		case 2: // finished, never started (interrupted in the queue)
			x.FinishedAt, x.Response = at, resp
		default:
			x.StartedAt, x.FinishedAt, x.Response = x.CreatedAt.Add(time.Second), at, resp
		}
		if x.Callback.URL != "" && !x.FinishedAt.IsZero() {
			switch i % 9 {
			case 2, 3: // due
				x.Callback.NextAttemptAt = at
			case 4: // delivered
				x.Callback.Attempts, x.Callback.LastStatus, x.Callback.DeliveredAt = 1, 204, at.Add(time.Second)
			case 5: // given up
				x.Callback.Attempts, x.Callback.LastStatus, x.Callback.LastError = 3, 500, "status 500"
			case 6: // a retry scheduled, or a claim of the previous release
				x.Callback.Attempts, x.Callback.NextAttemptAt = 1, at.Add(time.Hour)
			case 7: // gone
				x.Callback.Attempts, x.Callback.LastStatus, x.Callback.LastError = 1, 410, "gone"
			case 8: // delivered after retries
				x.Callback.Attempts, x.Callback.LastStatus, x.Callback.DeliveredAt = 4, 200, at.Add(time.Minute)
			}
		}
		out = append(out, x)
	}
	return out
}

// matching returns the ids of the tasks matching f, in Find's order, and
// their number.
func matching(all []taskstore.Task, f taskstore.Filter) ([]string, int) {
	var match []taskstore.Task
	for _, x := range all {
		if f.UserID != "" && x.UserID != f.UserID || f.ApplicationID != "" && x.ApplicationID != f.ApplicationID ||
			len(f.Types) > 0 && !slices.Contains(f.Types, x.Type) ||
			f.Status != "" && x.Status() != f.Status || f.CallbackStatus != "" && x.CallbackStatus() != f.CallbackStatus {
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
	ids := make([]string, 0, len(match))
	for _, x := range match[:min(f.Limit, len(match))] {
		ids = append(ids, x.ID)
	}
	return ids, len(match)
}

// checkStatusFilters checks Find's pages and totals for every status and
// callback status filter, alone, together and with each user, application
// and type, against the tasks' own Status and CallbackStatus.
func checkStatusFilters(t *testing.T, s *Store, all []taskstore.Task) {
	t.Helper()
	ctx := context.Background()
	for _, st := range append([]taskstore.Status{""}, taskstore.Statuses[:]...) {
		for _, cb := range append([]taskstore.CallbackStatus{""}, taskstore.CallbackStatuses[:]...) {
			for _, f := range []taskstore.Filter{
				{}, {UserID: "u1"}, {UserID: "u2"}, {ApplicationID: "app"}, {Types: []string{"images_edits"}},
				{ApplicationID: "app", UserID: "u2", Types: []string{"images_generations", "images_edits"}},
			} {
				f.Status, f.CallbackStatus, f.Limit = st, cb, 500
				page, total, err := s.Find(ctx, f)
				if err != nil {
					t.Fatalf("Find(%+v): %v", f, err)
				}
				got := make([]string, len(page))
				for i, x := range page {
					got[i] = x.ID
				}
				want, wantTotal := matching(all, f)
				if total != wantTotal || !slices.Equal(got, want) {
					t.Fatalf("Find(%+v):\n got %d %v\nwant %d %v", f, total, got, wantTotal, want)
				}
				f.Limit = 0
				if _, total, err := s.Find(ctx, f); err != nil || total != wantTotal {
					t.Fatalf("Find(%+v) total = %d, %v; want %d", f, total, err, wantTotal)
				}
			}
		}
	}
}

// insertV2 stores x with the previous release's columns and statement.
// v2Columns are the columns of a task before the recorder's (version 5).
var v2Columns = strings.TrimSuffix(taskColumns, ", recorder")

func insertV2(t *testing.T, url string, all []taskstore.Task) {
	t.Helper()
	var stmts []string
	lit := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	for _, x := range all {
		resp := "NULL"
		if x.Response != nil {
			resp = lit(string(x.Response))
		}
		stmts = append(stmts, fmt.Sprintf(`INSERT INTO tasks (`+v2Columns+`) VALUES (%s, %s, %s, %d, %d, %d, %s, %s, %s, %s,
			%d, %d, %d, %d, %s, %d, %s, %s)`, lit(x.ID), lit(x.TraceID), lit(x.Type), storekit.ToMillis(x.CreatedAt),
			storekit.ToMillis(x.StartedAt), storekit.ToMillis(x.FinishedAt), lit(x.ApplicationID), lit(x.UserID),
			lit(x.CredentialID), lit(x.Callback.URL), x.Callback.Attempts, storekit.ToMillis(x.Callback.NextAttemptAt),
			storekit.ToMillis(x.Callback.DeliveredAt), x.Callback.LastStatus, lit(x.Callback.LastError),
			storekit.ToMillis(x.LeaseUntil), lit(string(x.Request)), resp))
	}
	pgtest.Exec(t, url, stmts...)
}

// TestMigrateFromVersion2 opens a database made by the previous release
// (migrations 1 and 2, tasks in every state it could store, responses of
// every shape) with this one: it migrates, and Find answers every status
// and callback status filter, pages and totals, as the tasks' own Status and
// CallbackStatus say; the states then keep changing correctly.
func TestMigrateFromVersion2(t *testing.T) {
	url := pgtest.FreshSchema(t, pgtest.URL(t))
	pgtest.Exec(t, url, createMigrationsTable, migrations[0].sql, migrations[1].sql,
		`INSERT INTO schema_migrations (version, name) VALUES (1, 'tasks'), (2, 'task_counts')`)
	all := oldTasks()
	insertV2(t, url, all)
	// A delivery the previous release claimed and a task it started,
	// through its own statements.
	pgtest.Exec(t, url, `UPDATE tasks SET next_attempt_ms = next_attempt_ms + 1000 WHERE id = 'v2-006'`,
		`UPDATE tasks SET started_ms = created_ms + 5 WHERE id = 'v2-009' AND started_ms = 0 AND finished_ms = 0`)
	all[6].Callback.NextAttemptAt = all[6].Callback.NextAttemptAt.Add(time.Second)
	all[9].StartedAt = all[9].CreatedAt.Add(5 * time.Millisecond)

	s, err := Open(context.Background(), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	ctx := context.Background()
	states := map[[2]string]int{}
	for _, x := range all {
		got, err := s.Get(ctx, x.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status() != x.Status() || got.CallbackStatus() != x.CallbackStatus() {
			t.Fatalf("%s: %s/%q after the migration, want %s/%q", x.ID, got.Status(), got.CallbackStatus(), x.Status(), x.CallbackStatus())
		}
		states[[2]string{string(x.Status()), string(x.CallbackStatus())}]++
	}
	if len(states) != 12 {
		t.Fatalf("the old tasks cover %d of the 12 states: %v", len(states), states)
	}
	checkStatusFilters(t, s, all)
	checkCounters(t, s)

	// The migrated rows live on: finish, attempt, redeliver.
	now := time.Date(2025, 6, 2, 0, 0, 0, 0, time.UTC)
	for i, x := range all {
		var err error
		switch {
		case !x.Finished():
			err = s.Finish(ctx, x.ID, json.RawMessage(trickyResponses[i%4]), now)
		case x.CallbackStatus() == taskstore.CallbackPending:
			err = s.RecordAttempt(ctx, x.ID, taskstore.Attempt{At: now, Status: 410, Error: "gone"})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	redone, err := s.RedeliverFailed(ctx, "", time.Time{}, now, 1000)
	if err != nil || len(redone) == 0 {
		t.Fatalf("RedeliverFailed after the migration: %d, %v", len(redone), err)
	}
	if all, err = s.selectAll(ctx); err != nil {
		t.Fatal(err)
	}
	checkStatusFilters(t, s, all)
	checkCounters(t, s)
}

// selectAll reads every task.
func (s *Store) selectAll(ctx context.Context) ([]taskstore.Task, error) {
	out, _, err := s.selectTasks(ctx, false, 1000, `SELECT `+taskColumns+` FROM tasks`)
	return out, err
}

// checkCounters checks that task_counts, task_status_counts and
// task_totals agree with the tasks: every key's sum equals a count over the
// rows.
func checkCounters(t *testing.T, s *Store) {
	t.Helper()
	for _, q := range []string{
		`SELECT count(*) FROM (
			SELECT application_id, user_id, type, count(*) AS n FROM tasks GROUP BY 1, 2, 3
		) want FULL JOIN (
			SELECT application_id, user_id, type, sum(n) AS n FROM task_counts GROUP BY 1, 2, 3
		) got USING (application_id, user_id, type)
		WHERE coalesce(want.n, 0) <> coalesce(got.n, 0)`,
		`SELECT count(*) FROM (
			SELECT application_id, user_id, type, tasks_status(started_ms, finished_ms, success) AS status,
				tasks_callback_status(callback_url, finished_ms, delivered_ms, next_attempt_ms) AS callback_status, count(*) AS n
			FROM tasks GROUP BY 1, 2, 3, 4, 5
		) want FULL JOIN (
			SELECT application_id, user_id, type, status, callback_status, sum(n) AS n FROM task_status_counts GROUP BY 1, 2, 3, 4, 5
		) got USING (application_id, user_id, type, status, callback_status)
		WHERE coalesce(want.n, 0) <> coalesce(got.n, 0)`,
		`SELECT count(*) FROM (
			SELECT tasks_status(started_ms, finished_ms, success) AS status,
				tasks_callback_status(callback_url, finished_ms, delivered_ms, next_attempt_ms) AS callback_status, count(*) AS n
			FROM tasks GROUP BY 1, 2
			UNION ALL
			SELECT '*', '*', count(*) FROM tasks
		) want FULL JOIN (
			SELECT status, callback_status, sum(n) AS n FROM task_totals GROUP BY 1, 2
		) got USING (status, callback_status)
		WHERE coalesce(want.n, 0) <> coalesce(got.n, 0)`,
	} {
		var wrong int
		if err := s.db.QueryRow(q).Scan(&wrong); err != nil {
			t.Fatal(err)
		}
		if wrong != 0 {
			t.Fatalf("%d counter keys disagree with the tasks:\n%s", wrong, q)
		}
	}
}

// The counters stay exact through every kind of write from two stores (so
// from many server processes, hence many stripes), with folds running
// meanwhile, and a fold keeps them exact while it merges the stripes and
// drops the keys at zero.
func TestCountersThroughLife(t *testing.T) {
	a, url := openInternal(t)
	b, err := Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	now := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	errs := make(chan error, 8)
	done := make(chan struct{})
	for w := range 8 {
		s := []*Store{a, b}[w%2]
		go func() {
			defer func() { done <- struct{}{} }()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			var mine []string
			for i := range 80 {
				id := fmt.Sprintf("w%d-%03d", w, i)
				x := taskstore.Task{ID: id, Type: []string{"a", "b"}[rng.IntN(2)], Request: json.RawMessage(`{}`),
					UserID: fmt.Sprint("u", rng.IntN(3)), CreatedAt: now.Add(time.Duration(rng.IntN(100)) * time.Millisecond)}
				if rng.IntN(4) > 0 {
					x.Callback.URL = "https://hooks.example.com/"
				}
				if err := s.Create(ctx, x); err != nil {
					errs <- err
					return
				}
				mine = append(mine, id)
				id = mine[rng.IntN(len(mine))]
				var err error
				switch rng.IntN(8) {
				case 0:
					err = s.Start(ctx, id, now)
				case 1, 2:
					err = s.Finish(ctx, id, json.RawMessage(trickyResponses[rng.IntN(4)]), now)
				case 3:
					_, err = s.ClaimDeliveries(ctx, "", now.Add(time.Hour), time.Minute, 2)
				case 4:
					err = s.RecordAttempt(ctx, id, taskstore.Attempt{At: now, Status: 410, Next: now.Add(time.Duration(rng.IntN(2)) * time.Hour)})
				case 5:
					_, err = s.Redeliver(ctx, []string{id, mine[0]}, now)
				case 6:
					err = s.Delete(ctx, id)
				case 7:
					_, err = s.RedeliverFailed(ctx, "", time.Time{}, now, 3)
				}
				if err != nil && !errors.Is(err, taskstore.ErrNotFound) && !errors.Is(err, taskstore.ErrConflict) {
					errs <- err
					return
				}
			}
		}()
	}
	// Folds run all along, as Prune would run them on any replica.
	folding := make(chan error, 1)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				folding <- nil
				return
			default:
			}
			if err := []*Store{a, b}[rand.IntN(2)].foldCounts(ctx); err != nil {
				folding <- err
				return
			}
		}
	}()
	for range 8 {
		<-done
	}
	close(stop)
	if err := <-folding; err != nil {
		t.Fatalf("fold: %v", err)
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if _, err := b.Prune(ctx, now.Add(20*time.Millisecond), 50); err != nil {
		t.Fatal(err)
	}
	var stripes, rows int
	if err := a.db.QueryRow(`SELECT count(DISTINCT stripe), count(*) FROM task_status_counts`).Scan(&stripes, &rows); err != nil {
		t.Fatal(err)
	}
	t.Logf("after Prune's fold: %d status count rows in %d stripes", rows, stripes)
	checkCounters(t, a)
	all, err := a.selectAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkStatusFilters(t, a, all)

	// Edits by hand of the other columns the statuses depend on, alone and
	// together with a status change, are each counted once.
	for _, stmt := range []string{
		`UPDATE tasks SET callback_url = '' WHERE id IN (SELECT id FROM tasks WHERE callback_url <> '' ORDER BY id LIMIT 5)`,
		`UPDATE tasks SET callback_url = 'https://other.example.com/', started_ms = 0
			WHERE id IN (SELECT id FROM tasks WHERE callback_url = '' AND finished_ms = 0 ORDER BY id LIMIT 5)`,
		`UPDATE tasks SET type = 'c', started_ms = 12345 WHERE id IN (SELECT id FROM tasks WHERE finished_ms = 0 ORDER BY id LIMIT 5)`,
		`UPDATE tasks SET application_id = 'hand', delivered_ms = 0, next_attempt_ms = 0
			WHERE id IN (SELECT id FROM tasks WHERE callback_url <> '' AND finished_ms <> 0 ORDER BY id LIMIT 5)`,
	} {
		if _, err := a.db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
		checkCounters(t, a)
	}

	// A fold leaves one row per key that is not zero, and nothing else.
	if _, err := a.db.Exec(`UPDATE tasks SET user_id = 'moved' WHERE user_id = 'u2'`); err != nil {
		t.Fatal(err)
	}
	if _, err := a.db.Exec(`DELETE FROM tasks WHERE user_id = 'u1'`); err != nil {
		t.Fatal(err)
	}
	if err := a.foldCounts(ctx); err != nil {
		t.Fatal(err)
	}
	checkCounters(t, a)
	for _, table := range []string{"task_counts", "task_status_counts"} {
		var unfolded, zero, gone int
		if err := a.db.QueryRow(`SELECT count(*) FILTER (WHERE stripe >= 0), count(*) FILTER (WHERE n = 0),
			count(*) FILTER (WHERE user_id IN ('u1', 'u2')) FROM `+table).Scan(&unfolded, &zero, &gone); err != nil {
			t.Fatal(err)
		}
		if unfolded != 0 || zero != 0 || gone != 0 {
			t.Fatalf("%s after a fold: %d stripe rows, %d rows at zero, %d rows of users without tasks; want none", table, unfolded, zero, gone)
		}
	}
	var left int
	if err := a.db.QueryRow(`SELECT count(*) FILTER (WHERE stripe >= 0) + count(*) FILTER (WHERE n = 0) FROM task_totals`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("after a fold: %d task_totals rows in stripes or at zero, %v", left, err)
	}
	all, err = a.selectAll(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkStatusFilters(t, a, all)
	// TRUNCATE empties the counters.
	if _, err := a.db.Exec(`TRUNCATE tasks`); err != nil {
		t.Fatal(err)
	}
	checkCounters(t, a)
}

// TestMigrateFromVersion4 opens a database of schema version 4 (before
// recorder names): every task belongs to the default recorder "", whose
// claims, abandoned tasks and failed callbacks are those it had, and the
// outbox and the failed callbacks by finish time are indexed by recorder.
func TestMigrateFromVersion4(t *testing.T) {
	url := pgtest.FreshSchema(t, pgtest.URL(t))
	stmts := []string{createMigrationsTable}
	for _, m := range migrations[:4] {
		stmts = append(stmts, m.sql, fmt.Sprintf(`INSERT INTO schema_migrations (version, name) VALUES (%d, '%s')`, m.version, m.name))
	}
	pgtest.Exec(t, url, stmts...)
	at := time.UnixMilli(1_700_000_000_000).UTC()
	insertV2(t, url, []taskstore.Task{
		{ID: "due", Type: "t", Request: json.RawMessage(`{}`), CreatedAt: at, FinishedAt: at,
			Response: json.RawMessage(`{"success":true}`), Callback: taskstore.Callback{URL: "https://x/", NextAttemptAt: at}},
		{ID: "failed", Type: "t", Request: json.RawMessage(`{}`), CreatedAt: at, FinishedAt: at,
			Response: json.RawMessage(`{"success":true}`), Callback: taskstore.Callback{URL: "https://x/", Attempts: 1, LastStatus: 410}},
		{ID: "left", Type: "t", Request: json.RawMessage(`{}`), CreatedAt: at, LeaseUntil: at},
	})
	ctx := context.Background()
	s, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, ix := range []string{"tasks_outbox", "tasks_callback_failed_finished"} {
		var def string
		if err := s.db.QueryRowContext(ctx, `SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() AND indexname = $1`, ix).Scan(&def); err != nil {
			t.Fatalf("%s: %v", ix, err)
		}
		if !strings.Contains(def, "(recorder COLLATE") && !strings.Contains(def, "(recorder,") {
			t.Fatalf("%s is not led by the recorder: %s", ix, def)
		}
	}
	for _, id := range []string{"due", "failed", "left"} {
		got, err := s.Get(ctx, id)
		if err != nil || got.Recorder != "" {
			t.Fatalf("Get(%s) = recorder %q, %v; want the default recorder", id, got.Recorder, err)
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
