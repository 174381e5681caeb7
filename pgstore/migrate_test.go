package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/tasksapi/tasks/internal/pgtest"
	"github.com/tasksapi/tasks/taskstore"
)

func TestMigrationsNumbered(t *testing.T) {
	if SchemaVersion != len(migrations) || SchemaVersion < 2 {
		t.Fatalf("SchemaVersion = %d with %d migrations", SchemaVersion, len(migrations))
	}
	_, err := loadMigrations(fstest.MapFS{
		"migrations/0001_a.sql": {Data: []byte("SELECT 1")},
		"migrations/0003_c.sql": {Data: []byte("SELECT 1")},
	})
	if err == nil || !strings.Contains(err.Error(), "numbered") {
		t.Fatalf("a gap in the numbering: err = %v", err)
	}
	_, err = loadMigrations(fstest.MapFS{"migrations/init.sql": {Data: []byte("SELECT 1")}})
	if err == nil {
		t.Fatal("a file without a version number was accepted")
	}
}

// TestMigrateConcurrentOpen starts five replicas at once on an empty schema:
// all open, and each migration is applied and recorded once.
func TestMigrateConcurrentOpen(t *testing.T) {
	url := pgtest.FreshSchema(t, pgtest.URL(t))
	const replicas = 5
	stores := make([]*Store, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range replicas {
		wg.Go(func() {
			<-start
			stores[i], errs[i] = Open(context.Background(), url)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("replica %d: Open: %v", i, err)
		}
		t.Cleanup(func() { stores[i].Close() })
	}
	var versions []int
	if err := stores[0].db.Select(&versions, `SELECT version FROM schema_migrations ORDER BY version`); err != nil {
		t.Fatal(err)
	}
	if len(versions) != SchemaVersion {
		t.Fatalf("schema_migrations holds versions %v, want 1..%d once each", versions, SchemaVersion)
	}
	for i, v := range versions {
		if v != i+1 {
			t.Fatalf("schema_migrations holds versions %v, want 1..%d once each", versions, SchemaVersion)
		}
	}
	// Every replica works on the shared tables.
	for i, s := range stores {
		if err := s.Create(context.Background(), taskstore.Task{ID: fmt.Sprint("r", i), Type: "t", Request: []byte(`{}`)}); err != nil {
			t.Fatalf("replica %d: Create: %v", i, err)
		}
	}
	if _, total, err := stores[1].Find(context.Background(), taskstore.Filter{}); err != nil || total != replicas {
		t.Fatalf("Find total = %d, %v; want %d", total, err, replicas)
	}
}

func TestMigrateSchemaTooNew(t *testing.T) {
	s, url := openInternal(t)
	if _, err := s.db.Exec(`INSERT INTO schema_migrations (version, name) VALUES ($1, 'from the future')`, SchemaVersion+1); err != nil {
		t.Fatal(err)
	}
	_, err := Open(context.Background(), url)
	if !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("Open on a newer schema: err = %v, want ErrSchemaTooNew", err)
	}
	want := fmt.Sprintf("version %d", SchemaVersion+1)
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not give the database's version (%s)", err, want)
	}
}

// TestMigrateFromVersion1 upgrades a database that has only the first
// migration, holding tasks: the counts table starts with their counts.
func TestMigrateFromVersion1(t *testing.T) {
	url := pgtest.FreshSchema(t, pgtest.URL(t))
	pgtest.Exec(t, url, createMigrationsTable, migrations[0].sql,
		`INSERT INTO schema_migrations (version, name) VALUES (1, 'tasks')`,
		`INSERT INTO tasks (id, type, created_ms, application_id, user_id, request)
		 SELECT 'v1-' || g, 'images_edits', 1000 + g, 'app', 'user-' || g % 3, '{}' FROM generate_series(1, 30) g`)
	s, err := Open(context.Background(), url)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	for _, f := range []taskstore.Filter{
		{}, {ApplicationID: "app"}, {UserID: "user-1"}, {Types: []string{"images_edits"}}, {Types: []string{"other"}},
	} {
		q, _ := buildFind(f)
		if !q.fromCounts {
			t.Fatalf("%+v is not counted from task_counts", f)
		}
		_, total, err := s.Find(context.Background(), f)
		want := 30
		switch {
		case f.UserID != "":
			want = 10
		case len(f.Types) > 0 && f.Types[0] == "other":
			want = 0
		}
		if err != nil || total != want {
			t.Fatalf("Find(%+v) total = %d, %v; want %d", f, total, err, want)
		}
	}
	var v int
	if err := s.db.Get(&v, `SELECT max(version) FROM schema_migrations`); err != nil || v != SchemaVersion {
		t.Fatalf("version after Open = %d, %v; want %d", v, err, SchemaVersion)
	}
}

func TestOpenErrors(t *testing.T) {
	base := pgtest.URL(t)
	ctx := context.Background()
	t.Run("NoSuchSchema", func(t *testing.T) {
		url, err := pgtest.WithSearchPath(base, "no_such_schema_here")
		if err != nil {
			t.Fatal(err)
		}
		_, err = Open(ctx, url)
		if err == nil || !strings.Contains(err.Error(), "search_path") {
			t.Fatalf("Open with a missing schema: err = %v, want one naming the search_path", err)
		}
	})
	t.Run("BadURL", func(t *testing.T) {
		_, err := Open(ctx, "postgres://user:s3cret@127.0.0.1:notaport/db")
		if err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("Open with a bad URL: err = %v (must fail without showing the password)", err)
		}
	})
	t.Run("Unreachable", func(t *testing.T) {
		_, err := Open(ctx, "postgres://user:s3cret@127.0.0.1:1/db?connect_timeout=2")
		if err == nil || strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("Open on a closed port: err = %v (must fail without showing the password)", err)
		}
	})
}
