package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/tasksapi/tasks/internal/storecopy"
	"github.com/tasksapi/tasks/pgstore"
	"github.com/tasksapi/tasks/sqlitestore"
	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// The copy scenarios (issue #18): `tasksd copy` of the large SQLite dataset
// into a new SQLite file and into a new PostgreSQL schema, each against
// loading the same rows with the bulk path alone, and the peak RSS of a
// copy in a process of its own. Ours is what the command runs: Copy, then
// Check (which walks the destination again), with the command's settings.

// copyBatch is the batch of the copy command (storecopy.DefaultBatch).
const copyBatch = storecopy.DefaultBatch

// pgCopyBatch is tasksd copy's batch into PostgreSQL.
const pgCopyBatch = 5000

// runCopy is what `tasksd copy` does once its stores are open, with its
// batch for the destination.
func runCopy(ctx context.Context, src, dst taskstore.Store) error {
	batch := copyBatch
	if _, ok := dst.(*pgstore.Store); ok {
		batch = pgCopyBatch
	}
	res, err := storecopy.Copy(ctx, src, dst, storecopy.Options{Batch: batch})
	if err != nil {
		return err
	}
	if !res.OK() {
		return fmt.Errorf("copy: %+v", res)
	}
	v, full, err := storecopy.Check(ctx, src, dst, res, storecopy.Options{Batch: batch})
	if err != nil {
		return err
	}
	if !v.OK() || full || v.Source.Tasks == 0 {
		return fmt.Errorf("verification failed: %+v", v)
	}
	return nil
}

// copyRounds is how many rounds each side of a copy comparison runs: a
// round of a million tasks takes a minute or more.
func (b *bench) copyRounds() int {
	if b.cfg.Rows >= 200_000 {
		return min(b.cfg.Rounds, 2)
	}
	return min(b.cfg.Rounds, 3)
}

// timeRounds runs ours and ref alternately (ours first in even rounds),
// each returning the time its measured part took, and returns the medians
// as ns per task.
func (b *bench) timeRounds(ctx context.Context, ours, ref func(ctx context.Context, round int) (time.Duration, error)) (pair, error) {
	var o, r []float64
	n := float64(b.cfg.Rows)
	for i := range b.copyRounds() {
		sides := []func(context.Context, int) (time.Duration, error){ours, ref}
		outs := []*[]float64{&o, &r}
		if i%2 == 1 {
			sides[0], sides[1] = sides[1], sides[0]
			outs[0], outs[1] = outs[1], outs[0]
		}
		for j, side := range sides {
			d, err := side(ctx, i)
			if err != nil {
				return pair{}, err
			}
			*outs[j] = append(*outs[j], float64(d.Nanoseconds())/n)
		}
	}
	return pair{oursNs: medianOf(o), refNs: medianOf(r)}, nil
}

func one(r Result, err error) ([]Result, error) {
	if err != nil {
		return nil, err
	}
	return []Result{r}, nil
}

func (b *bench) copySQLiteStep(ctx context.Context) ([]Result, error) {
	return one(b.copyToSQLite(ctx))
}
func (b *bench) copyRSSStep(ctx context.Context) ([]Result, error) { return one(b.copyRSS(ctx)) }

func (b *bench) copyPostgresStep(ctx context.Context) ([]Result, error) {
	if b.cfg.PG == "" {
		status(b.cfg, "no PostgreSQL (-pg or TASKS_PG_URL): the copy into PostgreSQL is not measured")
		return nil, nil
	}
	return one(b.copyToPostgres(ctx))
}

// removeDB removes a SQLite database and its side files.
func removeDB(path string) {
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(path + suffix)
	}
}

