package memstore

import (
	"context"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// DeferDeliveries hands claimed deliveries back without an attempt; see
// taskstore.Store. A listed delivery is deferred when it is pending, marked
// in flight and its claim ends at the deferral's ClaimedUntil; it then
// becomes due at the deferral's Next and its claim ends.
func (s *Store) DeferDeliveries(ctx context.Context, ds []taskstore.Deferral) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := storekit.CheckDeferrals(ds); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.byID == nil {
		return 0, s.unusable()
	}
	n := 0
	for _, d := range ds {
		slot, ok := s.byID[d.ID]
		if !ok {
			continue
		}
		r := s.recs.at(slot)
		if !r.pending() || !r.claimed || r.next != storekit.ToMillis(d.ClaimedUntil) {
			continue
		}
		old := r.state()
		s.box(r).due.remove(&s.recs, byDue, slot)
		r.next, r.claimed = storekit.ToMillis(d.Next), false
		s.settle(slot, old)
		n++
	}
	return n, nil
}
