package pgstore

import (
	"context"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// deferDeliveries hands back the deliveries whose claims still hold them
// (claimedCond with the given end): ids $1, claim ends $2, next due times
// $3, ending each claim.
const deferDeliveries = `UPDATE tasks SET next_attempt_ms = d.next, claim_ms = 0
FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS d(id, until, next)
WHERE tasks.id = d.id AND callback_url <> '' AND finished_ms <> 0 AND delivered_ms = 0
AND claim_ms = d.until AND next_attempt_ms = d.until`

// DeferDeliveries hands claimed deliveries back without an attempt, in one
// statement; see taskstore.Store. Repeating it after a lost connection is
// harmless: a delivery already handed back no longer matches its claim.
func (s *Store) DeferDeliveries(ctx context.Context, ds []taskstore.Deferral) (int, error) {
	if err := s.enter(ctx); err != nil {
		return 0, err
	}
	defer s.leave()
	if err := storekit.CheckDeferrals(ds); err != nil {
		return 0, err
	}
	ids := make([]string, 0, len(ds))
	until := make([]int64, 0, len(ds))
	next := make([]int64, 0, len(ds))
	for _, d := range ds {
		if !storable(d.ID) {
			continue // no stored task has such an id
		}
		ids = append(ids, d.ID)
		until = append(until, storekit.ToMillis(d.ClaimedUntil))
		next = append(next, storekit.ToMillis(d.Next))
	}
	if len(ids) == 0 {
		return 0, nil
	}
	var n int64
	err := s.do(ctx, "defer deliveries", idempotent, func() (err error) {
		n, err = s.exec(ctx, deferDeliveries, ids, until, next)
		return err
	})
	return int(n), err
}
