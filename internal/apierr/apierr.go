// Package apierr writes the error bodies of the wire contract:
//
//	{"error":{"code":"…","message":"…"},"trace_id":"<uuid of this request>"}
//
// It is shared by the handler and callback packages and by tasksd's own
// answers, so that every error a client sees has one shape.
package apierr

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"

	"github.com/google/uuid"
)

// Error codes of the wire contract: the "code" of an error body.
const (
	BadRequest      = "bad_request"
	NoToken         = "no_token"
	InvalidToken    = "invalid_token"
	TooManyRequests = "too_many_requests"
	APIError        = "api_error"
)

type body struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	TraceID string `json:"trace_id"`
}

// Write answers status with the contract's error body and a fresh trace id,
// which it returns so the caller can log it.
func Write(w http.ResponseWriter, status int, code, message string) string {
	var b body
	b.Error.Code = code
	b.Error.Message = message
	b.TraceID = uuid.NewString()
	out, _ := json.Marshal(b)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(out)
	return b.TraceID
}

// Internal answers 500 api_error with a generic message and logs err (which
// never reaches the client) with the trace id of the answer.
func Internal(ctx context.Context, w http.ResponseWriter, log *slog.Logger, msg string, err error) {
	id := Write(w, http.StatusInternalServerError, APIError, "internal error; quote trace_id when reporting it")
	if log != nil {
		log.ErrorContext(ctx, msg, "trace_id", id, "err", err)
	}
}

// RetryAfterUnavailable is the Retry-After header (in seconds) of the 503
// answers of Unavailable.
const RetryAfterUnavailable = "2"

// Unavailable answers 503 api_error with Retry-After: the task store cannot
// be reached for now (taskstore.ErrUnavailable), so the client should try
// again shortly. The contract lists no code of its own for it; api_error
// is its code for store failures. err (never shown to the client) is
// logged at Warn level with the answer's trace id: an outage of the
// database, not a bug.
func Unavailable(ctx context.Context, w http.ResponseWriter, log *slog.Logger, msg string, err error) {
	w.Header().Set("Retry-After", RetryAfterUnavailable)
	id := Write(w, http.StatusServiceUnavailable, APIError, "the task store is unavailable; retry later")
	if log != nil {
		log.WarnContext(ctx, msg, "trace_id", id, "err", err)
	}
}
