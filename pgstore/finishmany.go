package pgstore

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// finishMany locks the unfinished tasks among $1 in id order (so that two
// bulk finishes over overlapping lists never deadlock; a concurrent Finish
// locks one row only) and finishes them as finishTask does, each with its
// response ($2) and success bit ($3), at $4, returning their ids. FOR
// UPDATE waits for a row another transaction holds and then re-checks
// finished_ms on its newest version, so a task finished meanwhile is left
// out; the UPDATE names the locked rows alone.
const finishMany = `WITH l AS MATERIALIZED (
	SELECT id FROM tasks WHERE id = ANY($1) AND finished_ms = 0 ORDER BY id FOR UPDATE
)
UPDATE tasks t SET response = v.response::json, finished_ms = $4, success = v.success, lease_ms = 0,
	next_attempt_ms = CASE WHEN t.callback_url <> '' THEN $4 ELSE t.next_attempt_ms END
FROM unnest($1::text[], $2::text[], $3::bool[]) AS v(id, response, success)
WHERE t.id = v.id AND t.id = ANY(ARRAY(SELECT id FROM l)) AND t.finished_ms = 0
RETURNING t.id`

// FinishMany finishes the listed unfinished tasks in one statement; see
// taskstore.Store. A zero at means now. Whether each response is a success
// (taskstore.Succeeded) is decided here, as Finish decides it.
func (s *Store) FinishMany(ctx context.Context, outcomes []taskstore.Outcome, at time.Time) ([]string, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	outcomes, err := storekit.CheckOutcomes(outcomes)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(outcomes))
	resps := make([]string, 0, len(outcomes))
	oks := make([]bool, 0, len(outcomes))
	for _, o := range outcomes {
		if storable(o.ID) {
			ids = append(ids, o.ID)
			resps = append(resps, string(o.Response))
			oks = append(oks, taskstore.Succeeded(o.Response))
		}
	}
	if len(ids) == 0 {
		return []string{}, nil
	}
	ms := storekit.MillisOrNow(at)
	finished := make(map[string]bool, len(ids))
	// Not retried after a lost connection: the statement may have
	// committed, and a repeat would answer none of the tasks it finished.
	err = s.do(ctx, "finish many", safeIfUnsent, func() error {
		clear(finished)
		return s.conn(ctx, func(c *pgx.Conn) error {
			rows, err := c.Query(ctx, finishMany, ids, resps, oks, ms)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					return err
				}
				finished[id] = true
			}
			return rows.Err()
		})
	})
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(finished))
	for _, id := range ids {
		if finished[id] {
			out = append(out, id)
		}
	}
	return out, nil
}
