package sqlitestore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// Error is a system failure of a Store method: anything that is not one of
// the taskstore sentinels or a context error. Its message names the method
// and the SQLite result code, never SQL text or file paths; the driver's
// own message goes to the logger (see WithLogger). It has the shape of
// pgstore.Error: Code is a string, and Unwrap gives the driver's error.
type Error struct {
	// Op is the Store method that failed, e.g. "create".
	Op string
	// Code names the SQLite result code as SQLite does: the extended
	// code's name (e.g. "SQLITE_IOERR_SHORT_READ", "SQLITE_BUSY_TIMEOUT"),
	// or the primary code's ("SQLITE_FULL") when the failure has no
	// extended code or SQLite has no name for it. It is "" when the failure
	// did not come from SQLite. The numeric codes are those of the driver's
	// *sqlite.Error (modernc.org/sqlite), which errors.As finds.
	Code string

	code int   // the (extended) result code; 0 when not from SQLite
	err  error // the driver's error
}

func (e *Error) Error() string {
	if e.code == 0 {
		return "sqlitestore: " + e.Op + ": internal error"
	}
	return "sqlitestore: " + e.Op + ": " + codeName(e.code)
}

// Unwrap returns the error the failure came from: the driver's
// *sqlite.Error for a failure of SQLite's.
func (e *Error) Unwrap() error { return e.err }

// newError makes the *Error for err, a failure of op with the SQLite result
// code code (0 when not from SQLite).
func newError(op string, code int, err error) *Error {
	e := &Error{Op: op, code: code, err: err}
	if code != 0 {
		e.Code = codeIdent(code)
	}
	return e
}

// translate is the one place driver errors become the errors callers see:
// a primary key or unique violation → ErrConflict, a JSON check violation
// → ErrInvalid, context errors kept, anything else an *Error (logged with
// its details). Errors the Store made itself (ErrNotFound, ErrClosed, …)
// pass through.
func (s *Store) translate(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case isDomain(err):
		return err
	case errors.Is(err, ErrFileGone):
		return fmt.Errorf("sqlitestore: %s: %w", op, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("sqlitestore: %s: %w", op, err)
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
			return fmt.Errorf("sqlitestore: %s: a task with this id already exists: %w", op, taskstore.ErrConflict)
		case sqlite3.SQLITE_CONSTRAINT_CHECK:
			// json_valid is stricter than encoding/json in a few corners
			// (nesting deeper than 1000 levels).
			return storekit.Invalidf("request or response is JSON the database does not accept")
		}
		s.log.Error("sqlitestore: "+op+" failed", "code", se.Code(), "err", se.Error())
		return newError(op, se.Code(), err)
	}
	s.log.Error("sqlitestore: "+op+" failed", "err", err.Error())
	return newError(op, 0, err)
}

// isDomain reports whether err is a taskstore sentinel the Store decided on.
func isDomain(err error) bool {
	return errors.Is(err, taskstore.ErrNotFound) || errors.Is(err, taskstore.ErrConflict) ||
		errors.Is(err, taskstore.ErrInvalid) || errors.Is(err, taskstore.ErrClosed)
}

// isConstraint reports whether err is a constraint violation, after which
// SQLite has undone the failing statement and nothing else.
func isConstraint(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_CONSTRAINT
}

// extendedNames are the extended result codes the driver has no name for.
var extendedNames = map[int]string{
	sqlite3.SQLITE_BUSY_RECOVERY:         "SQLITE_BUSY_RECOVERY",
	sqlite3.SQLITE_BUSY_SNAPSHOT:         "SQLITE_BUSY_SNAPSHOT",
	sqlite3.SQLITE_BUSY_TIMEOUT:          "SQLITE_BUSY_TIMEOUT",
	sqlite3.SQLITE_CANTOPEN_ISDIR:        "SQLITE_CANTOPEN_ISDIR",
	sqlite3.SQLITE_CANTOPEN_FULLPATH:     "SQLITE_CANTOPEN_FULLPATH",
	sqlite3.SQLITE_CONSTRAINT_CHECK:      "SQLITE_CONSTRAINT_CHECK",
	sqlite3.SQLITE_CONSTRAINT_DATATYPE:   "SQLITE_CONSTRAINT_DATATYPE",
	sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY: "SQLITE_CONSTRAINT_FOREIGNKEY",
	sqlite3.SQLITE_CONSTRAINT_NOTNULL:    "SQLITE_CONSTRAINT_NOTNULL",
	sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY: "SQLITE_CONSTRAINT_PRIMARYKEY",
	sqlite3.SQLITE_CONSTRAINT_TRIGGER:    "SQLITE_CONSTRAINT_TRIGGER",
	sqlite3.SQLITE_CONSTRAINT_UNIQUE:     "SQLITE_CONSTRAINT_UNIQUE",
	sqlite3.SQLITE_CORRUPT_INDEX:         "SQLITE_CORRUPT_INDEX",
	sqlite3.SQLITE_IOERR_NOMEM:           "SQLITE_IOERR_NOMEM",
	sqlite3.SQLITE_READONLY_CANTINIT:     "SQLITE_READONLY_CANTINIT",
	sqlite3.SQLITE_READONLY_DBMOVED:      "SQLITE_READONLY_DBMOVED",
	sqlite3.SQLITE_READONLY_DIRECTORY:    "SQLITE_READONLY_DIRECTORY",
	sqlite3.SQLITE_READONLY_RECOVERY:     "SQLITE_READONLY_RECOVERY",
	sqlite3.SQLITE_READONLY_ROLLBACK:     "SQLITE_READONLY_ROLLBACK",
}

// codeName names an SQLite result code: the primary code's name, with the
// extended code's name when the driver knows it (SQLITE_IOERR_SHORT_READ).
func codeName(code int) string {
	if n, ok := extendedNames[code]; ok {
		return n
	}
	if n, ok := driverName(code); ok {
		return n
	}
	primary := code & 0xff
	name, ok := driverName(primary)
	if !ok {
		name = "SQLITE_" + strconv.Itoa(primary)
	}
	if code == primary {
		return name
	}
	return name + " (extended code " + strconv.Itoa(code) + ")"
}

// codeIdent names an SQLite result code by one identifier: the extended
// code's name when SQLite has one, else the primary code's.
func codeIdent(code int) string {
	if n, ok := extendedNames[code]; ok {
		return n
	}
	if n, ok := driverName(code); ok {
		return n
	}
	primary := code & 0xff
	if n, ok := driverName(primary); ok {
		return n
	}
	return "SQLITE_" + strconv.Itoa(primary)
}

// driverName is the code's name as the driver's description ends it, as in
// "disk I/O error (SQLITE_IOERR_READ)".
func driverName(code int) (string, bool) {
	d, ok := sqlite.ErrorCodeString[code]
	if !ok {
		return "", false
	}
	i := strings.LastIndex(d, "(SQLITE_")
	if i < 0 || !strings.HasSuffix(d, ")") {
		return "", false
	}
	return d[i+1 : len(d)-1], true
}
