package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/handler"
	"github.com/tasksapi/tasks/internal/apierr"
	"github.com/tasksapi/tasks/internal/proxy"
	"github.com/tasksapi/tasks/internal/standin"
	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/sqlitestore"
	"github.com/tasksapi/tasks/taskstore"
)

// route is one image endpoint: its path, the task type callback mode records,
// and the upstream path in proxy mode.
type route struct {
	path, taskType, upstreamPath string
}

var imageRoutes = []route{
	{"/openai/images/generations", "images_generations", "/images/generations"},
	{"/openai/images/edits", "images_edits", "/images/edits"},
	{"/openai/chat/completions", "chat_completions_image", "/chat/completions"},
	{"/v1/images/generations", "images_generations", "/images/generations"},
	{"/v1/images/edits", "images_edits", "/images/edits"},
	{"/v1/chat/completions", "chat_completions_image", "/chat/completions"},
}

// taskTypes are the types the /openai/tasks mount shows.
var taskTypes = []string{"images_generations", "images_edits", "chat_completions_image"}

// run serves until ctx is cancelled, then shuts down gracefully.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))

	store, soleOwner, dbDesc, err := openStore(ctx, cfg.DB, cfg.DBWait, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Error("closing the store", "err", err)
		}
	}()

	op := newOps(cfg, store, log) // metrics, rate limits, console, /readyz
	defer op.metrics.Close()

	var auth handler.Authenticator
	var generated string
	if cfg.Tokens != "" {
		tokens, err := loadTokens(cfg.Tokens)
		if err != nil {
			return err
		}
		auth = handler.Tokens(op.principals(tokens))
	} else {
		generated = randomToken()
		auth = handler.Tokens(op.principals(map[string]tokenEntry{generated: {}}))
	}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Addr, err)
	}
	baseURL := "http://" + ln.Addr().String()

	rec, err := callback.New(store, callback.Options{
		Workers:              cfg.Workers,
		Queue:                cfg.Queue,
		TaskTimeout:          cfg.TaskTimeout,
		Schedule:             cfg.CallbackSchedule,
		Secret:               cfg.CallbackSecret,
		AllowPrivateNetworks: cfg.AllowPrivateCallbacks,
		SoleOwner:            soleOwner,
		Retention:            cfg.Retention,
		AttemptTimeout:       cfg.CallbackTimeout,
		Lease:                cfg.Lease,
		Logger:               log,
		Hooks:                op.metrics.Hooks(),

		MaxBodyBytes:           int64(cfg.MaxBodyBytes),
		MaxRequestBytes:        int64(cfg.MaxRequestBytes),
		QueuePerPrincipal:      cfg.TenantQueue,
		QueueBytes:             int64(cfg.QueueBytes),
		QueueBytesPerPrincipal: int64(cfg.TenantQueueBytes),
		DeliveryWorkers:        cfg.CallbackWorkers,
		DeliveriesPerHost:      cfg.CallbacksPerHost,
		DeliveriesPerPrincipal: cfg.TenantCallbacks,
		ConnectTimeout:         cfg.CallbackConnectTimeout,
		FirstByteTimeout:       cfg.CallbackFirstByteTimeout,
		HostFailures:           cfg.CallbackHostFailures,
		HostPause:              cfg.CallbackHostPause,
		MaxHostPause:           cfg.CallbackHostMaxPause,
		LogInterval:            cfg.CallbackLogInterval,
	})
	if err != nil {
		ln.Close()
		return fmt.Errorf("starting the callback recorder: %w", err)
	}

	guard := newBodyGuard(cfg.BodyTimeout, int64(cfg.BodyMinRate), int64(cfg.MaxBodyBytes), int64(cfg.BodyBudget), log)
	mux, upstreamDesc, err := newMux(cfg, baseURL, store, auth, rec, guard, log)
	if err != nil {
		ln.Close()
		rec.Close(ctx)
		return err
	}
	maxConns, err := fitConns(cfg, log)
	if err != nil {
		ln.Close()
		rec.Close(ctx)
		return err
	}
	lim := newConnLimit(ln, maxConns, func() {
		log.Warn("connection cap reached: the longest-idle connections are closed, new clients wait", "max_conns", maxConns)
	})
	op.mount(mux, auth, rec)
	srv := &http.Server{
		Handler:           guard.deadlines(op.wrap(mux)),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    int(cfg.MaxHeaderBytes),
		ConnState:         lim.track,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lim) }()
	stopMetrics, err := op.serveMetrics()
	if err != nil {
		srv.Close()
		rec.Close(context.Background())
		return err
	}
	defer stopMetrics(context.Background())

	log.Info("listening", "addr", ln.Addr().String(), "url", baseURL)
	log.Info("connections", "max_conns", maxConns, "idle_timeout", cfg.IdleTimeout.String(),
		"read_header_timeout", cfg.ReadHeaderTimeout.String(), "max_header_bytes", int(cfg.MaxHeaderBytes))
	log.Info("request bodies", "body_timeout", cfg.BodyTimeout.String(), "body_min_rate", int64(cfg.BodyMinRate),
		"body_budget", int64(cfg.BodyBudget))
	log.Info("database", "store", dbDesc)
	log.Info("upstream", "mode", upstreamDesc)
	for _, r := range imageRoutes {
		log.Info("route", "method", "POST", "path", r.path, "type", r.taskType)
	}
	log.Info("route", "method", "POST", "path", "/openai/tasks", "api", "tasks")
	log.Info("route", "method", "GET", "path", "/healthz")
	log.Info("route", "method", "GET", "path", "/readyz")
	log.Info("route", "method", "GET", "path", "/metrics", "token", "operator")
	log.Info("route", "method", "GET", "path", "/console/", "token", "operator")
	log.Info("rate limits", "rate", cfg.Rate, "burst", cfg.Burst)
	log.Info("callbacks", "signing", onOff(cfg.CallbackSecret != ""), "private_networks", onOff(cfg.AllowPrivateCallbacks),
		"attempts", len(cfg.CallbackSchedule), "workers", cfg.CallbackWorkers)
	log.Info("queue", "queue", cfg.Queue, "queue_bytes", int64(cfg.QueueBytes), "max_request_bytes", int64(cfg.MaxRequestBytes),
		"batch_bytes", int64(cfg.BatchBytes))
	if cfg.Tokens != "" {
		log.Info("authentication", "tokens_file", cfg.Tokens)
	} else {
		log.Info("authentication", "tokens", "one operator token generated for this run, printed on standard output")
		fmt.Fprintf(stdout, "Operator token for this run (pass -tokens FILE to configure your own):\n\n  %s\n\nTry:\n\n"+
			"  curl -s %s/openai/tasks -H 'authorization: Bearer %s' -H 'content-type: application/json' -d '{\"action\":\"retrieve_batch\"}'\n\n",
			generated, baseURL, generated)
	}

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		rec.Close(context.Background())
		return fmt.Errorf("serving: %w", err)
	}
	op.drain() // /readyz answers 503 from now on
	log.Info("shutting down", "grace", cfg.Grace.String())
	grace, cancel := context.WithTimeout(context.Background(), cfg.Grace)
	defer cancel()
	if err := srv.Shutdown(grace); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	if err := rec.Close(grace); err != nil {
		log.Warn("recorder shutdown", "err", err)
	}
	log.Info("stopped")
	return nil
}

