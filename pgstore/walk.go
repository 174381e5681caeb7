package pgstore

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// walkTasks reads the tasks after a (created_ms, id) position in that
// order: the row comparison is a range of the index tasks_created, read
// forward LIMIT rows long. The first column is the claim on a pending
// callback (claimedCond, see redeliver.go).
const walkTasks = `SELECT (callback_url <> '' AND finished_ms <> 0 AND next_attempt_ms <> 0 AND ` + claimedCond + `) AS claimed,
` + taskColumns + ` FROM tasks WHERE (created_ms, id) > ($1, $2) ORDER BY created_ms, id LIMIT $3`

// Walk returns at most limit tasks after the cursor in (CreatedAt, ID)
// order; see taskstore.Store. It is one statement, an index range scan of
// tasks_created; ids compare byte by byte (the "C" collation).
func (s *Store) Walk(ctx context.Context, after taskstore.Cursor, limit int) ([]taskstore.Record, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := storekit.CheckLimit(limit); err != nil {
		return nil, err
	}
	ms, id := storekit.CursorKey(after)
	if !storable(id) {
		// PostgreSQL text cannot hold it, so no stored task has it: the
		// cursor comes from elsewhere.
		return nil, storekit.Invalidf("cursor id must be valid UTF-8 without NUL characters")
	}
	var out []taskstore.Record
	err := s.do(ctx, "walk", idempotent, func() error {
		return s.conn(ctx, func(c *pgx.Conn) error {
			rs, err := c.Query(ctx, walkTasks, ms, id, limit)
			if err != nil {
				return err
			}
			defer rs.Close()
			out = make([]taskstore.Record, 0, min(limit, 1024))
			var r row
			var claimed bool
			d := r.dest(&claimed)
			for rs.Next() {
				if err := rs.Scan(d...); err != nil {
					return err
				}
				out = append(out, taskstore.Record{Task: r.task(), Claimed: claimed})
			}
			return rs.Err()
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
