// Package console serves an operator's web console for a task store: one
// small page (HTML, CSS and plain JavaScript embedded in the binary, no build
// step, nothing loaded from another origin) and the JSON endpoints it reads,
// which call the public taskstore.Store and callback.Recorder API the same
// way an embedder would.
//
// Mount it under a path of its own:
//
//	mux.Handle("/console/", console.New(store, auth, console.WithRecorder(rec)))
//
// The page uses relative URLs, so any prefix works, as long as the page
// itself is reached with its trailing slash; the console routes on the end
// of the path, so http.StripPrefix in front changes nothing.
//
// # Access
//
// The page is served to anyone; every piece of data and every action needs
// an operator credential. The page asks for a token in a password field,
// keeps it in the tab's sessionStorage only, and sends it as
// "Authorization: Bearer <token>" with every request; it never puts it in a
// URL. The Authenticator (handler.Authenticator's shape) maps the request to
// a principal, and WithOperator's rule decides whether that principal is an
// operator (by default taskstore.Principal.IsOperator: an empty application
// and user). Refusals use the Tasks API's error body: no header is 400
// no_token, a rejected token or one that is not an operator's is 401
// invalid_token.
//
// # Endpoints
//
// Reads are GET, actions POST with a JSON body (Content-Type
// application/json): a browser cannot send a cross-site request with the
// bearer header, and no cookie is involved, so there is nothing to forge.
//
//	GET  api/summary            tasks by status, callbacks by status (counts)
//	GET  api/tasks?…            one page of tasks, newest first, and the total
//	GET  api/task?id=…          one task's wire record (taskstore.Task.AppendJSON), {} when missing
//	GET  api/chart              tasks per minute over the last hour, by outcome
//	POST api/redeliver          {"ids":[…]}: Recorder.Redeliver
//	POST api/recover            {"since":<unix seconds>}: Recorder.Recover
//
// api/tasks takes status, callback_status, type, application_id, user_id,
// trace_id, from and to (Unix seconds, inclusive), offset and limit (1 to
// 100, default 25); each list is one Store.Find. The summary is eight
// Store.Find totals with Limit 0, which the stores answer from their
// counters. The chart is one Store.Find total per minute and outcome (Limit
// 0, a creation window and a status): tasks are bucketed by the minute they
// were created, which for tasks that run for seconds is the minute they
// finished give or take their run time; a task still running counts in no
// bucket until it finishes.
//
// # Safety
//
// Every answer carries a strict Content-Security-Policy (default-src 'self',
// no inline script or style, no framing, no form submission, Trusted Types
// required for DOM sinks), X-Frame-Options: DENY, X-Content-Type-Options:
// nosniff and Referrer-Policy: no-referrer; API answers are not cached. The
// page builds every element with textContent and DOM calls, never from HTML
// strings, so task data (trace ids, requests, responses, errors) is always
// shown as text. Images are shown only for URLs on the page's own origin.
package console

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tasksapi/tasks/handler"
	"github.com/tasksapi/tasks/internal/apierr"
	"github.com/tasksapi/tasks/internal/jsonw"
	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

//go:embed assets
var assets embed.FS

// Recorder is what the console's actions call: *callback.Recorder is one.
type Recorder interface {
	// Redeliver makes the callbacks of the given finished tasks due again
	// now and returns the ids it made due.
	Redeliver(ctx context.Context, ids ...string) ([]string, error)
	// Recover makes due again every failed callback of the tasks that
	// finished at or after since and returns how many.
	Recover(ctx context.Context, since time.Time) (int, error)
}

// Limits of the console's requests.
const (
	// DefaultLimit is the page size of api/tasks without a limit.
	DefaultLimit = 25
	// MaxLimit is the largest page api/tasks answers.
	MaxLimit = 100
	// MaxRedeliver is the most ids one api/redeliver request takes.
	MaxRedeliver = 100
	// ChartMinutes is how many one-minute buckets the chart has.
	ChartMinutes = 60
)

// maxBody caps the body of an action.
const maxBody = 64 << 10

// Console is the operator console's http.Handler. Create it with New.
type Console struct {
	store    taskstore.Store
	auth     handler.Authenticator
	operator func(taskstore.Principal) bool
	rec      Recorder
	log      *slog.Logger
	now      func() time.Time
	files    map[string]asset
}

type asset struct {
	body        []byte
	contentType string
}

// Option configures a Console.
type Option func(*Console)

