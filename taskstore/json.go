package taskstore

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
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
	dst = AppendString(dst, t.ID)
	if t.TraceID != "" {
		dst = append(dst, `,"trace_id":`...)
		dst = AppendString(dst, t.TraceID)
	}
	dst = append(dst, `,"type":`...)
	dst = AppendString(dst, t.Type)
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
	created := ToMillis(t.CreatedAt)
	dst = append(dst, `,"created_at":`...)
	dst = AppendMillis(dst, created)
	if !t.StartedAt.IsZero() {
		dst = append(dst, `,"started_at":`...)
		dst = AppendMillis(dst, ToMillis(t.StartedAt))
	}
	if !t.FinishedAt.IsZero() {
		finished := ToMillis(t.FinishedAt)
		dst = append(dst, `,"finished_at":`...)
		dst = AppendMillis(dst, finished)
		dst = append(dst, `,"duration":`...)
		dst = AppendMillis(dst, finished-created)
		dst = append(dst, `,"elapsed":`...)
		dst = AppendMillis(dst, finished-created)
	}
	if t.ApplicationID != "" {
		dst = append(dst, `,"application_id":`...)
		dst = AppendString(dst, t.ApplicationID)
	}
	if t.UserID != "" {
		dst = append(dst, `,"user_id":`...)
		dst = AppendString(dst, t.UserID)
	}
	if t.CredentialID != "" {
		dst = append(dst, `,"credential_id":`...)
		dst = AppendString(dst, t.CredentialID)
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
		dst = AppendString(dst, c.LastError)
	}
	switch st {
	case CallbackPending:
		dst = append(dst, `,"next_attempt_at":`...)
		dst = AppendMillis(dst, ToMillis(c.NextAttemptAt))
	case CallbackDelivered:
		dst = append(dst, `,"delivered_at":`...)
		dst = AppendMillis(dst, ToMillis(c.DeliveredAt))
	}
	return append(dst, '}')
}

// AppendMillis appends a count of milliseconds as a JSON number of seconds
// with at most three decimals and no trailing zeros (1500 → 1.5, 2000 → 2),
// the same digits encoding/json writes for the float64 value.
func AppendMillis(dst []byte, ms int64) []byte {
	u := uint64(ms)
	if ms < 0 {
		dst = append(dst, '-')
		u = uint64(-ms)
	}
	dst = strconv.AppendUint(dst, u/1000, 10)
	frac := u % 1000
	if frac == 0 {
		return dst
	}
	digits := [3]byte{byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
	n := 3
	for digits[n-1] == '0' {
		n--
	}
	dst = append(dst, '.')
	return append(dst, digits[:n]...)
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
	return FromMillis(int64(math.Round(*s * 1000)))
}

const hex = "0123456789abcdef"

// safe[b] is true for ASCII bytes encoding/json writes unescaped (with HTML
// escaping on, as json.Marshal does).
var safe = func() (s [utf8.RuneSelf]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		s[b] = b != '"' && b != '\\' && b != '<' && b != '>' && b != '&'
	}
	return s
}()

// AppendString appends s as a JSON string, escaped byte for byte as
// json.Marshal escapes it: HTML-sensitive <, >, & as \u003c…, control
// characters, invalid UTF-8 as \ufffd, U+2028 and U+2029 escaped.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if safe[b] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
