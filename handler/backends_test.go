package handler_test

import (
	"path/filepath"
	"testing"

	"github.com/tasksapi/tasks/memstore"
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
}
