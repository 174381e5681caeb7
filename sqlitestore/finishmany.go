package sqlitestore

import (
	"context"
	"strconv"
	"time"

	"github.com/tasksapi/tasks/internal/jsonw"
	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// finishManySQL finishes, in one statement, the unfinished tasks of a JSON
// list of [id, response, failed] triples, setting what finishSQL sets, and
// returns their ids. The response travels as a JSON string, which SQLite
// decodes back to the exact bytes (a JSON value would be re-serialized).
// Arguments: the finish time, the list.
const finishManySQL = `UPDATE tasks INDEXED BY tasks_id
	SET response = f.response, finished_ms = ?1, lease_ms = 0, failed = f.failed,
		next_attempt_ms = CASE WHEN callback_url <> '' THEN ?1 ELSE next_attempt_ms END
	FROM (SELECT value ->> 0 AS id, value ->> 1 AS response, value ->> 2 AS failed FROM json_each(?2)) AS f
	WHERE tasks.id = f.id AND tasks.finished_ms = 0
	RETURNING tasks.id`

// FinishMany finishes the listed unfinished tasks in one UPDATE (see
// taskstore.Store), which the writer runs in a group commit like any other
// write. Whether each response is a success is decided here, in Go, as
// Finish decides it.
func (s *Store) FinishMany(ctx context.Context, outcomes []taskstore.Outcome, at time.Time) ([]string, error) {
	const op = "finish many"
	if err := s.enter(ctx, op); err != nil {
		return nil, err
	}
	defer s.leave()
	outcomes, err := storekit.CheckOutcomes(outcomes)
	if err != nil {
		return nil, err
	}
	// The list, without the ids no stored task can have (not UTF-8).
	list := make([]byte, 0, 64*len(outcomes))
	list = append(list, '[')
	n := 0
	for _, o := range outcomes {
		if _, ok := validList([]string{o.ID}); !ok {
			continue
		}
		if n > 0 {
			list = append(list, ',')
		}
		list = append(list, '[')
		list = jsonw.AppendString(list, o.ID)
		list = append(list, ',')
		list = jsonw.AppendString(list, string(o.Response))
		list = append(list, ',')
		list = strconv.AppendInt(list, flag(!taskstore.Succeeded(o.Response)), 10)
		list = append(list, ']')
		n++
	}
	if n == 0 {
		return []string{}, nil
	}
	arg, atMs := string(append(list, ']')), storekit.MillisOrNow(at)
	finished := make(map[string]bool, n)
	err = s.write(ctx, false, func(w *writer) error {
		clear(finished)
		rows, err := w.finishMany.Query(atMs, arg)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			finished[id] = true
		}
		if err := rows.Close(); err != nil {
			return err
		}
		return rows.Err()
	})
	if err != nil {
		return nil, s.translate(op, err)
	}
	out := make([]string, 0, len(finished))
	for _, o := range outcomes {
		if finished[o.ID] {
			out = append(out, o.ID)
		}
	}
	return out, nil
}
