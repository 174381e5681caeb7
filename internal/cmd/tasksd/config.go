package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/handler"
	"github.com/tasksapi/tasks/taskstore"
)

// config is everything the command line and environment can set.
type config struct {
	Addr                  string
	DB                    string
	DBWait                time.Duration
	Tokens                string
	Upstream              string
	UpstreamKey           string
	CallbackSecret        string
	AllowPrivateCallbacks bool
	CallbackSchedule      callback.Schedule
	TaskTimeout           time.Duration
	Workers               int
	Queue                 int
	Retention             time.Duration
	StandinDelay          time.Duration
	Grace                 time.Duration
	CallbackTimeout       time.Duration
	Lease                 time.Duration

	// Limits of callback mode and the Tasks API (package callback's and
	// handler's options).
	MaxBodyBytes             byteSize
	MaxRequestBytes          byteSize
	TenantQueue              int // 0: Queue/4
	QueueBytes               byteSize
	TenantQueueBytes         byteSize // 0: QueueBytes/4
	CallbackWorkers          int
	CallbacksPerHost         int // 0: CallbackWorkers/2
	TenantCallbacks          int // 0: 3×CallbackWorkers/4
	CallbackConnectTimeout   time.Duration
	CallbackFirstByteTimeout time.Duration
	CallbackHostFailures     int
	CallbackHostPause        time.Duration
	CallbackHostMaxPause     time.Duration
	CallbackLogInterval      time.Duration
	BatchBytes               byteSize

	// Limits of the HTTP server.
	MaxConns          int
	IdleTimeout       time.Duration
	ReadHeaderTimeout time.Duration
	MaxHeaderBytes    byteSize
	BodyTimeout       time.Duration
	BodyMinRate       byteSize // per second
	BodyBudget        byteSize

	// Operations.
	Rate          float64
	Burst         int
	MetricsAddr   string
	ShutdownDelay time.Duration
}

// Bounds of -max-header-bytes.
const (
	minHeaderBytes = 4 << 10
	maxHeaderBytes = 1 << 20
)

// parseConfig reads flags from args, falling back to TASKSD_<FLAG> variables
// from getenv for every flag not given on the command line.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := newFlagSet(&c)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		env := "TASKSD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(env); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				// The value may be a secret: name the variable, not the value.
				errs = append(errs, fmt.Errorf("%s: invalid value for -%s", env, f.Name))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	switch {
	case c.Workers < 1:
		return c, errors.New("-workers must be at least 1")
	case c.Queue < 1:
		return c, errors.New("-queue must be at least 1")
	case c.TaskTimeout <= 0:
		return c, errors.New("-task-timeout must be positive")
	case c.Retention < 0:
		return c, errors.New("-retention must not be negative")
	case c.DBWait < 0:
		return c, errors.New("-db-wait must not be negative")
	case c.StandinDelay < 0:
		return c, errors.New("-standin-delay must not be negative")
	case c.CallbackTimeout <= 0:
		return c, errors.New("-callback-timeout must be positive")
	case c.Lease <= c.CallbackTimeout:
		return c, errors.New("-lease must be longer than -callback-timeout")
	case c.UpstreamKey != "" && c.Upstream == "":
		return c, errors.New("-upstream-key needs -upstream")
	case c.MaxConns < 1:
		return c, errors.New("-max-conns must be at least 1")
	case c.IdleTimeout <= 0:
		return c, errors.New("-idle-timeout must be positive")
	case c.ReadHeaderTimeout <= 0:
		return c, errors.New("-read-header-timeout must be positive")
	case c.MaxHeaderBytes < minHeaderBytes || c.MaxHeaderBytes > maxHeaderBytes:
		return c, errors.New("-max-header-bytes must be between 4KiB and 1MiB")
	case c.BodyTimeout <= 0:
		return c, errors.New("-body-timeout must be positive")
	case c.BodyBudget < 1<<20:
		return c, errors.New("-body-budget must be at least 1MiB")
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return c, errors.New("-rate must be a number of requests per second, 0 or more")
	case c.Burst < 0:
		return c, errors.New("-burst must not be negative")
	case c.ShutdownDelay < 0:
		return c, errors.New("-shutdown-delay must not be negative")
	case c.MaxBodyBytes < 1<<10:
		return c, errors.New("-max-body-bytes must be at least 1KiB")
	case c.MaxRequestBytes < 1<<10:
		return c, errors.New("-max-request-bytes must be at least 1KiB")
	case c.TenantQueue < 0:
		return c, errors.New("-tenant-queue must not be negative")
	case c.QueueBytes < 1<<20:
		return c, errors.New("-queue-bytes must be at least 1MiB")
	case c.CallbackWorkers < 1:
		return c, errors.New("-callback-workers must be at least 1")
	case c.CallbacksPerHost < 0 || c.TenantCallbacks < 0:
		return c, errors.New("-callbacks-per-host and -tenant-callbacks must not be negative")
	case c.CallbackConnectTimeout <= 0 || c.CallbackFirstByteTimeout <= 0:
		return c, errors.New("-callback-connect-timeout and -callback-first-byte-timeout must be positive")
	case c.CallbackHostFailures < 1:
		return c, errors.New("-callback-host-failures must be at least 1")
	case c.CallbackHostPause <= 0 || c.CallbackHostMaxPause < c.CallbackHostPause:
		return c, errors.New("-callback-host-pause must be positive and -callback-host-max-pause at least as long")
	case c.CallbackLogInterval <= 0:
		return c, errors.New("-callback-log-interval must be positive")
	case c.BatchBytes < 1<<10:
		return c, errors.New("-batch-bytes must be at least 1KiB")
	}
	return c, nil
}