// WithRecorder sets the recorder whose Redeliver and Recover the actions
// call, so that redelivered callbacks go out at once. Without it the
// actions call the store's Redeliver and RedeliverFailed, and whichever
// recorder polls the store delivers them at its next poll. A recorder's
// actions keep to its own tasks (callback.Options.Name): Redeliver leaves
// other recorders' tasks out, Recover makes due its failed callbacks only.
// Without a recorder, redeliver makes due any task's callback (each is
// delivered by its own recorder) and recover the default recorder's ("").
func WithRecorder(r Recorder) Option { return func(c *Console) { c.rec = r } }

// WithOperator sets the rule deciding which principals may use the console.
// The default is taskstore.Principal.IsOperator.
func WithOperator(isOperator func(taskstore.Principal) bool) Option {
	return func(c *Console) { c.operator = isOperator }
}

// WithLogger sets where internal failures are logged. Without it, or with
// nil, they go to slog.Default() as it is when New is called.
func WithLogger(l *slog.Logger) Option { return func(c *Console) { c.log = l } }

// WithClock sets the clock of the chart and of "age" (a test seam; default
// time.Now).
func WithClock(now func() time.Time) Option { return func(c *Console) { c.now = now } }

// New returns the console over store, authenticating every API request with
// auth. It panics when store or auth is nil, as handler.New does.
func New(store taskstore.Store, auth handler.Authenticator, opts ...Option) *Console {
	if store == nil {
		panic("console.New: nil taskstore.Store")
	}
	if auth == nil {
		panic("console.New: nil Authenticator")
	}
	c := &Console{store: store, auth: auth, operator: taskstore.Principal.IsOperator, now: time.Now}
	for _, o := range opts {
		o(c)
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.files = map[string]asset{}
	for name, ct := range map[string]string{
		"index.html":  "text/html; charset=utf-8",
		"app.js":      "text/javascript; charset=utf-8",
		"app.css":     "text/css; charset=utf-8",
		"favicon.svg": "image/svg+xml",
	} {
		b, err := assets.ReadFile("assets/" + name)
		if err != nil {
			panic("console: missing embedded asset " + name)
		}
		c.files[name] = asset{b, ct}
	}
	return c
}

func (c *Console) logger() *slog.Logger {
	if c.log != nil {
		return c.log
	}
	return slog.Default()
}

// CSP is the Content-Security-Policy of every answer.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; " +
	"require-trusted-types-for 'script'; trusted-types 'none'"

// securityHeaders are set on every answer. The slices are shared and never
// changed (http.Header.Add would append to a copy: their capacity is their
// length).
var securityHeaders = [...]struct {
	key string
	val []string
}{
	{"Content-Security-Policy", []string{CSP}},
	{"X-Frame-Options", []string{"DENY"}},
	{"X-Content-Type-Options", []string{"nosniff"}},
	{"Referrer-Policy", []string{"no-referrer"}},
	{"Cross-Origin-Opener-Policy", []string{"same-origin"}},
	{"Cross-Origin-Resource-Policy", []string{"same-origin"}},
}

var (
	noStore  = []string{"no-store"}
	jsonType = []string{"application/json"}
)

// ServeHTTP serves the page, its files and the API. It routes on the end
// of the path (its last element, and whether the one before is "api"), so
// it answers the same at any mount point, with or without http.StripPrefix
// in front.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	for _, sh := range securityHeaders {
		h[sh.key] = sh.val
	}

	path := r.URL.Path
	i := strings.LastIndexByte(path, '/')
	if i >= len("/api") && path[i-len("/api"):i] == "/api" {
		h["Cache-Control"] = noStore
		c.serveAPI(w, r, path[i+1:])
		return
	}
	path = path[i+1:]
	if path == "" {
		path = "index.html"
	}
	f, ok := c.files[path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h.Set("Content-Type", f.contentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Length", strconv.Itoa(len(f.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(f.body)
	}
}

// endpoint is one API route: its method and what it does once the caller
// is known to be an operator.
type endpoint struct {
	method string
	// serve appends the answer to out.
	serve func(c *Console, r *http.Request, out []byte) ([]byte, error)
}

// bufPool holds the buffers answers are built in.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// maxPooledBuf is the largest buffer returned to the pool.
const maxPooledBuf = 256 << 10

var endpoints = map[string]endpoint{
	"summary":   {http.MethodGet, (*Console).summary},
	"tasks":     {http.MethodGet, (*Console).tasks},
	"task":      {http.MethodGet, (*Console).task},
	"chart":     {http.MethodGet, (*Console).chart},
	"redeliver": {http.MethodPost, (*Console).redeliver},
	"recover":   {http.MethodPost, (*Console).recoverFailed},
}

// badRequest is a client error answered 400 with its text.
type badRequest string

