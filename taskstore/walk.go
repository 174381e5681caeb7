package taskstore

import (
	"time"
)

// Cursor is a position in the order Store.Walk lists tasks in: ascending
// CreatedAt (in stored milliseconds), then ascending ID compared byte by
// byte. The zero Cursor is the start, before every task.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// Cursor returns the position of t in the order of Store.Walk: a Walk from
// it returns the tasks after t.
func (t Task) Cursor() Cursor { return Cursor{CreatedAt: t.CreatedAt, ID: t.ID} }

// IsStart reports whether c is the zero Cursor, the start of a walk.
func (c Cursor) IsStart() bool { return c.CreatedAt.IsZero() && c.ID == "" }

// Record is a task as Store.Walk returns it: the task, as Get returns it,
// and the one piece of a store's state that a Task does not show.
type Record struct {
	Task
	// Claimed reports that ClaimDeliveries handed the task's pending
	// callback to a deliverer and no RecordAttempt or Redeliver has ended
	// that claim since. Callback.NextAttemptAt is then the claim's expiry:
	// the delivery is in flight until that time, and due again after it
	// (Claimed stays true until an attempt is recorded or the callback is
	// redelivered, expired or not). It is false for every task whose
	// callback is not pending.
	Claimed bool
}