// tokenEntry is one token of a tokens file: the principal it
// authenticates and, optionally, its own request rate and burst.
type tokenEntry struct {
	taskstore.Principal
	Rate  *float64 `json:"rate,omitempty"`
	Burst *int     `json:"burst,omitempty"`
}

// loadTokens reads a tokens file: a JSON object from bearer token to
// principal, each entry optionally with "rate" and "burst".
// Errors never quote the file's content (it holds secrets).
func loadTokens(path string) (map[string]tokenEntry, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading tokens file: %w", err)
	}
	var m map[string]tokenEntry
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err = dec.Decode(&m)
	if _, end := dec.Token(); err == nil && end != io.EOF {
		err = errors.New("data after the object") // a second object or garbage: refuse, do not ignore
	}
	if err != nil {
		return nil, fmt.Errorf("tokens file %s is not a JSON object of token → {application_id, user_id, credential_id, rate, burst}", path)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("tokens file %s defines no token", path)
	}
	for tok, e := range m {
		if strings.TrimSpace(tok) == "" || strings.ContainsAny(tok, " \t\r\n") {
			return nil, fmt.Errorf("tokens file %s: a token is empty or contains white space", path)
		}
		if (e.Rate != nil && (*e.Rate < 0 || math.IsNaN(*e.Rate) || math.IsInf(*e.Rate, 0))) || (e.Burst != nil && *e.Burst < 0) {
			return nil, fmt.Errorf("tokens file %s: a token's rate or burst is negative", path)
		}
	}
	return m, nil
}