func (e badRequest) Error() string { return string(e) }

func (c *Console) serveAPI(w http.ResponseWriter, r *http.Request, name string) {
	ep, ok := endpoints[name]
	if !ok {
		apierr.Write(w, http.StatusNotFound, apierr.BadRequest, "no such console endpoint")
		return
	}
	if r.Method != ep.method {
		w.Header().Set("Allow", ep.method)
		apierr.Write(w, http.StatusMethodNotAllowed, apierr.BadRequest, "the method must be "+ep.method)
		return
	}
	if strings.TrimSpace(r.Header.Get("Authorization")) == "" {
		apierr.Write(w, http.StatusBadRequest, apierr.NoToken, "the authorization header is missing")
		return
	}
	p, err := c.auth(r)
	switch {
	case errors.Is(err, handler.ErrAuthUnavailable):
		apierr.Internal(r.Context(), w, c.logger(), "console: authentication failed", err)
		return
	case err != nil:
		apierr.Write(w, http.StatusUnauthorized, apierr.InvalidToken, "the token is not accepted")
		return
	case !c.operator(p):
		apierr.Write(w, http.StatusUnauthorized, apierr.InvalidToken, "the console needs an operator's token")
		return
	}
	if ep.method == http.MethodPost && !jsonContentType(r.Header.Get("Content-Type")) {
		apierr.Write(w, http.StatusBadRequest, apierr.BadRequest, "the Content-Type must be application/json")
		return
	}
	bp := bufPool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= maxPooledBuf {
			bufPool.Put(bp)
		}
	}()
	out, err := ep.serve(c, r, (*bp)[:0])
	if cap(out) > 0 {
		*bp = out[:0] // keep the grown buffer
	}
	if err != nil {
		var bad badRequest
		switch {
		case errors.As(err, &bad):
			apierr.Write(w, http.StatusBadRequest, apierr.BadRequest, string(bad))
		case errors.Is(err, taskstore.ErrInvalid):
			apierr.Write(w, http.StatusBadRequest, apierr.BadRequest, taskstore.Reason(err))
		default:
			apierr.Internal(r.Context(), w, c.logger(), "console: "+name, err)
		}
		return
	}
	h := w.Header()
	h["Content-Type"] = jsonType
	h["Content-Length"] = []string{strconv.Itoa(len(out))}
	w.WriteHeader(http.StatusOK)
	w.Write(out)
}

func jsonContentType(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/json")
}

// summary answers the counts of tasks by status and of callbacks by status:
// eight Find totals with Limit 0, plus the total of all tasks.
func (c *Console) summary(r *http.Request, out []byte) ([]byte, error) {
	ctx := r.Context()
	out = append(out, `{"tasks":{`...)
	for i, st := range taskstore.Statuses {
		_, n, err := c.store.Find(ctx, taskstore.Filter{Status: st})
		if err != nil {
			return nil, err
		}
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, '"')
		out = append(out, st...)
		out = append(out, `":`...)
		out = strconv.AppendInt(out, int64(n), 10)
	}
	out = append(out, `},"callbacks":{`...)
	for i, st := range taskstore.CallbackStatuses {
		_, n, err := c.store.Find(ctx, taskstore.Filter{CallbackStatus: st})
		if err != nil {
			return nil, err
		}
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, '"')
		out = append(out, st...)
		out = append(out, `":`...)
		out = strconv.AppendInt(out, int64(n), 10)
	}
	_, total, err := c.store.Find(ctx, taskstore.Filter{})
	if err != nil {
		return nil, err
	}
	out = append(out, `},"total":`...)
	out = strconv.AppendInt(out, int64(total), 10)
	out = append(out, `,"now":`...)
	out = jsonw.AppendMillis(out, c.now().UnixMilli())
	return append(out, '}'), nil
}

