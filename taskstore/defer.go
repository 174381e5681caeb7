package taskstore

import "time"

// Deferral is one delivery handed back by Store.DeferDeliveries: the task,
// the end of the claim that holds its delivery, and when it is due again.
type Deferral struct {
	ID           string
	ClaimedUntil time.Time
	Next         time.Time
}

// CheckDeferrals checks the deferrals given to Store.DeferDeliveries: a
// zero ClaimedUntil or Next gives ErrInvalid.
func CheckDeferrals(ds []Deferral) error {
	for _, d := range ds {
		switch {
		case d.ClaimedUntil.IsZero():
			return Invalidf("claimed_until is required")
		case d.Next.IsZero():
			return Invalidf("next is required")
		}
	}
	return nil
}
