package main

import (
	"context"
	"log/slog"
	"net/url"
	"time"

	"github.com/tasksapi/tasks/pgstore"
	"github.com/tasksapi/tasks/taskstore"
)

// openPostgres opens a pgstore. Several tasksd replicas may share the
// database, so soleOwner is false: tasks of a dead replica are recovered once
// their lease expires, not at start. A database that cannot be reached yet
// is waited for, up to wait (-db-wait), each try logged; the store logs to
// log (migrations, the database becoming unavailable and available again).
func openPostgres(ctx context.Context, dsn string, wait time.Duration, log *slog.Logger) (taskstore.Store, bool, string, error) {
	st, err := pgstore.Open(ctx, dsn, pgstore.WithStartupWait(wait), pgstore.WithLogger(log))
	if err != nil {
		return nil, false, "", err
	}
	return st, false, "postgres " + redact(dsn), nil
}

// redact hides the password of a database URL for logging: the user
// information's (url.URL.Redacted) and a password query parameter, which
// pgx accepts too.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable URL)"
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery = q.Encode()
	}
	return u.Redacted()
}
