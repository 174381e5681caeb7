package callback

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/tasksapi/tasks/internal/jsonscan"
	"github.com/tasksapi/tasks/internal/jsonw"
)

// Failure codes recorded in a failed task's response.
const (
	// CodeAPIError is the failure code when the upstream gave none.
	CodeAPIError = "api_error"
	// CodeTimeout: the task ran longer than Options.TaskTimeout.
	CodeTimeout = "timeout"
	// CodeInterrupted: the task was abandoned by a shutdown or a crash.
	CodeInterrupted = "interrupted"
)

// Failure messages recorded for failures that do not come from the upstream.
const (
	msgNotObject   = "upstream response is not a JSON object"
	msgTooLarge    = "upstream response is too large"
	msgPanic       = "upstream handler failed unexpectedly"
	msgRunFailed   = "task failed"
	msgShutdown    = "the task was interrupted by a server shutdown"
	msgAbandoned   = "the task was interrupted: the process running it stopped before it finished"
	msgTimeoutFmt  = "the task did not finish within %v"
	msgStatusFmt   = "upstream returned status %d"
	maxCaptureSize = 64 << 20
)

// TaskError is an error a Submit run function can return to choose the
// failure code and message recorded in the task's response. Any other error
// is recorded as "api_error" with a generic message (and logged), so that
// internal details never reach the client.
type TaskError struct {
	Code    string
	Message string
}

func (e *TaskError) Error() string { return e.Code + ": " + e.Message }

// success builds the response of a task whose upstream answered the JSON
// object obj (compacted): "success", "task_id" and "trace_id" (left out when
// empty) first, then the upstream's members in their order, without any
// member named success, task_id or trace_id.
func success(id, traceID string, obj []byte) []byte {
	dst := make([]byte, 0, len(obj)+len(id)+len(traceID)+48)
	dst = append(dst, `{"success":true,"task_id":`...)
	dst = jsonw.AppendString(dst, id)
	if traceID != "" {
		dst = append(dst, `,"trace_id":`...)
		dst = jsonw.AppendString(dst, traceID)
	}
	forEachMember(obj, func(key, raw, val []byte) {
		if k := string(key); k == "success" || k == "task_id" || k == "trace_id" {
			return
		}
		dst = append(dst, ',')
		dst = append(dst, raw...)
		dst = append(dst, ':')
		dst = append(dst, val...)
	})
	return append(dst, '}')
}

// failure builds the response of a failed task.
func failure(id, traceID, code, message string) []byte {
	dst := make([]byte, 0, 96+len(id)+len(traceID)+len(code)+len(message))
	dst = append(dst, `{"success":false,"task_id":`...)
	dst = jsonw.AppendString(dst, id)
	if traceID != "" {
		dst = append(dst, `,"trace_id":`...)
		dst = jsonw.AppendString(dst, traceID)
	}
	dst = append(dst, `,"error":{"code":`...)
	dst = jsonw.AppendString(dst, code)
	dst = append(dst, `,"message":`...)
	dst = jsonw.AppendString(dst, message)
	return append(dst, "}}"...)
}

// outcome is what a task's run produced.
type outcome struct {
	status   int    // HTTP status (200 for a Submit run that returned no error)
	body     []byte // the upstream's answer
	err      error  // a Submit run's error
	panicked bool
	tooLarge bool
}

// verdict turns an outcome into the stored response and reports whether it
// is a success and, if not, the failure code.
func verdict(id, traceID string, o outcome) (resp []byte, ok bool, code string) {
	switch {
	case o.panicked:
		return failure(id, traceID, CodeAPIError, msgPanic), false, CodeAPIError
	case o.tooLarge:
		return failure(id, traceID, CodeAPIError, msgTooLarge), false, CodeAPIError
	case o.err != nil:
		code, msg := CodeAPIError, msgRunFailed
		if te, ok := errors.AsType[*TaskError](o.err); ok {
			if te.Code != "" {
				code = te.Code
			}
			if te.Message != "" {
				msg = te.Message
			}
		}
		return failure(id, traceID, code, msg), false, code
	}
	obj, isObject := compactObject(o.body)
	// JSON text must be UTF-8 (RFC 8259), which json.Compact does not
	// check: an answer with other bytes in a string is not JSON either, and
	// is never stored or sent on.
	isObject = isObject && utf8.Valid(obj)
	if o.status < 200 || o.status > 299 {
		code, msg := CodeAPIError, fmt.Sprintf(msgStatusFmt, o.status)
		if isObject {
			c, m := upstreamError(obj)
			if c != "" {
				code = c
			}
			if m != "" {
				msg = m
			}
		}
		return failure(id, traceID, code, msg), false, code
	}
	if !isObject {
		return failure(id, traceID, CodeAPIError, msgNotObject), false, CodeAPIError
	}
	return success(id, traceID, obj), true, ""
}

// compactObject returns b compacted and true when b is a single JSON object.
func compactObject(b []byte) ([]byte, bool) {
	var buf bytes.Buffer
	buf.Grow(len(b))
	if err := json.Compact(&buf, b); err != nil {
		return nil, false
	}
	out := buf.Bytes()
	return out, len(out) > 0 && out[0] == '{'
}

// upstreamError extracts error.code and error.message from an OpenAI-style
// error object, each only when it is a non-empty string.
func upstreamError(obj []byte) (code, message string) {
	var e struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(obj, &e) != nil || len(e.Error) == 0 || e.Error[0] != '{' {
		return "", ""
	}
	var f struct {
		Code    json.RawMessage `json:"code"`
		Message json.RawMessage `json:"message"`
	}
	if json.Unmarshal(e.Error, &f) != nil {
		return "", ""
	}
	return jsonString(f.Code), jsonString(f.Message)
}

// jsonString returns the value of a JSON string, or "" for anything else.
func jsonString(raw []byte) string {
	if len(raw) == 0 || raw[0] != '"' {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// acceptedAnswer is the body Wrap answers for an accepted task.
func acceptedAnswer(id, traceID string) []byte {
	dst := make([]byte, 0, 32+len(id)+len(traceID))
	dst = append(dst, `{"task_id":`...)
	dst = jsonw.AppendString(dst, id)
	if traceID != "" {
		dst = append(dst, `,"trace_id":`...)
		dst = jsonw.AppendString(dst, traceID)
	}
	return append(dst, '}')
}

// forEachMember calls fn for each member of the compacted JSON object obj,
// in order, with the decoded key, the key as written (quoted) and the raw
// value. obj must be valid compact JSON (as json.Compact writes it).
func forEachMember(obj []byte, fn func(key, rawKey, val []byte)) {
	i := 1 // past '{'
	for i < len(obj) && obj[i] != '}' {
		kEnd := jsonscan.SkipString(obj, i)
		rawKey := obj[i:kEnd]
		vStart := kEnd + 1 // past ':'
		vEnd := jsonscan.SkipValue(obj, vStart)
		fn(jsonscan.Unquote(rawKey), rawKey, obj[vStart:vEnd])
		i = vEnd
		if i < len(obj) && obj[i] == ',' {
			i++
		}
	}
}
