package callback

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/tasksapi/tasks/internal/apierr"
	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// Wrap returns a handler that adds callback mode to h, an image endpoint
// whose tasks are recorded with the given type (e.g. "images_generations").
//
// A request whose Content-Type is application/json or multipart/form-data
// is read and inspected. A callback-mode body (or one refused as such) must
// be at most Options.MaxBodyBytes, else 400 bad_request naming the limit.
// Up to 1 MiB a body is read into memory; past that the bytes go to a
// temporary file while a streaming scan looks for the callback-mode fields
// at the top level (see the package documentation, Limits), and a body
// whose top level carries callback_url or trace_id (not null), async
// (neither null nor false), or one of them twice, is held to
// Options.MaxBodyBytes, read into memory and inspected like a small one:
//
//   - With a callback_url field (an absolute http or https URL; unless
//     Options.AllowPrivateNetworks, not an IP literal the delivery guard
//     refuses, nor localhost or a name under .localhost), or with
//     "async": true, it is a callback-mode request. callback_url, trace_id
//     (a string of at most 128 characters) and async (a boolean; for multipart a
//     form field strconv.ParseBool reads: 1, t, T, true, TRUE, True, or
//     0, f, F, false, FALSE, False) are validated (400 bad_request, nothing
//     stored). A body whose stored form would exceed Options.MaxRequestBytes
//     is refused with 400 naming the limit. The task is stored with the
//     caller's principal, queued, and only then answered 200
//     {"task_id":"…"} (with "trace_id" when given). When the queue is full
//     (or the caller's share of it, or of Options.QueueBytes), or the
//     recorder is closed, the answer is 429 too_many_requests and nothing
//     is stored; a store that cannot be reached (taskstore.ErrUnavailable)
//     is 503 api_error with Retry-After, any other store failure 500
//     api_error. null counts as an absent field.
//   - Otherwise (other content types, a JSON body that is not an object, a
//     malformed multipart body, or neither field) h serves the request
//     synchronously with the original body bytes, the same headers and
//     Content-Length, whatever its size: the recorder sets no limit on it;
//     nothing is stored. A body read into memory comes from there; a larger
//     one is read back from the temporary file and then from the
//     connection, and the file is removed once h returns.
//
// A body that cannot be read while Wrap reads it is answered 400
// bad_request (naming the limit when the error is an
// *http.MaxBytesError).
//
// A worker later runs h on a copy of the request (same method, URL and
// headers) whose body lacks callback_url, trace_id and async, whose context
// keeps the request's values (the principal among them; see TaskID) but not
// its cancellation, and ends after Options.TaskTimeout or when Close gives
// up. h's status and body (at most 64 MiB) become the task's response; see
// the package documentation for its shape. A handler that ignores its
// context is abandoned when the context ends: its goroutine may outlive the
// task, and whatever it writes afterwards is discarded.
//
// Wrap panics if taskType is empty or longer than 128 characters.
func (r *Recorder) Wrap(taskType string, h http.Handler) http.Handler {
	if taskType == "" || storekit.TooLong(taskType) || !utf8.ValidString(taskType) {
		panic(fmt.Sprintf("callback: Wrap: task type %q must be 1 to %d characters of UTF-8", taskType, taskstore.MaxIDLength))
	}
	if h == nil {
		panic("callback: Wrap: nil handler")
	}
	if r.ready == nil {
		panic("callback: Wrap: " + ErrNotNew.Error())
	}
	return &wrapped{r: r, typ: taskType, h: h}
}

type wrapped struct {
	r   *Recorder
	typ string
	h   http.Handler
}

const (
	kindOther = iota
	kindJSON
	kindMultipart
)

func (wh *wrapped) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	kind, boundary := bodyKind(req)
	if kind == kindOther || req.Body == nil || req.Body == http.NoBody {
		wh.h.ServeHTTP(w, req)
		return
	}
	head, err := readBody(req.Body, req.ContentLength, spillAt)
	switch {
	case err == nil:
		wh.serveBody(w, req, kind, boundary, head)
	case errors.Is(err, errTooLarge):
		wh.serveLarge(w, req, kind, boundary, head)
	default:
		wh.readError(w, err)
	}
}

// readError answers a body that could not be read.
func (wh *wrapped) readError(w http.ResponseWriter, err error) {
	if mb, ok := errors.AsType[*http.MaxBytesError](err); ok {
		// An http.MaxBytesReader of the server around this handler.
		apierr.Write(w, http.StatusBadRequest, apierr.BadRequest,
			"request body must be at most "+strconv.FormatInt(mb.Limit, 10)+" bytes")
		return
	}
	apierr.Write(w, http.StatusBadRequest, apierr.BadRequest, "the request body could not be read")
}

