package handler_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/tasksapi/tasks/internal/pgtest"
	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/pgstore"
	"github.com/tasksapi/tasks/sqlitestore"
	"github.com/tasksapi/tasks/taskstore"
)

// backends are the stores every wire and tenancy test runs against.
var backends = []backend{
	{"memstore", func(tb testing.TB) taskstore.Store {
		s := memstore.New()
		tb.Cleanup(func() { s.Close() })
		return s
	}},
	{"sqlitestore", func(tb testing.TB) taskstore.Store {
		tb.Helper()
		s, err := sqlitestore.Open(filepath.Join(tb.TempDir(), "tasks.db"))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { s.Close() })
		return s
	}},
	// With TASKS_PG_URL (see internal/pgtest); skipped without it.
	{"pgstore", func(tb testing.TB) taskstore.Store {
		tb.Helper()
		s, err := pgstore.Open(context.Background(), pgtest.FreshSchema(tb, pgtest.URL(tb)))
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { s.Close() })
		return s
	}},
}
