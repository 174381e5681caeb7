package sqlitestore

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/jmoiron/sqlx"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migration is one embedded schema change; applying it moves the database
// to schema version Version.
type migration struct {
	Version int
	Name    string
	SQL     string
}

// migrations are the embedded migrations in order. Their file names start
// with the version they produce ("0002_task_counts.sql"); versions are
// 1, 2, 3… without gaps.
var migrations = mustLoadMigrations()

// SchemaVersion returns the schema version this package writes: the number
// of embedded migrations. It is recorded in the database's PRAGMA
// user_version; Open upgrades a database with a lower version and refuses one
// with a higher version.
func SchemaVersion() int { return len(migrations) }

func mustLoadMigrations() []migration {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		panic(err)
	}
	slices.Sort(names)
	var ms []migration
	for i, name := range names {
		base := path.Base(name)
		prefix, _, _ := strings.Cut(base, "_")
		v, err := strconv.Atoi(prefix)
		if err != nil || v != i+1 {
			panic(fmt.Sprintf("sqlitestore: migration %s: want a name starting with %04d_", base, i+1))
		}
		b, err := migrationFS.ReadFile(name)
		if err != nil {
			panic(err)
		}
		ms = append(ms, migration{Version: v, Name: base, SQL: string(b)})
	}
	return ms
}

// migrate brings the schema up to SchemaVersion(), one migration per
// transaction. Each step re-reads the version inside its BEGIN IMMEDIATE, so
// two processes opening the same file at once do not apply a step twice.
func migrate(ctx context.Context, conn *sqlx.Conn, log *slog.Logger) error {
	for {
		done, err := migrateStep(ctx, conn, log)
		if err != nil || done {
			return err
		}
	}
}

func migrateStep(ctx context.Context, conn *sqlx.Conn, log *slog.Logger) (done bool, err error) {
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return false, err
	}
	defer func() {
		if err != nil || done {
			conn.ExecContext(context.Background(), "ROLLBACK")
		}
	}()
	var v int
	if err := conn.GetContext(ctx, &v, "PRAGMA user_version"); err != nil {
		return false, err
	}
	switch {
	case v > SchemaVersion():
		return false, fmt.Errorf("the database has schema version %d, newer than version %d this program knows; "+
			"it was written by a newer version of the program, which must be used to open it", v, SchemaVersion())
	case v < 0:
		return false, fmt.Errorf("the database has an invalid schema version %d", v)
	case v == SchemaVersion():
		return true, nil
	}
	m := migrations[v]
	if _, err := conn.ExecContext(ctx, m.SQL); err != nil {
		return false, fmt.Errorf("migration %s: %w", m.Name, err)
	}
	// PRAGMA takes no parameters; m.Version is an int.
	if _, err := conn.ExecContext(ctx, "PRAGMA user_version = "+strconv.Itoa(m.Version)); err != nil {
		return false, err
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		return false, err
	}
	log.Info("sqlitestore: schema migrated", "migration", m.Name, "version", m.Version)
	return false, nil
}