// tooLarge answers a callback-mode body over Options.MaxBodyBytes.
func (wh *wrapped) tooLarge(w http.ResponseWriter) {
	apierr.Write(w, http.StatusBadRequest, apierr.BadRequest,
		"request body must be at most "+strconv.FormatInt(wh.r.o.MaxBodyBytes, 10)+" bytes")
}

// serveBody serves a request whose whole body was read.
func (wh *wrapped) serveBody(w http.ResponseWriter, req *http.Request, kind int, boundary string, body []byte) {
	r := wh.r
	var in inspection
	var err error
	if kind == kindJSON {
		in, err = inspectJSON(body, r.o.MaxRequestBytes, r.o.AllowPrivateNetworks)
	} else {
		in, err = inspectMultipart(body, boundary, r.o.MaxRequestBytes, r.o.AllowPrivateNetworks)
	}
	if (in.callback || err != nil) && int64(len(body)) > r.o.MaxBodyBytes {
		wh.tooLarge(w)
		return
	}
	if br, ok := errors.AsType[*badRequest](err); ok {
		apierr.Write(w, http.StatusBadRequest, apierr.BadRequest, br.msg)
		return
	}
	if err != nil {
		apierr.Internal(req.Context(), w, r.log, "callback: inspecting request body", err)
		return
	}
	if !in.callback {
		// Pass through, untouched: the same bytes behind a fresh reader.
		pass := *req
		pass.Body = io.NopCloser(bytes.NewReader(body))
		pass.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		wh.h.ServeHTTP(w, &pass)
		return
	}
	wh.accept(w, req, in)
}

// serveLarge serves a request whose body is longer than spillAt (or
// declared so); head holds the bytes read so far (see stream.go).
func (wh *wrapped) serveLarge(w http.ResponseWriter, req *http.Request, kind int, boundary string, head []byte) {
	r := wh.r
	sp := &spool{src: req.Body, memMax: max(r.o.MaxBodyBytes-int64(len(head)), 0)}
	defer sp.close()
	scanned := io.MultiReader(bytes.NewReader(head), sp)
	var candidate bool
	if kind == kindJSON {
		candidate = scanJSON(scanned)
	} else {
		candidate = scanMultipart(scanned, boundary)
	}
	if sp.rerr != nil {
		wh.readError(w, sp.rerr)
		return
	}
	if sp.cerr != nil {
		r.log.LogAttrs(req.Context(), slog.LevelWarn, "callback: no temporary file for a large request body; held it in memory (at most MaxBodyBytes)",
			slog.String("error", sp.cerr.Error()))
	}
	if sp.werr == errSpoolFull {
		wh.tooLarge(w)
		return
	}
	spooled, err := sp.replay()
	if err == nil {
		err = sp.werr
	}
	if err != nil {
		apierr.Internal(req.Context(), w, r.log, "callback: spooling request body", err)
		return
	}
	rest := io.MultiReader(bytes.NewReader(head), spooled, req.Body)
	if !candidate {
		// Not callback mode: the handler reads what was read, then the rest.
		pass := *req
		pass.Body = passBody{rest, req.Body}
		pass.GetBody = nil
		wh.h.ServeHTTP(w, &pass)
		return
	}
	if req.ContentLength > r.o.MaxBodyBytes || int64(len(head))+sp.n > r.o.MaxBodyBytes {
		wh.tooLarge(w)
		return
	}
	body, err := readBody(rest, req.ContentLength, r.o.MaxBodyBytes)
	switch {
	case errors.Is(err, errTooLarge):
		wh.tooLarge(w)
		return
	case err != nil:
		wh.readError(w, err)
		return
	}
	sp.close()
	wh.serveBody(w, req, kind, boundary, body)
}

// passBody is the body a large non-callback request is passed through with.
type passBody struct {
	io.Reader
	orig io.Closer
}

func (b passBody) Close() error { return b.orig.Close() }

