// Package handler serves the Tasks API (the README's "Walkthrough with curl" and "Limits") as an
// http.Handler that mounts at any path of any net/http server or router:
//
//	mux.Handle("/openai/tasks", handler.New(store, auth,
//		handler.WithTypes("images_generations", "images_edits")))
//
// (Mount it without a method in the pattern: the handler answers other
// methods itself with the contract's 405 error body, where a "POST …"
// pattern would make the mux answer them in plain text.)
//
// A request is a POST with a JSON object body whose action is retrieve (the
// default), retrieve_batch, delete or redeliver. Every request is authenticated by an
// Authenticator the embedding server supplies; the principal it yields
// restricts every lookup (a principal's non-empty application_id and user_id
// are ANDed into each filter), and a task the caller may not see is answered
// exactly like a missing one. WithTypes restricts a mount to some task types
// in the same way.
//
// # Requests
//
// Checks run in this order, and the first failure answers the contract's
// error body ({"error":{"code","message"},"trace_id"}, a fresh UUID each):
//
//  1. the method: anything but POST is 405 bad_request with "Allow: POST";
//  2. authentication: a principal already in the request's context
//     (taskstore.NewContext, from the server's own middleware) is used as
//     it is; otherwise the Authenticator decides: an error wrapping
//     ErrNoToken is 400 no_token (Tokens gives it for a missing or blank
//     Authorization header), ErrAuthUnavailable 500 api_error, any other
//     error 401 invalid_token;
//  3. the Content-Type, when present, must be application/json (parameters
//     such as charset are allowed), else 400 bad_request;
//  4. the body must be at most 1 MiB of valid UTF-8 holding exactly one
//     JSON object without duplicate top-level keys, else 400 bad_request;
//  5. the fields the action uses, else 400 bad_request naming the field.
//
// Field names match exactly (case-sensitive). Unknown fields are ignored, and
// so are known fields the action does not use. A JSON null is the same as an
// absent field, and so are an empty id, trace_id, application_id, user_id or
// type and an empty ids or trace_ids list (an empty action, though, is an
// unknown action). An id or trace_id longer than taskstore.MaxIDLength characters
// matches no task.
//
// offset and limit must be JSON integer literals: 10 is accepted, 10.0, 1e1
// and "10" are not (offset at most MaxOffset, limit 1 to MaxLimit, default
// 12). created_at_min and created_at_max are numbers of Unix seconds
// (integer, fraction or exponent form), read exactly in decimal rather than
// through float64, between 0 and MaxSeconds; both bounds are inclusive. ids
// and trace_ids hold at most MaxListLength strings. status is one of
// "pending", "running", "succeeded", "failed" (taskstore.Status) and
// callback_status one of "waiting", "pending", "delivered", "failed"
// (taskstore.CallbackStatus; it matches only tasks with a callback); any
// other value, a number or a list answers 400 naming the field.
//
// redeliver takes id, ids (at most MaxListLength), or both, and makes the
// callback of each named task due again now, whatever its callback status:
// only tasks the caller may see, that have finished and have a callback
// URL; the others are left out exactly like missing ones. The next attempt
// carries the same webhook-id and body, and the attempts count on (see
// taskstore.Store.Redeliver, which also says what happens to an attempt in
// flight). The answer lists the ids made due: {"redelivered":[…],"count":N}.
// WithRedeliverer hands the work to the callback.Recorder, which starts the
// deliveries at once.
//
// # Answers
//
// Every answer is JSON without a trailing newline, sent with its
// Content-Length (a large retrieve_batch answer is not chunked). retrieve
// answers the task's wire record (taskstore.Task.AppendJSON) or exactly {}
// when no task visible to the caller matches; retrieve_batch answers
// {"items":[…],"count":N}, newest first, with count the number of matches
// regardless of offset and limit; delete answers {"id":"…","deleted":bool}.
//
// A retrieve_batch answer has a byte budget (WithPageBytes, default
// DefaultPageBytes): items stop being added once the request and response
// JSON of those already in the answer reach it, so an answer may hold fewer
// than limit items (always at least one when a task matches past offset),
// and the memory a request takes is bounded whatever the tasks weigh. count
// is still the number of matches. A client that gets fewer items than it
// asked for while offset plus the number of items is below count asks again
// with offset increased by the number of items it got, as for the next page.
// A record always carries "status", and a task with a callback a
// "callback" member with its status and attempts (taskstore.Task.AppendJSON
// gives the exact shape).
// A store's taskstore.ErrInvalid answers 400 with its reason. A store that
// cannot reach its data (an error wrapping taskstore.ErrUnavailable, such
// as pgstore's while PostgreSQL restarts) answers 503 api_error with
// Retry-After: 2 (the contract has no other code for it), logged at Warn
// level. Any other store failure answers 500 api_error with a generic
// message, the error itself going to the logger with the answer's
// trace_id, except the request's own cancellation, answered 500 "the
// request was cancelled" and logged at Debug level.
package handler

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/tasksapi/tasks/internal/apierr"
	"github.com/tasksapi/tasks/internal/jsonw"
	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// Handler serves the Tasks API over a taskstore.Store. Create it with New;
