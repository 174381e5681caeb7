package main

import (
	"context"
	"net/url"

	"github.com/tasksapi/tasks/pgstore"
	"github.com/tasksapi/tasks/taskstore"
)

// openPostgres opens a pgstore. Several tasksd replicas may share the
// database, so soleOwner is false: tasks of a dead replica are recovered once
// their lease expires, not at start.
func openPostgres(ctx context.Context, dsn string) (taskstore.Store, bool, string, error) {
	st, err := pgstore.Open(ctx, dsn)
	if err != nil {
		return nil, false, "", err
	}
	return st, false, "postgres " + redact(dsn), nil
}

// redact drops the password from a database URL for logging.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable URL)"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}
