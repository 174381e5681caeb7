package pgstore

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// A delivery is claimed while claim_ms is set and equal to next_attempt_ms
// (the claim's expiry), and in flight while that time is after the given
// one ($2). Any write of next_attempt_ms that does not also set claim_ms
// ends a claim.
const (
	claimedCond  = `claim_ms <> 0 AND claim_ms = next_attempt_ms AND delivered_ms = 0`
	inFlightCond = `(` + claimedCond + ` AND next_attempt_ms > $2)`
)

// redeliver locks the finished tasks with a callback among $1, in id order
// so that two redeliveries of overlapping lists never deadlock, and makes
// those not in flight due at $2: a pending one that no claim holds keeps an
// earlier due time, any other becomes due at $2. It returns the ids of all
// the locked tasks (those in flight included).
//
// FOR UPDATE waits for a row that another transaction holds (a claim being
// made, an attempt being recorded) instead of skipping it, then reads the
// row as that transaction left it (READ COMMITTED re-checks the conditions
// on the newest version). The UPDATE's snapshot, though, is the statement's
// and may show an older version of such a row: PostgreSQL filters on that
// version and re-reads the newest only for rows that pass. So the UPDATE's
// WHERE names the locked rows alone, and every decision (in flight or not,
// which due time) is taken in SET, which is computed from the newest
// version: a claim committed meanwhile is seen as in flight and its row is
// written back unchanged. ClaimDeliveries' SKIP LOCKED, conversely, passes
// over a row being redelivered; the next claim finds it due.
const redeliver = `WITH l AS MATERIALIZED (
	SELECT id FROM tasks WHERE id = ANY($1) AND callback_url <> '' AND finished_ms <> 0 ORDER BY id FOR UPDATE
), made AS (
	UPDATE tasks SET
		delivered_ms = CASE WHEN ` + inFlightCond + ` THEN delivered_ms ELSE 0 END,
		claim_ms = CASE WHEN ` + inFlightCond + ` THEN claim_ms ELSE 0 END,
		next_attempt_ms = CASE WHEN ` + inFlightCond + ` THEN next_attempt_ms
			WHEN delivered_ms = 0 AND next_attempt_ms <> 0 AND NOT (` + claimedCond + `) THEN least(next_attempt_ms, $2)
			ELSE $2 END
	WHERE id = ANY(ARRAY(SELECT id FROM l))
)
SELECT id FROM l`

// Redeliver makes the callbacks of the listed finished tasks due again at
// (now when zero) and returns their ids in the order given, each once; see
// taskstore.Store. A delivery in flight is left to its attempt and listed.
// All the rows are changed by one statement, hence atomically.
func (s *Store) Redeliver(ctx context.Context, ids []string, at time.Time) ([]string, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	ids = storableOnly(ids)
	if len(ids) == 0 {
		return []string{}, nil
	}
	ms := storekit.MillisOrNow(at)
	found := make(map[string]bool, len(ids))
	// Repeating it after a lost connection is harmless: the callbacks it
	// made due are still due (or claimed since, hence left alone), and the
	// answer lists the same tasks.
	err := s.do(ctx, "redeliver", idempotent, func() error {
		clear(found)
		return s.conn(ctx, func(c *pgx.Conn) error {
			rows, err := c.Query(ctx, redeliver, ids, ms)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					return err
				}
				found[id] = true
			}
			return rows.Err()
		})
	})
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(found))
	for _, id := range ids {
		if found[id] {
			out = append(out, id)
			found[id] = false // each once
		}
	}
	return out, nil
}

// callbackFailed is the condition of a failed callback, as in
// callbackCond and the predicate of tasks_callback_failed_finished.
const callbackFailed = `callback_url <> '' AND finished_ms <> 0 AND delivered_ms = 0 AND next_attempt_ms = 0`

// redeliverFailed takes up to $3 failed callbacks of recorder $4's tasks
// finished at or after $1 from the partial index of failed callbacks
// (tasks_callback_failed_finished: a range of it), oldest finish first,
// and makes them due at $2. Rows another transaction holds (a Redeliver or
// RedeliverFailed in progress, a Delete) are skipped rather than waited
// for: two RedeliverFailed calls take disjoint batches, and a batch is never
// cut short by rows that a concurrent call has just made pending. The rows
// it locks are failed in their newest version; as in redeliver, the UPDATE
// names them alone, since its snapshot may hold an older version of one.
const redeliverFailed = `WITH l AS MATERIALIZED (
	SELECT id FROM tasks WHERE ` + callbackFailed + ` AND recorder = $4 AND finished_ms >= $1
	ORDER BY finished_ms, id LIMIT $3 FOR UPDATE SKIP LOCKED
)
UPDATE tasks SET next_attempt_ms = $2, claim_ms = 0
WHERE id = ANY(ARRAY(SELECT id FROM l))
RETURNING id`

// RedeliverFailed makes due again at (now when zero) the failed callbacks
// of at most limit tasks of the recorder finished at or after since, and
// returns their ids; see taskstore.Store.
func (s *Store) RedeliverFailed(ctx context.Context, recorder string, since, at time.Time, limit int) ([]string, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := taskstore.CheckRecorder(recorder); err != nil {
		return nil, err
	}
	if err := storekit.CheckLimit(limit); err != nil {
		return nil, err
	}
	sinceMs := int64(-1 << 63) // the zero time: every finished task
	if !since.IsZero() {
		sinceMs = storekit.CeilMillis(since)
	}
	var out []string
	// Not repeated after a lost connection: the batch may have been made
	// due, and a repeat would take the next one and answer only that.
	err := s.do(ctx, "redeliver failed", safeIfUnsent, func() error {
		out = make([]string, 0, min(limit, 1000))
		return s.conn(ctx, func(c *pgx.Conn) error {
			rows, err := c.Query(ctx, redeliverFailed, sinceMs, storekit.MillisOrNow(at), limit, recorder)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					return err
				}
				out = append(out, id)
			}
			return rows.Err()
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