// it is safe for concurrent use.
type Handler struct {
	store       taskstore.Store
	auth        Authenticator
	types       []string // nil: every type
	log         *slog.Logger
	redeliverer Redeliverer
	pageBytes   int
}

// DefaultPageBytes is the default byte budget of a retrieve_batch answer:
// the request and response JSON of its items (see WithPageBytes).
const DefaultPageBytes = 16 << 20

// WithPageBytes sets the byte budget of a retrieve_batch answer: once the
// items already in it hold n bytes of request and response JSON, no more
// are added (see the package documentation for how a client goes on).
// An answer takes about twice the budget plus its largest task in memory.
// n <= 0 keeps DefaultPageBytes.
func WithPageBytes(n int) Option {
	return func(h *Handler) {
		if n > 0 {
			h.pageBytes = n
		}
	}
}

// Redeliverer makes the callbacks of finished tasks due again and reports
// which it made due (see taskstore.Store.Redeliver). *callback.Recorder
// is one: it also starts the deliveries at once.
type Redeliverer interface {
	Redeliver(ctx context.Context, ids ...string) ([]string, error)
}

// WithRedeliverer sets what the redeliver action calls, once it has kept
// only the ids of finished tasks with a callback that the caller may see.
// Pass the callback.Recorder that delivers the store's callbacks, so that
// redelivered callbacks go out at once. Without it the handler calls the
// store's Redeliver, and the recorder picks the deliveries up at its next
// poll of the store.
func WithRedeliverer(r Redeliverer) Option {
	return func(h *Handler) { h.redeliverer = r }
}

// Option configures a Handler.
type Option func(*Handler)

// WithTypes restricts the mount to tasks of the given types: a task of
// another type is answered exactly like a missing one, and retrieve_batch
// lists only these types. Several mounts over one store can so show
// different services' tasks (/openai/tasks, /flux/tasks). Without the
// option, or with no types, every type is served. Services that each have
// a callback recorder give those recorders their own names
// (callback.Options.Name), so that each delivers its own tasks' callbacks
// with its own secret; with WithRedeliverer, pass each mount its own
// recorder.
func WithTypes(types ...string) Option {
	types = slices.Clone(types)
	slices.Sort(types)
	types = slices.Compact(types)
	return func(h *Handler) { h.types = types }
}

// WithLogger sets the logger that internal failures go to, each with the
// trace_id of its answer. Without it, or with nil, they go to
// slog.Default() as it is when New is called.
func WithLogger(l *slog.Logger) Option {
	return func(h *Handler) { h.log = l }
}

// New returns the Tasks API handler over store, authenticating every request
// with auth.
//
// New panics when store or auth is nil: a handler without an authenticator
// would give open access. Pass InsecureAnyoneIsOperator explicitly for tests
// and trusted networks.
func New(store taskstore.Store, auth Authenticator, opts ...Option) *Handler {
	if store == nil {
		panic("handler.New: nil taskstore.Store")
	}
	if auth == nil {
		panic("handler.New: nil Authenticator; pass handler.Tokens(…) or your own, " +
			"or handler.InsecureAnyoneIsOperator to let every caller see every task (tests, trusted networks)")
	}
	h := &Handler{store: store, auth: auth, pageBytes: DefaultPageBytes}
	for _, o := range opts {
		o(h)
	}
	if h.log == nil {
		h.log = slog.Default()
	}
	return h
}

func (h *Handler) logger() *slog.Logger {
	if h.log != nil {
		return h.log
	}
	return slog.Default()
}

// sees reports whether the mount serves tasks of type typ.
func (h *Handler) sees(typ string) bool {
	if len(h.types) == 0 {
		return true
	}
	_, ok := slices.BinarySearch(h.types, typ)
	return ok
}

// bufPool holds the buffers a request is read into and its answer encoded
// into.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledBuf is the largest buffer returned to the pool; larger ones (big
// batches) are left to the garbage collector.
const maxPooledBuf = 256 << 10