// ListFilter reads the filter of api/tasks from a query string: status,
// callback_status, type, application_id, user_id, trace_id, from and to
// (Unix seconds, inclusive), offset and limit. A bad value gives an error
// naming the parameter.
func ListFilter(q map[string][]string) (taskstore.Filter, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return strings.TrimSpace(v[0])
		}
		return ""
	}
	f := taskstore.Filter{
		ApplicationID:  get("application_id"),
		UserID:         get("user_id"),
		Status:         taskstore.Status(get("status")),
		CallbackStatus: taskstore.CallbackStatus(get("callback_status")),
		Limit:          DefaultLimit,
	}
	if f.Status != "" && !f.Status.Valid() {
		return f, badRequest("status must be one of pending, running, succeeded, failed")
	}
	if f.CallbackStatus != "" && !f.CallbackStatus.Valid() {
		return f, badRequest("callback_status must be one of waiting, pending, delivered, failed")
	}
	if t := get("type"); t != "" {
		f.Types = []string{t}
	}
	if t := get("trace_id"); t != "" {
		f.TraceIDs = []string{t}
	}
	for _, s := range []struct {
		name string
		dst  *time.Time
	}{{"from", &f.CreatedMin}, {"to", &f.CreatedMax}} {
		v := get(s.name)
		if v == "" {
			continue
		}
		sec, err := strconv.ParseFloat(v, 64)
		if err != nil || sec < 0 || sec > 1e11 {
			return f, badRequest(s.name + " must be a number of Unix seconds")
		}
		*s.dst = time.UnixMilli(int64(sec * 1000)).UTC()
		if s.name == "to" {
			// Inclusive to the millisecond given.
			*s.dst = s.dst.Add(time.Millisecond - 1)
		}
	}
	for _, s := range []struct {
		name     string
		dst      *int
		min, max int
	}{{"offset", &f.Offset, 0, 1_000_000}, {"limit", &f.Limit, 1, MaxLimit}} {
		v := get(s.name)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < s.min || n > s.max {
			return f, badRequest(s.name + " must be an integer between " + strconv.Itoa(s.min) + " and " + strconv.Itoa(s.max))
		}
		*s.dst = n
	}
	return f, nil
}

// tasks answers one page of tasks: {"items":[…],"count":N,"offset":…,"limit":…}.
// An item is the summary the list shows (no request or response).
func (c *Console) tasks(r *http.Request, out []byte) ([]byte, error) {
	f, err := ListFilter(r.URL.Query())
	if err != nil {
		return nil, err
	}
	page, total, err := c.store.Find(r.Context(), f)
	if err != nil {
		return nil, err
	}
	out = append(out, `{"items":[`...)
	for i := range page {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendItem(out, &page[i])
	}
	out = append(out, `],"count":`...)
	out = strconv.AppendInt(out, int64(total), 10)
	out = append(out, `,"offset":`...)
	out = strconv.AppendInt(out, int64(f.Offset), 10)
	out = append(out, `,"limit":`...)
	out = strconv.AppendInt(out, int64(f.Limit), 10)
	out = append(out, `,"now":`...)
	out = jsonw.AppendMillis(out, c.now().UnixMilli())
	return append(out, '}'), nil
}

// appendItem appends the list's summary of t: id, trace_id, type, status,
// the principal, the times and the callback's status and attempts.
func appendItem(out []byte, t *taskstore.Task) []byte {
	out = append(out, `{"id":`...)
	out = jsonw.AppendString(out, t.ID)
	if t.TraceID != "" {
		out = append(out, `,"trace_id":`...)
		out = jsonw.AppendString(out, t.TraceID)
	}
	out = append(out, `,"type":`...)
	out = jsonw.AppendString(out, t.Type)
	out = append(out, `,"status":"`...)
	out = append(out, t.Status()...)
	out = append(out, `","created_at":`...)
	out = jsonw.AppendMillis(out, t.CreatedAt.UnixMilli())
	if t.Finished() {
		out = append(out, `,"finished_at":`...)
		out = jsonw.AppendMillis(out, t.FinishedAt.UnixMilli())
		out = append(out, `,"duration":`...)
		out = jsonw.AppendMillis(out, t.FinishedAt.UnixMilli()-t.CreatedAt.UnixMilli())
	}
	if t.ApplicationID != "" {
		out = append(out, `,"application_id":`...)
		out = jsonw.AppendString(out, t.ApplicationID)
	}
	if t.UserID != "" {
		out = append(out, `,"user_id":`...)
		out = jsonw.AppendString(out, t.UserID)
	}
	if cs := t.CallbackStatus(); cs != taskstore.CallbackNone {
		out = append(out, `,"callback":{"status":"`...)
		out = append(out, cs...)
		out = append(out, `","attempts":`...)
		out = strconv.AppendInt(out, int64(t.Callback.Attempts), 10)
		out = append(out, '}')
	}
	return append(out, '}')
}

// task answers one task's wire record, or {} when no task has the id.
func (c *Console) task(r *http.Request, out []byte) ([]byte, error) {
	id := strings.TrimSpace(r.URL.Query().Get("id"))
	if id == "" {
		return nil, badRequest("id is required")
	}
	if storekit.TooLong(id) {
		return append(out, `{}`...), nil
	}
	t, err := c.store.Get(r.Context(), id)
	if errors.Is(err, taskstore.ErrNotFound) {
		return append(out, `{}`...), nil
	}
	if err != nil {
		return out, err
	}
	return t.AppendJSON(out), nil
}

