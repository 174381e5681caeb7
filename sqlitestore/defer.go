package sqlitestore

import (
	"context"
	"strconv"
	"unicode/utf8"

	"github.com/tasksapi/tasks/internal/jsonw"
	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// deferSQL hands back the listed deliveries that their claims still hold.
// Its argument is a JSON array of [id, claim end, next due time] triples.
// Like a claim, it changes neither the state nor any index but
// tasks_outbox.
const deferSQL = `UPDATE tasks SET next_attempt_ms = d.due_ms, claimed = 0
	FROM (SELECT value ->> 0 AS task_id, value ->> 1 AS claim_ms, value ->> 2 AS due_ms FROM json_each(?)) AS d
	WHERE tasks.id = d.task_id AND ` + pending + ` AND claimed = 1 AND next_attempt_ms = d.claim_ms`

// DeferDeliveries hands claimed deliveries back without an attempt, in one
// statement (see taskstore.Store).
func (s *Store) DeferDeliveries(ctx context.Context, ds []taskstore.Deferral) (int, error) {
	const op = "defer deliveries"
	if err := s.enter(ctx, op); err != nil {
		return 0, err
	}
	defer s.leave()
	if err := storekit.CheckDeferrals(ds); err != nil {
		return 0, err
	}
	list := make([]byte, 0, 2+len(ds)*64)
	list = append(list, '[')
	for _, d := range ds {
		if !utf8.ValidString(d.ID) {
			continue // no stored task has such an id
		}
		if len(list) > 1 {
			list = append(list, ',')
		}
		list = append(list, '[')
		list = jsonw.AppendString(list, d.ID)
		list = append(list, ',')
		list = strconv.AppendInt(list, ms(d.ClaimedUntil), 10)
		list = append(list, ',')
		list = strconv.AppendInt(list, ms(d.Next), 10)
		list = append(list, ']')
	}
	if len(list) == 1 {
		return 0, nil
	}
	list = append(list, ']')
	var n int64
	err := s.write(ctx, false, func(w *writer) error {
		res, err := w.conn.ExecContext(context.Background(), deferSQL, string(list))
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, s.translate(op, err)
	}
	return int(n), nil
}