// accept stores and queues a callback-mode request, then answers it.
func (wh *wrapped) accept(w http.ResponseWriter, req *http.Request, in inspection) {
	r := wh.r
	p := r.o.Principal(req)
	id, owner, err := r.createTask(req.Context(), taskstore.Task{
		TraceID: in.traceID, Type: wh.typ, Request: in.stored,
		ApplicationID: p.ApplicationID, UserID: p.UserID, CredentialID: p.CredentialID,
		Callback: taskstore.Callback{URL: in.callbackURL},
	}, int64(len(in.upstream)))
	switch {
	case errors.Is(err, ErrClosed):
		apierr.Write(w, http.StatusTooManyRequests, apierr.TooManyRequests, "the server is shutting down; retry later")
		return
	case errors.Is(err, errPrincipalQueueFull), errors.Is(err, errPrincipalBytesFull):
		apierr.Write(w, http.StatusTooManyRequests, apierr.TooManyRequests, "too many of your tasks are waiting; retry later")
		return
	case errors.Is(err, ErrQueueFull):
		apierr.Write(w, http.StatusTooManyRequests, apierr.TooManyRequests, "too many tasks are waiting; retry later")
		return
	case errors.Is(err, taskstore.ErrUnavailable):
		apierr.Unavailable(req.Context(), w, r.log, "callback: storing task: store unavailable", err)
		return
	case err != nil:
		if reason := taskstore.Reason(err); reason != "" {
			apierr.Write(w, http.StatusBadRequest, apierr.BadRequest, reason)
			return
		}
		apierr.Internal(req.Context(), w, r.log, "callback: storing task", err)
		return
	}

	up := req.Clone(req.Context())
	up.Header.Del("Content-Length")
	if in.contentType != "" {
		up.Header.Set("Content-Type", in.contentType)
	}
	up.Form, up.PostForm, up.MultipartForm = nil, nil, nil
	h, upstream := wh.h, in.upstream
	r.enqueue(&job{
		id: id, typ: wh.typ, traceID: in.traceID, callback: in.callbackURL != "",
		owner: owner, bytes: int64(len(upstream)),
		base: taskContext(req.Context(), id, p),
		run: func(ctx context.Context) outcome {
			rq := up.WithContext(ctx)
			rq.Body = io.NopCloser(bytes.NewReader(upstream))
			rq.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(upstream)), nil }
			rq.ContentLength = int64(len(upstream))
			cw := &capture{ctx: ctx, header: make(http.Header)}
			h.ServeHTTP(cw, rq)
			return cw.outcome()
		},
	})

	answer := acceptedAnswer(id, in.traceID)
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Content-Length", strconv.Itoa(len(answer)))
	w.WriteHeader(http.StatusOK)
	w.Write(answer)
}

// taskContext is the base context of a task's run: parent's values without
// its cancellation, plus the task id and principal.
func taskContext(parent context.Context, id string, p taskstore.Principal) context.Context {
	ctx := context.WithoutCancel(parent)
	ctx = context.WithValue(ctx, taskIDKey{}, id)
	return taskstore.NewContext(ctx, p)
}

// bodyKind classifies a request by its Content-Type.
func bodyKind(req *http.Request) (kind int, boundary string) {
	ct := req.Header.Get("Content-Type")
	if ct == "" {
		return kindOther, ""
	}
	mt, params, err := mime.ParseMediaType(ct)
	switch {
	case err != nil:
		return kindOther, ""
	case mt == "application/json":
		return kindJSON, ""
	case mt == "multipart/form-data" && params["boundary"] != "":
		return kindMultipart, params["boundary"]
	}
	return kindOther, ""
}

var errTooLarge = errors.New("callback: request body too large")

