package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasksapi/tasks/internal/storecopy"
	"github.com/tasksapi/tasks/pgstore"
	"github.com/tasksapi/tasks/sqlitestore"
	"github.com/tasksapi/tasks/taskstore"
)

// dispatch runs a subcommand (copy, backup) when the first argument names
// one, and the server otherwise.
func dispatch(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "copy":
			return runCopy(ctx, args[1:], stdout, stderr)
		case "backup":
			return runBackup(ctx, args[1:], stdout, stderr)
		}
	}
	return run(ctx, args, getenv, stdout, stderr)
}

const copyUsage = `usage: tasksd copy -from SRC -to DST [-live] [-batch N]

Copies every task of SRC into DST, then verifies the copy. SRC and DST are
what -db takes: a SQLite file or a postgres:// URL (not :memory:), in any
direction. Every field is copied: request and response byte for byte, all
times, the principal and the callback state. An unfinished task is copied
without its lease and a delivery that was being attempted is copied due, so
the tasksd serving DST finishes the former as interrupted and calls back,
and delivers every pending callback, as after a crash.

Run it again after an interruption (Ctrl-C, a crash): tasks DST holds
already are skipped. A task DST holds with a different record is a conflict:
the command lists them and fails, and writes nothing when it finds them
before copying. At the end it reads DST back and prints, for SRC (as read)
and DST, the tasks per status and per callback status and a SHA-256 of the
records, checks that SRC's own counts have not moved, and fails on any
difference (after reading both again to list the tasks).

It refuses a source a running tasksd is writing to, unless -live is given:
a SQLite file another process has open (the lock SQLite's WAL mode keeps
while a connection is open), or a database in which an unfinished task
holds a lease that has not expired (a running tasksd renews the leases of
the tasks it has queued or running). With -live, whatever changes in SRC
after the copy has passed a task is missed (a task finishing, a callback
delivered, a task created after the copy reached the end); the verification
then lists those tasks and the command fails.

`

// pgBatch is the default batch into PostgreSQL: each batch is one COPY,
// whose statement-level triggers update the counters once, so larger
// batches cost the server less (a million tasks: 28 s of copying with
// batches of 5,000, 44 s with 2,000, one run each on two shared cores).
// Into SQLite, larger batches cost memory and gain little.
const pgBatch = 5000

// copyConfig is what the copy flags set.
type copyConfig struct {
	From, To string
	Live     bool
	Batch    int
}

func parseCopy(args []string, stderr io.Writer) (copyConfig, error) {
	var c copyConfig
	fs := flag.NewFlagSet("tasksd copy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		io.WriteString(stderr, copyUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.From, "from", "", "the store to copy from: a SQLite file or a postgres:// URL")
	fs.StringVar(&c.To, "to", "", "the store to copy into (created when it is a SQLite file that does not exist)")
	fs.BoolVar(&c.Live, "live", false, "copy even from a source a running tasksd is writing to (changes made during the copy may be missed)")
	fs.IntVar(&c.Batch, "batch", 0, fmt.Sprintf("tasks read and written at a time (default %d, %d into PostgreSQL)", storecopy.DefaultBatch, pgBatch))
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("copy: unexpected argument %q", fs.Arg(0))
	case c.From == "":
		return c, errors.New("copy: -from is required")
	case c.To == "":
		return c, errors.New("copy: -to is required")
	case c.Batch < 0:
		return c, errors.New("copy: -batch must be at least 1")
	case c.Batch == 0 && isPostgres(c.To):
		c.Batch = pgBatch
	case c.Batch == 0:
		c.Batch = storecopy.DefaultBatch
	}
	return c, nil
}

// isPostgres reports whether db is a PostgreSQL URL, as -db reads it.
func isPostgres(db string) bool {
	return strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://")
}

// describe names a store for messages, without a password.
func describe(db string) string {
	if isPostgres(db) {
		return redact(db)
	}
	return db
}

// sameStore reports whether a and b name the same database: the same file
// (by path or by identity), or the same PostgreSQL host, port, database and
// search_path.
func sameStore(a, b string) bool {
	if a == b {
		return true
	}
	if isPostgres(a) != isPostgres(b) {
		return false
	}
	if isPostgres(a) {
		ca, errA := pgx.ParseConfig(a)
		cb, errB := pgx.ParseConfig(b)
		return errA == nil && errB == nil && ca.Host == cb.Host && ca.Port == cb.Port &&
			ca.Database == cb.Database && ca.RuntimeParams["search_path"] == cb.RuntimeParams["search_path"]
	}
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	if errA == nil && errB == nil {
		return os.SameFile(fa, fb)
	}
	pa, errA := filepath.Abs(a)
	pb, errB := filepath.Abs(b)
	return errA == nil && errB == nil && pa == pb
}

