package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tasksapi/tasks/taskstore"
)

func rawOpen(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func userVersion(t *testing.T, db *sql.DB) int {
	t.Helper()
	var v int
	if err := db.QueryRow("PRAGMA user_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMigrationsNumbered(t *testing.T) {
	if SchemaVersion() < 2 {
		t.Fatalf("SchemaVersion() = %d, want at least 2", SchemaVersion())
	}
	for i, m := range migrations {
		if m.Version != i+1 || !strings.HasPrefix(m.Name, fmt.Sprintf("%04d_", i+1)) || m.SQL == "" {
			t.Errorf("migration %d: %+v", i, m)
		}
	}
}

// TestMigrateFromV1 writes a version 1 database by hand (the tasks table,
// no counters), then opens it: Open must bring it to the current version
// and fill the counters from the existing rows.
func TestMigrateFromV1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	db := rawOpen(t, path)
	if _, err := db.Exec(migrations[0].SQL); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("PRAGMA user_version = 1"); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		_, err := db.Exec(`INSERT INTO tasks (id, type, created_ms, application_id, user_id, request)
			VALUES (?, ?, ?, ?, ?, '{}')`,
			fmt.Sprintf("t%02d", i), []string{"a", "b"}[i%2], 1_700_000_000_000+i, "app", fmt.Sprintf("u%d", i%3))
		if err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v := userVersion(t, rawOpen(t, path)); v != SchemaVersion() {
		t.Fatalf("user_version after Open = %d, want %d", v, SchemaVersion())
	}
	ctx := context.Background()
	for _, tc := range []struct {
		f    taskstore.Filter
		want int
	}{
		{taskstore.Filter{}, 30},
		{taskstore.Filter{ApplicationID: "app"}, 30},
		{taskstore.Filter{UserID: "u1"}, 10},
		{taskstore.Filter{Types: []string{"b"}}, 15},
		{taskstore.Filter{UserID: "u0", Types: []string{"a"}}, 5},
	} {
		if q, _ := buildFind(tc.f); !strings.Contains(q.countSQL, "task_counts") {
			t.Fatalf("filter %+v is not counted from task_counts", tc.f)
		}
		_, total, err := s.Find(ctx, tc.f)
		if err != nil || total != tc.want {
			t.Errorf("Find(%+v) total = %d (err %v), want %d", tc.f, total, err, tc.want)
		}
	}
	// The triggers run on the migrated database too.
	if err := s.Create(ctx, taskstore.Task{ID: "new", Type: "a", Request: []byte(`{}`), UserID: "u1", ApplicationID: "app"}); err != nil {
		t.Fatal(err)
	}
	if _, total, _ := s.Find(ctx, taskstore.Filter{UserID: "u1"}); total != 11 {
		t.Fatalf("after Create, u1 total = %d, want 11", total)
	}
}

func TestOpenNewerSchemaFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	newer := SchemaVersion() + 1
	db := rawOpen(t, path)
	if _, err := db.Exec("PRAGMA user_version = " + strconv.Itoa(newer)); err != nil {
		t.Fatal(err)
	}
	db.Close()

	s, err = Open(path)
	if err == nil {
		s.Close()
		t.Fatal("Open of a database from a newer version succeeded")
	}
	for _, want := range []string{"newer", strconv.Itoa(newer), strconv.Itoa(SchemaVersion())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if v := userVersion(t, rawOpen(t, path)); v != newer {
		t.Fatalf("failed Open changed user_version to %d", v)
	}
}

func TestReopenKeepsVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	for range 3 {
		s, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	if v := userVersion(t, rawOpen(t, path)); v != SchemaVersion() {
		t.Fatalf("user_version = %d, want %d", v, SchemaVersion())
	}
}
