// Package storekit holds helpers for implementers of taskstore.Store: the
// checks every store makes on its arguments, the normalization of a task
// given to Create, the conversion of times to and from the whole Unix
// milliseconds stores keep, and the order of Store.Walk.
//
// memstore, sqlitestore and pgstore use it, so that a store of your own
// validates and rounds exactly as they do, which the conformance suite in
// taskstore/storetest checks. Code that only uses a Store does not need it.
//
// Every error it returns wraps taskstore.ErrInvalid with a message naming
// the offending field; taskstore.Reason extracts that message.
package storekit

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tasksapi/tasks/taskstore"
)

// Invalidf returns an error that wraps taskstore.ErrInvalid with a message
// naming the offending field, e.g. Invalidf("limit must not be negative").
// taskstore.Reason(err) gives that message back.
func Invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", taskstore.ErrInvalid, fmt.Sprintf(format, args...))
}

// TooLong reports whether s has more than taskstore.MaxIDLength characters
// (Unicode code points): an id, trace_id, type, application_id, user_id or
// credential_id no store accepts, so no task has it.
func TooLong(s string) bool {
	return len(s) > taskstore.MaxIDLength && utf8.RuneCountInString(s) > taskstore.MaxIDLength
}

// Normalize validates a task given to Store.Create and returns the copy a
// store keeps: times truncated to milliseconds in UTC (CreatedAt set to now
// when zero), JSON copied, and no lease on a task that is already finished.
// The error wraps taskstore.ErrInvalid and names the field.
func Normalize(t taskstore.Task, now time.Time) (taskstore.Task, error) {
	if err := checkID("id", t.ID, true); err != nil {
		return t, err
	}
	if err := checkID("trace_id", t.TraceID, false); err != nil {
		return t, err
	}
	if t.Type == "" {
		return t, Invalidf("type is required")
	}
	if TooLong(t.Type) || !utf8.ValidString(t.Type) {
		return t, Invalidf("type must be valid UTF-8 of at most %d characters", taskstore.MaxIDLength)
	}
	if len(t.Request) == 0 {
		return t, Invalidf("request is required")
	}
	if !validJSON(t.Request) {
		return t, Invalidf("request must be valid JSON in UTF-8")
	}
	if t.Response != nil && !validJSON(t.Response) {
		return t, Invalidf("response must be valid JSON in UTF-8")
	}
	if t.Response != nil && t.FinishedAt.IsZero() {
		return t, Invalidf("finished_at is required with a response")
	}
	if t.Response == nil && !t.FinishedAt.IsZero() {
		return t, Invalidf("response is required with finished_at")
	}
	for _, f := range []struct{ name, v string }{
		{"application_id", t.ApplicationID}, {"user_id", t.UserID}, {"credential_id", t.CredentialID},
	} {
		if err := checkID(f.name, f.v, false); err != nil {
			return t, err
		}
	}
	if err := taskstore.CheckRecorder(t.Recorder); err != nil {
		return t, err
	}
	if t.Callback.Attempts < 0 || t.Callback.Attempts > math.MaxInt32 {
		return t, Invalidf("callback attempts must be between 0 and %d", math.MaxInt32)
	}
	if t.Callback.LastStatus < 0 || t.Callback.LastStatus > 999 {
		return t, Invalidf("callback last_status must be between 0 and 999")
	}
	t = t.Clone()
	if t.CreatedAt.IsZero() {
		t.CreatedAt = now
	}
	t.CreatedAt = Millis(t.CreatedAt)
	t.StartedAt = Millis(t.StartedAt)
	t.FinishedAt = Millis(t.FinishedAt)
	t.LeaseUntil = Millis(t.LeaseUntil)
	t.Callback.NextAttemptAt = Millis(t.Callback.NextAttemptAt)
	t.Callback.DeliveredAt = Millis(t.Callback.DeliveredAt)
	if t.Finished() {
		t.LeaseUntil = time.Time{}
	}
	return t, nil
}

func checkID(name, v string, required bool) error {
	switch {
	case v == "" && required:
		return Invalidf("%s is required", name)
	case TooLong(v):
		return Invalidf("%s must be at most %d characters", name, taskstore.MaxIDLength)
	case !utf8.ValidString(v):
		return Invalidf("%s must be valid UTF-8", name)
	}
	return nil
}

