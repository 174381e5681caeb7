package reliability

import (
	"context"

	"github.com/tasksapi/tasks/taskstore"
)

// OpWalk names Store.Walk.
const OpWalk Op = "Walk"

func (s *FaultStore) Walk(ctx context.Context, after taskstore.Cursor, limit int) (rs []taskstore.Record, err error) {
	err = s.call(OpWalk, func() error { rs, err = s.inner.Walk(ctx, after, limit); return err })
	if err != nil {
		return nil, err
	}
	return rs, nil
}
