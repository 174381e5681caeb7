package pgstore_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/internal/pgtest"
	"github.com/tasksapi/tasks/pgstore"
	"github.com/tasksapi/tasks/taskstore"
)

// BenchmarkLifecycle runs b.N callback-mode tasks through three recorders
// (replicas, each with its own pool) on one schema, as a busy deployment
// would: 16 submitters keep the queues full (backing off on ErrQueueFull),
// tasks run for 0–20 ms, a receiver answers every callback 204, two
// readers list and fetch tasks as Tasks API clients do, and the lease is
// 3 s, so that the queued and running tasks' leases are renewed every
// second. It then reports what the database did per task, from its
// statistics (read after every connection has closed, so every backend has
// flushed them):
//
//	commits/task  transactions committed (pg_stat_database.xact_commit)
//	wal-B/task    WAL written (pg_stat_wal.wal_bytes)
//	upd/task      row updates of tasks (pg_stat_user_tables.n_tup_upd)
//	hot-%         the share of them that were HOT (n_tup_hot_upd)
//
// The database and WAL figures are server-wide: run it on a server of its
// own (pgtest.Cluster, or .ci/start-postgres.sh with nothing else running).
// With pg_stat_statements loaded (shared_preload_libraries, and
// pg_stat_statements.track = all to see the statements of the triggers)
// and the extension created, it also reports writes/task, the top-level
// INSERT, UPDATE, DELETE and WITH statements (the store's reads are plain
// SELECTs; each statement is its own transaction, so these are the commits
// that write, without the reads'), and logs the statements by total time
// (-v):
//
//	go test -run '^$' -bench Lifecycle -benchtime 20000x -v ./pgstore/
func BenchmarkLifecycle(b *testing.B) {
	url := pgtest.FreshSchema(b, pgtest.URL(b))
	admin, err := sql.Open("pgx", url)
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close()
	ctx := context.Background()

	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer rc.Close()
	type replica struct {
		s   *pgstore.Store
		rec *callback.Recorder
	}
	var reps []replica
	for range 3 {
		s, err := pgstore.Open(ctx, url, pgstore.WithMaxOpenConns(10))
		if err != nil {
			b.Fatal(err)
		}
		rec, err := callback.New(s, callback.Options{
			Workers: 8, DeliveryWorkers: 8, Lease: 3 * time.Second, AttemptTimeout: time.Second,
			PollInterval: 50 * time.Millisecond, AllowPrivateNetworks: true, Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			b.Fatal(err)
		}
		reps = append(reps, replica{s, rec})
	}
	statements := hasStatements(admin)
	if statements {
		admin.ExecContext(ctx, `SELECT public.pg_stat_statements_reset()`)
	}
	before := readStats(b, admin)
	b.ResetTimer()

	var (
		next      atomic.Int64
		submitted = make([]string, b.N)
		wg        sync.WaitGroup
		stop      atomic.Bool
		failed    atomic.Value
	)
	for g := range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				r := reps[(g+i)%len(reps)]
				for {
					id, err := r.rec.Submit(ctx, callback.Submission{
						Type:        "images_generations",
						CallbackURL: rc.URL, Request: json.RawMessage(fmt.Sprintf(`{"prompt":"task %d","model":"gpt-image-1"}`, i)),
						Principal: taskstore.Principal{ApplicationID: "app", UserID: fmt.Sprint("user-", i%50)},
					}, func(ctx context.Context) (json.RawMessage, error) {
						time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
						return json.RawMessage(fmt.Sprintf(`{"created":1721626477,"data":[{"url":"https://cdn.example.com/%d.png"}]}`, i)), nil
					})
					if errors.Is(err, callback.ErrQueueFull) {
						time.Sleep(10 * time.Millisecond)
						continue
					}
					if err != nil {
						failed.Store(err)
						return
					}
					submitted[i] = id
					break
				}
			}
		})
	}
	var readers sync.WaitGroup
	for g := range 2 {
		readers.Go(func() {
			s := reps[g].s
			for i := 0; !stop.Load(); i++ {
				f := taskstore.Filter{ApplicationID: "app", UserID: fmt.Sprint("user-", i%50),
					Types: []string{"images_generations", "images_edits", "chat_completions_image"}, Limit: 12}
				if i%4 == 3 {
					f = taskstore.Filter{Status: taskstore.StatusRunning, Limit: 12}
				}
				page, _, err := s.Find(ctx, f)
				if err == nil && len(page) > 0 {
					_, err = s.Get(ctx, page[0].ID)
				}
				if err != nil {
					failed.Store(err)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	// Every task finished and called back.
	for _, id := range submitted {
		for {
			t, err := reps[0].s.Get(ctx, id)
			if err != nil {
				b.Fatal(err)
			}
			if t.CallbackStatus() == taskstore.CallbackDelivered {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	b.StopTimer()
	stop.Store(true)
	readers.Wait()
	for _, r := range reps {
		r.rec.Close(ctx)
		r.s.Close()
	}
	time.Sleep(500 * time.Millisecond) // the closed backends have flushed their statistics
	after := readStats(b, admin)
	n := float64(b.N)
	b.ReportMetric(float64(after.commits-before.commits)/n, "commits/task")
	b.ReportMetric(float64(after.wal-before.wal)/n, "wal-B/task")
	upd, hot := after.upd-before.upd, after.hot-before.hot
	b.ReportMetric(float64(upd)/n, "upd/task")
	if upd > 0 {
		b.ReportMetric(100*float64(hot)/float64(upd), "hot-%")
	}
	if statements {
		var writes float64
		err := admin.QueryRowContext(ctx, `SELECT coalesce(sum(calls), 0) FROM public.pg_stat_statements
			WHERE toplevel AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
			AND query ~* '^\s*(INSERT|UPDATE|DELETE|WITH)'`).Scan(&writes)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(writes/n, "writes/task")
		logStatements(b, admin)
	}
	logIndexes(b, admin)
}

// logIndexes logs how often each index of the tasks table was scanned and
// its size.
func logIndexes(b *testing.B, db *sql.DB) {
	rows, err := db.QueryContext(context.Background(), `SELECT indexrelname, idx_scan, idx_tup_read,
		pg_relation_size(indexrelid) FROM pg_stat_user_indexes
		WHERE schemaname = current_schema() AND relname = 'tasks' ORDER BY indexrelname`)
	if err != nil {
		b.Logf("pg_stat_user_indexes: %v", err)
		return
	}
	defer rows.Close()
	var out strings.Builder
	fmt.Fprintf(&out, "%-32s %10s %12s %10s\n", "index", "scans", "tuples read", "KiB")
	for rows.Next() {
		var name string
		var scans, read, size int64
		if err := rows.Scan(&name, &scans, &read, &size); err != nil {
			b.Logf("pg_stat_user_indexes: %v", err)
			return
		}
		fmt.Fprintf(&out, "%-32s %10d %12d %10d\n", name, scans, read, size>>10)
	}
	b.Logf("indexes of tasks:\n%s", out.String())
}

type dbStats struct{ commits, wal, upd, hot int64 }

func readStats(b *testing.B, db *sql.DB) dbStats {
	b.Helper()
	var s dbStats
	ctx := context.Background()
	db.ExecContext(ctx, `SELECT pg_stat_clear_snapshot()`)
	err := db.QueryRowContext(ctx, `SELECT
		(SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
		(SELECT wal_bytes::bigint FROM pg_stat_wal),
		coalesce((SELECT n_tup_upd FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = 'tasks'), 0),
		coalesce((SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname = 'tasks'), 0)`).
		Scan(&s.commits, &s.wal, &s.upd, &s.hot)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// hasStatements reports whether pg_stat_statements can be read.
func hasStatements(db *sql.DB) bool {
	var n int
	return db.QueryRowContext(context.Background(), `SELECT count(*) FROM public.pg_stat_statements`).Scan(&n) == nil
}

// logStatements logs the statements of this database by total time.
func logStatements(b *testing.B, db *sql.DB) {
	rows, err := db.QueryContext(context.Background(), `SELECT calls, round(total_exec_time::numeric, 1), round(mean_exec_time::numeric, 3),
		rows, regexp_replace(query, '\s+', ' ', 'g')
		FROM public.pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		ORDER BY total_exec_time DESC LIMIT 30`)
	if err != nil {
		b.Logf("pg_stat_statements: %v", err)
		return
	}
	defer rows.Close()
	var out strings.Builder
	fmt.Fprintf(&out, "%9s %10s %9s %9s  %s\n", "calls", "total ms", "mean ms", "rows", "statement")
	for rows.Next() {
		var calls, nrows int64
		var total, mean float64
		var q string
		if err := rows.Scan(&calls, &total, &mean, &nrows, &q); err != nil {
			b.Logf("pg_stat_statements: %v", err)
			return
		}
		if len(q) > 110 {
			q = q[:110] + "…"
		}
		fmt.Fprintf(&out, "%9d %10.1f %9.3f %9d  %s\n", calls, total, mean, nrows, q)
	}
	b.Logf("statements by total time:\n%s", out.String())
}
