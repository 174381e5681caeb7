package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tasksapi/tasks/sqlitestore"
	"github.com/tasksapi/tasks/taskstore"
)

const backupUsage = `usage: tasksd backup -db FILE -to BACKUP

Writes a consistent copy of the SQLite store FILE to BACKUP, a new file,
while a tasksd keeps serving from FILE and writing to it: SQLite's own
VACUUM INTO reads one snapshot of the database (one read transaction, which
writers in WAL mode do not wait for) and writes it out compacted. Every
task committed before the backup started is in it. The backup is then
checked (PRAGMA integrity_check, and opened as a store) before it is given
its name. To restore, stop tasksd and start it with -db BACKUP (or copy
BACKUP over FILE while no tasksd runs).

For PostgreSQL, use its own tools (pg_dump, or a base backup).

`

func runBackup(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tasksd backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		io.WriteString(stderr, backupUsage)
		fs.PrintDefaults()
	}
	db := fs.String("db", "", "the SQLite file tasksd serves from")
	to := fs.String("to", "", "the backup file to write (must not exist)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("backup: unexpected argument %q", fs.Arg(0))
	case *db == "":
		return errors.New("backup: -db is required")
	case isPostgres(*db):
		return errors.New("backup: -db is a PostgreSQL database: back it up with PostgreSQL's own tools, e.g. " +
			"pg_dump --format=custom --file=tasks.dump DBURL, and restore with pg_restore")
	case *db == ":memory:":
		return errors.New("backup: -db :memory: is refused: a memory store lives inside one tasksd process and ends with it")
	case *to == "":
		return errors.New("backup: -to is required")
	case strings.ContainsRune(*db, '?') || strings.ContainsRune(*to, '?') || strings.HasPrefix(*to, "file:"):
		return errors.New("backup: file names must not contain '?' or start with file:")
	}
	fi, err := os.Stat(*db)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("backup: -db %s: no such file", *db)
	case err != nil:
		return fmt.Errorf("backup: -db: %w", err)
	case fi.IsDir():
		return fmt.Errorf("backup: -db %s is a directory", *db)
	}
	if _, err := os.Lstat(*to); err == nil {
		return fmt.Errorf("backup: -to %s exists already; give a new file name", *to)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("backup: -to: %w", err)
	}
	if dir := filepath.Dir(*to); dir != "" {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return fmt.Errorf("backup: -to %s: directory %s does not exist", *to, dir)
		}
	}

	start := time.Now()
	partial := *to + ".partial"
	for _, suffix := range []string{"", "-journal", "-wal", "-shm"} {
		os.Remove(partial + suffix)
	}
	fail := func(err error) error {
		for _, suffix := range []string{"", "-journal", "-wal", "-shm"} {
			os.Remove(partial + suffix)
		}
		return err
	}
	if err := vacuumInto(ctx, *db, partial); err != nil {
		return fail(fmt.Errorf("backup: %s", oneLine(err)))
	}
	if err := integrityCheck(ctx, partial); err != nil {
		return fail(fmt.Errorf("backup: the backup failed its check: %s", oneLine(err)))
	}
	s, err := sqlitestore.Open(partial)
	if err != nil {
		return fail(fmt.Errorf("backup: the backup does not open as a store: %s", oneLine(err)))
	}
	_, n, err := s.Find(ctx, taskstore.Filter{})
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fail(fmt.Errorf("backup: reading the backup: %s", oneLine(err)))
	}
	if err := syncFile(partial); err != nil {
		return fail(fmt.Errorf("backup: %w", err))
	}
	if err := os.Rename(partial, *to); err != nil {
		return fail(fmt.Errorf("backup: %w", err))
	}
	syncDir(filepath.Dir(*to))
	size := int64(0)
	if fi, err := os.Stat(*to); err == nil {
		size = fi.Size()
	}
	fmt.Fprintf(stdout, "backup: wrote %s: %d tasks, %.1f MB, integrity_check ok, in %s\n", *to, n,
		float64(size)/1e6, time.Since(start).Round(time.Millisecond))
	return nil
}

// sqliteDSN is the connection string of a plain connection to path that
// waits for locks as the store's do.
func sqliteDSN(path string) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	return path + "?" + q.Encode()
}

// vacuumInto writes a snapshot of the database at path to the new file
// out, with SQLite's VACUUM INTO on a connection of its own.
func vacuumInto(ctx context.Context, path, out string) error {
	db, err := sql.Open("sqlite", sqliteDSN(path))
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	// The source must be a tasks store: a file that is not a database, or
	// a database of something else, is refused before anything is written.
	var version int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("-db %s: %w", path, err)
	}
	var tables int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'tasks'`).Scan(&tables); err != nil {
		return fmt.Errorf("-db %s: %w", path, err)
	}
	if version == 0 || tables == 0 {
		return fmt.Errorf("-db %s is not a tasks database", path)
	}
	if version > sqlitestore.SchemaVersion() {
		return fmt.Errorf("-db %s was written by a newer tasksd (schema %d)", path, version)
	}
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, out); err != nil {
		return fmt.Errorf("VACUUM INTO: %w", err)
	}
	return nil
}

// integrityCheck runs PRAGMA integrity_check on the database at path.
func integrityCheck(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite", sqliteDSN(path))
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `PRAGMA integrity_check`)
	if err != nil {
		return err
	}
	defer rows.Close()
	var msgs []string
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return err
		}
		msgs = append(msgs, m)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(msgs) != 1 || msgs[0] != "ok" {
		return fmt.Errorf("integrity_check: %s", strings.Join(msgs, "; "))
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDir makes a rename in dir durable, where the system allows it.
func syncDir(dir string) {
	if f, err := os.Open(dir); err == nil {
		f.Sync()
		f.Close()
	}
}
