package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/internal/webhook"
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
	CallbackSchedule      webhook.Schedule
	TaskTimeout           time.Duration
	Workers               int
	Queue                 int
	Retention             time.Duration
	StandinDelay          time.Duration
	Grace                 time.Duration
	CallbackTimeout       time.Duration
	Lease                 time.Duration

	// Limits of the HTTP server.
	MaxConns          int
	IdleTimeout       time.Duration
	ReadHeaderTimeout time.Duration
	MaxHeaderBytes    byteSize
	BodyTimeout       time.Duration
	BodyMinRate       byteSize // per second
	BodyBudget        byteSize
}

// Bounds of -max-header-bytes.
const (
	minHeaderBytes = 4 << 10
	maxHeaderBytes = 1 << 20
)

// scheduleFlag adapts webhook.Schedule to flag.Value.
type scheduleFlag struct{ s *webhook.Schedule }

func (f scheduleFlag) String() string {
	if f.s == nil {
		return ""
	}
	return f.s.String()
}

func (f scheduleFlag) Set(v string) error {
	s, err := webhook.ParseSchedule(v)
	if err != nil {
		return err
	}
	*f.s = s
	return nil
}

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
	}
	return c, nil
}

// loadTokens reads a tokens file: a JSON object from bearer token to principal.
// Errors never quote the file's content (it holds secrets).
func loadTokens(path string) (map[string]taskstore.Principal, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading tokens file: %w", err)
	}
	var m map[string]taskstore.Principal
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err = dec.Decode(&m)
	if _, end := dec.Token(); err == nil && end != io.EOF {
		err = errors.New("data after the object") // a second object or garbage: refuse, do not ignore
	}
	if err != nil {
		return nil, fmt.Errorf("tokens file %s is not a JSON object of token → {application_id, user_id, credential_id}", path)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("tokens file %s defines no token", path)
	}
	for tok := range m {
		if strings.TrimSpace(tok) == "" || strings.ContainsAny(tok, " \t\r\n") {
			return nil, fmt.Errorf("tokens file %s: a token is empty or contains white space", path)
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
	c.CallbackSchedule = append(webhook.Schedule(nil), webhook.DefaultSchedule...)
	fs.Var(scheduleFlag{&c.CallbackSchedule}, "callback-schedule", "delays before each delivery attempt; its length is the number of attempts")
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
	return fs
}