// fitConns returns the connection cap: -max-conns, lowered to what the
// process's open-file limit can hold. Each client connection takes a
// descriptor, and in proxy mode one more for its upstream request; the store,
// the callback deliveries and the running tasks need some of their own.
func fitConns(cfg config, log *slog.Logger) (int, error) {
	nofile, ok := openFileLimit()
	if !ok {
		return cfg.MaxConns, nil
	}
	n := connsForFiles(nofile, cfg.Upstream != "", 64+cfg.Workers+cfg.CallbackWorkers)
	if n < 1 {
		return 0, fmt.Errorf("the open-file limit (%d) leaves no room for client connections: raise it (ulimit -n)", nofile)
	}
	if n < cfg.MaxConns {
		log.Warn("-max-conns lowered to fit the open-file limit", "max_conns", n, "open_file_limit", nofile)
		return n, nil
	}
	return cfg.MaxConns, nil
}

// connsForFiles returns how many client connections an open-file limit of
// nofile holds, keeping reserve descriptors for everything else.
func connsForFiles(nofile uint64, proxy bool, reserve int) int {
	if nofile > 1<<30 {
		return 1 << 30
	}
	n := int(nofile) - reserve
	if proxy {
		n /= 2
	}
	return n
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func randomToken() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return "tsk_" + hex.EncodeToString(b)
}