// checkStoreArg refuses what cannot be a copy's source or destination
// before anything is opened.
func checkStoreArg(flagName, db string, source bool) error {
	switch {
	case db == ":memory:" && source:
		return fmt.Errorf("copy: -from :memory: is refused: a memory store lives inside one tasksd process and ends with it; nothing outside can read it")
	case db == ":memory:":
		return fmt.Errorf("copy: -to :memory: is refused: the copy would vanish when the command exits")
	case isPostgres(db):
		if _, err := pgx.ParseConfig(db); err != nil {
			return fmt.Errorf("copy: -%s: invalid PostgreSQL URL %s", flagName, describe(db))
		}
		return nil
	}
	fi, err := os.Stat(db)
	switch {
	case err == nil && fi.IsDir():
		return fmt.Errorf("copy: -%s %s is a directory, not a SQLite file", flagName, db)
	case errors.Is(err, os.ErrNotExist) && source:
		return fmt.Errorf("copy: -from %s: no such file", db)
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("copy: -%s: %w", flagName, err)
	}
	return nil
}

// openCopyStore opens one side of a copy. A SQLite file that does not
// exist yet is created only for the destination (the caller checked the
// source exists).
func openCopyStore(ctx context.Context, flagName, db string) (taskstore.Store, error) {
	if isPostgres(db) {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		s, err := pgstore.Open(cctx, db, pgstore.WithMaxOpenConns(4))
		if err != nil {
			return nil, fmt.Errorf("copy: -%s %s: %s", flagName, describe(db), oneLine(err))
		}
		return s, nil
	}
	s, err := sqlitestore.Open(db)
	if err != nil {
		return nil, fmt.Errorf("copy: -%s: %s", flagName, oneLine(err))
	}
	return s, nil
}

// oneLine gives an error's message on one line (pgx spreads a failed
// connection's over several).
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

