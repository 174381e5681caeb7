package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/handler"
	"github.com/tasksapi/tasks/handler/console"
	"github.com/tasksapi/tasks/internal/apierr"
	"github.com/tasksapi/tasks/internal/metrics"
	"github.com/tasksapi/tasks/internal/ratelimit"
	"github.com/tasksapi/tasks/taskstore"
)

// ops is what operating tasksd adds around its routes: Prometheus metrics,
// per-token rate limits, the console, /metrics and /readyz.
type ops struct {
	cfg      config
	store    taskstore.Store
	log      *slog.Logger
	metrics  *metrics.Metrics
	limiter  *ratelimit.Limiter
	limits   map[[sha256.Size]byte]ratelimit.Limit // by token digest
	draining atomic.Bool                           // SIGTERM received: not ready
	routes   sync.Map                              // route pattern → instrumented handler
}

func newOps(cfg config, store taskstore.Store, log *slog.Logger) *ops {
	return &ops{
		cfg: cfg, store: store, log: log,
		metrics: metrics.New(metrics.Options{Store: store, Logger: log}),
		limiter: ratelimit.New(nil),
	}
}

// principals returns the principal of each token, for handler.Tokens, and
// records each token's rate limit: its own rate and burst, else the flags'.
func (o *ops) principals(tokens map[string]tokenEntry) map[string]taskstore.Principal {
	out := make(map[string]taskstore.Principal, len(tokens))
	o.limits = make(map[[sha256.Size]byte]ratelimit.Limit, len(tokens))
	for tok, e := range tokens {
		out[tok] = e.Principal
		lim := ratelimit.Limit{Rate: o.cfg.Rate, Burst: o.cfg.Burst}
		if e.Rate != nil {
			lim.Rate = *e.Rate
		}
		if e.Burst != nil {
			lim.Burst = *e.Burst
		}
		if lim.Burst == 0 {
			lim.Burst = max(1, int(math.Ceil(lim.Rate)))
		}
		o.limits[sha256.Sum256([]byte(tok))] = lim
	}
	return out
}

// mount adds the console, /metrics (operators only) and /readyz to mux.
func (o *ops) mount(mux *http.ServeMux, auth handler.Authenticator, rec *callback.Recorder) {
	o.metrics.WatchRecorder(rec.Stats)
	con := console.New(o.store, auth, console.WithRecorder(rec), console.WithLogger(o.log))
	mux.Handle("/console/", con)
	mux.Handle("/console/api/", con) // its own route: metrics label and rate limits
	mux.Handle("GET /metrics", operatorOnly(auth, o.metrics.Handler()))
	mux.HandleFunc("GET /readyz", o.readyz)
}

// public lists the routes that need no token: no rate limit applies.
var public = map[string]bool{"/healthz": true, "/readyz": true, "/files/": true, "/console/": true}

// wrap instruments every route of mux (tasksd_http_* labelled by its
// pattern, without the method) and applies the per-token rate limits to the
// authenticated ones.
func (o *ops) wrap(mux *http.ServeMux) http.Handler {
	limited := o.limiter.Middleware(o.limitKey, mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pattern := mux.Handler(r)
		route := pattern
		if i := strings.IndexByte(route, ' '); i >= 0 {
			route = route[i+1:]
		}
		if route == "" {
			route = "other" // no route matched: 404 or 405
		}
		h, ok := o.routes.Load(route)
		if !ok {
			next := http.Handler(limited)
			if public[route] || route == "other" {
				next = mux
			}
			h, _ = o.routes.LoadOrStore(route, o.metrics.Middleware(route, next))
		}
		h.(http.Handler).ServeHTTP(w, r)
	})
}

// limitKey is the rate-limit key of a request: the digest of a known bearer
// token (the handler authenticates it; an unknown token is refused there,
// not limited here).
func (o *ops) limitKey(r *http.Request) (string, ratelimit.Limit, bool) {
	tok, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		return "", ratelimit.Limit{}, false
	}
	d := sha256.Sum256([]byte(tok))
	lim, ok := o.limits[d]
	if !ok || lim.Off() {
		return "", lim, false
	}
	return string(d[:]), lim, true
}

// bearer extracts the token of "Authorization: Bearer <token>" exactly as
// handler.Tokens reads it.
func bearer(h string) (string, bool) {
	const scheme = "bearer"
	h = strings.TrimSpace(h)
	if len(h) <= len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return "", false
	}
	if c := h[len(scheme)]; c != ' ' && c != '\t' {
		return "", false
	}
	tok := strings.TrimSpace(h[len(scheme):])
	return tok, tok != ""
}

// operatorOnly lets only operators (an empty application and user) reach
// next; others get the contract's 401 invalid_token.
func operatorOnly(auth handler.Authenticator, next http.Handler) http.Handler {
	return handler.Authenticate(auth, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p, _ := taskstore.FromContext(r.Context()); !p.IsOperator() {
			apierr.Write(w, http.StatusUnauthorized, apierr.InvalidToken, "this route needs an operator's token")
			return
		}
		next.ServeHTTP(w, r)
	}))
}

// readyz answers 200 while the store answers a cheap query and tasksd is
// not shutting down, else 503.
func (o *ops) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if o.draining.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"status":"shutting down"}`)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, err := o.store.Get(ctx, "readyz"); err != nil && !errors.Is(err, taskstore.ErrNotFound) {
		o.log.Warn("readiness check failed", "err", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"status":"unavailable"}`)
		return
	}
	io.WriteString(w, `{"status":"ready"}`)
}

// serveMetrics serves /metrics without a token on cfg.MetricsAddr, when
// set. The returned stop shuts it down.
func (o *ops) serveMetrics() (stop func(context.Context), err error) {
	if o.cfg.MetricsAddr == "" {
		return func(context.Context) {}, nil
	}
	ln, err := net.Listen("tcp", o.cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("listening on -metrics-addr %s: %w", o.cfg.MetricsAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", o.metrics.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(o.log.Handler(), slog.LevelWarn)}
	go srv.Serve(ln)
	o.log.Info("metrics", "addr", ln.Addr().String(), "path", "/metrics", "token", "none")
	return func(ctx context.Context) { srv.Shutdown(ctx) }, nil
}

// drain makes /readyz answer 503 and waits -shutdown-delay, while requests
// are still served, so that a load balancer stops sending new ones.
func (o *ops) drain() {
	o.draining.Store(true)
	if d := o.cfg.ShutdownDelay; d > 0 {
		o.log.Info("not ready; still serving", "shutdown_delay", d.String())
		time.Sleep(d)
	}
}
