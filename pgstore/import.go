package pgstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// importColumns are the columns Import writes, in the order of its rows.
var importColumns = func() []string {
	cols := strings.Split(taskColumns, ",")
	for i, c := range cols {
		cols[i] = strings.TrimSpace(c)
	}
	return append(cols, "success")
}()

// Import stores many tasks with one COPY, which PostgreSQL runs as one
// statement in one transaction: all of them, or none when it returns an
// error. It is for loading data (moving tasks from another store, building
// a benchmark dataset) and is several times faster per task than Create.
//
// Each task is validated and normalized as Create does (ErrInvalid naming
// the task's position and the field); a task whose id is already stored, or
// appears twice in tasks, gives ErrConflict. Every field is kept as given,
// the callback delivery state and the lease included, so a finished task
// with a callback URL and a NextAttemptAt is a pending delivery. No claim is
// recorded: a delivery imported pending is due at its NextAttemptAt.
//
// The COPY holds the new rows' index entries locked until it ends, and the
// counters' triggers run once for the whole statement: import large sets in
// chunks of some thousands of tasks. A cancelled ctx stops the import and
// rolls it back. It is not retried after a lost connection (the COPY may
// have committed). An empty tasks is a no-op.
func (s *Store) Import(ctx context.Context, tasks []taskstore.Task) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()
	if len(tasks) == 0 {
		return nil
	}
	now := time.Now()
	norm := make([]taskstore.Task, len(tasks))
	for i, t := range tasks {
		n, err := storekit.Normalize(t, now)
		if err == nil {
			err = checkText(n)
		}
		if err != nil {
			return fmt.Errorf("pgstore: import: task %d: %w", i, err)
		}
		norm[i] = n
	}
	row := make([]any, len(importColumns))
	next := func(i int) ([]any, error) {
		t := &norm[i]
		var success any // NULL unless finished
		if t.Response != nil {
			success = taskstore.Succeeded(t.Response)
		}
		// The JSON goes as []byte, which pgx sends as the json text
		// unchanged; a nil response is NULL.
		row[0], row[1], row[2] = t.ID, t.TraceID, t.Type
		row[3], row[4], row[5] = storekit.ToMillis(t.CreatedAt), storekit.ToMillis(t.StartedAt), storekit.ToMillis(t.FinishedAt)
		row[6], row[7], row[8], row[9] = t.ApplicationID, t.UserID, t.CredentialID, t.Callback.URL
		row[10], row[11] = int32(t.Callback.Attempts), storekit.ToMillis(t.Callback.NextAttemptAt)
		row[12], row[13], row[14] = storekit.ToMillis(t.Callback.DeliveredAt), int32(t.Callback.LastStatus), t.Callback.LastError
		row[15], row[16], row[17] = storekit.ToMillis(t.LeaseUntil), []byte(t.Request), []byte(t.Response)
		row[18], row[19] = t.Recorder, success
		return row, nil
	}
	return s.do(ctx, "import", safeIfUnsent, func() error {
		return s.conn(ctx, func(c *pgx.Conn) error {
			_, err := c.CopyFrom(ctx, pgx.Identifier{"tasks"}, importColumns, pgx.CopyFromSlice(len(norm), next))
			return err
		})
	})
}
