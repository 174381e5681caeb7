package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tasksapi/tasks/internal/pgtest"
	"github.com/tasksapi/tasks/taskstore"
)

func TestRetry(t *testing.T) {
	s := &Store{retries: 3}
	s.log = discardLogger()
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		err       error
		policy    retryPolicy
		wantCalls int
		want      error // nil: succeeds on the last call
	}{
		{"SerializationFailure", &pgconn.PgError{Code: "40001"}, safeIfUnsent, 3, nil},
		{"Deadlock", &pgconn.PgError{Code: "40P01"}, safeIfUnsent, 3, nil},
		{"UniqueViolation", &pgconn.PgError{Code: "23505", Message: "duplicate key"}, idempotent, 1, taskstore.ErrConflict},
		{"LostConnectionRead", io.ErrUnexpectedEOF, idempotent, 3, nil},
		{"LostConnectionWrite", io.ErrUnexpectedEOF, safeIfUnsent, 1, io.ErrUnexpectedEOF},
		{"AdminShutdownRead", &pgconn.PgError{Code: "57P01"}, idempotent, 3, nil},
		{"AdminShutdownWrite", &pgconn.PgError{Code: "57P01"}, safeIfUnsent, 1, &Error{}},
		{"Canceled", context.Canceled, idempotent, 1, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			err := s.do(ctx, "test", tc.policy, func() error {
				calls++
				if calls < 3 {
					return tc.err
				}
				return nil
			})
			if calls != tc.wantCalls {
				t.Fatalf("calls = %d, want %d", calls, tc.wantCalls)
			}
			var pe *Error
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("err = %v, want success after retries", err)
			case tc.want != nil && errors.As(tc.want, &pe):
				if !errors.As(err, &pe) {
					t.Fatalf("err = %v (%T), want a *pgstore.Error", err, err)
				}
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("GivesUp", func(t *testing.T) {
		calls := 0
		err := s.do(ctx, "test", safeIfUnsent, func() error {
			calls++
			return &pgconn.PgError{Code: "40001", Message: "could not serialize access"}
		})
		if calls != 4 || err == nil || !strings.Contains(err.Error(), "40001") {
			t.Fatalf("calls = %d, err = %v; want 4 calls and the SQLSTATE in the error", calls, err)
		}
	})
}

// TestErrorMessages breaks the schema under a store: the errors name the
// operation and PostgreSQL's reason, and carry no SQL.
func TestErrorMessages(t *testing.T) {
	s, url := openInternal(t)
	ctx := context.Background()
	pgtest.Exec(t, url, "DROP TABLE tasks CASCADE")
	_, err := s.Get(ctx, "x")
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != "42P01" {
		t.Fatalf("Get on a dropped table: %v (%T), want a *pgstore.Error with SQLSTATE 42P01", err, err)
	}
	for _, e := range []error{
		err,
		s.Create(ctx, taskstore.Task{ID: "x", Type: "t", Request: []byte(`{}`)}),
		func() error { _, _, err := s.Find(ctx, taskstore.Filter{UserID: "u", Limit: 5}); return err }(),
		func() error { _, err := s.ClaimDeliveries(ctx, explainBase, 0, 5); return err }(),
	} {
		if e == nil {
			t.Fatal("an operation on a dropped table succeeded")
		}
		msg := e.Error()
		if !strings.HasPrefix(msg, "pgstore: ") || !strings.Contains(msg, "SQLSTATE") {
			t.Errorf("error %q: want pgstore: <op>: <reason> (SQLSTATE …)", msg)
		}
		for _, sqlWord := range []string{"SELECT", "INSERT", "UPDATE", "WHERE", "FROM tasks"} {
			if strings.Contains(msg, sqlWord) {
				t.Errorf("error %q contains SQL (%s)", msg, sqlWord)
			}
		}
	}
}

// TestReconnect kills the store's server connections between two calls: the
// read after it is retried on a new connection.
func TestReconnect(t *testing.T) {
	url := pgtest.FreshSchema(t, pgtest.URL(t))
	app := fmt.Sprintf("pgstore_reconnect_%d", randomInt())
	url += "&application_name=" + app
	s, err := Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Create(ctx, taskstore.Task{ID: "x", Type: "t", Request: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		pgtest.Exec(t, pgtest.URL(t), fmt.Sprintf(
			`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '%s'`, app))
		if _, err := s.Get(ctx, "x"); err != nil {
			t.Fatalf("Get after the connections were killed (round %d): %v", i, err)
		}
		if _, _, err := s.Find(ctx, taskstore.Filter{Limit: 1}); err != nil {
			t.Fatalf("Find after the connections were killed (round %d): %v", i, err)
		}
	}
}
