package pgstore

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strconv"
	"strings"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one embedded schema change: migrations/NNNN_name.sql.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations are the embedded migrations in version order; versions run
// 1, 2, 3… without gaps (checked by a test).
var migrations = mustLoadMigrations(migrationFiles)

// SchemaVersion is the schema version this package migrates a database to.
var SchemaVersion = migrations[len(migrations)-1].version

func mustLoadMigrations(fsys fs.FS) []migration {
	ms, err := loadMigrations(fsys)
	if err != nil {
		panic(err)
	}
	return ms
}

func loadMigrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, name := range names {
		base := path.Base(name)
		num, rest, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("pgstore: migration %s: name must be NNNN_description.sql", base)
		}
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: strings.TrimSuffix(rest, ".sql"), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("pgstore: migrations must be numbered 1, 2, 3…; found %d at position %d", m.version, i+1)
		}
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("pgstore: no migrations embedded")
	}
	return ms, nil
}

// migrationLock is the transaction-level advisory lock key of migrating the
// current schema: several replicas starting at once take turns, and stores
// in different schemas of one database do not wait for each other.
const migrationLock = `SELECT pg_advisory_xact_lock(hashtextextended('github.com/tasksapi/tasks/pgstore:' || current_schema(), 0))`

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    integer PRIMARY KEY,
	name       text NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now()
)`

// migrate brings the schema up to SchemaVersion: each pending migration runs
// in its own transaction, under the advisory lock, after re-reading the
// version (another replica may have applied it meanwhile). After applying
// any, it analyses the tables, so that the planner has statistics for what
// changed from the first query on. It then notes whether the tasks table
// has ever been analysed (see grew).
func (s *Store) migrate(ctx context.Context) error {
	conn, err := s.db.Connx(ctx)
	if err != nil {
		return s.translate(ctx, "connect", err)
	}
	defer conn.Close()

	var schema sql.NullString
	if err := conn.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return s.translate(ctx, "connect", err)
	}
	if !schema.Valid {
		return fmt.Errorf("pgstore: open: no schema to create tables in: the search_path names no existing schema")
	}
	applied := 0
	for {
		done, err := s.migrateStep(ctx, conn)
		if err != nil {
			return err
		}
		if done {
			break
		}
		applied++
	}
	if applied > 0 {
		if _, err := conn.ExecContext(ctx, `ANALYZE tasks, task_counts, task_status_counts, task_totals`); err != nil {
			return s.translate(ctx, "migrate", err)
		}
	}
	// reltuples is -1 until the table is first analysed or vacuumed.
	var reltuples float64
	if err := conn.QueryRowContext(ctx, `SELECT reltuples FROM pg_class WHERE oid = 'tasks'::regclass`).Scan(&reltuples); err != nil {
		return s.translate(ctx, "migrate", err)
	}
	s.young.Store(reltuples <= 0)
	return nil
}

// migrateStep applies the next pending migration, if any, in one
// transaction, and reports whether the schema is up to date.
func (s *Store) migrateStep(ctx context.Context, conn interface {
	BeginTx(context.Context, *sql.TxOptions) (*sql.Tx, error)
}) (done bool, err error) {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return false, s.translate(ctx, "migrate", err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	if _, err := tx.ExecContext(ctx, migrationLock); err != nil {
		return false, s.translate(ctx, "migrate", err)
	}
	if _, err := tx.ExecContext(ctx, createMigrationsTable); err != nil {
		return false, s.translate(ctx, "migrate", err)
	}
	var current int
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return false, s.translate(ctx, "migrate", err)
	}
	switch {
	case current > SchemaVersion:
		return false, fmt.Errorf("%w: the database schema is at version %d, this program knows versions up to %d; upgrade the program",
			ErrSchemaTooNew, current, SchemaVersion)
	case current == SchemaVersion:
		return true, s.translate(ctx, "migrate", tx.Commit())
	}
	m := migrations[current] // version current+1
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return false, s.translate(ctx, fmt.Sprintf("migrate to version %d (%s)", m.version, m.name), err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.version, m.name); err != nil {
		return false, s.translate(ctx, "migrate", err)
	}
	if err := tx.Commit(); err != nil {
		return false, s.translate(ctx, "migrate", err)
	}
	s.log.LogAttrs(ctx, slog.LevelInfo, "pgstore: applied migration",
		slog.Int("version", m.version), slog.String("name", m.name))
	return false, nil
}
