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
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// ErrSchemaTooNew: the database was migrated by a newer version of pgstore
// than this one; Open refuses to use it.
var ErrSchemaTooNew = errors.New("pgstore: database schema is newer than this program")

// Error is a database failure other than the taskstore sentinels: the
// operation, PostgreSQL's SQLSTATE code (empty for errors that are not the
// server's, such as a lost connection) and message. It never holds SQL.
// Unwrap gives the driver's error (a *pgconn.PgError for server errors)
// and, when the database could not be reached or the connection to it
// broke (see Unavailable), taskstore.ErrUnavailable.
type Error struct {
	Op      string // the Store operation, e.g. "create"
	Code    string // SQLSTATE, e.g. "53300"; "" when the server did not answer
	Message string
	// Unavailable: the database could not be reached, or the connection
	// broke; the same call may succeed later. errors.Is(err,
	// taskstore.ErrUnavailable) reports it too.
	Unavailable bool
	err         error
}

func (e *Error) Error() string {
	if e.Code != "" {
		return "pgstore: " + e.Op + ": " + e.Message + " (SQLSTATE " + e.Code + ")"
	}
	return "pgstore: " + e.Op + ": " + e.Message
}

func (e *Error) Unwrap() []error {
	if e.Unavailable {
		return []error{e.err, taskstore.ErrUnavailable}
	}
	return []error{e.err}
}

// retryPolicy says which failures of an operation may be retried.
type retryPolicy int

const (
	// safeIfUnsent: retry only failures that cannot have changed anything
	// (serialization failure, deadlock, a statement that never reached the
	// server). For writes whose outcome a repeat could misreport.
	safeIfUnsent retryPolicy = iota
	// idempotent: also retry when the connection broke after the statement
	// was sent, since repeating it is harmless: reads, and the writes
	// whose repeat is recognised (Start, Finish, RecordAttempt, by the
	// Store contract; Create, by checking that the row found is its own).
	idempotent
)

// failure is what a failed statement tells about retrying it.
type failure int

const (
	// failOther: not transient; reported as it is.
	failOther failure = iota
	// failRace: a serialization failure or a deadlock. The transaction was
	// rolled back; running it again usually succeeds.
	failRace
	// failUnsent: the database could not be reached, and the statement
	// provably never got to it: connecting failed (refused, the server
	// starting up or shutting down, no connection slot), or pgx or
	// database/sql gave up before sending anything.
	failUnsent
	// failLost: the connection broke, or the server ended the session
	// (57P01, 57P02), after the statement was sent. It was rolled back,
	// unless its commit had completed when the answer was lost.
	failLost
)

// classify tells how err, a failed statement's error, may be retried.
func classify(err error) failure {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return failOther
	}
	var pe *pgconn.PgError
	server := errors.As(err, &pe)
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) {
		// A refused password or a missing database will not get better by
		// waiting; a server that is starting, stopping or full will.
		if server && !transientAtConnect(pe.Code) {
			return failOther
		}
		return failUnsent
	}
	if pgconn.SafeToRetry(err) || errors.Is(err, driver.ErrBadConn) {
		return failUnsent
	}
	if server {
		switch {
		case pe.Code == "40001", pe.Code == "40P01": // serialization_failure, deadlock_detected
			return failRace
		case transientAtConnect(pe.Code):
			return failUnsent
		case pe.Code == "57P01", pe.Code == "57P02", strings.HasPrefix(pe.Code, "08"):
			// admin_shutdown, crash_shutdown, connection_exception.
			return failLost
		}
		return failOther
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, pgconn.ErrConnClosed) {
		return failLost
	}
	return failOther
}

// transientAtConnect reports whether a server's refusal to open a session
// goes away by itself: cannot_connect_now (starting up, shutting down, in
// recovery) and too_many_connections.
func transientAtConnect(code string) bool {
	return code == "57P03" || code == "53300"
}

// Backoff between retries of an unavailable database: from retryFirst,
// times four each time, up to retryMax (each jittered by ±50%), so that a
// call finds the database within about retryMax of its return.
const (
	retryFirst = 10 * time.Millisecond
	retryMax   = 500 * time.Millisecond
)