// copyToSQLite: the copy into a new SQLite file against sqlitestore.Import
// of the same rows in 10,000-task transactions (as the datasets are built),
// timing the Import calls alone.
func (b *bench) copyToSQLite(ctx context.Context) (Result, error) {
	ours := func(ctx context.Context, round int) (time.Duration, error) {
		path := filepath.Join(b.scratch, fmt.Sprintf("copy-%d.db", round))
		defer removeDB(path)
		dst, err := sqlitestore.Open(path)
		if err != nil {
			return 0, err
		}
		defer dst.Close()
		start := time.Now()
		err = runCopy(ctx, b.big, dst)
		return time.Since(start), err
	}
	ref := func(ctx context.Context, round int) (time.Duration, error) {
		path := filepath.Join(b.scratch, fmt.Sprintf("import-%d.db", round))
		defer removeDB(path)
		dst, err := sqlitestore.Open(path)
		if err != nil {
			return 0, err
		}
		defer dst.Close()
		var spent time.Duration
		chunk := make([]taskstore.Task, 0, importChunk)
		for lo := 0; lo < b.cfg.Rows; lo += importChunk {
			chunk = chunk[:0]
			for i := lo; i < min(lo+importChunk, b.cfg.Rows); i++ {
				chunk = append(chunk, genTask(i))
			}
			start := time.Now()
			if err := dst.Import(ctx, chunk); err != nil {
				return 0, err
			}
			spent += time.Since(start)
		}
		return spent, nil
	}
	p, err := b.timeRounds(ctx, ours, ref)
	if err != nil {
		return Result{}, err
	}
	return throughput(fmt.Sprintf("tasksd copy SQLite → SQLite, %s tasks (with its verification)", count(b.cfg.Rows)),
		"sqlitestore.Import of the same rows into a new file, 10,000-task transactions, Import calls alone", p, 0.5), nil
}

// copyToPostgres: the copy into a new PostgreSQL schema against pgx's
// CopyFrom of the same rows into pgstore's table (its indexes and
// triggers), 10,000 rows a COPY, timing the CopyFrom calls alone.
func (b *bench) copyToPostgres(ctx context.Context) (Result, error) {
	freshSchema := func(ctx context.Context) (string, func(), error) { return b.freshSchema(ctx, "tasksbench_copy_") }
	ours := func(ctx context.Context, _ int) (time.Duration, error) {
		u, drop, err := freshSchema(ctx)
		if err != nil {
			return 0, err
		}
		defer drop()
		dst, err := pgstore.Open(ctx, u, pgstore.WithMaxOpenConns(4)) // as tasksd copy opens it
		if err != nil {
			return 0, err
		}
		defer dst.Close()
		start := time.Now()
		err = runCopy(ctx, b.big, dst)
		return time.Since(start), err
	}
	ref := func(ctx context.Context, _ int) (time.Duration, error) {
		u, drop, err := freshSchema(ctx)
		if err != nil {
			return 0, err
		}
		defer drop()
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			return 0, err
		}
		defer conn.Close(context.Background())
		cols := []string{"id", "trace_id", "type", "created_ms", "started_ms", "finished_ms", "application_id",
			"user_id", "credential_id", "callback_url", "attempts", "next_attempt_ms", "delivered_ms", "last_status",
			"last_error", "lease_ms", "request", "response", "success"}
		var spent time.Duration
		rows := make([][]any, 0, importChunk)
		for lo := 0; lo < b.cfg.Rows; lo += importChunk {
			rows = rows[:0]
			for i := lo; i < min(lo+importChunk, b.cfg.Rows); i++ {
				t := genTask(i)
				rows = append(rows, []any{t.ID, t.TraceID, t.Type, ms(t.CreatedAt), ms(t.StartedAt), ms(t.FinishedAt),
					t.ApplicationID, t.UserID, t.CredentialID, t.Callback.URL, int32(t.Callback.Attempts),
					ms(t.Callback.NextAttemptAt), ms(t.Callback.DeliveredAt), int32(t.Callback.LastStatus),
					t.Callback.LastError, ms(t.LeaseUntil), []byte(t.Request), []byte(t.Response), taskstore.Succeeded(t.Response)})
			}
			start := time.Now()
			if _, err := conn.CopyFrom(ctx, pgx.Identifier{"tasks"}, cols, pgx.CopyFromRows(rows)); err != nil {
				return 0, err
			}
			spent += time.Since(start)
		}
		return spent, nil
	}
	p, err := b.timeRounds(ctx, ours, ref)
	if err != nil {
		return Result{}, err
	}
	return throughput(fmt.Sprintf("tasksd copy SQLite → PostgreSQL, %s tasks (with its verification, batches of %d)", count(b.cfg.Rows), pgCopyBatch),
		"pgx CopyFrom of the same rows into a new pgstore schema, 10,000 rows a COPY, CopyFrom calls alone", p, 0.5), nil
}

