package sqlitestore

import (
	"context"
	"database/sql/driver"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// readWalkSQL reads the tasks after a (created_ms, id) position in that
// order: a seek in tasks_created (the row-value comparison is a range of
// the index) and a forward read, LIMIT rows long. The first column is the
// claim on a pending callback (the claimed flag, which RecordAttempt and
// Redeliver clear, on a callback that is still pending).
const readWalkSQL = `SELECT claimed = 1 AND callback_url <> '' AND finished_ms <> 0 AND delivered_ms = 0
	AND next_attempt_ms <> 0 AS c, ` + packedColumn + `
	FROM tasks INDEXED BY tasks_created WHERE (created_ms, id) > (?, ?) ORDER BY created_ms, id LIMIT ?`

// Walk returns at most limit tasks after the cursor in (CreatedAt, ID)
// order; see taskstore.Store. It runs one statement on a read connection,
// which seeks the cursor in tasks_created and reads forward.
func (s *Store) Walk(ctx context.Context, after taskstore.Cursor, limit int) ([]taskstore.Record, error) {
	const op = "walk"
	if err := s.enter(ctx, op); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := storekit.CheckLimit(limit); err != nil {
		return nil, err
	}
	ms, id := storekit.CursorKey(after)
	args := []any{ms, id, int64(limit)}
	out := make([]taskstore.Record, 0, min(limit, 1024))
	err := s.reads.do(ctx, func(c *readConn) error {
		out = out[:0]
		st, done, err := c.stmt(ctx, readWalkSQL)
		if err != nil {
			return err
		}
		defer done()
		return c.query(ctx, st, args, 2, func(v []driver.Value) error {
			var claimed int64
			if err := intValue(v[0], &claimed); err != nil {
				return err
			}
			t, err := unpackValue(v[1])
			if err != nil {
				return err
			}
			out = append(out, taskstore.Record{Task: t, Claimed: claimed == 1})
			return nil
		})
	})
	if err != nil {
		return nil, s.translate(op, err)
	}
	return out, nil
}
