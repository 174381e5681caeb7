package memstore

import (
	"bytes"
	"context"
	"time"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// FinishMany finishes the listed tasks that are unfinished, each as Finish
// does, under one hold of the write lock; see taskstore.Store. A zero at
// means now. It costs O(len(outcomes) · log n).
func (s *Store) FinishMany(ctx context.Context, outcomes []taskstore.Outcome, at time.Time) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	outcomes, err := storekit.CheckOutcomes(outcomes)
	if err != nil {
		return nil, err
	}
	ms := storekit.MillisOrNow(at)
	// Copied and judged before taking the lock.
	resps := make([][]byte, len(outcomes))
	oks := make([]bool, len(outcomes))
	for i, o := range outcomes {
		resps[i], oks[i] = bytes.Clone(o.Response), taskstore.Succeeded(o.Response)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.byID == nil {
		return nil, s.unusable()
	}
	done := make([]string, 0, len(outcomes))
	for i, o := range outcomes {
		slot, ok := s.byID[o.ID]
		if !ok || s.recs.at(slot).finished != 0 {
			continue
		}
		s.finish(slot, resps[i], ms, oks[i])
		done = append(done, s.recs.at(slot).id)
	}
	return done, nil
}
