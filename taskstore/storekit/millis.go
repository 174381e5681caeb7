package storekit

import (
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// Millis truncates t to the millisecond in UTC, as stores keep it. The
// zero time stays zero.
func Millis(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return time.UnixMilli(t.UnixMilli()).UTC()
}

// ToMillis returns t in Unix milliseconds; the zero time is 0.
func ToMillis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// FromMillis is the inverse of ToMillis for stored values: 0 is the zero
// time, any other count the time in UTC.
func FromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// MillisOrNow returns t in Unix milliseconds, or the current time's when t
// is zero: how stores read the time arguments of Start, Finish, FinishMany,
// RecordAttempt and Redeliver.
func MillisOrNow(t time.Time) int64 {
	if t.IsZero() {
		t = time.Now()
	}
	return t.UnixMilli()
}

// CeilMillis returns the first whole Unix millisecond at or after t: a
// stored time (whole milliseconds) is strictly before t exactly when it is
// before CeilMillis(t).
func CeilMillis(t time.Time) int64 {
	ms := t.UnixMilli() // rounds down: Nanosecond is never negative
	if t.Nanosecond()%int(time.Millisecond) != 0 {
		ms++
	}
	return ms
}

// AttemptMillis returns what a store records for the attempt, in Unix
// milliseconds: when it was delivered (a.At, or now when a.At is zero) and
// 0 for the next attempt, or 0 and a.Next (0 when zero: given up).
func AttemptMillis(a taskstore.Attempt) (delivered, next int64) {
	if a.Delivered {
		return MillisOrNow(a.At), 0
	}
	return 0, ToMillis(a.Next)
}