// do runs fn, retrying transient failures with jittered exponential backoff
// (10ms, 40ms, 160ms, then every 500ms), and translates the final error.
// Serialization failures and deadlocks are retried s.retries times;
// failures that say the database is unavailable (failUnsent, and failLost
// under the idempotent policy) for as long as s.grace allows, counted from
// the first of them. Close ends the waiting.
func (s *Store) do(ctx context.Context, op string, p retryPolicy, fn func() error) error {
	var since time.Time    // the first unavailable failure
	var left time.Duration // of the grace, once since is set
	races := 0
	for attempt := 0; ; attempt++ {
		err := fn()
		if err == nil {
			if !since.IsZero() || s.down.Load() {
				s.health(ctx, nil)
			}
			return nil
		}
		retry := false
		switch f := classify(err); {
		case f == failRace:
			races++
			retry = races <= s.retries
		case f == failUnsent, f == failLost && p == idempotent:
			if since.IsZero() {
				since = time.Now()
			}
			s.health(ctx, err)
			left = s.grace - time.Since(since)
			retry = left > 0
		case f == failLost:
			s.health(ctx, err)
		}
		if !retry || ctx.Err() != nil {
			return s.translate(ctx, op, err)
		}
		wait := min(retryFirst<<(2*min(attempt, 8)), retryMax)
		wait = time.Duration(float64(wait) * (0.5 + rand.Float64()))
		if !since.IsZero() {
			wait = min(wait, left) // the last try comes at the end of the grace
		}
		if s.log.Enabled(ctx, slog.LevelDebug) {
			s.log.LogAttrs(ctx, slog.LevelDebug, "pgstore: retrying after a transient error",
				slog.String("op", op), slog.Int("attempt", attempt+1), slog.String("error", s.translate(ctx, op, err).Error()))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			// Both: the caller's context ended, while the database was
			// unavailable (or the transaction kept failing).
			return fmt.Errorf("%w (%w)", s.translate(ctx, op, ctx.Err()), s.translate(context.Background(), op, err))
		case <-s.closing:
			t.Stop()
			return s.translate(ctx, op, err)
		case <-t.C:
		}
	}
}

// health records whether the database answers: err nil after a success,
// else the unavailable failure just seen. It logs once when the database
// becomes unavailable (Warn) and once when it answers again (Info), with
// how long it was out, rather than each retry of each call (those go to
// Debug).
func (s *Store) health(ctx context.Context, err error) {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	switch {
	case err != nil && !s.down.Load():
		s.down.Store(true)
		s.downSince = time.Now()
		s.log.LogAttrs(ctx, slog.LevelWarn, "pgstore: database unavailable; calls are retried",
			slog.Duration("grace", s.grace), slog.String("error", s.translate(ctx, "", err).Error()))
	case err == nil && s.down.Load():
		s.down.Store(false)
		s.log.LogAttrs(ctx, slog.LevelInfo, "pgstore: database available again",
			slog.Duration("unavailable_for", time.Since(s.downSince).Round(time.Millisecond)))
	}
}

// translate maps a driver error to the store's errors. It is the only place
// that inspects driver errors.
func (s *Store) translate(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	for _, sentinel := range []error{taskstore.ErrNotFound, taskstore.ErrConflict, taskstore.ErrInvalid,
		taskstore.ErrClosed, taskstore.ErrUnavailable} {
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
	f := classify(err)
	unavailable := f == failUnsent || f == failLost
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "23505": // unique_violation
			return fmt.Errorf("%w: %s", taskstore.ErrConflict, pe.Message)
		case pe.Code == "22021", pe.Code == "22P02", pe.Code == "22P05": // bad encoding, bad input syntax
			return storekit.Invalidf("%s: value not accepted by PostgreSQL: %s", op, pe.Message)
		}
		return &Error{Op: op, Code: pe.Code, Message: pe.Message, Unavailable: unavailable, err: err}
	}
	return &Error{Op: op, Message: err.Error(), Unavailable: unavailable, err: err}
}
