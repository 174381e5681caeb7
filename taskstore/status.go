package taskstore

import (
	"bytes"
	"encoding/json"

	"github.com/tasksapi/tasks/internal/jsonscan"
)

// Status is the state of a task as the Tasks API shows it in the record's
// "status" member and filters it in retrieve_batch.
type Status string

// The four task statuses.
const (
	// StatusPending: stored, not started.
	StatusPending Status = "pending"
	// StatusRunning: started, not finished.
	StatusRunning Status = "running"
	// StatusSucceeded: finished with a response whose top-level "success"
	// member is true (see Succeeded).
	StatusSucceeded Status = "succeeded"
	// StatusFailed: finished with any other response (an upstream error, a
	// timeout, an interrupted task).
	StatusFailed Status = "failed"
)

// Statuses lists the task statuses in their order of life.
var Statuses = [...]Status{StatusPending, StatusRunning, StatusSucceeded, StatusFailed}

// Valid reports whether s is one of the four task statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusPending, StatusRunning, StatusSucceeded, StatusFailed:
		return true
	}
	return false
}

// Status reports the task's status: pending until StartedAt is set,
// running until FinishedAt is set, then succeeded or failed according to
// Succeeded(Response).
func (t Task) Status() Status {
	switch {
	case !t.FinishedAt.IsZero():
		if Succeeded(t.Response) {
			return StatusSucceeded
		}
		return StatusFailed
	case !t.StartedAt.IsZero():
		return StatusRunning
	}
	return StatusPending
}

// CallbackStatus is the state of a task's callback as the Tasks API shows
// it in the record's "callback" member and filters it in retrieve_batch.
type CallbackStatus string

// The callback statuses. CallbackNone is the status of a task without a
// callback URL; the Tasks API shows no callback member for it, and as a
// Filter value it means "any".
const (
	CallbackNone CallbackStatus = ""
	// CallbackWaiting: the task has not finished yet.
	CallbackWaiting CallbackStatus = "waiting"
	// CallbackPending: the task has finished and its callback is due,
	// being attempted, or scheduled for a retry.
	CallbackPending CallbackStatus = "pending"
	// CallbackDelivered: the receiver accepted the callback (2xx).
	CallbackDelivered CallbackStatus = "delivered"
	// CallbackFailed: no further attempt will be made (the receiver
	// answered 410 Gone, the address was refused, or the attempts ran out).
	// Store.Redeliver makes it due again.
	CallbackFailed CallbackStatus = "failed"
)

// CallbackStatuses lists the callback statuses of tasks with a callback.
var CallbackStatuses = [...]CallbackStatus{CallbackWaiting, CallbackPending, CallbackDelivered, CallbackFailed}

// Valid reports whether s is one of the four statuses of a callback
// (CallbackNone is not).
func (s CallbackStatus) Valid() bool {
	switch s {
	case CallbackWaiting, CallbackPending, CallbackDelivered, CallbackFailed:
		return true
	}
	return false
}

// CallbackStatus reports the status of the task's callback; CallbackNone
// when the task has no callback URL.
func (t Task) CallbackStatus() CallbackStatus {
	switch {
	case t.Callback.URL == "":
		return CallbackNone
	case t.FinishedAt.IsZero():
		return CallbackWaiting
	case !t.Callback.DeliveredAt.IsZero():
		return CallbackDelivered
	case !t.Callback.NextAttemptAt.IsZero():
		return CallbackPending
	}
	return CallbackFailed
}

// Succeeded reports whether a task's response records a success: it is a
// JSON object whose top-level member "success" is true. When the member
// appears more than once the last one counts (as encoding/json and
// PostgreSQL read duplicate keys). Anything else, nil included, is not a
// success. Stores use it to keep the status of a finished task where they
// can index it; callback's recorder always writes "success" exactly once.
func Succeeded(response json.RawMessage) bool {
	b := bytes.TrimLeft(response, " \t\r\n")
	if len(b) == 0 || b[0] != '{' {
		return false
	}
	ok := false
	i := skipWS(b, 1)
	for i < len(b) && b[i] == '"' {
		kEnd := jsonscan.SkipString(b, i)
		key := b[i:kEnd]
		i = skipWS(b, kEnd)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		vStart := skipWS(b, i+1)
		vEnd := jsonscan.SkipValue(b, vStart)
		if isSuccessKey(key) {
			ok = string(b[vStart:vEnd]) == "true"
		}
		i = skipWS(b, vEnd)
		if i < len(b) && b[i] == ',' {
			i = skipWS(b, i+1)
		}
	}
	return ok
}

// isSuccessKey reports whether the quoted JSON string key is "success",
// escaped or not.
func isSuccessKey(key []byte) bool {
	if string(key) == `"success"` {
		return true
	}
	if len(key) < len(`"success"`) || bytes.IndexByte(key, '\\') < 0 {
		return false
	}
	var s string
	return json.Unmarshal(key, &s) == nil && s == "success"
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}
