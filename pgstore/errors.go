package pgstore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/tasksapi/tasks/taskstore"
)

// ErrSchemaTooNew: the database was migrated by a newer version of pgstore
// than this one; Open refuses to use it.
var ErrSchemaTooNew = errors.New("pgstore: database schema is newer than this program")

// Error is a database failure other than the taskstore sentinels: the
// operation, PostgreSQL's SQLSTATE code (empty for errors that are not the
// server's, such as a lost connection) and message. It never holds SQL.
// Unwrap gives the driver's error (a *pgconn.PgError for server errors).
type Error struct {
	Op      string // the Store operation, e.g. "create"
	Code    string // SQLSTATE, e.g. "53300"; "" when the server did not answer
	Message string
	err     error
}

func (e *Error) Error() string {
	if e.Code != "" {
		return "pgstore: " + e.Op + ": " + e.Message + " (SQLSTATE " + e.Code + ")"
	}
	return "pgstore: " + e.Op + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.err }

// retryPolicy says which failures of an operation may be retried.
type retryPolicy int

const (
	// safeIfUnsent: retry only failures that cannot have changed anything
	// (serialization failure, deadlock, a statement that never reached the
	// server). For writes whose outcome a repeat could misreport.
	safeIfUnsent retryPolicy = iota
	// idempotent: also retry lost connections, since repeating the
	// statement is harmless.
	idempotent
)

// do runs fn, retrying transient failures with jittered exponential backoff
// (10ms, 40ms, 160ms, …), and translates the final error.
func (s *Store) do(ctx context.Context, op string, p retryPolicy, fn func() error) error {
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil {
			return nil
		}
		if attempt >= s.retries || ctx.Err() != nil || !retryable(err, p) {
			return s.translate(ctx, op, err)
		}
		wait := time.Duration(float64(10*time.Millisecond<<(2*attempt)) * (0.5 + rand.Float64()))
		s.log.LogAttrs(ctx, slog.LevelWarn, "pgstore: retrying after a transient error",
			slog.String("op", op), slog.Int("attempt", attempt+1), slog.String("error", s.translate(ctx, op, err).Error()))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return s.translate(ctx, op, ctx.Err())
		case <-t.C:
		}
	}
}

// retryable reports whether err is transient for an operation under p.
func retryable(err error, p retryPolicy) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "40001", pe.Code == "40P01": // serialization_failure, deadlock_detected
			return true
		case strings.HasPrefix(pe.Code, "08"), // connection_exception
			pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03": // shutdown, cannot connect now
			return p == idempotent
		}
		return false
	}
	if pgconn.SafeToRetry(err) || errors.Is(err, driver.ErrBadConn) {
		return true
	}
	if p != idempotent {
		return false
	}
	var ne net.Error
	var ce *pgconn.ConnectError
	return errors.As(err, &ne) || errors.As(err, &ce) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed)
}

// translate maps a driver error to the store's errors. It is the only place
// that inspects driver errors.
func (s *Store) translate(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	for _, sentinel := range []error{taskstore.ErrNotFound, taskstore.ErrConflict, taskstore.ErrInvalid, taskstore.ErrClosed} {
		if errors.Is(err, sentinel) {
			return err
		}
	}
	// database/sql reports use after Close with an unexported error. (A
	// call admitted by enter finishes before Close closes the pool, so its
	// own failures are reported as they are.)
	if err.Error() == "sql: database is closed" {
		return taskstore.ErrClosed
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("pgstore: %s: %w", op, ctxErr)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("pgstore: %s: %w", op, err)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return taskstore.ErrNotFound
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "23505": // unique_violation
			return fmt.Errorf("%w: %s", taskstore.ErrConflict, pe.Message)
		case pe.Code == "22021", pe.Code == "22P02", pe.Code == "22P05": // bad encoding, bad input syntax
			return taskstore.Invalidf("%s: value not accepted by PostgreSQL: %s", op, pe.Message)
		}
		return &Error{Op: op, Code: pe.Code, Message: pe.Message, err: err}
	}
	return &Error{Op: op, Message: err.Error(), err: err}
}