// chunkingThreshold is the size from which ServeHTTP sets the
// Content-Length itself. net/http adds it to an answer written in one go
// that fits its buffer (2 KiB), and sends a larger one chunked unless the
// handler declared the length; the threshold stays well below the buffer
// size.
const chunkingThreshold = 1024

// ServeHTTP answers one Tasks API request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		apierr.Write(w, http.StatusMethodNotAllowed, apierr.BadRequest, "the method must be POST")
		return
	}
	p, ok := authenticate(w, r, h.auth, h.logger())
	if !ok {
		return
	}
	if !jsonContentType(r.Header.Get("Content-Type")) {
		apierr.Write(w, http.StatusBadRequest, apierr.BadRequest, "the Content-Type must be application/json")
		return
	}

	bp := bufPool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPooledBuf {
			bufPool.Put(bp)
		}
	}()
	body, err := readBody(r.Body, r.ContentLength, *bp)
	*bp = body[:0]
	var req request
	if err == nil {
		err = parseRequest(body, &req)
	}
	if err != nil {
		var bad badRequest
		if errors.As(err, &bad) {
			apierr.Write(w, http.StatusBadRequest, apierr.BadRequest, string(bad))
		} else {
			// Reading failed: the client went away or sent a broken body
			// (for example a truncated chunked encoding).
			apierr.Write(w, http.StatusBadRequest, apierr.BadRequest, "the request body could not be read")
		}
		return
	}
	// The body is fully parsed (every string copied out of it): its buffer
	// now takes the answer.
	out := (*bp)[:0]
	switch req.action {
	case actRetrieve:
		out, err = h.retrieve(r.Context(), p, &req, out)
	case actRetrieveBatch:
		out, err = h.retrieveBatch(r.Context(), p, &req, out)
	case actDelete:
		out, err = h.delete(r.Context(), p, &req, out)
	case actRedeliver:
		out, err = h.redeliver(r.Context(), p, &req, out)
	}
	*bp = out[:0]
	if err != nil {
		h.storeError(r.Context(), w, err)
		return
	}
	hd := w.Header() // the keys are canonical already: skip Set's canonicalisation
	hd["Content-Type"] = []string{"application/json"}
	hd["X-Content-Type-Options"] = []string{"nosniff"}
	if len(out) >= chunkingThreshold {
		hd["Content-Length"] = []string{strconv.Itoa(len(out))}
	}
	w.WriteHeader(http.StatusOK)
	w.Write(out)
}

// storeError answers a store failure: ErrInvalid is the client's fault,
// ErrUnavailable an outage to retry after, any other error an internal
// failure.
func (h *Handler) storeError(ctx context.Context, w http.ResponseWriter, err error) {
	if errors.Is(err, taskstore.ErrInvalid) {
		msg := taskstore.Reason(err)
		if msg == "" {
			msg = "the request is invalid"
		}
		apierr.Write(w, http.StatusBadRequest, apierr.BadRequest, msg)
		return
	}
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		// The client went away; nobody reads the answer and the store did
		// nothing wrong.
		id := apierr.Write(w, http.StatusInternalServerError, apierr.APIError, "the request was cancelled")
		h.logger().DebugContext(ctx, "handler: request cancelled", "trace_id", id, "err", err)
		return
	}
	if errors.Is(err, taskstore.ErrUnavailable) {
		apierr.Unavailable(ctx, w, h.logger(), "handler: store unavailable", err)
		return
	}
	apierr.Internal(ctx, w, h.logger(), "handler: store failure", err)
}

// notFound is the answer of retrieve when no visible task matches.
const notFound = "{}"

func (h *Handler) retrieve(ctx context.Context, p taskstore.Principal, req *request, out []byte) ([]byte, error) {
	if req.id == "" { // by trace_id alone: the newest visible match
		if storekit.TooLong(req.traceID) { // no task has such a trace_id
			return append(out, notFound...), nil
		}
		// The filter names no application or user, so Scope cannot refuse it.
		f, _ := p.Scope(taskstore.Filter{TraceIDs: []string{req.traceID}, Types: h.types, Limit: 1})
		page, _, err := h.store.Find(ctx, f)
		if err != nil {
			return out, err
		}
		if len(page) == 0 {
			return append(out, notFound...), nil
		}
		return page[0].AppendJSON(out), nil
	}
	if storekit.TooLong(req.id) { // no task has such an id
		return append(out, notFound...), nil
	}
	t, err := h.store.Get(ctx, req.id)
	switch {
	case errors.Is(err, taskstore.ErrNotFound):
		return append(out, notFound...), nil
	case err != nil:
		return out, err
	case !p.CanSee(t) || !h.sees(t.Type) || (req.traceID != "" && t.TraceID != req.traceID):
		return append(out, notFound...), nil
	}
	return t.AppendJSON(out), nil
}

