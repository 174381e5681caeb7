package taskstore

import (
	"bytes"
	"context"
	"encoding/json"
	"time"
)

// MaxIDLength is the longest id, trace_id, type, application_id, user_id or
// credential_id a store accepts, in characters (Unicode code points).
const MaxIDLength = 128

// Task is one callback-mode (or async) request and, once finished, its
// response, together with the state of its callback delivery.
//
// The JSON encoding of a Task (MarshalJSON, AppendJSON) is exactly the wire
// record of the Tasks API: the callback delivery state and the run lease are
// not part of it.
type Task struct {
	// ID identifies the task; callback mode uses a UUID. Required.
	ID string
	// TraceID is the client's own correlation id; optional and not unique.
	TraceID string
	// Type is the upstream API type, e.g. "images_generations". Required.
	Type string
	// Request is the request body as the client sent it (valid JSON). Required.
	Request json.RawMessage
	// Response is the final response object; nil until the task finishes.
	Response json.RawMessage

	// CreatedAt is when the task was accepted. A store sets it to the
	// current time when it is zero on Create.
	CreatedAt time.Time
	// StartedAt is when work started; zero until then.
	StartedAt time.Time
	// FinishedAt is when the response was recorded; zero until then.
	FinishedAt time.Time

	// ApplicationID, UserID and CredentialID identify the principal that
	// created the task. They scope who may see it (see Principal).
	ApplicationID string
	UserID        string
	CredentialID  string

	// Callback is the delivery state of the task's callback.
	Callback Callback

	// LeaseUntil is, while the task is unfinished, the time until which
	// a worker holds it. A worker renews the lease while it keeps the task
	// queued or running; once the lease has passed, the task is abandoned
	// (see Store.Abandoned) and any process may finish it as interrupted.
	// Zero means no one holds it.
	LeaseUntil time.Time

	// Recorder names the callback recorder that created the task and alone
	// delivers its callback, sweeps it when abandoned and recovers it
	// (callback.Options.Name); "" is the default recorder. Several
	// recorders share one store this way, each with its own settings:
	// ClaimDeliveries, Abandoned and RedeliverFailed select the tasks of
	// one name. It is at most MaxRecorderLength printable ASCII
	// characters (CheckRecorder) and is not part of the JSON encoding.
	Recorder string
}

// MaxRecorderLength is the longest recorder name (Task.Recorder) a store
// accepts, in bytes.
const MaxRecorderLength = 64

// CheckRecorder checks a recorder name (Task.Recorder,
// callback.Options.Name): at most MaxRecorderLength characters, each
// printable ASCII (space to tilde). The empty name is the default
// recorder's. Else it gives ErrInvalid.
func CheckRecorder(name string) error {
	if len(name) > MaxRecorderLength {
		return invalidf("recorder name must be at most %d characters, got %d", MaxRecorderLength, len(name))
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < ' ' || c > '~' {
			return invalidf("recorder name must be printable ASCII (space to tilde); byte %d is %#x", i, c)
		}
	}
	return nil
}

// Callback is the delivery state of a task's callback: the outbox entry.
//
// A callback becomes due when the task finishes (Store.Finish sets
// NextAttemptAt to the finish time). Each attempt is recorded with
// Store.RecordAttempt, which either marks it delivered, schedules the next
// attempt, or gives up.
type Callback struct {
	// URL is where the response is POSTed; empty means no callback.
	URL string
	// Attempts counts the delivery attempts made so far (0 to
	// math.MaxInt32, so that every store can hold it).
	Attempts int
	// NextAttemptAt is when the next attempt is due; zero when no attempt is
	// pending. While a worker holds a claim on the delivery it is the time
	// the claim expires.
	NextAttemptAt time.Time
	// DeliveredAt is when the receiver accepted the callback; zero until then.
	DeliveredAt time.Time
	// LastStatus is the HTTP status of the last attempt (0 to 999); 0 when
	// there was no answer (or no attempt).
	LastStatus int
	// LastError describes why the last attempt failed; empty when it
	// succeeded or none was made.
	LastError string
}

// Finished reports whether the task's response has been recorded.
func (t Task) Finished() bool { return !t.FinishedAt.IsZero() }

// Clone returns a deep copy of t: the copy shares no memory with t.
func (t Task) Clone() Task {
	t.Request = bytes.Clone(t.Request)
	t.Response = bytes.Clone(t.Response)
	return t
}

