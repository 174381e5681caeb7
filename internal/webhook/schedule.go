package webhook

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"
)

// MaxRetryAfter caps how far a receiver's Retry-After can push the next
// attempt.
const MaxRetryAfter = 24 * time.Hour

// maxDelay keeps at.Add(delay) far from overflowing (about 146 years).
const maxDelay = time.Duration(math.MaxInt64 / 2)

// Schedule lists the delays before each delivery attempt: element k is the
// delay before attempt k+1, counted from the previous attempt (element 0,
// normally 0, from when the delivery became due). len(s) is the number of
// attempts.
type Schedule []time.Duration

// DefaultSchedule follows the spirit of Standard Webhooks: immediately, then
// after 5 s, 5 min, 30 min, 2 h, 5 h and 10 h (seven attempts over about
// 17.5 hours).
var DefaultSchedule = Schedule{0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour}

// ParseSchedule parses a comma-separated list of Go durations such as
// "0s,5s,5m,30m,2h,5h,10h" (spaces around elements are ignored). It fails on
// an empty list, an empty element, a malformed duration or a negative one.
func ParseSchedule(s string) (Schedule, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("webhook: empty schedule")
	}
	parts := strings.Split(s, ",")
	out := make(Schedule, 0, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			return nil, fmt.Errorf("webhook: schedule element %d is empty", i+1)
		}
		d, err := time.ParseDuration(p)
		if err != nil {
			return nil, fmt.Errorf("webhook: schedule element %d: %w", i+1, err)
		}
		out = append(out, d)
	}
	if err := out.Validate(); err != nil {
		return nil, err
	}
	return out, nil
}

// Validate reports an empty schedule or a negative delay.
func (s Schedule) Validate() error {
	if len(s) == 0 {
		return errors.New("webhook: empty schedule")
	}
	for i, d := range s {
		if d < 0 {
			return fmt.Errorf("webhook: schedule element %d is negative (%v)", i+1, d)
		}
	}
	return nil
}

// String formats s in the form ParseSchedule reads.
func (s Schedule) String() string {
	var b strings.Builder
	for i, d := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(d.String())
	}
	return b.String()
}

// Next returns when attempt number attempts+1 is due, given that attempts
// attempts have been made (normally >= 1; a negative count counts as 0) and
// that the last one, made at at, failed. ok is false when the schedule is
// exhausted.
//
// The delay s[attempts] is jittered by ±20% (uniformly, using rnd, which
// returns a number in [0, 1); nil means math/rand/v2.Float64). A positive
// retryAfter, capped at MaxRetryAfter, raises the delay to at least
// retryAfter. The result is never before at.
func (s Schedule) Next(attempts int, at time.Time, retryAfter time.Duration, rnd func() float64) (time.Time, bool) {
	attempts = max(attempts, 0)
	if attempts >= len(s) {
		return time.Time{}, false
	}
	d := max(s[attempts], 0)
	if d > 0 {
		if rnd == nil {
			rnd = rand.Float64
		}
		r := rnd()
		if !(r >= 0) { // also catches NaN
			r = 0
		} else if r > 1 {
			r = 1
		}
		f := float64(d) * (0.8 + 0.4*r)
		if f >= float64(maxDelay) {
			d = maxDelay
		} else {
			d = time.Duration(f)
		}
	}
	if retryAfter > 0 {
		d = max(d, min(retryAfter, MaxRetryAfter))
	}
	return at.Add(min(d, maxDelay)), true
}
