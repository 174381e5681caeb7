package taskstore

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"time"

	"github.com/tasksapi/tasks/internal/jsonw"
)

// MarshalJSON encodes the task as the Tasks API wire record. It is
// AppendJSON(nil).
func (t Task) MarshalJSON() ([]byte, error) { return t.AppendJSON(nil), nil }

// AppendJSON appends the wire record of the task to dst and returns the
// extended buffer. Fields appear in this order: id, trace_id, type, status,
// request, response, created_at, started_at, finished_at, duration,
// elapsed, application_id, user_id, credential_id, callback. Empty strings,
// an absent response and zero times other than created_at (always written)
// are left out; duration and elapsed (both FinishedAt minus CreatedAt)
// appear only once the task has finished. status is Task.Status, always
// written. callback appears only for a task with a callback URL (which it
// never repeats: the URL is in the request) and holds, in this order:
// status (Task.CallbackStatus), attempts, last_status (once an attempt was
// made), last_error (when not empty), next_attempt_at (while pending) and
// delivered_at (once delivered). Times are Unix seconds
// with millisecond precision. Strings are escaped exactly as encoding/json
// escapes them; Request and Response are written as stored (they must be
// valid JSON; a nil Request is written as null).
//
// The encoder does not use reflection: it is on the hot path of every
// retrieve.
func (t Task) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"id":`...)
	dst = jsonw.AppendString(dst, t.ID)
	if t.TraceID != "" {
		dst = append(dst, `,"trace_id":`...)
		dst = jsonw.AppendString(dst, t.TraceID)
	}
	dst = append(dst, `,"type":`...)
	dst = jsonw.AppendString(dst, t.Type)
	dst = append(dst, `,"status":"`...)
	dst = append(dst, t.Status()...)
	dst = append(dst, `","request":`...)
	if len(t.Request) == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, t.Request...)
	}
	if len(t.Response) > 0 {
		dst = append(dst, `,"response":`...)
		dst = append(dst, t.Response...)
	}
	created := toMillis(t.CreatedAt)
	dst = append(dst, `,"created_at":`...)
	dst = jsonw.AppendMillis(dst, created)
	if !t.StartedAt.IsZero() {
		dst = append(dst, `,"started_at":`...)
		dst = jsonw.AppendMillis(dst, toMillis(t.StartedAt))
	}
	if !t.FinishedAt.IsZero() {
		finished := toMillis(t.FinishedAt)
		dst = append(dst, `,"finished_at":`...)
		dst = jsonw.AppendMillis(dst, finished)
		dst = append(dst, `,"duration":`...)
		dst = jsonw.AppendMillis(dst, finished-created)
		dst = append(dst, `,"elapsed":`...)
		dst = jsonw.AppendMillis(dst, finished-created)
	}
	if t.ApplicationID != "" {
		dst = append(dst, `,"application_id":`...)
		dst = jsonw.AppendString(dst, t.ApplicationID)
	}
	if t.UserID != "" {
		dst = append(dst, `,"user_id":`...)
		dst = jsonw.AppendString(dst, t.UserID)
	}
	if t.CredentialID != "" {
		dst = append(dst, `,"credential_id":`...)
		dst = jsonw.AppendString(dst, t.CredentialID)
	}
	if st := t.CallbackStatus(); st != CallbackNone {
		dst = appendCallback(dst, st, &t.Callback)
	}
	return append(dst, '}')
}

// appendCallback appends the record's callback member.
func appendCallback(dst []byte, st CallbackStatus, c *Callback) []byte {
	dst = append(dst, `,"callback":{"status":"`...)
	dst = append(dst, st...)
	dst = append(dst, `","attempts":`...)
	dst = strconv.AppendInt(dst, int64(c.Attempts), 10)
	if c.Attempts > 0 {
		dst = append(dst, `,"last_status":`...)
		dst = strconv.AppendInt(dst, int64(c.LastStatus), 10)
	}
	if c.LastError != "" {
		dst = append(dst, `,"last_error":`...)
		dst = jsonw.AppendString(dst, c.LastError)
	}
	switch st {
	case CallbackPending:
		dst = append(dst, `,"next_attempt_at":`...)
		dst = jsonw.AppendMillis(dst, toMillis(c.NextAttemptAt))
	case CallbackDelivered:
		dst = append(dst, `,"delivered_at":`...)
		dst = jsonw.AppendMillis(dst, toMillis(c.DeliveredAt))
	}
	return append(dst, '}')
}

// wireTask is the decoding form of the wire record.
type wireTask struct {
	ID            string          `json:"id"`
	TraceID       string          `json:"trace_id"`
	Type          string          `json:"type"`
	Request       json.RawMessage `json:"request"`
	Response      json.RawMessage `json:"response"`
	CreatedAt     *float64        `json:"created_at"`
	StartedAt     *float64        `json:"started_at"`
	FinishedAt    *float64        `json:"finished_at"`
	ApplicationID string          `json:"application_id"`
	UserID        string          `json:"user_id"`
	CredentialID  string          `json:"credential_id"`
	Callback      *wireCallback   `json:"callback"`
}

// wireCallback is the decoding form of the record's callback member.
type wireCallback struct {
	Attempts      int      `json:"attempts"`
	LastStatus    int      `json:"last_status"`
	LastError     string   `json:"last_error"`
	NextAttemptAt *float64 `json:"next_attempt_at"`
	DeliveredAt   *float64 `json:"delivered_at"`
}

// UnmarshalJSON decodes a wire record (as written by MarshalJSON) into t,
// for clients of the Tasks API. status, duration and elapsed are derived
// and ignored. The record does not carry the callback URL: a record with a
// callback member decodes with Callback.URL set to the placeholder
// HiddenCallbackURL (so that Task.CallbackStatus reads as on the server)
// and the member's attempts, last_status, last_error, next_attempt_at and
// delivered_at; the lease is left zero. A JSON null request or response
// decodes as nil.
func (t *Task) UnmarshalJSON(b []byte) error {
	var w wireTask
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*t = Task{
		ID: w.ID, TraceID: w.TraceID, Type: w.Type,
		Request: nullToNil(w.Request), Response: nullToNil(w.Response),
		CreatedAt: secondsToTime(w.CreatedAt), StartedAt: secondsToTime(w.StartedAt),
		FinishedAt:    secondsToTime(w.FinishedAt),
		ApplicationID: w.ApplicationID, UserID: w.UserID, CredentialID: w.CredentialID,
	}
	if c := w.Callback; c != nil {
		t.Callback = Callback{
			URL: HiddenCallbackURL, Attempts: c.Attempts, LastStatus: c.LastStatus, LastError: c.LastError,
			NextAttemptAt: secondsToTime(c.NextAttemptAt), DeliveredAt: secondsToTime(c.DeliveredAt),
		}
	}
	return nil
}

// HiddenCallbackURL is the Callback.URL of a task decoded from a wire
// record that has a callback member (see Task.UnmarshalJSON): the record
// never repeats the URL, which is in the request.
const HiddenCallbackURL = "hidden:"

func nullToNil(b json.RawMessage) json.RawMessage {
	if len(b) == 0 || bytes.Equal(b, []byte("null")) {
		return nil
	}
	return b
}

func secondsToTime(s *float64) time.Time {
	if s == nil {
		return time.Time{}
	}
	return fromMillis(int64(math.Round(*s * 1000)))
}