// chart answers the tasks finished over the last ChartMinutes minutes, per
// minute and outcome: {"start":…,"step":60,"succeeded":[…],"failed":[…]},
// start being the first bucket's Unix seconds and the last bucket the
// current minute. Each count is one Find total (Limit 0) with a creation
// window and a status; they run a few at a time.
func (c *Console) chart(r *http.Request, out []byte) ([]byte, error) {
	end := c.now().Truncate(time.Minute).Add(time.Minute) // exclusive end of the current minute
	start := end.Add(-ChartMinutes * time.Minute)
	outcomes := [...]taskstore.Status{taskstore.StatusSucceeded, taskstore.StatusFailed}
	var counts [len(outcomes)][ChartMinutes]int
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	type job struct{ o, m int }
	jobs := make(chan job)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range 4 {
		wg.Go(func() {
			for j := range jobs {
				from := start.Add(time.Duration(j.m) * time.Minute)
				_, n, err := c.store.Find(ctx, taskstore.Filter{
					Status: outcomes[j.o], CreatedMin: from, CreatedMax: from.Add(time.Minute - time.Millisecond),
				})
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
						cancel()
					}
					mu.Unlock()
					continue
				}
				counts[j.o][j.m] = n
			}
		})
	}
feed:
	for o := range outcomes {
		for m := range ChartMinutes {
			select {
			case jobs <- job{o, m}:
			case <-ctx.Done():
				break feed
			}
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := r.Context().Err(); err != nil {
		return nil, err
	}
	out = append(out, `{"start":`...)
	out = strconv.AppendInt(out, start.Unix(), 10)
	out = append(out, `,"step":60`...)
	for o, name := range outcomes {
		out = append(out, `,"`...)
		out = append(out, name...)
		out = append(out, `":[`...)
		for m, n := range counts[o] {
			if m > 0 {
				out = append(out, ',')
			}
			out = strconv.AppendInt(out, int64(n), 10)
		}
		out = append(out, ']')
	}
	return append(out, '}'), nil
}

// readJSON decodes an action's body into v.
func readJSON(r *http.Request, v any) error {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return badRequest("the request body could not be read")
	}
	if len(b) > maxBody {
		return badRequest("the request body is too large")
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("the body must be a JSON object of the action's fields")
	}
	if dec.More() {
		return badRequest("the body must hold one JSON object")
	}
	return nil
}

// redeliver makes the callbacks of the given tasks due again:
// {"ids":[…]} answers {"redelivered":[…],"count":N}.
func (c *Console) redeliver(r *http.Request, out []byte) ([]byte, error) {
	var req struct {
		IDs []string `json:"ids"`
	}
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	if len(req.IDs) == 0 || len(req.IDs) > MaxRedeliver {
		return nil, badRequest("ids must hold 1 to " + strconv.Itoa(MaxRedeliver) + " task ids")
	}
	var (
		done []string
		err  error
	)
	if c.rec != nil {
		done, err = c.rec.Redeliver(r.Context(), req.IDs...)
	} else {
		done, err = c.store.Redeliver(r.Context(), req.IDs, time.Time{})
	}
	if err != nil {
		return nil, err
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

// recoverFailed makes due again the failed callbacks of the tasks finished
// since a time: {"since":<Unix seconds>} answers {"count":N}.
func (c *Console) recoverFailed(r *http.Request, out []byte) ([]byte, error) {
	var req struct {
		Since *float64 `json:"since"`
	}
	if err := readJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Since == nil || *req.Since < 0 || *req.Since > 1e11 {
		return nil, badRequest("since must be a number of Unix seconds")
	}
	since := time.UnixMilli(int64(*req.Since * 1000))
	var n int
	var err error
	if c.rec != nil {
		n, err = c.rec.Recover(r.Context(), since)
	} else {
		n, err = c.storeRecover(r.Context(), since)
	}
	if err != nil {
		return nil, err
	}
	out = append(out, `{"count":`...)
	out = strconv.AppendInt(out, int64(n), 10)
	return append(out, '}'), nil
}

// storeRecover is Recover through the store alone.
func (c *Console) storeRecover(ctx context.Context, since time.Time) (int, error) {
	const batch = 500
	total := 0
	for {
		ids, err := c.store.RedeliverFailed(ctx, "", since, time.Time{}, batch)
		if err != nil {
			return total, err
		}
		total += len(ids)
		if len(ids) < batch {
			return total, nil
		}
	}
}
