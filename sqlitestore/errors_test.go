package sqlitestore

import "testing"

// TestErrorNames: an *Error names the SQLite result code, primary or
// extended, by the name SQLite gives it.
func TestErrorNames(t *testing.T) {
	for _, tc := range []struct {
		code int
		want string
	}{
		{13, "sqlitestore: create: SQLITE_FULL"},
		{5, "sqlitestore: create: SQLITE_BUSY"},
		{10 | 1<<8, "sqlitestore: create: SQLITE_IOERR_READ"},
		{5 | 3<<8, "sqlitestore: create: SQLITE_BUSY_TIMEOUT"},
		{13 | 99<<8, "sqlitestore: create: SQLITE_FULL (extended code 25357)"},
		{200, "sqlitestore: create: SQLITE_200"},
		{0, "sqlitestore: create: internal error"},
	} {
		if got := (&Error{Op: "create", Code: tc.code}).Error(); got != tc.want {
			t.Errorf("code %d: %q, want %q", tc.code, got, tc.want)
		}
	}
}
