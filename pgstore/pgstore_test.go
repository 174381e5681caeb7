package pgstore_test

import (
	"context"
	"testing"

	"github.com/tasksapi/tasks/internal/pgtest"
	"github.com/tasksapi/tasks/pgstore"
	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storetest"
)

// open returns a store on a fresh schema of the test database; the schema is
// dropped when the test ends.
func open(t testing.TB, opts ...pgstore.Option) (*pgstore.Store, string) {
	t.Helper()
	url := pgtest.FreshSchema(t, pgtest.URL(t))
	s, err := pgstore.Open(context.Background(), url, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, url
}

func TestConformance(t *testing.T) {
	pgtest.URL(t) // skip early, with the reason, when there is no server
	storetest.Run(t, func(t *testing.T) taskstore.Store {
		s, _ := open(t)
		return s
	})
}