func runCopy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseCopy(args, stderr)
	if err != nil {
		return err
	}
	if err := checkStoreArg("from", c.From, true); err != nil {
		return err
	}
	if err := checkStoreArg("to", c.To, false); err != nil {
		return err
	}
	if sameStore(c.From, c.To) {
		return fmt.Errorf("copy: -from and -to name the same database (%s)", describe(c.From))
	}
	checkLeasesToo := !c.Live
	if !isPostgres(c.From) && !c.Live {
		// Before the source is opened: closing a descriptor of the file
		// drops every lock this process holds on it.
		inUse, known, err := sqliteInUse(c.From)
		if err != nil {
			return fmt.Errorf("copy: -from %s: %w", c.From, err)
		}
		if inUse {
			return fmt.Errorf("copy: -from %s is open in another process (a running tasksd?): stop it first, or pass -live to copy while it writes", c.From)
		}
		checkLeasesToo = !known // the lock tells: leases left by a crash do not matter
	}
	src, err := openCopyStore(ctx, "from", c.From)
	if err != nil {
		return err
	}
	defer src.Close()
	if checkLeasesToo {
		if err := checkLeases(ctx, src, c.From); err != nil {
			return err
		}
	}
	dst, err := openCopyStore(ctx, "to", c.To)
	if err != nil {
		return err
	}
	defer dst.Close()

	_, total, err := src.Find(ctx, taskstore.Filter{})
	if err != nil {
		return fmt.Errorf("copy: reading the source: %s", oneLine(err))
	}
	o := storecopy.Options{Batch: c.Batch}
	// A destination holding tasks already (an earlier copy, or tasks of
	// its own) is checked before anything is written: a conflict stops the
	// copy with nothing written.
	if _, held, err := dst.Find(ctx, taskstore.Filter{}); err != nil {
		return fmt.Errorf("copy: reading the destination: %s", oneLine(err))
	} else if held > 0 {
		fmt.Fprintf(stderr, "the destination holds %d tasks already: checking them against the source first\n", held)
		cbar := newProgress(stderr, "check", total)
		res, err := storecopy.Copy(ctx, src, dst, storecopy.Options{Batch: c.Batch, DryRun: true, Progress: cbar.update})
		cbar.done()
		if err != nil {
			return copyStopped(err, "the check", 0)
		}
		if res.Conflicts.N > 0 {
			listProblems(stderr, "conflict", res.Conflicts)
			return fmt.Errorf("copy: %d tasks of the destination differ from the source's with the same id (listed above); nothing was written", res.Conflicts.N)
		}
	}

	start := time.Now()
	bar := newProgress(stderr, "copy", total)
	o.Progress = bar.update
	res, err := storecopy.Copy(ctx, src, dst, o)
	bar.done()
	if err != nil {
		return copyStopped(err, "the copy", res.Copied)
	}
	fmt.Fprintf(stdout, "copied %d tasks, skipped %d already in the destination, in %s\n",
		res.Copied, res.Skipped, time.Since(start).Round(time.Millisecond))
	listProblems(stderr, "conflict", res.Conflicts)
	listProblems(stderr, "unstorable", res.Unstorable)

	// Verify: read the destination back and compare it with what was
	// read from the source; the source's own counts must not have moved.
	// After a -live copy, or when that check fails, both stores are read
	// again and compared task by task, to list the differences.
	vbar := newProgress(stderr, "verify", res.Read)
	vo := storecopy.Options{Batch: c.Batch, Progress: vbar.update}
	var v storecopy.Verification
	if c.Live {
		v, err = storecopy.Verify(ctx, src, dst, vo)
	} else {
		var full bool
		v, full, err = storecopy.Check(ctx, src, dst, res, vo)
		if full {
			fmt.Fprintln(stderr, "the destination differs from what was read, or the source changed: both were read again, task by task")
		}
	}
	vbar.done()
	if err != nil {
		return copyStopped(err, "the verification", res.Copied)
	}
	fmt.Fprintf(stdout, "source:      %s\n", v.Source)
	fmt.Fprintf(stdout, "destination: %s\n", v.Destination)
	if v.Other > 0 {
		fmt.Fprintf(stdout, "the destination also holds %d other tasks\n", v.Other)
	}
	listProblems(stderr, "missing", v.Missing)
	listProblems(stderr, "different", v.Different)
	switch {
	case res.Conflicts.N > 0:
		return fmt.Errorf("copy: %d tasks of the destination differ from the source's with the same id (listed above); they were left as they are", res.Conflicts.N)
	case res.Unstorable.N > 0:
		return fmt.Errorf("copy: the destination refused %d tasks (listed above)", res.Unstorable.N)
	case !v.OK():
		return fmt.Errorf("copy: verification failed: %d tasks missing and %d different in the destination (listed above); did the source change during the copy?",
			v.Missing.N, v.Different.N)
	}
	fmt.Fprintln(stdout, "verified: the destination holds every task of the source")
	return nil
}

// copyStopped explains a copy that stopped early.
func copyStopped(err error, what string, copied int) error {
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("copy: interrupted during %s after copying %d tasks; run the same command again to resume", what, copied)
	}
	return fmt.Errorf("copy: %s stopped after copying %d tasks: %s; run the same command again to resume", what, copied, oneLine(err))
}

// listProblems prints the listed problems, one a line, and how many more
// there are.
func listProblems(w io.Writer, kind string, p storecopy.Problems) {
	for _, x := range p.Listed {
		fmt.Fprintf(w, "%s: %s: %s\n", kind, x.ID, x.Reason)
	}
	if more := p.N - len(p.Listed); more > 0 {
		fmt.Fprintf(w, "%s: … and %d more\n", kind, more)
	}
}

// checkLeases refuses a source in which an unfinished task holds a lease
// that has not expired: a tasksd that runs renews the leases of the tasks
// it has queued or running (every third of -lease), and lets them expire
// when it stops (they are gone after a clean stop, which finishes them).
// Unfinished tasks are few (a server's queue); the newest of each status
// are read.
func checkLeases(ctx context.Context, s taskstore.Store, db string) error {
	now := time.Now()
	var held int
	var until time.Time
	for _, st := range []taskstore.Status{taskstore.StatusPending, taskstore.StatusRunning} {
		page, _, err := s.Find(ctx, taskstore.Filter{Status: st, Limit: 1000})
		if err != nil {
			return fmt.Errorf("copy: reading the source: %s", oneLine(err))
		}
		for _, t := range page {
			if t.LeaseUntil.After(now) {
				held++
				if t.LeaseUntil.After(until) {
					until = t.LeaseUntil
				}
			}
		}
	}
	if held > 0 {
		return fmt.Errorf("copy: -from %s looks in use: %d unfinished tasks hold leases until %s, which a running tasksd renews; stop every tasksd using it (after a crash, wait until then), or pass -live to copy while it writes",
			describe(db), held, until.Local().Format(time.DateTime))
	}
	return nil
}
