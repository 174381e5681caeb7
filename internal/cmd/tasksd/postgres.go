package main

import (
	"context"
	"errors"

	"github.com/tasksapi/tasks/taskstore"
)

func openPostgres(ctx context.Context, url string) (taskstore.Store, bool, string, error) {
	return nil, false, "", errors.New("PostgreSQL is not supported by this build yet")
}
