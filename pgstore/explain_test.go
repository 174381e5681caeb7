package pgstore

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/tasksapi/tasks/internal/pgtest"
	"github.com/tasksapi/tasks/taskstore"
)

// openInternal opens a store on a fresh schema for the package's own tests.
func openInternal(t testing.TB, opts ...Option) (*Store, string) {
	t.Helper()
	url := pgtest.FreshSchema(t, pgtest.URL(t))
	s, err := Open(context.Background(), url, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, url
}

// explainBase is when the first task of the synthetic data set was created.
var explainBase = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// loadSynthetic bulk-inserts n tasks with one INSERT … SELECT
// generate_series: one a minute from explainBase; 20 applications, 1000
// users (each in one application), 3 types, a unique trace id on every
// fourth task, a callback URL on three tasks in four. The newest 0.1% are
// unfinished (half of them started); of the others, one in ten failed, and
// of the callbacks 1% of all tasks are failed, 1% pending (due), the rest
// delivered. Then VACUUM ANALYZE, as autovacuum would, so the planner has
// statistics and a visibility map, unless analyze is false.
func loadSynthetic(t testing.TB, s *Store, n int, analyze ...bool) {
	t.Helper()
	ctx := context.Background()
	start := explainBase.UnixMilli()
	if _, err := s.db.ExecContext(ctx, `INSERT INTO tasks (id, trace_id, type, created_ms, application_id, user_id,
		credential_id, callback_url, started_ms, finished_ms, success, attempts, last_status, last_error,
		next_attempt_ms, delivered_ms, lease_ms, request, response)
	SELECT md5(g::text)::uuid::text,
		CASE WHEN g % 4 = 0 THEN 'trace-' || g ELSE '' END,
		(ARRAY['images_generations', 'images_edits', 'chat_completions_image'])[1 + g % 3],
		c,
		'app-' || (g % 1000) % 20,
		'user-' || g % 1000,
		'cred-' || g % 1000,
		CASE WHEN g % 4 <> 1 THEN 'https://example.com/cb' ELSE '' END,
		CASE WHEN NOT fin AND g % 2 = 0 THEN 0 ELSE c + 10 END,
		CASE WHEN fin THEN c + 30000 ELSE 0 END,
		CASE WHEN fin THEN g % 10 <> 3 END,
		CASE WHEN fin AND g % 4 <> 1 THEN CASE WHEN g % 100 = 2 THEN 5 WHEN g % 100 = 6 THEN 2 ELSE 1 END ELSE 0 END,
		CASE WHEN fin AND g % 4 <> 1 THEN CASE WHEN g % 100 = 2 THEN 410 WHEN g % 100 = 6 THEN 503 ELSE 204 END ELSE 0 END,
		CASE WHEN fin AND g % 4 <> 1 AND g % 100 IN (2, 6) THEN 'status ' || CASE WHEN g % 100 = 2 THEN 410 ELSE 503 END ELSE '' END,
		CASE WHEN fin AND g % 4 <> 1 AND g % 100 = 6 THEN c + 60000 ELSE 0 END,
		CASE WHEN fin AND g % 4 <> 1 AND g % 100 NOT IN (2, 6) THEN c + 31000 ELSE 0 END,
		CASE WHEN fin THEN 0 ELSE c + 60000 END,
		'{"model":"gpt-image-1","prompt":"a cat","callback_url":"https://example.com/cb"}',
		CASE WHEN NOT fin THEN NULL
			WHEN g % 10 = 3 THEN '{"success":false,"error":{"code":"api_error","message":"upstream failed"}}'::json
			ELSE '{"success":true,"data":[{"url":"https://example.com/x.png"}]}'::json END
	FROM generate_series(1, $2::int) g,
		LATERAL (SELECT $1::bigint + g::bigint * 60000 AS c, g <= $2::int - $2::int / 1000 AS fin) x`, start, n); err != nil {
		t.Fatalf("bulk insert: %v", err)
	}
	if len(analyze) > 0 && !analyze[0] {
		return
	}
	for _, table := range []string{"tasks", "task_counts", "task_status_counts", "task_totals"} {
		if _, err := s.db.ExecContext(ctx, `VACUUM ANALYZE `+table); err != nil {
			t.Fatalf("vacuum: %v", err)
		}
	}
}

// TestExplainNoSeqScan checks that no Find statement scans the whole tasks
// table, for every combination of the filter fields the handler can send
// (2^6 subsets of ids, trace_ids, application, user, types and window, each
// with no status filter, each task status, each callback status and each
// possible pair of them), with one-value and several-value lists, at 50,000
// tasks, in both the plan PostgreSQL makes for the actual values (custom)
// and the one it may cache for any values (generic). Both the page
// statement (with its total) and the count-only statement (Limit 0) are
// checked, and a total the counters can answer must not read the tasks
// table at all.
//
// The plans are checked three times. Analyzed: after ANALYZE but before any
// VACUUM, as right after migration 3 (which ends with ANALYZE, after
// updates that cleared the visibility map of the pages they touched).
// Vacuumed: after VACUUM ANALYZE, as autovacuum leaves it. NoStatistics:
// before any statistics exist (autovacuum off), where the planner guesses
// selectivities; there a window with only a lower bound is guessed to hold a
// third of the table and may be scanned whole, with or without a status
// filter (as before the statuses existed), and is the one exception.
func TestExplainNoSeqScan(t *testing.T) {
	if testing.Short() {
		t.Skip("bulk-loads 50,000 tasks")
	}
	s, _ := openInternal(t)
	ctx := context.Background()
	for _, table := range []string{"tasks", "task_counts", "task_status_counts", "task_totals"} {
		if _, err := s.db.ExecContext(ctx, `ALTER TABLE `+table+` SET (autovacuum_enabled = off)`); err != nil {
			t.Fatal(err)
		}
	}
	loadSynthetic(t, s, 50_000, false)
	conn, err := s.db.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var analyzed bool
	if err := conn.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stats WHERE schemaname = current_schema()
		AND tablename = 'tasks' AND attname = 'success')`).Scan(&analyzed); err != nil || analyzed {
		t.Fatalf("statistics on tasks.success before ANALYZE: %v, %v", analyzed, err)
	}
	t.Run("NoStatistics", func(t *testing.T) { checkPlans(t, conn, true) })
	for _, phase := range []string{"ANALYZE", "VACUUM ANALYZE"} {
		for _, table := range []string{"tasks", "task_counts", "task_status_counts", "task_totals"} {
			if _, err := conn.ExecContext(ctx, phase+" "+table); err != nil {
				t.Fatal(err)
			}
		}
		name := map[string]string{"ANALYZE": "Analyzed", "VACUUM ANALYZE": "Vacuumed"}[phase]
		t.Run(name, func(t *testing.T) { checkPlans(t, conn, false) })
	}
}

// statusFilters are the status filters the plan tests combine with the
// other filters: none, each status alone, and each possible pair.
func statusFilters() [][2]string {
	out := [][2]string{{"", ""}}
	for _, st := range append([]taskstore.Status{""}, taskstore.Statuses[:]...) {
		for _, cb := range append([]taskstore.CallbackStatus{""}, taskstore.CallbackStatuses[:]...) {
			if (st != "" || cb != "") && possible(st, cb) {
				out = append(out, [2]string{string(st), string(cb)})
			}
		}
	}
	return out
}

var readsTasks = regexp.MustCompile(`\bon tasks\b`)

// checkPlans checks the plans of TestExplainNoSeqScan on loadSynthetic's
// data; guessing allows a full scan for a window with only a lower bound.
func checkPlans(t *testing.T, conn *sqlx.Conn, guessing bool) {
	ctx := context.Background()
	day := 24 * time.Hour
	id := func(g int) string { // the id loadSynthetic gives task g
		var v string
		if err := conn.QueryRowContext(ctx, `SELECT md5($1::int::text)::uuid::text`, g).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	values := []struct {
		name                   string
		ids, traces, types     []string
		app, user              string
		windowMin, windowMax   time.Time
		openMin, openMaxWindow bool
	}{
		{name: "one", ids: []string{id(4103)}, traces: []string{"trace-4100"}, types: []string{"images_edits"},
			app: "app-3", user: "user-103", windowMin: explainBase.Add(10 * day), windowMax: explainBase.Add(11 * day)},
		{name: "many", ids: []string{id(4103), id(77), id(30001)}, traces: []string{"trace-4100", "trace-8", "trace-30000"},
			types: []string{"images_edits", "chat_completions_image"}, app: "app-3", user: "user-103",
			windowMin: explainBase.Add(10 * day), windowMax: explainBase.Add(11 * day)},
		{name: "since", ids: []string{id(4103)}, traces: []string{"trace-4100"}, types: []string{"images_edits"},
			app: "app-3", user: "user-103", windowMin: explainBase.Add(30 * day)},
	}
	checked := 0
	for _, v := range values {
		for _, sf := range statusFilters() {
			for mask := 0; mask < 64; mask++ {
				// Every combination with the "one" values; with the
				// others, each filter alone (and all combinations
				// without a status filter).
				if v.name != "one" && sf != [2]string{} && mask&(mask-1) != 0 {
					continue
				}
				f := taskstore.Filter{Limit: 12, Offset: 0, Status: taskstore.Status(sf[0]), CallbackStatus: taskstore.CallbackStatus(sf[1])}
				var parts []string
				if sf[0] != "" {
					parts = append(parts, "status="+sf[0])
				}
				if sf[1] != "" {
					parts = append(parts, "callback="+sf[1])
				}
				if mask&1 != 0 {
					f.IDs = v.ids
					parts = append(parts, "ids")
				}
				if mask&2 != 0 {
					f.TraceIDs = v.traces
					parts = append(parts, "traces")
				}
				if mask&4 != 0 {
					f.ApplicationID = v.app
					parts = append(parts, "app")
				}
				if mask&8 != 0 {
					f.UserID = v.user
					parts = append(parts, "user")
				}
				if mask&16 != 0 {
					f.Types = v.types
					parts = append(parts, "types")
				}
				if mask&32 != 0 {
					f.CreatedMin, f.CreatedMax = v.windowMin, v.windowMax
					parts = append(parts, "window")
				}
				q, ok := buildFind(f)
				if !ok {
					t.Fatalf("%v: buildFind found the filter empty", f)
				}
				shape := v.name + "/" + strings.Join(parts, "+")
				if len(parts) == 0 {
					shape = v.name + "/none"
				}
				for _, stmt := range []struct {
					kind, sql string
					args      []any
				}{
					{"page", q.page, append(slices.Clip(q.args), f.Limit, f.Offset)},
					{"count", q.count, q.args},
				} {
					modes := []string{"force_custom_plan", "force_generic_plan"}
					if q.planEachTime {
						modes = modes[:1] // never run from a cached plan
					}
					for _, mode := range modes {
						plan := explain(t, conn, mode, stmt.sql, stmt.args)
						checked++
						openWindow := mask&32 != 0 && v.windowMax.IsZero()
						if strings.Contains(plan, "Seq Scan on tasks ") && !(guessing && openWindow) {
							t.Errorf("%s %s (%s) scans the tasks table:\n%s\n%s", shape, stmt.kind, mode, stmt.sql, plan)
						}
						if stmt.kind == "count" && q.fromCounts && readsTasks.MatchString(plan) {
							t.Errorf("%s count (%s) reads the tasks table instead of the counters:\n%s\n%s", shape, mode, stmt.sql, plan)
						}
					}
				}
			}
		}
	}
	// The outbox, the lease sweep, pruning and redelivery run on their
	// partial indexes (or on the primary key).
	now := explainBase.Add(20 * day).UnixMilli()
	for _, stmt := range []struct {
		name, sql string
		args      []any
	}{
		{"claim", claimDeliveries, []any{now, now + 60000, 100, ""}},
		{"claim1000", claimDeliveries, []any{now, now + 60000, 1000, ""}},
		{"claimNamed", claimDeliveries, []any{now, now + 60000, 100, "svc-b"}},
		{"abandoned", abandonedTasks, []any{now, 100, ""}},
		{"prune", pruneTasks, []any{now, 1000}},
		{"renew", renewLeases, []any{[]string{id(1), id(2)}, now}},
		{"redeliver", redeliver, []any{[]string{id(2), id(6), id(7)}, now}},
		{"redeliver100", redeliver, []any{func() []string {
			var l []string
			for g := 1; g <= 100; g++ {
				l = append(l, id(g*97))
			}
			return l
		}(), now}},
		{"startBatch", startBatch, []any{[]string{id(1), id(2), id(3)}, []int64{now, now, now}}},
		{"finishBatch", finishBatch, []any{[]string{id(1), id(2)}, []string{`{}`, `{}`}, []int64{now, now}, []bool{true, false}}},
		{"recordBatch", recordBatch, []any{[]string{id(1), id(2)}, []int32{204, 500}, []string{"", "x"}, []int64{now, 0}, []int64{0, now}}},
		{"redeliverFailed", redeliverFailed, []any{int64(0), now, 500, ""}},
		{"redeliverFailedSince", redeliverFailed, []any{now, now, 500, ""}},
	} {
		for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
			plan := explain(t, conn, mode, stmt.sql, stmt.args)
			checked++
			if strings.Contains(plan, "Seq Scan on tasks ") {
				t.Errorf("%s (%s) scans the tasks table:\n%s", stmt.name, mode, plan)
			}
			if strings.HasPrefix(stmt.name, "redeliverFailed") && !strings.Contains(plan, "tasks_callback_failed_finished") {
				t.Errorf("%s (%s) does not use the index of failed callbacks:\n%s", stmt.name, mode, plan)
			}
			// A claim reads one recorder's range of the outbox, in its order.
			if strings.HasPrefix(stmt.name, "claim") && (!strings.Contains(plan, "tasks_outbox") ||
				!strings.Contains(plan, "recorder = ") || strings.Contains(plan, "Sort")) {
				t.Errorf("%s (%s) does not read a range of the outbox in order:\n%s", stmt.name, mode, plan)
			}
		}
	}
	t.Logf("%d plans checked", checked)
}

// explain returns the plan of query with args under the given
// plan_cache_mode, through PREPARE and EXPLAIN EXECUTE so that the generic
// plan is the one a cached statement would use.
func explain(t *testing.T, conn *sqlx.Conn, mode, query string, args []any) string {
	t.Helper()
	ctx := context.Background()
	lits := make([]string, len(args))
	for i, a := range args {
		lits[i] = sqlLiteral(a)
	}
	stmts := []string{
		"SET plan_cache_mode = " + mode,
		"PREPARE explained AS " + query,
	}
	for _, st := range stmts {
		if _, err := conn.ExecContext(ctx, st); err != nil {
			t.Fatalf("%s: %v", st, err)
		}
	}
	defer conn.ExecContext(ctx, "DEALLOCATE explained")
	exec := "EXPLAIN EXECUTE explained"
	if len(lits) > 0 {
		exec += "(" + strings.Join(lits, ", ") + ")"
	}
	var lines []string
	if err := conn.SelectContext(ctx, &lines, exec); err != nil {
		t.Fatalf("%s: %v", exec, err)
	}
	return strings.Join(lines, "\n")
}

// sqlLiteral renders a test value as an SQL literal.
func sqlLiteral(v any) string {
	switch v := v.(type) {
	case string:
		return "'" + strings.ReplaceAll(v, "'", "''") + "'"
	case []string:
		parts := make([]string, len(v))
		for i, s := range v {
			parts[i] = sqlLiteral(s)
		}
		return "ARRAY[" + strings.Join(parts, ", ") + "]::text[]"
	case int:
		return strconv.Itoa(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case bool:
		return strconv.FormatBool(v)
	case []int64:
		parts := make([]string, len(v))
		for i, n := range v {
			parts[i] = strconv.FormatInt(n, 10)
		}
		return "ARRAY[" + strings.Join(parts, ", ") + "]::bigint[]"
	case []int32:
		parts := make([]string, len(v))
		for i, n := range v {
			parts[i] = strconv.Itoa(int(n))
		}
		return "ARRAY[" + strings.Join(parts, ", ") + "]::integer[]"
	case []bool:
		parts := make([]string, len(v))
		for i, b := range v {
			parts[i] = strconv.FormatBool(b)
		}
		return "ARRAY[" + strings.Join(parts, ", ") + "]::boolean[]"
	}
	panic(fmt.Sprintf("sqlLiteral: %T", v))
}
