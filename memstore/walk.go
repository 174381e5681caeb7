package memstore

import (
	"context"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// Walk returns at most limit tasks after the cursor in (CreatedAt, ID)
// order; see taskstore.Store. It seeks the cursor in the index of all
// tasks, which is in that order, and reads forward: O(log n + limit).
func (s *Store) Walk(ctx context.Context, from taskstore.Cursor, limit int) ([]taskstore.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := storekit.CheckLimit(limit); err != nil {
		return nil, err
	}
	ms, id := storekit.CursorKey(from)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, taskstore.ErrClosed
	}
	ci, j := s.all.search(&s.recs, byCreated, after(&s.recs, ms, id, false))
	slots := make([]uint32, 0, min(limit, s.all.n))
	s.all.from(ci, j, func(slot uint32) bool {
		slots = append(slots, slot)
		return len(slots) < limit
	})
	tasks := s.tasks(slots)
	out := make([]taskstore.Record, len(tasks))
	for i, t := range tasks {
		out[i] = taskstore.Record{Task: t, Claimed: claimed(s.recs.at(slots[i]))}
	}
	return out, nil
}

// claimed reports whether r's pending callback is under a claim that no
// attempt or redelivery has ended.
func claimed(r *rec) bool { return r.claimed && r.pending() }
