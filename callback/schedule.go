package callback

import (
	"time"

	"github.com/tasksapi/tasks/internal/webhook"
)

// Schedule lists the delays before each delivery attempt of a callback; its
// length is the number of attempts. The first attempt is made as soon as the
// task finishes, whatever the first delay says; each later attempt waits its
// delay (with ±20% jitter, and at least as long as the receiver's
// Retry-After, itself capped at 24 hours) after the previous one failed.
//
// A Schedule is a plain slice: write one as a literal,
// callback.Schedule{0, 5 * time.Second, time.Minute}, or read one with
// ParseSchedule. New copies Options.Schedule, so changing a slice after
// New has no effect on the recorder.
type Schedule []time.Duration

// DefaultSchedule returns the delivery schedule used when Options.Schedule
// is empty, in the spirit of Standard Webhooks: at once, then after 5s, 5m,
// 30m, 2h, 5h and 10h (seven attempts over about 17.5 hours). Each call
// returns a fresh slice, which the caller may change.
func DefaultSchedule() Schedule {
	return Schedule(append(webhook.Schedule(nil), webhook.DefaultSchedule...))
}

// ParseSchedule parses a comma-separated list of Go durations such as
// "0s,5s,5m,30m,2h,5h,10h" (the format of a command-line flag, and of
// Schedule.String); spaces around the elements are ignored. It fails on an
// empty list, an empty element, a malformed duration or a negative one.
func ParseSchedule(s string) (Schedule, error) {
	ws, err := webhook.ParseSchedule(s)
	return Schedule(ws), err
}

// Attempts returns how many delivery attempts s allows: its length.
func (s Schedule) Attempts() int { return len(s) }

// String formats s as ParseSchedule reads it: "0s,5s,5m0s".
func (s Schedule) String() string { return webhook.Schedule(s).String() }

// Validate reports an empty schedule or a negative delay, as New does for
// Options.Schedule (where empty means DefaultSchedule).
func (s Schedule) Validate() error { return webhook.Schedule(s).Validate() }

// Set parses value with ParseSchedule and, when it is valid, replaces s:
// *Schedule is a flag.Value, e.g.
// flag.Var(&o.Schedule, "callback-schedule", "delays before each attempt").
func (s *Schedule) Set(value string) error {
	p, err := ParseSchedule(value)
	if err != nil {
		return err
	}
	*s = p
	return nil
}

// next returns when the attempt after attempts failed ones is due (see
// webhook.Schedule.Next); ok is false when s is exhausted.
func (s Schedule) next(attempts int, at time.Time, retryAfter time.Duration) (time.Time, bool) {
	return webhook.Schedule(s).Next(attempts, at, retryAfter, nil)
}