// newFlagSet defines every flag of tasksd on c, with its default and its
// usage line. The README's flag table must say the same (TestREADMEFlags).
func newFlagSet(c *config) *flag.FlagSet {
	fs := flag.NewFlagSet("tasksd", flag.ContinueOnError)
	fs.StringVar(&c.Addr, "addr", "127.0.0.1:8080", "listen address")
	fs.StringVar(&c.DB, "db", "tasks.db", "SQLite file; \":memory:\" keeps tasks in memory; a postgres:// URL uses PostgreSQL")
	fs.DurationVar(&c.DBWait, "db-wait", time.Minute, "with PostgreSQL, how long to wait at start for a database that cannot be reached yet, logging each try; 0 exits at once")
	fs.StringVar(&c.Tokens, "tokens", "", `JSON file {"<token>": {"application_id": "…", "user_id": "…", "credential_id": "…"}, …}; without it a random operator token is printed at start`)
	fs.StringVar(&c.Upstream, "upstream", "", "base URL of an OpenAI-compatible API (e.g. https://api.openai.com/v1); without it the stand-in generator answers")
	fs.StringVar(&c.UpstreamKey, "upstream-key", "", "bearer key sent upstream (prefer TASKSD_UPSTREAM_KEY)")
	fs.StringVar(&c.CallbackSecret, "callback-secret", "", "whsec_… secret: callbacks are signed with Standard Webhooks (prefer TASKSD_CALLBACK_SECRET)")
	fs.BoolVar(&c.AllowPrivateCallbacks, "allow-private-callbacks", false, "allow callbacks to loopback and private networks")
	c.CallbackSchedule = callback.DefaultSchedule()
	fs.Var(&c.CallbackSchedule, "callback-schedule", "delays before each delivery attempt; its length is the number of attempts")
	fs.DurationVar(&c.TaskTimeout, "task-timeout", callback.DefaultTaskTimeout, "longest a task may run")
	fs.IntVar(&c.Workers, "workers", 4*runtime.GOMAXPROCS(0), "tasks running at once")
	fs.IntVar(&c.Queue, "queue", callback.DefaultQueue, "tasks waiting for a worker; beyond it requests get 429")
	fs.DurationVar(&c.Retention, "retention", 720*time.Hour, "tasks older than this are pruned; 0 keeps them")
	fs.DurationVar(&c.StandinDelay, "standin-delay", time.Second, "how long the stand-in generator takes")
	fs.DurationVar(&c.CallbackTimeout, "callback-timeout", callback.DefaultAttemptTimeout, "longest one callback delivery attempt may take")
	fs.DurationVar(&c.Lease, "lease", callback.DefaultLease, "how long a claim on a task or a delivery lasts; after a crash, claimed deliveries are retried once it expires (must exceed -callback-timeout)")
	fs.DurationVar(&c.Grace, "grace", 30*time.Second, "on SIGINT/SIGTERM, how long running tasks may take to finish")
	fs.IntVar(&c.MaxConns, "max-conns", 1024, "client connections open at once; at the cap the longest-idle keep-alive connection is closed to make room, else new clients wait; lowered at start to fit the open-file limit")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", time.Minute, "a keep-alive connection idle this long is closed")
	fs.DurationVar(&c.ReadHeaderTimeout, "read-header-timeout", 10*time.Second, "longest time a client may take to send a request's line and headers")
	c.MaxHeaderBytes = 32 << 10
	fs.Var(&c.MaxHeaderBytes, "max-header-bytes", "largest request line and headers (4KiB to 1MiB); larger ones are answered 431")
	fs.DurationVar(&c.BodyTimeout, "body-timeout", 20*time.Second, "a request body whose next bytes take longer than this is cut (its connection closed); also the longest wait for room in -body-budget")
	c.BodyMinRate = 64 << 10
	fs.Var(&c.BodyMinRate, "body-min-rate", "bytes per second a request body must average: it is cut unless complete within -body-timeout plus its length at this rate; 0 for no minimum")
	c.BodyBudget = 256 << 20
	fs.Var(&c.BodyBudget, "body-budget", "bytes of request bodies over 64KiB held at once, from their handler's start to its answer (the declared length counts up front); beyond it a request waits up to -body-timeout, then gets 429")
	fs.Float64Var(&c.Rate, "rate", 0, `requests per second per token on authenticated routes; 0 = no limit (a tokens file entry's "rate" overrides it)`)
	fs.IntVar(&c.Burst, "burst", 0, `requests a token may make at once; 0 = -rate rounded up, at least 1 (a tokens file entry's "burst" overrides it)`)
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "", "also serve /metrics on this address without a token, for a scraper on a private port (e.g. 127.0.0.1:9090)")
	fs.DurationVar(&c.ShutdownDelay, "shutdown-delay", 0, "on SIGINT/SIGTERM, how long /readyz answers 503 while requests are still served, before shutting down")
	c.MaxBodyBytes = callback.DefaultMaxBodyBytes
	fs.Var(&c.MaxBodyBytes, "max-body-bytes", "largest body the image routes accept, synchronous requests too; larger ones get 400 (callback-mode bodies are held in memory, others streamed)")
	c.MaxRequestBytes = callback.DefaultMaxRequestBytes
	fs.Var(&c.MaxRequestBytes, "max-request-bytes", "largest request a task stores (compacted JSON; a form's fields as JSON strings, its files by name, type, size and hash); larger callback-mode requests get 400")
	fs.IntVar(&c.TenantQueue, "tenant-queue", 0, "of the -queue places, how many one tenant (application and user) may take; beyond it that tenant gets 429; 0 means -queue/4")
	c.QueueBytes = callback.DefaultQueueBytes
	fs.Var(&c.QueueBytes, "queue-bytes", "bytes of request bodies held for tasks from acceptance to the end of their run; beyond it 429")
	fs.Var(&c.TenantQueueBytes, "tenant-queue-bytes", "of -queue-bytes, how much one tenant's tasks may hold; 0 means -queue-bytes/4")
	fs.IntVar(&c.CallbackWorkers, "callback-workers", callback.DefaultDeliveryWorkers, "callback deliveries in flight at once")
	fs.IntVar(&c.CallbacksPerHost, "callbacks-per-host", 0, "callback deliveries in flight to one receiver (host and port); 0 means -callback-workers/2")
	fs.IntVar(&c.TenantCallbacks, "tenant-callbacks", 0, "callback deliveries in flight for one tenant's tasks; 0 means 3/4 of -callback-workers")
	fs.DurationVar(&c.CallbackConnectTimeout, "callback-connect-timeout", callback.DefaultConnectTimeout, "longest a callback delivery may take to resolve and connect")
	fs.DurationVar(&c.CallbackFirstByteTimeout, "callback-first-byte-timeout", callback.DefaultFirstByteTimeout, "longest a receiver may take to answer a callback once sent")
	fs.IntVar(&c.CallbackHostFailures, "callback-host-failures", callback.DefaultHostFailures, "failed attempts in a row (no answer, timeout, 5xx, 408, 429) after which a receiver is paused")
	fs.DurationVar(&c.CallbackHostPause, "callback-host-pause", callback.DefaultHostPause, "first pause of a failing receiver; doubled while its probe fails")
	fs.DurationVar(&c.CallbackHostMaxPause, "callback-host-max-pause", callback.DefaultMaxHostPause, "longest pause of a failing receiver")
	fs.DurationVar(&c.CallbackLogInterval, "callback-log-interval", callback.DefaultLogInterval, "failed callback deliveries are summed up in the log once per receiver per interval")
	c.BatchBytes = handler.DefaultPageBytes
	fs.Var(&c.BatchBytes, "batch-bytes", "a retrieve_batch answer stops adding items once their requests and responses hold this many bytes (fewer items, same count)")
	return fs
}
