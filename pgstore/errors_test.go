package pgstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tasksapi/tasks/internal/pgtest"
	"github.com/tasksapi/tasks/taskstore"
)

func TestRetry(t *testing.T) {
	s := &Store{retries: 3, grace: time.Minute, closing: make(chan struct{})}
	s.log = discardLogger()
	ctx := context.Background()
	refused := connectError(t)
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
		{"LostConnectionWrite", io.ErrUnexpectedEOF, safeIfUnsent, 1, taskstore.ErrUnavailable},
		{"AdminShutdownRead", &pgconn.PgError{Code: "57P01"}, idempotent, 3, nil},
		{"AdminShutdownWrite", &pgconn.PgError{Code: "57P01"}, safeIfUnsent, 1, taskstore.ErrUnavailable},
		{"ConnectRefusedWrite", refused, safeIfUnsent, 3, nil},
		{"CannotConnectNowWrite", &pgconn.PgError{Code: "57P03"}, safeIfUnsent, 3, nil},
		{"BadConnWrite", driver.ErrBadConn, safeIfUnsent, 3, nil},
		{"SyntaxError", &pgconn.PgError{Code: "42601"}, idempotent, 1, &Error{}},
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
			if tc.want != nil && errors.Is(tc.want, taskstore.ErrUnavailable) {
				var pe *Error
				if !errors.As(err, &pe) || !pe.Unavailable {
					t.Fatalf("err = %#v, want a *pgstore.Error with Unavailable set", err)
				}
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
	t.Run("GraceEnds", func(t *testing.T) {
		s := &Store{retries: 3, grace: 300 * time.Millisecond, closing: make(chan struct{}), log: discardLogger()}
		calls := 0
		began := time.Now()
		err := s.do(ctx, "test", safeIfUnsent, func() error { calls++; return refused })
		took := time.Since(began)
		if !errors.Is(err, taskstore.ErrUnavailable) || calls < 3 || took < s.grace {
			t.Fatalf("after %v and %d calls: %v; want ErrUnavailable after at least the grace (%v) and several calls",
				took, calls, err, s.grace)
		}
		if !strings.Contains(err.Error(), "connect") {
			t.Fatalf("error %q does not say what failed", err)
		}
	})
	t.Run("NoGrace", func(t *testing.T) {
		s := &Store{retries: 3, closing: make(chan struct{}), log: discardLogger()}
		calls := 0
		err := s.do(ctx, "test", idempotent, func() error { calls++; return refused })
		if calls != 1 || !errors.Is(err, taskstore.ErrUnavailable) {
			t.Fatalf("calls = %d, err = %v; want one call and ErrUnavailable", calls, err)
		}
	})
	t.Run("ContextEnds", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		err := s.do(ctx, "test", idempotent, func() error { return refused })
		if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, taskstore.ErrUnavailable) {
			t.Fatalf("err = %v; want both the context's error and ErrUnavailable", err)
		}
	})
	t.Run("CloseEnds", func(t *testing.T) {
		s := &Store{retries: 3, grace: time.Hour, closing: make(chan struct{}), log: discardLogger()}
		time.AfterFunc(100*time.Millisecond, func() { close(s.closing) })
		err := s.do(ctx, "test", idempotent, func() error { return refused })
		if !errors.Is(err, taskstore.ErrUnavailable) {
			t.Fatalf("err = %v; want ErrUnavailable once Close started", err)
		}
	})
}

// connectError returns a real connect error: nothing listens on port 1.
func connectError(t *testing.T) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, "postgres://nobody@127.0.0.1:1/none?sslmode=disable")
	if err == nil {
		c.Close(ctx)
		t.Skip("something listens on 127.0.0.1:1")
	}
	var ce *pgconn.ConnectError
	if !errors.As(err, &ce) {
		t.Fatalf("connecting to port 1: %v (%T), want a *pgconn.ConnectError", err, err)
	}
	return err
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
		func() error { _, err := s.ClaimDeliveries(ctx, "", explainBase, 0, 5); return err }(),
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