// openStore opens the store -db names. soleOwner is true when this process
// is the only one using it (so unfinished tasks found at start are from a
// dead process). wait is -db-wait: how long to wait for a PostgreSQL
// database that cannot be reached yet (a local file needs no waiting). The
// SQLite store logs to log (migrations, space given back, the details of
// failures).
func openStore(ctx context.Context, db string, wait time.Duration, log *slog.Logger) (s taskstore.Store, soleOwner bool, desc string, err error) {
	switch {
	case db == ":memory:":
		return memstore.New(), true, "memory (tasks are lost on exit)", nil
	case strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://"):
		return openPostgres(ctx, db, wait, log)
	default:
		st, err := sqlitestore.Open(db, sqlitestore.WithLogger(log))
		if err != nil {
			return nil, false, "", err
		}
		return st, true, "sqlite " + db, nil
	}
}

// newMux builds the routes. It returns a description of the upstream mode.
// The routes that read bodies into memory take their share of the body
// budget, the image routes once the caller is authenticated.
func newMux(cfg config, baseURL string, store taskstore.Store, auth handler.Authenticator, rec *callback.Recorder, guard *bodyGuard, log *slog.Logger) (*http.ServeMux, string, error) {
	mux := http.NewServeMux()
	var upstream func(r route) http.Handler
	var desc string
	if cfg.Upstream != "" {
		p, err := proxy.New(proxy.Options{Upstream: cfg.Upstream, Key: cfg.UpstreamKey, Logger: log})
		if err != nil {
			return nil, "", err
		}
		upstream = func(r route) http.Handler { return p.Handler(r.upstreamPath) }
		desc = "proxy to " + proxy.LogURL(cfg.Upstream) // no query string: it may hold a key
	} else {
		g := standin.New(standin.Options{Delay: cfg.StandinDelay, BaseURL: baseURL})
		upstream = func(r route) http.Handler {
			switch r.taskType {
			case "images_edits":
				return g.Edits()
			case "chat_completions_image":
				return g.ChatCompletions()
			default:
				return g.Generations()
			}
		}
		mux.Handle("GET /files/", g.Files())
		desc = "built-in stand-in generator (delay " + cfg.StandinDelay.String() + ")"
	}
	for _, r := range imageRoutes {
		// Wrap holds callback-mode bodies in memory and streams the others
		// (spilling to a temporary file while it looks for callback_url);
		// capBody holds them all to -max-body-bytes.
		wrapped := rec.Wrap(r.taskType, upstream(r))
		mux.Handle(r.path, postOnly(handler.Authenticate(auth, guard.limit(int64(cfg.MaxBodyBytes),
			capBody(int64(cfg.MaxBodyBytes), wrapped)))))
	}
	mux.Handle("/openai/tasks", guard.limit(handler.MaxBodyBytes,
		handler.New(store, auth, handler.WithTypes(taskTypes...), handler.WithLogger(log), handler.WithRedeliverer(rec),
			handler.WithPageBytes(int(cfg.BatchBytes)))))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "application/json")
		if _, err := store.Get(ctx, "healthz"); err != nil && !errors.Is(err, taskstore.ErrNotFound) {
			log.Warn("health check failed", "err", err)
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"status":"unavailable"}`)
			return
		}
		io.WriteString(w, `{"status":"ok"}`)
	})
	return mux, desc, nil
}

// postOnly answers any method but POST with the contract's 405.
func postOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			apierr.Write(w, http.StatusMethodNotAllowed, apierr.BadRequest, "method "+r.Method+" not allowed; use POST")
			return
		}
		next.ServeHTTP(w, r)
	})
}