func (h *Handler) retrieveBatch(ctx context.Context, p taskstore.Principal, req *request, out []byte) ([]byte, error) {
	const empty = `{"items":[],"count":0}`
	f := taskstore.Filter{
		IDs:            req.ids,
		TraceIDs:       req.traceIDs,
		ApplicationID:  req.applicationID,
		UserID:         req.userID,
		Types:          h.types,
		CreatedMin:     req.createdMin,
		CreatedMax:     req.createdMax,
		Status:         req.status,
		CallbackStatus: req.callbackStatus,
		Offset:         req.offset,
		Limit:          req.limit,
		PageBytes:      h.pageBytes,
	}
	if req.typ != "" {
		if !h.sees(req.typ) {
			return append(out, empty...), nil
		}
		f.Types = []string{req.typ}
	}
	f, ok := p.Scope(f)
	if !ok {
		return append(out, empty...), nil
	}
	page, total, err := h.store.Find(ctx, f)
	if err != nil {
		return out, err
	}
	out = append(out, `{"items":[`...)
	for i := range page {
		if i > 0 {
			out = append(out, ',')
		}
		out = page[i].AppendJSON(out)
	}
	out = append(out, `],"count":`...)
	out = strconv.AppendInt(out, int64(total), 10)
	return append(out, '}'), nil
}

func (h *Handler) delete(ctx context.Context, p taskstore.Principal, req *request, out []byte) ([]byte, error) {
	deleted := false
	t, err := taskstore.Task{}, taskstore.ErrNotFound
	if !storekit.TooLong(req.id) { // else no task has such an id
		t, err = h.store.Get(ctx, req.id)
	}
	switch {
	case errors.Is(err, taskstore.ErrNotFound):
	case err != nil:
		return out, err
	case p.CanSee(t) && h.sees(t.Type):
		// A task's owner and type never change. (Only if this task were
		// deleted and another created under the same id in between could
		// Delete remove a task not checked here; ids are UUIDs.)
		err = h.store.Delete(ctx, req.id)
		switch {
		case err == nil:
			deleted = true
		case !errors.Is(err, taskstore.ErrNotFound): // deleted meanwhile: false
			return out, err
		}
	}
	out = append(out, `{"id":`...)
	out = jsonw.AppendString(out, req.id)
	out = append(out, `,"deleted":`...)
	out = strconv.AppendBool(out, deleted)
	return append(out, '}'), nil
}

// redeliver makes the callbacks of the named tasks due again: only those of
// finished tasks with a callback that the caller may see (the others are
// left out of the answer, exactly like missing ones).
func (h *Handler) redeliver(ctx context.Context, p taskstore.Principal, req *request, out []byte) ([]byte, error) {
	want := make([]string, 0, len(req.ids)+1)
	if req.id != "" {
		want = append(want, req.id)
	}
	for _, id := range req.ids {
		if !slices.Contains(want, id) {
			want = append(want, id)
		}
	}
	// The filter names no application or user, so Scope cannot refuse it.
	f, _ := p.Scope(taskstore.Filter{IDs: want, Types: h.types, Limit: len(want)})
	page, _, err := h.store.Find(ctx, f)
	if err != nil {
		return out, err
	}
	ids := make([]string, 0, len(page))
	for _, id := range want { // in the order asked
		i := slices.IndexFunc(page, func(t taskstore.Task) bool { return t.ID == id })
		if i >= 0 && page[i].Finished() && page[i].Callback.URL != "" {
			ids = append(ids, id)
		}
	}
	var done []string
	switch {
	case len(ids) == 0:
	case h.redeliverer != nil:
		done, err = h.redeliverer.Redeliver(ctx, ids...)
	default:
		done, err = h.store.Redeliver(ctx, ids, time.Time{})
	}
	if err != nil {
		return out, err
	}
	out = append(out, `{"redelivered":[`...)
	for i, id := range done {
		if i > 0 {
			out = append(out, ',')
		}
		out = jsonw.AppendString(out, id)
	}
	out = append(out, `],"count":`...)
	out = strconv.AppendInt(out, int64(len(done)), 10)
	return append(out, '}'), nil
}
