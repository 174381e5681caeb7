package taskstore

import "time"

// Deferral is one delivery handed back by Store.DeferDeliveries: the task,
// the end of the claim that holds its delivery, and when it is due again.
type Deferral struct {
	ID           string
	ClaimedUntil time.Time
	Next         time.Time
}
