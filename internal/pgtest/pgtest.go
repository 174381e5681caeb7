// Package pgtest gives tests a PostgreSQL database to run against.
//
// Tests find the server through the TASKS_PG_URL environment variable, which
// .ci/start-postgres.sh prints (eval "$(bash .ci/start-postgres.sh)"). When it
// is unset, URL skips the test and says so, so that `go test ./...` passes on a
// machine without PostgreSQL; under CI (CI set in the environment) it fails
// the test instead, since CI must run the PostgreSQL tests.
//
// FreshSchema gives each test its own empty schema in that database and a
// connection string whose search_path selects it, so that tests run in
// parallel without seeing each other's tables and a fresh store costs one
// CREATE SCHEMA rather than a new database.
//
// For faults, Proxy puts a loopback TCP proxy the test controls in front of
// a server (refusing connections, cutting them, or cutting one in the
// middle of a chosen statement), and Cluster runs a throwaway server of the
// test's own (initdb, pg_ctl) that it may stop, start and restart.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
)

// EnvURL is the environment variable that holds the test server's URL.
const EnvURL = "TASKS_PG_URL"

// URL returns the PostgreSQL URL in TASKS_PG_URL. When it is not set, URL
// skips the test, or fails it when the CI environment variable is set.
func URL(tb testing.TB) string {
	tb.Helper()
	u := os.Getenv(EnvURL)
	if u == "" {
		msg := EnvURL + " not set; run .ci/start-postgres.sh (eval \"$(bash .ci/start-postgres.sh)\") to test against PostgreSQL"
		if os.Getenv("CI") != "" {
			tb.Fatal(msg + " (CI is set: the PostgreSQL tests must run)")
		}
		tb.Skip(msg)
	}
	return u
}

// FreshSchema creates an empty schema named test_<random> in the database
// at dbURL, drops it (with everything in it) when the test ends, and returns
// dbURL with search_path set to that schema. dbURL may be a URL
// (postgres://…) or a keyword/value string (host=… dbname=…).
func FreshSchema(tb testing.TB, dbURL string) string {
	tb.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatalf("pgtest: random schema name: %v", err)
	}
	schema := "test_" + hex.EncodeToString(b[:])
	Exec(tb, dbURL, "CREATE SCHEMA "+schema)
	tb.Cleanup(func() {
		// Tests close their stores in earlier cleanups (they run in reverse
		// order), so nothing holds locks on the schema by now.
		Exec(tb, dbURL, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
	})
	u, err := WithSearchPath(dbURL, schema)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	return u
}

// WithSearchPath returns the connection string dbURL with the search_path
// run-time parameter set to schema (pgx sends unknown URL parameters to the
// server as run-time parameters). dbURL may be a URL or a keyword/value
// string; schema must be a plain identifier.
func WithSearchPath(dbURL, schema string) (string, error) {
	if strings.HasPrefix(dbURL, "postgres://") || strings.HasPrefix(dbURL, "postgresql://") {
		u, err := url.Parse(dbURL)
		if err != nil {
			return "", fmt.Errorf("database URL is not a valid URL: %w", err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String(), nil
	}
	return dbURL + " search_path=" + schema, nil
}

// Exec runs statements (no arguments) on the database at dbURL over a
// connection of its own, failing the test on error.
func Exec(tb testing.TB, dbURL string, statements ...string) {
	tb.Helper()
	db, err := sql.Open("pgx", dbURL)
	if err != nil {
		tb.Fatalf("pgtest: open: %v", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, s := range statements {
		if _, err := db.ExecContext(ctx, s); err != nil {
			tb.Fatalf("pgtest: %s: %v", firstWords(s), err)
		}
	}
}

func firstWords(s string) string {
	f := strings.Fields(s)
	if len(f) > 3 {
		f = f[:3]
	}
	return strings.Join(f, " ")
}
