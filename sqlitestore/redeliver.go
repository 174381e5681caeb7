package sqlitestore

import (
	"context"
	"strconv"
	"time"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// Redeliver makes the callbacks of the listed finished tasks due again at
// the given time (now when zero) and returns the ids that qualify, in the
// order given, each once (see taskstore.Store).
//
// The listed tasks that are finished and have a callback URL are read and
// changed in one write transaction (BEGIN IMMEDIATE, which holds SQLite's
// write lock, so that no ClaimDeliveries or RecordAttempt of this or
// another process comes in between). A delivery in flight (claimed, its
// claim expiring after the given time) is left to its attempt; a pending
// one already due by then keeps its due time; every other one (delivered,
// given up, scheduled later, or claimed by a claim that has expired)
// becomes pending and due at the given time, its claim ended.
func (s *Store) Redeliver(ctx context.Context, ids []string, at time.Time) ([]string, error) {
	const op = "redeliver"
	if err := s.enter(ctx, op); err != nil {
		return nil, err
	}
	defer s.leave()
	valid, ok := validList(ids)
	if !ok || len(valid) == 0 {
		return []string{}, nil
	}
	list := jsonList(valid)
	atMs := storekit.MillisOrNow(at)
	found := map[string]bool{}
	err := s.write(ctx, true, func(w *writer) error {
		clear(found)
		rows, err := w.redeliverSelect.Query(list)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			found[id] = true
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(found) == 0 {
			return nil
		}
		_, err = w.redeliverUpdate.Exec(atMs, list, atMs, atMs)
		return err
	})
	if err != nil {
		return nil, s.translate(op, err)
	}
	out := make([]string, 0, len(found))
	for _, id := range valid {
		if found[id] {
			out = append(out, id)
			delete(found, id) // each once
		}
	}
	return out, nil
}

// RedeliverFailed makes due again at the given time (now when zero) the
// failed callbacks of at most limit tasks of the recorder finished at or
// after since, the earliest finished first, and returns their ids (see
// taskstore.Store). It reads them from a range of tasks_failed, which lists
// the failed callbacks (states 24 and 34) by recorder and finish time, so
// it reads only the callbacks it makes due; the read and the change are one
// write transaction, as for Redeliver.
func (s *Store) RedeliverFailed(ctx context.Context, recorder string, since, at time.Time, limit int) ([]string, error) {
	const op = "redeliver failed"
	if err := s.enter(ctx, op); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := taskstore.CheckRecorder(recorder); err != nil {
		return nil, err
	}
	if err := storekit.CheckLimit(limit); err != nil {
		return nil, err
	}
	sinceMs := int64(-1 << 63)
	if !since.IsZero() {
		sinceMs = storekit.CeilMillis(since) // finished_ms >= since, exactly
	}
	atMs := storekit.MillisOrNow(at)
	var out []string
	err := s.write(ctx, true, func(w *writer) error {
		out = []string{}
		rows, err := w.failedSelect.Query(recorder, sinceMs, limit)
		if err != nil {
			return err
		}
		rids := make([]byte, 0, 16*min(limit, 1024))
		rids = append(rids, '[')
		for rows.Next() {
			var (
				rid int64
				id  string
			)
			if err := rows.Scan(&rid, &id); err != nil {
				rows.Close()
				return err
			}
			if len(out) > 0 {
				rids = append(rids, ',')
			}
			rids = strconv.AppendInt(rids, rid, 10)
			out = append(out, id)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(out) == 0 {
			return nil
		}
		_, err = w.failedUpdate.Exec(atMs, string(append(rids, ']')))
		return err
	})
	if err != nil {
		return nil, s.translate(op, err)
	}
	return out, nil
}
