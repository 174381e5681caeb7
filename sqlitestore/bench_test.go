package sqlitestore

// Benchmarks of the Store next to the same statements issued directly
// through database/sql and modernc.org/sqlite (prepared, same PRAGMAs, same
// schema): the BenchmarkRaw… siblings. Run them together:
//
//	go test -run '^$' -bench . -benchmem ./sqlitestore/
//
// The 1,000,000-row dataset is built once with bulk INSERT … SELECT
// statements and cached under os.TempDir(), keyed by schema and dataset
// version; -short skips it.

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// benchDataVersion changes whenever fillSQL changes, so that a cached
// dataset of the old shape is not reused.
const benchDataVersion = 2

const (
	benchUsers = 100
	benchApps  = 10
)

// fillSQL inserts the tasks numbered [?, ?) in one statement: UUID-shaped
// ids in random order, a trace id on one task in four, three types, ten
// applications, a hundred users, finished, with request and response
// bodies the size of real image API calls; the callback of one task in a
// hundred given up (the receiver answered 410), the others delivered.
const fillSQL = `WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)
INSERT INTO tasks (id, trace_id, type, created_ms, started_ms, finished_ms, application_id, user_id,
	credential_id, callback_url, attempts, delivered_ms, last_status, gave_up, request, response)
SELECT printf('%08x-%04x-4%03x-8%03x-%012x', (i * 2654435761) % 4294967296, i % 65536, i % 4096, (i / 7) % 4096, i),
	CASE WHEN i % 4 = 0 THEN printf('trace-%d', i) ELSE '' END,
	CASE i % 3 WHEN 0 THEN 'images_generations' WHEN 1 THEN 'images_edits' ELSE 'images_variations' END,
	1700000000000 + i * 10, 1700000000000 + i * 10 + 3, 1700000000000 + i * 10 + 9000,
	printf('app-%d', i % 10), printf('user-%03d', i % 100), printf('cred-%03d', i % 100),
	'https://example.com/callback', 1,
	CASE WHEN (i + i / 100 * 37) % 100 = 42 THEN 0 ELSE 1700000000000 + i * 10 + 9500 END,
	CASE WHEN (i + i / 100 * 37) % 100 = 42 THEN 410 ELSE 200 END, (i + i / 100 * 37) % 100 = 42,
	printf('{"model":"gpt-image-1","prompt":"A cat number %d sitting on a windowsill at dusk","size":"1024x1024","callback_url":"https://example.com/callback"}', i),
	printf('{"success":true,"task_id":"%d","created":1763142637,"data":[{"url":"https://cdn.example.com/images/%d.png"}]}', i, i)
FROM n`

// benchID is the id fillSQL gives task i.
func benchID(i int) string {
	return fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", (i*2654435761)%4294967296, i%65536, i%4096, (i/7)%4096, i)
}

