package pgstore

import (
	"context"
	"fmt"
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
// fourth task; the first third finished, a callback URL on every other one.
// Then VACUUM ANALYZE, as autovacuum would, so the planner has statistics
// and a visibility map.
func loadSynthetic(t testing.TB, s *Store, n int) {
	t.Helper()
	ctx := context.Background()
	start := explainBase.UnixMilli()
	if _, err := s.db.ExecContext(ctx, `INSERT INTO tasks (id, trace_id, type, created_ms, application_id, user_id,
		credential_id, callback_url, finished_ms, next_attempt_ms, lease_ms, request, response)
	SELECT md5(g::text)::uuid::text,
		CASE WHEN g % 4 = 0 THEN 'trace-' || g ELSE '' END,
		(ARRAY['images_generations', 'images_edits', 'chat_completions_image'])[1 + g % 3],
		$1::bigint + g::bigint * 60000,
		'app-' || (g % 1000) % 20,
		'user-' || g % 1000,
		'cred-' || g % 1000,
		CASE WHEN g % 2 = 0 THEN 'https://example.com/cb' ELSE '' END,
		CASE WHEN g < $2::int / 3 THEN $1::bigint + g::bigint * 60000 + 30000 ELSE 0 END,
		CASE WHEN g < $2::int / 3 AND g % 2 = 0 THEN $1::bigint + g::bigint * 60000 + 30000 ELSE 0 END,
		CASE WHEN g < $2::int / 3 THEN 0 ELSE $1::bigint + g::bigint * 60000 + 60000 END,
		'{"model":"gpt-image-1","prompt":"a cat","callback_url":"https://example.com/cb"}',
		CASE WHEN g < $2::int / 3 THEN '{"success":true,"data":[{"url":"https://example.com/x.png"}]}'::json END
	FROM generate_series(1, $2::int) g`, start, n); err != nil {
		t.Fatalf("bulk insert: %v", err)
	}
	if _, err := s.db.ExecContext(ctx, `VACUUM ANALYZE tasks`); err != nil {
		t.Fatalf("vacuum: %v", err)
	}
	if _, err := s.db.ExecContext(ctx, `VACUUM ANALYZE task_counts`); err != nil {
		t.Fatalf("vacuum: %v", err)
	}
}

// TestExplainNoSeqScan checks that no Find statement scans the whole tasks
// table, for every combination of the filter fields the handler can send
// (2^6 subsets of ids, trace_ids, application, user, types and window), with
// one-value and several-value lists, at 50,000 tasks, in both the plan
// PostgreSQL makes for the actual values (custom) and the one it may cache
// for any values (generic). Both the page statement (with its total) and the
// count-only statement (Limit 0) are checked. The unfiltered total needs no
// exemption: it is summed from task_counts.
func TestExplainNoSeqScan(t *testing.T) {
	if testing.Short() {
		t.Skip("bulk-loads 50,000 tasks")
	}
	s, _ := openInternal(t)
	loadSynthetic(t, s, 50_000)
	ctx := context.Background()
	conn, err := s.db.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

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
		for mask := 0; mask < 64; mask++ {
			f := taskstore.Filter{Limit: 12, Offset: 0}
			var parts []string
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
				{"page", q.page, append(q.args, f.Limit, f.Offset)},
				{"count", q.count, q.args},
			} {
				modes := []string{"force_custom_plan", "force_generic_plan"}
				if q.planEachTime {
					modes = modes[:1] // never run from a cached plan
				}
				for _, mode := range modes {
					plan := explain(t, conn, mode, stmt.sql, stmt.args)
					checked++
					if strings.Contains(plan, "Seq Scan on tasks") {
						t.Errorf("%s %s (%s) scans the tasks table:\n%s\n%s", shape, stmt.kind, mode, stmt.sql, plan)
					}
				}
			}
		}
	}
	// The outbox, the lease sweep and pruning run on their partial indexes.
	now := explainBase.Add(20 * day).UnixMilli()
	for _, stmt := range []struct {
		name, sql string
		args      []any
	}{
		{"claim", claimDeliveries, []any{now, now + 60000, 100}},
		{"claim1000", claimDeliveries, []any{now, now + 60000, 1000}},
		{"abandoned", abandonedTasks, []any{now, 100}},
		{"prune", pruneTasks, []any{now, 1000}},
		{"renew", renewLeases, []any{[]string{id(1), id(2)}, now}},
	} {
		for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
			plan := explain(t, conn, mode, stmt.sql, stmt.args)
			checked++
			if strings.Contains(plan, "Seq Scan on tasks") {
				t.Errorf("%s (%s) scans the tasks table:\n%s", stmt.name, mode, plan)
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
	}
	panic(fmt.Sprintf("sqlLiteral: %T", v))
}