// freshSchema creates an empty PostgreSQL schema (its name prefix and a
// random suffix) with pgstore's tables and returns its URL and a function
// dropping it.
func (b *bench) freshSchema(ctx context.Context, prefix string) (string, func(), error) {
	admin, err := sql.Open("pgx", b.cfg.PG)
	if err != nil {
		return "", nil, err
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	name := prefix + hex.EncodeToString(rnd[:])
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+name); err != nil {
		admin.Close()
		return "", nil, err
	}
	drop := func() {
		admin.ExecContext(context.Background(), "DROP SCHEMA "+name+" CASCADE")
		admin.Close()
	}
	u, err := withSearchPath(b.cfg.PG, name)
	if err != nil {
		drop()
		return "", nil, err
	}
	s, err := pgstore.Open(ctx, u) // creates the tables
	if err != nil {
		drop()
		return "", nil, err
	}
	s.Close()
	return u, drop, nil
}

func ms(t time.Time) int64 { return storekit.ToMillis(t) }

// withSearchPath returns the connection string dsn (a URL or
// keyword/value string) with search_path set to schema.
func withSearchPath(dsn, schema string) (string, error) {
	if !strings.HasPrefix(dsn, "postgres://") && !strings.HasPrefix(dsn, "postgresql://") {
		return dsn + " search_path=" + schema, nil
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "", fmt.Errorf("-pg: not a valid URL")
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// copyRSS runs the copy (SQLite to SQLite, as the command does it) in a
// child process, for the small and the large dataset, and reports the
// large one's peak RSS (VmHWM) against 128 MiB.
func (b *bench) copyRSS(ctx context.Context) (Result, error) {
	exe, err := os.Executable()
	if err != nil {
		return Result{}, err
	}
	peak := func(n int) (float64, error) {
		dst := filepath.Join(b.scratch, fmt.Sprintf("copy-rss-%d.db", n))
		defer removeDB(dst)
		cmd := exec.CommandContext(ctx, exe)
		cmd.Env = append(os.Environ(), childEnv+"=copy", childDB+"="+b.paths[n], childTo+"="+dst)
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			return 0, fmt.Errorf("copy child: %w: %s", err, stderr)
		}
		var r rssReport
		if err := json.Unmarshal(out, &r); err != nil {
			return 0, fmt.Errorf("copy child answered %q: %w", out, err)
		}
		return float64(r.HWMKiB) / 1024, nil
	}
	small, err := peak(b.cfg.Small)
	if err != nil {
		return Result{}, err
	}
	large, err := peak(b.cfg.Rows)
	if err != nil {
		return Result{}, err
	}
	return Result{
		Scenario: fmt.Sprintf("tasksd copy process RSS, %s tasks (peak; %s tasks: %.1f MiB)", count(b.cfg.Rows), count(b.cfg.Small), small),
		RefName:  "limit", Unit: "MiB", Ours: large, Reference: 128, Ratio: large / 128, Target: "≤ 128 MiB", Pass: large <= 128,
	}, nil
}

// childTo names the destination of the copy child.
const childTo = "TASKSBENCH_TO"

// copyChild is the copy child: it copies the SQLite database in childDB
// into a new one at childTo, verifies, and prints its peak RSS as JSON.
func copyChild(stdout io.Writer) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "tasksbench copy child:", err)
		return 1
	}
	src, err := sqlitestore.Open(os.Getenv(childDB))
	if err != nil {
		return fail(err)
	}
	defer src.Close()
	dst, err := sqlitestore.Open(os.Getenv(childTo))
	if err != nil {
		return fail(err)
	}
	defer dst.Close()
	if err := runCopy(context.Background(), src, dst); err != nil {
		return fail(err)
	}
	rss, hwm, err := readRSS()
	if err != nil {
		return fail(err)
	}
	json.NewEncoder(stdout).Encode(rssReport{RSSKiB: rss, HWMKiB: hwm})
	return 0
}

// child runs the child process childEnv names: the copy's or the RSS
// scenario's.
func child(stdout io.Writer) int {
	if os.Getenv(childEnv) == "copy" {
		return copyChild(stdout)
	}
	return childMain(stdout)
}