// fill bulk-inserts tasks [0, n) into the database at path, in large
// transactions.
func fill(tb testing.TB, path string, n int) {
	tb.Helper()
	s, err := Open(path) // creates the schema
	if err != nil {
		tb.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("sqlite", path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(OFF)&_pragma=cache_size(-262144)")
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	const chunk = 100_000
	for lo := 0; lo < n; lo += chunk {
		if _, err := db.Exec(fillSQL, lo, min(lo+chunk, n)); err != nil {
			tb.Fatal(err)
		}
	}
	if _, err := db.Exec("PRAGMA wal_checkpoint(TRUNCATE)"); err != nil {
		tb.Fatal(err)
	}
}

// dataset returns the path of a database holding n tasks made by fillSQL,
// cached under os.TempDir() between runs.
func dataset(b *testing.B, n int) string {
	b.Helper()
	if n >= 1_000_000 && testing.Short() {
		b.Skip("the 1M-row dataset is skipped in -short mode")
	}
	path := filepath.Join(os.TempDir(), fmt.Sprintf("sqlitestore-bench-s%d-d%d-%d.db", SchemaVersion(), benchDataVersion, n))
	if _, err := os.Stat(path); err == nil {
		return path
	}
	start := time.Now()
	tmp := filepath.Join(os.TempDir(), fmt.Sprintf("sqlitestore-bench-build-%d-%d.db", os.Getpid(), n))
	fill(b, tmp, n)
	if err := os.Rename(tmp, path); err != nil {
		b.Fatal(err)
	}
	os.Remove(tmp + "-wal")
	os.Remove(tmp + "-shm")
	db, err := sql.Open("sqlite", path+"?_pragma=query_only(1)")
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var payload float64
	db.QueryRow(`SELECT avg(length(id) + length(trace_id) + length(type) + length(application_id) + length(user_id)
		+ length(credential_id) + length(callback_url) + length(request) + length(response)) FROM tasks`).Scan(&payload)
	fi, _ := os.Stat(path)
	b.Logf("built %d tasks in %v: %d bytes on disk, %.0f bytes per task for %.0f payload bytes (%.2fx)",
		n, time.Since(start).Round(time.Millisecond), fi.Size(), float64(fi.Size())/float64(n), payload,
		float64(fi.Size())/float64(n)/payload)
	return path
}

func benchOpen(b *testing.B, path string) *Store {
	b.Helper()
	s, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// rawOpenDB opens the database at path through database/sql with the DSN
// the Store uses for its writer or its readers.
func rawOpenDB(b *testing.B, path string, writer bool) *sql.DB {
	b.Helper()
	o := options{readConns: 4, busyTimeout: 10 * time.Second}
	db, err := sql.Open("sqlite", dsn(path, o, writer))
	if err != nil {
		b.Fatal(err)
	}
	if writer {
		db.SetMaxOpenConns(1)
	} else {
		db.SetMaxOpenConns(o.readConns)
		db.SetMaxIdleConns(o.readConns)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

func rawPrepare(b *testing.B, db *sql.DB, query string) *sql.Stmt {
	b.Helper()
	st, err := db.Prepare(query)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

// emptyDB returns a new database with the schema and no tasks.
func emptyDB(b *testing.B) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "tasks.db")
	fill(b, path, 0)
	return path
}

var benchRequest = json.RawMessage(`{"model":"gpt-image-1","prompt":"A cat sitting on a windowsill at dusk","size":"1024x1024","callback_url":"https://example.com/callback"}`)

func benchTask(i int) taskstore.Task {
	return taskstore.Task{
		ID: benchID(i), Type: "images_generations", Request: benchRequest,
		CreatedAt:     time.UnixMilli(1_700_000_000_000 + int64(i)),
		ApplicationID: "app-1", UserID: "user-001", CredentialID: "cred-001",
		Callback: taskstore.Callback{URL: "https://example.com/callback"},
	}
}

func BenchmarkCreate(b *testing.B) {
	s := benchOpen(b, emptyDB(b))
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		if err := s.Create(ctx, benchTask(i)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawCreate(b *testing.B) {
	db := rawOpenDB(b, emptyDB(b), true)
	st := rawPrepare(b, db, insertSQL)
	b.ResetTimer()
	for i := range b.N {
		if _, err := st.Exec(insertArgs(benchTask(i))...); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCreateParallel64 creates tasks from 64 goroutines: the writer
// groups the calls waiting for it into shared transactions.
func BenchmarkCreateParallel64(b *testing.B) {
	s := benchOpen(b, emptyDB(b))
	ctx := context.Background()
	var next atomic.Int64
	commits := s.w.commits.Load()
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Create(ctx, benchTask(int(next.Add(1)))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	if c := s.w.commits.Load() - commits; c > 0 {
		b.ReportMetric(float64(b.N)/float64(c), "creates/commit")
	}
}

// BenchmarkRawCreateParallel64 issues the same INSERT from 64 goroutines
// through the raw driver's single write connection, one transaction each.
func BenchmarkRawCreateParallel64(b *testing.B) {
	db := rawOpenDB(b, emptyDB(b), true)
	st := rawPrepare(b, db, insertSQL)
	var next atomic.Int64
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := st.Exec(insertArgs(benchTask(int(next.Add(1))))...); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkRawCreateSchema measures what the schema costs a create: the
// Store's INSERT through the raw driver, k tasks per transaction (the
// writer groups up to 128 calls; 500 shows the cost of bulk loading, as
// Import does), on the full schema and on copies with B-trees
// dropped:
//
//   - full: the table, tasks_id, the five listing indexes (created, trace,
//     app, user, type), tasks_lease and the task_counts trigger: nine
//     B-trees per create (the partial indexes tasks_outbox and tasks_done
//     hold no unfinished task, and the status counter trigger fires on
//     updates only);
//   - app-user: without tasks_created, tasks_trace, tasks_type, tasks_lease
//     and the count trigger (the table, tasks_id, tasks_app, tasks_user);
//   - id-only: the table and tasks_id alone.
//
// Tasks look like the ones callback mode makes: version 7 ids (appended
// in order), a trace id, a lease, one user. The B-trees, not the statement,
// set the cost: each one is at least one page written to the WAL per
// commit. See BENCHMARKS.md for what this means for callback submissions.
func BenchmarkRawCreateSchema(b *testing.B) {
	schemas := []struct{ name, drop string }{
		{"full", ""},
		{"app-user", `DROP INDEX tasks_created; DROP INDEX tasks_trace; DROP INDEX tasks_type;
			DROP INDEX tasks_lease; DROP TRIGGER tasks_count_insert`},
		{"id-only", `DROP INDEX tasks_created; DROP INDEX tasks_trace; DROP INDEX tasks_type;
			DROP INDEX tasks_lease; DROP TRIGGER tasks_count_insert; DROP INDEX tasks_app; DROP INDEX tasks_user`},
	}
	request := json.RawMessage(`{"model":"gpt-image-1","prompt":"A watercolor painting of a cat sitting on a windowsill at dusk","size":"1024x1024","n":1,"trace_id":"bench-trace"}`)
	for _, sc := range schemas {
		for _, k := range []int{1, 6, 16, 500} {
			b.Run(fmt.Sprintf("schema=%s/batch=%d", sc.name, k), func(b *testing.B) {
				db := rawOpenDB(b, emptyDB(b), true)
				if sc.drop != "" {
					if _, err := db.Exec(sc.drop); err != nil {
						b.Fatal(err)
					}
				}
				ins := rawPrepare(b, db, insertSQL)
				args := make([][]any, b.N)
				for i := range args {
					now := time.UnixMilli(1_700_000_000_000 + int64(i))
					t, err := storekit.Normalize(taskstore.Task{
						ID: uuid.Must(uuid.NewV7()).String(), TraceID: "bench-trace", Type: "images_generations",
						CreatedAt: now, Request: request, ApplicationID: "app-1", UserID: "user-001", CredentialID: "cred-001",
						Callback: taskstore.Callback{URL: "https://client.example.com/hooks"}, LeaseUntil: now.Add(time.Minute),
					}, now)
					if err != nil {
						b.Fatal(err)
					}
					args[i] = insertArgs(t)
				}
				b.ResetTimer()
				for i := 0; i < b.N; i += k {
					tx, err := db.Begin()
					if err != nil {
						b.Fatal(err)
					}
					st := tx.Stmt(ins)
					for j := i; j < min(i+k, b.N); j++ {
						if _, err := st.Exec(args[j]...); err != nil {
							b.Fatal(err)
						}
					}
					if err := tx.Commit(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// unfinished returns a database holding n unfinished tasks (benchTask ids).
func unfinished(b *testing.B, n int) string {
	b.Helper()
	path := emptyDB(b)
	db := rawOpenDB(b, path, true)
	tx, err := db.Begin()
	if err != nil {
		b.Fatal(err)
	}
	st, err := tx.Prepare(insertSQL)
	if err != nil {
		b.Fatal(err)
	}
	for i := range n {
		if _, err := st.Exec(insertArgs(benchTask(i))...); err != nil {
			b.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	db.Close()
	return path
}

var benchResponse = json.RawMessage(`{"success":true,"task_id":"x","created":1763142637,"data":[{"url":"https://cdn.example.com/images/x.png"}]}`)

func BenchmarkFinish(b *testing.B) {
	s := benchOpen(b, unfinished(b, b.N))
	ctx := context.Background()
	at := time.UnixMilli(1_763_142_637_404)
	b.ResetTimer()
	for i := range b.N {
		if err := s.Finish(ctx, benchID(i), benchResponse, at); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawFinish(b *testing.B) {
	db := rawOpenDB(b, unfinished(b, b.N), true)
	st := rawPrepare(b, db, finishSQL)
	at := int64(1_763_142_637_404)
	resp := string(benchResponse)
	b.ResetTimer()
	for i := range b.N {
		res, err := st.Exec(resp, at, at, benchID(i))
		if err != nil {
			b.Fatal(err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			b.Fatalf("finished %d rows", n)
		}
	}
}

// benchIDs returns ids of tasks in a dataset of n, in random order.
func benchIDs(n int) []string {
	rng := rand.New(rand.NewPCG(1, 2))
	ids := make([]string, 4096)
	for i := range ids {
		ids[i] = benchID(rng.IntN(n))
	}
	return ids
}

// benchGet reads random tasks of a dataset of n. With cancellable set, the
// context can be cancelled (as an HTTP request's is), which makes the
// driver watch it during each statement.
func benchGet(b *testing.B, n int, cancellable bool) {
	s := benchOpen(b, dataset(b, n))
	ids := benchIDs(n)
	ctx := context.Background()
	if cancellable {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
	}
	b.ResetTimer()
	for i := range b.N {
		t, err := s.Get(ctx, ids[i%len(ids)])
		if err != nil || t.Response == nil {
			b.Fatal(err)
		}
	}
}

// benchRawGet runs the Store's statement through database/sql, scanning the
// packed row into a []byte, as the Store did before its read path left
// database/sql.
func benchRawGet(b *testing.B, n int) {
	db := rawOpenDB(b, dataset(b, n), false)
	st := rawPrepare(b, db, readGetSQL)
	ids := benchIDs(n)
	b.ResetTimer()
	for i := range b.N {
		var packed []byte
		if err := st.QueryRow(ids[i%len(ids)]).Scan(&packed); err != nil {
			b.Fatal(err)
		}
		if _, err := unpackTask(packed); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkGet10k(b *testing.B)              { benchGet(b, 10_000, false) }
func BenchmarkRawGet10k(b *testing.B)           { benchRawGet(b, 10_000) }
func BenchmarkGet1M(b *testing.B)               { benchGet(b, 1_000_000, false) }
func BenchmarkGet1MCancellableCtx(b *testing.B) { benchGet(b, 1_000_000, true) }
func BenchmarkRawGet1M(b *testing.B)            { benchRawGet(b, 1_000_000) }

func benchFindByUser(b *testing.B, n int) {
	s := benchOpen(b, dataset(b, n))
	ctx := context.Background()
	want := n / benchUsers
	b.ResetTimer()
	for i := range b.N {
		page, total, err := s.Find(ctx, taskstore.Filter{UserID: fmt.Sprintf("user-%03d", i%benchUsers), Limit: 12})
		if err != nil || len(page) != 12 || total != want {
			b.Fatalf("Find: %d items, total %d (want %d), err %v", len(page), total, want, err)
		}
	}
}

// benchRawFindByUser runs the statements Find runs for a later page of a
// user filter (the count from task_counts, then the page from tasks_user)
// through database/sql in one read transaction, scanning the packed rows
// into []byte. (A first page, which Find reads with the total in one
// statement, costs the Store less than this.)
func benchRawFindByUser(b *testing.B, n int) {
	db := rawOpenDB(b, dataset(b, n), false)
	q, _ := buildFind(taskstore.Filter{UserID: "x", Limit: 12})
	count := rawPrepare(b, db, q.countSQL)
	pageSt := rawPrepare(b, db, q.pageSQL)
	want := n / benchUsers
	b.ResetTimer()
	for i := range b.N {
		user := "user-" + fmt.Sprintf("%03d", i%benchUsers)
		tx, err := db.BeginTx(context.Background(), &sql.TxOptions{ReadOnly: true})
		if err != nil {
			b.Fatal(err)
		}
		var total int
		if err := tx.Stmt(count).QueryRow(user).Scan(&total); err != nil || total != want {
			b.Fatalf("count %d, want %d: %v", total, want, err)
		}
		rows, err := tx.Stmt(pageSt).Query(user, 12, 0)
		if err != nil {
			b.Fatal(err)
		}
		got := 0
		for rows.Next() {
			var packed []byte
			if err := rows.Scan(&packed); err != nil {
				b.Fatal(err)
			}
			if _, err := unpackTask(packed); err != nil {
				b.Fatal(err)
			}
			got++
		}
		rows.Close()
		tx.Rollback()
		if got != 12 {
			b.Fatalf("page of %d", got)
		}
	}
}

func BenchmarkFindByUser10k(b *testing.B)    { benchFindByUser(b, 10_000) }
func BenchmarkRawFindByUser10k(b *testing.B) { benchRawFindByUser(b, 10_000) }
func BenchmarkFindByUser1M(b *testing.B)     { benchFindByUser(b, 1_000_000) }
func BenchmarkRawFindByUser1M(b *testing.B)  { benchRawFindByUser(b, 1_000_000) }

// BenchmarkFindByApp1MWithOffset pages deep into one application's 100,000
// tasks (offset 1,000): the index range is skipped without reading rows.
func BenchmarkFindByApp1MWithOffset(b *testing.B) {
	s := benchOpen(b, dataset(b, 1_000_000))
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		page, total, err := s.Find(ctx, taskstore.Filter{ApplicationID: "app-" + strconv.Itoa(i%benchApps), Offset: 1000, Limit: 12})
		if err != nil || len(page) != 12 || total != 1_000_000/benchApps {
			b.Fatalf("Find: %d items, total %d, err %v", len(page), total, err)
		}
	}
}

// BenchmarkStart starts tasks one by one: the status moves from pending to
// running (the counter trigger; no index holds the status of an unfinished
// task).
func BenchmarkStart(b *testing.B) {
	s := benchOpen(b, unfinished(b, b.N))
	ctx := context.Background()
	at := time.UnixMilli(1_763_142_637_000)
	b.ResetTimer()
	for i := range b.N {
		if err := s.Start(ctx, benchID(i), at); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeliver claims due callbacks 16 at a time and records each as
// delivered, as the callback recorder does (serially here): per task, one
// claim (which moves the due time and marks it in flight) and one attempt
// (the status moves from pending to delivered: tasks_done and the counter
// trigger).
func BenchmarkDeliver(b *testing.B) {
	path := emptyDB(b)
	s := benchOpen(b, path)
	ctx := context.Background()
	due := time.UnixMilli(1_763_142_637_404)
	tasks := make([]taskstore.Task, 0, 10_000)
	for i := 0; i < b.N; i += len(tasks) {
		tasks = tasks[:0]
		for j := i; j < min(i+cap(tasks), b.N); j++ {
			t := benchTask(j)
			t.StartedAt, t.FinishedAt, t.Response = due, due, benchResponse
			t.Callback.NextAttemptAt = due
			tasks = append(tasks, t)
		}
		if err := s.Import(ctx, tasks); err != nil {
			b.Fatal(err)
		}
	}
	now := due.Add(time.Second)
	b.ResetTimer()
	for done := 0; done < b.N; {
		claimed, err := s.ClaimDeliveries(ctx, "", now, time.Minute, 16)
		if err != nil || len(claimed) == 0 {
			b.Fatalf("claimed %d after %d: %v", len(claimed), done, err)
		}
		for _, t := range claimed {
			if err := s.RecordAttempt(ctx, t.ID, taskstore.Attempt{At: now, Status: 204, Delivered: true}); err != nil {
				b.Fatal(err)
			}
		}
		done += len(claimed)
	}
}

// benchFind runs one filter on the 1,000,000-task dataset, checking the
// total: the filters of retrieve_batch with status or callback_status.
// Compare with BenchmarkGet1M (the target: callback_status failed,
// limit 12, count included, at most 3x a retrieve by id).
func benchFind(b *testing.B, f taskstore.Filter, want int) {
	s := benchOpen(b, dataset(b, 1_000_000))
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		page, total, err := s.Find(ctx, f)
		if err != nil || total != want || len(page) != min(f.Limit, want) {
			b.Fatalf("Find: %d items, total %d (want %d), err %v", len(page), total, want, err)
		}
	}
}

// 1% of the dataset's callbacks were given up: 10,000 in all, 1,000 per
// application, 100 per user.
func BenchmarkFindCallbackFailed1M(b *testing.B) {
	benchFind(b, taskstore.Filter{CallbackStatus: taskstore.CallbackFailed, Limit: 12}, 10_000)
}

func BenchmarkFindAppCallbackFailed1M(b *testing.B) {
	benchFind(b, taskstore.Filter{ApplicationID: "app-3", CallbackStatus: taskstore.CallbackFailed, Limit: 12}, 1_000)
}

func BenchmarkFindUserCallbackFailed1M(b *testing.B) {
	benchFind(b, taskstore.Filter{UserID: "user-007", CallbackStatus: taskstore.CallbackFailed, Limit: 12}, 100)
}

func BenchmarkFindUserSucceeded1M(b *testing.B) {
	benchFind(b, taskstore.Filter{UserID: "user-007", Status: taskstore.StatusSucceeded, Limit: 12}, 10_000)
}

func BenchmarkFindRunning1M(b *testing.B) {
	benchFind(b, taskstore.Filter{Status: taskstore.StatusRunning, Limit: 12}, 0)
}

// BenchmarkStartParallel64 starts tasks from 64 goroutines: the writer
// groups the calls, so the counter rows each start changes are written
// once per group.
func BenchmarkStartParallel64(b *testing.B) {
	s := benchOpen(b, unfinished(b, b.N))
	ctx := context.Background()
	at := time.UnixMilli(1_763_142_637_000)
	var next atomic.Int64
	b.SetParallelism(max(1, 64/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Start(ctx, benchID(int(next.Add(1)-1)), at); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkDeliverParallel16 delivers due callbacks from 16 goroutines,
// each claiming 4 at a time and recording each as delivered, as the
// callback recorder's workers do.
func BenchmarkDeliverParallel16(b *testing.B) {
	s := benchOpen(b, emptyDB(b))
	ctx := context.Background()
	due := time.UnixMilli(1_763_142_637_404)
	tasks := make([]taskstore.Task, 0, 10_000)
	for i := 0; i < b.N; i += len(tasks) {
		tasks = tasks[:0]
		for j := i; j < min(i+cap(tasks), b.N); j++ {
			t := benchTask(j)
			t.StartedAt, t.FinishedAt, t.Response = due, due, benchResponse
			t.Callback.NextAttemptAt = due
			tasks = append(tasks, t)
		}
		if err := s.Import(ctx, tasks); err != nil {
			b.Fatal(err)
		}
	}
	now := due.Add(time.Second)
	var left atomic.Int64
	left.Store(int64(b.N))
	b.ResetTimer()
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for left.Load() > 0 {
				claimed, err := s.ClaimDeliveries(ctx, "", now, time.Minute, 4)
				if err != nil {
					b.Error(err)
					return
				}
				for _, t := range claimed {
					if err := s.RecordAttempt(ctx, t.ID, taskstore.Attempt{At: now, Status: 204, Delivered: true}); err != nil {
						b.Error(err)
						return
					}
					left.Add(-1)
				}
			}
		})
	}
	wg.Wait()
}
