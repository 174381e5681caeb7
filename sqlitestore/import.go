package sqlitestore

import (
	"context"
	"fmt"
	"time"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// Import stores many tasks in one transaction: all of them, or none when it
// returns an error. It is for loading data (moving tasks from another store,
// building a benchmark dataset), and is much faster per task than Create,
// which commits each call (or each group of concurrent calls) on its own.
//
// Each task is validated and normalized as Create does (ErrInvalid naming
// the task's position and the field); a task whose id is already stored, or
// appears twice in tasks, gives ErrConflict. Every field is kept as given,
// the callback delivery state and the lease included, so a finished task
// with a callback URL and a NextAttemptAt is a pending delivery.
//
// The transaction holds the database's write lock until it ends, and other
// writes of this Store wait for it: import large sets in chunks of some
// thousands of tasks. A cancelled ctx stops the import and rolls it back.
// An empty tasks is a no-op.
func (s *Store) Import(ctx context.Context, tasks []taskstore.Task) error {
	const op = "import"
	if err := s.enter(ctx, op); err != nil {
		return err
	}
	defer s.leave()
	if len(tasks) == 0 {
		return nil
	}
	now := time.Now()
	rows := make([][]any, len(tasks))
	for i, t := range tasks {
		n, err := storekit.Normalize(t, now)
		if err != nil {
			return fmt.Errorf("sqlitestore: import: task %d: %w", i, err)
		}
		rows[i] = insertArgs(n)
	}
	failed := -1
	err := s.submit(ctx, true, true, func(w *writer) error {
		for i, args := range rows {
			if i%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
			if _, err := w.insert.Exec(args...); err != nil {
				failed = i
				return err
			}
		}
		return nil
	})
	if err = s.translate(op, err); err != nil && failed >= 0 {
		return fmt.Errorf("sqlitestore: import: task %d: %w", failed, err)
	}
	return err
}