// CheckResponse checks the response given to Store.Finish: it must be
// valid JSON text in UTF-8 (RFC 8259), as a stored response is written out
// byte for byte in the Tasks API and the callback. Else it gives
// ErrInvalid.
func CheckResponse(response json.RawMessage) error {
	if !validJSON(response) {
		return Invalidf("response must be valid JSON in UTF-8")
	}
	return nil
}

// validJSON reports whether b is valid JSON text: json.Valid does not
// check that strings are UTF-8.
func validJSON(b []byte) bool { return utf8.Valid(b) && json.Valid(b) }

// CheckOutcomes checks the argument of Store.FinishMany: it gives
// ErrInvalid (naming the position) when a response is not valid JSON, and
// otherwise returns the outcomes without the later ones of an id listed
// more than once (the first response of an id wins). The list it returns is
// outcomes itself when no id repeats.
func CheckOutcomes(outcomes []taskstore.Outcome) ([]taskstore.Outcome, error) {
	var seen map[string]bool
	dups := false
	for i, o := range outcomes {
		if !validJSON(o.Response) {
			return nil, Invalidf("outcome %d: response must be valid JSON in UTF-8", i)
		}
		if len(outcomes) > 1 {
			if seen == nil {
				seen = make(map[string]bool, len(outcomes))
			}
			dups = dups || seen[o.ID]
			seen[o.ID] = true
		}
	}
	if !dups {
		return outcomes, nil
	}
	out := make([]taskstore.Outcome, 0, len(seen))
	clear(seen)
	for _, o := range outcomes {
		if !seen[o.ID] {
			seen[o.ID] = true
			out = append(out, o)
		}
	}
	return out, nil
}

// CheckDeferrals checks the deferrals given to Store.DeferDeliveries: a
// zero ClaimedUntil or Next gives ErrInvalid.
func CheckDeferrals(ds []taskstore.Deferral) error {
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

// CheckLimit gives ErrInvalid unless limit, the most rows a Prune,
// Abandoned, ClaimDeliveries, RedeliverFailed or Walk call may touch, is
// positive.
func CheckLimit(limit int) error {
	if limit <= 0 {
		return Invalidf("limit must be positive")
	}
	return nil
}

// CheckClaim checks the arguments of Store.ClaimDeliveries: an invalid
// recorder name (taskstore.CheckRecorder), a zero now, a negative lease or
// a limit that is not positive gives ErrInvalid.
func CheckClaim(recorder string, now time.Time, lease time.Duration, limit int) error {
	if err := taskstore.CheckRecorder(recorder); err != nil {
		return err
	}
	switch {
	case now.IsZero():
		return Invalidf("now is required")
	case lease < 0:
		return Invalidf("lease must not be negative")
	}
	return CheckLimit(limit)
}

// Weight is what a task counts toward Filter.PageBytes: the length of its
// Request and Response.
func Weight(t taskstore.Task) int { return len(t.Request) + len(t.Response) }

// CreatedRange returns the inclusive CreatedAt bounds of f in Unix
// milliseconds, with math.MinInt64/MaxInt64 for an unbounded side. empty
// is true when no millisecond lies inside the window.
func CreatedRange(f taskstore.Filter) (minMs, maxMs int64, empty bool) {
	minMs, maxMs = math.MinInt64, math.MaxInt64
	if !f.CreatedMin.IsZero() {
		minMs = CeilMillis(f.CreatedMin)
	}
	if !f.CreatedMax.IsZero() {
		maxMs = f.CreatedMax.UnixMilli() // rounds down
	}
	return minMs, maxMs, minMs > maxMs
}

// CursorKey returns the cursor as a store compares it: CreatedAt in Unix
// milliseconds (rounded down; the zero time is 0) and the id. The start
// (the zero Cursor) is (math.MinInt64, ""), before every stored task,
// including tasks created before 1970.
func CursorKey(c taskstore.Cursor) (createdMs int64, id string) {
	if c.IsStart() {
		return math.MinInt64, ""
	}
	return ToMillis(c.CreatedAt), c.ID
}

// CursorBefore reports whether the stored task t comes strictly after the
// cursor c in the order of Store.Walk. Stores without an ordered query use
// it; it is the reference of that order.
func CursorBefore(c taskstore.Cursor, t taskstore.Task) bool {
	ms, id := CursorKey(c)
	tm := ToMillis(t.CreatedAt)
	return tm > ms || tm == ms && strings.Compare(t.ID, id) > 0
}