// readBody reads all of body, failing with errTooLarge past max bytes: it
// then returns the bytes read (max+1), or none when the declared length is
// larger than max.
//
// The buffer grows with the bytes that arrive, never ahead of them: it
// starts small and doubles when full, so it holds at most about twice what
// was received. A declared length only caps that growth (an honest body
// ends in a buffer of its exact size, plus one byte to see the end); it is
// never allocated before the bytes come, so a client that declares 32 MiB
// and sends nothing costs nothing.
func readBody(body io.Reader, length, max int64) ([]byte, error) {
	if length > max {
		return nil, errTooLarge
	}
	hard := max + 1 // one byte past max tells a body that is too large
	soft := hard    // where doubling stops when the length is declared
	if length >= 0 {
		soft = length + 1 // room for the EOF read
	}
	buf := make([]byte, 0, min(soft, firstRead))
	for {
		if len(buf) == cap(buf) {
			buf = growBody(buf, soft, hard)
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > max {
			return buf, errTooLarge
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// firstRead is the size of a body buffer before anything arrived.
const firstRead = 16 << 10

// growBody returns buf with room for more bytes: twice its capacity, but no
// more than soft (the declared length plus one) while buf is below it, and
// never more than hard. The caller guarantees len(buf) < hard.
func growBody(buf []byte, soft, hard int64) []byte {
	c := int64(cap(buf))
	next := max(2*c, firstRead)
	if soft > c {
		next = min(next, soft)
	}
	next = min(next, hard)
	grown := make([]byte, len(buf), next)
	copy(grown, buf)
	return grown
}

// capture is the in-memory ResponseWriter of a task's run.
type capture struct {
	ctx      context.Context
	header   http.Header
	status   int
	buf      []byte
	tooLarge bool
}

func (c *capture) Header() http.Header { return c.header }

func (c *capture) WriteHeader(code int) {
	if c.status != 0 || code < 200 && code >= 100 { // informational answers are not the final status
		return
	}
	c.status = code
}

func (c *capture) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err // the task is over; nobody reads this anymore
	}
	if c.status == 0 {
		c.status = http.StatusOK
	}
	if len(c.buf)+len(p) > maxCaptureSize {
		c.tooLarge = true
		return 0, errResponseTooLarge
	}
	c.buf = append(c.buf, p...)
	return len(p), nil
}

// Flush is a no-op: the answer is recorded once the handler returns.
func (c *capture) Flush() {}

var errResponseTooLarge = errors.New("callback: upstream response too large")

func (c *capture) outcome() outcome {
	status := c.status
	if status == 0 {
		status = http.StatusOK
	}
	return outcome{status: status, body: c.buf, tooLarge: c.tooLarge}
}

// Submission describes a task for Submit.
type Submission struct {
	// Type is the task type, e.g. "images_generations". Required.
	Type string
	// TraceID is the client's correlation id (at most 128 characters); optional.
	TraceID string
	// CallbackURL receives the response once the task finishes; empty means
	// no callback (the client polls the Tasks API).
	CallbackURL string
	// Request is the request as the client sent it, stored on the task: a
	// JSON value, required.
	Request json.RawMessage
	// Principal is the caller, stamped on the task.
	Principal taskstore.Principal
}

// Submit is the direct entry point of callback mode, for servers whose work
// is not an http.Handler. It stores the task and queues it, and returns its
// id once it is stored (a ctx already done stores nothing and returns its
// error; once storing has begun, cancelling ctx no longer stops it, so that
// no task is stored without being queued); a worker then calls run with a context that keeps
// ctx's values (plus the principal and the task id, see TaskID) but not its
// cancellation, and ends after Options.TaskTimeout or when Close gives up.
//
// run returns the upstream's JSON object, recorded as the success response
// (with "success", "task_id" and "trace_id" added first). A value that is
// not a JSON object, a panic, or an error is recorded as a failure: a
// *TaskError chooses the failure code and message; any other error becomes
// "api_error" with a generic message, so its text never reaches the client.
//
// Errors: ErrBadCallbackURL (wrapped with the reason: not an absolute http
// or https URL, or, unless Options.AllowPrivateNetworks, a host that is an
// IP literal the delivery guard refuses or a localhost name), ErrRequestTooLarge
// (a Request longer than Options.MaxRequestBytes, wrapped with the limit),
// ErrQueueFull (the queue is full, or the principal's share of it or of
// Options.QueueBytes is, wrapped with the reason), ErrClosed, or the store's error (taskstore.ErrInvalid naming the field for
// a missing Type or Request, or a trace id that is too long).
func (r *Recorder) Submit(ctx context.Context, s Submission, run func(ctx context.Context) (json.RawMessage, error)) (taskID string, err error) {
	if run == nil {
		return "", errors.New("callback: Submit: nil run function")
	}
	if r.ready == nil {
		return "", ErrNotNew
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if s.CallbackURL != "" {
		if err := checkCallbackURL(s.CallbackURL, r.o.AllowPrivateNetworks); err != nil {
			return "", err
		}
	}
	if int64(len(s.Request)) > r.o.MaxRequestBytes {
		return "", fmt.Errorf("%w: at most %d bytes", ErrRequestTooLarge, r.o.MaxRequestBytes)
	}
	p := s.Principal
	held := int64(len(s.Request))
	id, owner, err := r.createTask(ctx, taskstore.Task{
		TraceID: s.TraceID, Type: s.Type, Request: s.Request,
		ApplicationID: p.ApplicationID, UserID: p.UserID, CredentialID: p.CredentialID,
		Callback: taskstore.Callback{URL: s.CallbackURL},
	}, held)
	switch {
	case errors.Is(err, ErrClosed), errors.Is(err, ErrQueueFull), errors.Is(err, ErrNotNew):
		return "", err
	case err != nil:
		return "", fmt.Errorf("callback: storing task: %w", err)
	}
	typ := s.Type // the closure keeps this, not the Submission and its Request
	r.enqueue(&job{
		id: id, typ: typ, traceID: s.TraceID, callback: s.CallbackURL != "",
		owner: owner, bytes: held,
		base: taskContext(ctx, id, p),
		run: func(ctx context.Context) outcome {
			body, err := run(ctx)
			if err != nil {
				if _, ok := errors.AsType[*TaskError](err); !ok {
					r.log.Error("callback: task failed", "task_id", id, "type", typ, "err", err)
				}
				return outcome{err: err}
			}
			return outcome{status: http.StatusOK, body: body}
		},
	})
	return id, nil
}

// newTaskID returns a fresh task id: a version 7 UUID, whose leading bits
// are the creation time (milliseconds, then a 12-bit sub-millisecond
// sequence), so ids of one process sort in creation order and a store's id
// index grows at its end instead of touching a random page per insert. The
// other 62 bits are random.
func newTaskID() string {
	// NewV7 fails only when the system's randomness does, as NewString
	// would: there is nothing to fall back on.
	return uuid.Must(uuid.NewV7()).String()
}
