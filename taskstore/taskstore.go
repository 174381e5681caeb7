// Package taskstore is the domain of the tasks module: the Task record, the
// Filter used to list tasks, the Principal that scopes what a caller sees, the
// Store interface every backend implements, and the sentinel errors stores
// return.
//
// It imports no database driver. Backends live in their own packages
// (memstore, sqlitestore, pgstore) and prove that they behave alike by
// passing the conformance suite in taskstore/storetest; the helpers they are
// written with (argument checks, Normalize, millisecond times, the order of
// Walk) are in taskstore/storekit, for a store of your own too.
//
// # Times
//
// Stores keep times with millisecond precision, in UTC. A time handed to a
// store is truncated to the millisecond; a time read back is the truncated
// value in UTC. In a Task the zero time.Time means "not set"; as an argument
// of Start, Finish, FinishMany or RecordAttempt it means the current time,
// and ClaimDeliveries refuses a zero now (see Store).
//
// # Errors
//
// Stores return ErrNotFound, ErrConflict, ErrInvalid (possibly wrapped with
// a message naming the field) and, after Close, ErrClosed; test for them
// with errors.Is. A store that keeps its tasks elsewhere (a database server)
// wraps ErrUnavailable in its errors while it cannot reach them. A cancelled
// context gives the context's error. Any other error is a system failure
// (I/O, a full disk) whose message never carries SQL text or file paths.
package taskstore

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Stores wrap them with context; use errors.Is.
var (
	// ErrNotFound: no task has the given id.
	ErrNotFound = errors.New("taskstore: task not found")
	// ErrConflict: the operation contradicts the task's state (a duplicate
	// id, starting a started or finished task, finishing a finished task,
	// recording an attempt for a callback that is not pending).
	ErrConflict = errors.New("taskstore: conflict")
	// ErrInvalid: the input is malformed. The wrapping error's message names
	// the field.
	ErrInvalid = errors.New("taskstore: invalid input")
	// ErrClosed: the store has been closed.
	ErrClosed = errors.New("taskstore: store closed")
	// ErrUnavailable: the store cannot reach its data for now (its database
	// server is restarting, or the network to it is cut); the same call may
	// succeed later. A store wraps it in the error it returns, with the
	// reason. A read that fails with it changed nothing; a write may or may
	// not have been applied when its answer was lost. Repeating Start,
	// Finish or RecordAttempt with the same arguments is safe either way
	// (see Store: a repeat of a write already applied succeeds), so callers
	// that must not lose a result retry those until the store answers.
	// Servers answer it with 503 rather than 500.
	ErrUnavailable = errors.New("taskstore: store unavailable")
)

// invalidf returns an error that wraps ErrInvalid with a message naming
// the offending field, as storekit.Invalidf does.
func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Reason returns the human-readable part of an ErrInvalid error (for
// example "type is required"), suitable for showing to a client: the text
// after "taskstore: invalid input: " in the message of the error, in err's
// tree, that wraps ErrInvalid itself, as storekit.Invalidf and
// fmt.Errorf("%w: …", ErrInvalid) make it. For any other error it returns
// "".
func Reason(err error) string {
	msg, _ := reason(err)
	return msg
}

func reason(err error) (string, bool) {
	for err != nil {
		switch e := err.(type) {
		case interface{ Unwrap() error }:
			next := e.Unwrap()
			if next == ErrInvalid {
				if msg, ok := strings.CutPrefix(err.Error(), ErrInvalid.Error()+": "); ok {
					return msg, true
				}
			}
			err = next
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				if msg, ok := reason(inner); ok {
					return msg, true
				}
			}
			return "", false
		default:
			return "", false
		}
	}
	return "", false
}
