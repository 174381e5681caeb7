package sqlitestore

import (
	"errors"
	"testing"
)

// TestErrorNames: an *Error names the SQLite result code, primary or
// extended, by the name SQLite gives it, in its message and in Code.
func TestErrorNames(t *testing.T) {
	driverErr := errors.New("driver")
	for _, tc := range []struct {
		code     int
		want     string
		wantCode string
	}{
		{13, "sqlitestore: create: SQLITE_FULL", "SQLITE_FULL"},
		{5, "sqlitestore: create: SQLITE_BUSY", "SQLITE_BUSY"},
		{10 | 1<<8, "sqlitestore: create: SQLITE_IOERR_READ", "SQLITE_IOERR_READ"},
		{5 | 3<<8, "sqlitestore: create: SQLITE_BUSY_TIMEOUT", "SQLITE_BUSY_TIMEOUT"},
		{13 | 99<<8, "sqlitestore: create: SQLITE_FULL (extended code 25357)", "SQLITE_FULL"},
		{200, "sqlitestore: create: SQLITE_200", "SQLITE_200"},
		{0, "sqlitestore: create: internal error", ""},
	} {
		e := newError("create", tc.code, driverErr)
		if got := e.Error(); got != tc.want {
			t.Errorf("code %d: %q, want %q", tc.code, got, tc.want)
		}
		if e.Code != tc.wantCode || e.Op != "create" {
			t.Errorf("code %d: Code %q Op %q, want %q", tc.code, e.Code, e.Op, tc.wantCode)
		}
		if !errors.Is(e, driverErr) {
			t.Errorf("code %d: does not unwrap to the driver's error", tc.code)
		}
	}
}