// Attempt is the outcome of one callback delivery attempt.
type Attempt struct {
	// At is when the attempt was made.
	At time.Time
	// Status is the receiver's HTTP status; 0 when there was no answer.
	Status int
	// Error describes a failure (network error, non-2xx status); empty on
	// success.
	Error string
	// Delivered marks the callback as delivered.
	Delivered bool
	// Next is when the next attempt is due when the attempt was not
	// delivered; zero gives up.
	Next time.Time
}

// Principal is the identity of a caller: the application, the end user and
// the credential it authenticated with. A principal's non-empty
// ApplicationID and UserID restrict every lookup; the zero Principal is an
// operator and sees every task.
type Principal struct {
	ApplicationID string `json:"application_id,omitempty"`
	UserID        string `json:"user_id,omitempty"`
	CredentialID  string `json:"credential_id,omitempty"`
}

// IsOperator reports whether p sees every task.
func (p Principal) IsOperator() bool { return p.ApplicationID == "" && p.UserID == "" }

// CanSee reports whether the task is visible to p.
func (p Principal) CanSee(t Task) bool {
	return (p.ApplicationID == "" || p.ApplicationID == t.ApplicationID) &&
		(p.UserID == "" || p.UserID == t.UserID)
}

// Scope ANDs the principal's restrictions into f. It returns false when no
// task can match both (the filter asks for another application or user), in
// which case the caller should answer an empty result without asking the
// store.
func (p Principal) Scope(f Filter) (Filter, bool) {
	if p.ApplicationID != "" {
		if f.ApplicationID != "" && f.ApplicationID != p.ApplicationID {
			return f, false
		}
		f.ApplicationID = p.ApplicationID
	}
	if p.UserID != "" {
		if f.UserID != "" && f.UserID != p.UserID {
			return f, false
		}
		f.UserID = p.UserID
	}
	return f, true
}

// Filter selects tasks for Store.Find. Every set field restricts the result;
// the restrictions are ANDed. The zero Filter matches every task and returns
// none of them (Limit 0): set Limit to get a page.
type Filter struct {
	// IDs: the task id is one of these (when non-empty).
	IDs []string
	// TraceIDs: the trace id is one of these (when non-empty).
	TraceIDs []string
	// ApplicationID, UserID: equal to these (when non-empty).
	ApplicationID string
	UserID        string
	// Types: the task type is one of these (when non-empty).
	Types []string
	// CreatedMin, CreatedMax bound CreatedAt, both inclusive; zero is
	// unbounded. Since stores keep milliseconds, a bound with a finer
	// fraction matches the millisecond values inside it.
	CreatedMin time.Time
	CreatedMax time.Time
	// Status: the task's status (Task.Status) is this one (when
	// non-empty).
	Status Status
	// CallbackStatus: the task has a callback whose status
	// (Task.CallbackStatus) is this one (when non-empty).
	CallbackStatus CallbackStatus
	// Offset skips that many matching tasks; Limit is the most returned.
	// Limit 0 returns no tasks, only the total count. Both must be >= 0.
	Offset int
	Limit  int
	// PageBytes, when positive, bounds the page by weight as well: a task
	// joins the page only while the Request and Response bytes of the
	// tasks before it on the page total less than PageBytes. The page so
	// holds at least one task (when one matches past Offset) and at most
	// Limit, and a store holds in memory about PageBytes plus one task's
	// bytes for it, whatever the tasks weigh; the total is unaffected. Zero
	// means no bound; it must be >= 0.
	PageBytes int
}

// Validate checks the filter's fields; the error wraps ErrInvalid.
func (f Filter) Validate() error {
	switch {
	case f.Limit < 0:
		return invalidf("limit must not be negative")
	case f.Offset < 0:
		return invalidf("offset must not be negative")
	case f.PageBytes < 0:
		return invalidf("page_bytes must not be negative")
	case f.Status != "" && !f.Status.Valid():
		return invalidf("status must be one of pending, running, succeeded, failed")
	case f.CallbackStatus != "" && !f.CallbackStatus.Valid():
		return invalidf("callback_status must be one of waiting, pending, delivered, failed")
	}
	return nil
}

type principalKey struct{}

// NewContext returns a copy of ctx carrying p. Authentication middleware
// (handler.Authenticate) stores the caller's principal this way; the
// callback recorder reads it to stamp new tasks.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal stored in ctx by NewContext.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// toMillis returns t in Unix milliseconds; the zero time is 0.
func toMillis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// fromMillis is the inverse of toMillis.
func fromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}
