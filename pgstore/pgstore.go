package pgstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/jmoiron/sqlx"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// Pool defaults; see the With… options.
const (
	DefaultMaxOpenConns    = 25
	DefaultMaxIdleConns    = 25
	DefaultConnMaxLifetime = 30 * time.Minute
	DefaultConnMaxIdleTime = 5 * time.Minute
)

// Option configures Open.
type Option func(*config)

type config struct {
	maxOpen, maxIdle int
	lifetime, idle   time.Duration
	logger           *slog.Logger
	retries          int
	grace, wait      time.Duration
}

// WithMaxOpenConns limits the number of open connections to PostgreSQL
// (default DefaultMaxOpenConns). Several replicas each open this many: keep
// their sum below the server's max_connections. n <= 0 means no limit.
func WithMaxOpenConns(n int) Option { return func(c *config) { c.maxOpen = n } }

// WithMaxIdleConns sets how many idle connections the pool keeps (default
// DefaultMaxIdleConns, capped at the open limit). n <= 0 keeps none.
func WithMaxIdleConns(n int) Option { return func(c *config) { c.maxIdle = n } }

// WithConnMaxLifetime closes connections older than d (default
// DefaultConnMaxLifetime), so that the pool follows a fail-over or a
// changed DNS name. d <= 0 keeps them forever.
func WithConnMaxLifetime(d time.Duration) Option { return func(c *config) { c.lifetime = d } }

// WithConnMaxIdleTime closes connections idle longer than d (default
// DefaultConnMaxIdleTime). d <= 0 keeps them.
func WithConnMaxIdleTime(d time.Duration) Option { return func(c *config) { c.idle = d } }

// WithLogger sets the logger for migrations (Info), the database becoming
// unavailable (Warn, once) and available again (Info), the waits of
// WithStartupWait (Warn) and each retry (Debug). Without it, or with nil,
// they go to slog.Default() as it is when Open is called; pass
// slog.New(slog.DiscardHandler) to log nothing.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithRetries sets how many times an operation is retried after a
// serialization failure or a deadlock; default 3. 0 disables those
// retries.
func WithRetries(n int) Option { return func(c *config) { c.retries = max(n, 0) } }

// DefaultRetryGrace is how long a call keeps retrying while the database is
// unavailable, unless WithRetryGrace says otherwise.
const DefaultRetryGrace = 5 * time.Second

// WithRetryGrace sets how long a call keeps retrying, with backoff (up to
// half a second between tries), while the database cannot be reached:
// connecting fails, the server is starting up or shutting down, or the
// connection broke. Reads and the writes that are safe to repeat (see the
// package documentation) retry all of these; the others (Delete, Prune,
// RedeliverFailed) only the failures that prove their statement never
// reached the server. Past the grace, or when the call's context ends
// first, the call fails with an error that wraps taskstore.ErrUnavailable.
// Default DefaultRetryGrace; 0 turns these retries off.
func WithRetryGrace(d time.Duration) Option { return func(c *config) { c.grace = max(d, 0) } }

// WithStartupWait makes Open wait up to d for a database that cannot be
// reached (not yet started, restarting, or refusing connections while it
// starts up): it tries to connect again with backoff (a quarter of a second,
// doubling up to 5 s), logging each wait at Warn level, until it succeeds,
// d has passed or ctx ends. Errors that waiting does not cure (a refused
// password, a missing database, a schema too new) fail Open at once.
// Default 0: Open fails at the first unavailable answer.
func WithStartupWait(d time.Duration) Option { return func(c *config) { c.wait = max(d, 0) } }

// Store is a taskstore.Store on PostgreSQL. It is safe for concurrent use by
// many goroutines and many processes.
type Store struct {
	db      *sqlx.DB
	log     *slog.Logger
	retries int
	grace   time.Duration
	// closing is closed when Close starts: calls stop waiting to retry.
	closing chan struct{}
	// down: the last call found the database unavailable (since
	// downSince); see health.
	down      atomic.Bool
	healthMu  sync.Mutex
	downSince time.Time
	// young: the tasks table was empty or had never been analysed when the
	// store opened; created counts the tasks it has stored since (see
	// grew).
	young    atomic.Bool
	created  atomic.Int64
	closed   atomic.Bool
	mu       sync.RWMutex   // held for reading while a call enters; Close takes it to shut the door
	inflight sync.WaitGroup // calls admitted by enter
	creates  createQueue
	// lastFold is when Prune last folded the count stripes (Unix
	// nanoseconds).
	lastFold atomic.Int64
	// Group commit of Start, Finish and RecordAttempt (batch.go).
	starts, finishes, records *updateKind
	// bgCtx is the context of statements that serve several callers (a
	// batch of creates); Close cancels it.
	bgCtx    context.Context
	bgCancel context.CancelFunc
}

var _ taskstore.Store = (*Store)(nil)

// Open connects to the PostgreSQL database at url (a URL or keyword/value
// connection string as pgx accepts it), brings its schema up to date and
// returns the store. ctx bounds connecting and migrating only. When the
// database cannot be reached, Open fails with an error wrapping
// taskstore.ErrUnavailable, or first waits for it with WithStartupWait.
func Open(ctx context.Context, url string, opts ...Option) (*Store, error) {
	c := config{
		maxOpen: DefaultMaxOpenConns, maxIdle: DefaultMaxIdleConns,
		lifetime: DefaultConnMaxLifetime, idle: DefaultConnMaxIdleTime,
		retries: 3, grace: DefaultRetryGrace,
	}
	for _, o := range opts {
		o(&c)
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		// pgx redacts the password in its parse errors.
		return nil, fmt.Errorf("pgstore: invalid database URL: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(c.maxOpen)
	if c.maxOpen > 0 && c.maxIdle > c.maxOpen {
		c.maxIdle = c.maxOpen
	}
	db.SetMaxIdleConns(c.maxIdle)
	db.SetConnMaxLifetime(c.lifetime)
	db.SetConnMaxIdleTime(c.idle)
	s := &Store{db: sqlx.NewDb(db, "pgx"), log: c.logger, retries: c.retries, grace: c.grace, closing: make(chan struct{})}
	s.starts, s.finishes, s.records = newUpdateKinds()
	s.bgCtx, s.bgCancel = context.WithCancel(context.Background())
	if err := s.waitAndMigrate(ctx, c.wait); err != nil {
		s.bgCancel()
		db.Close()
		return nil, err
	}
	return s, nil
}

// Backoff of WithStartupWait.
const (
	startupFirst = 250 * time.Millisecond
	startupMax   = 5 * time.Second
)

// waitAndMigrate migrates the schema, trying again with backoff for up to
// wait while the database is unavailable.
func (s *Store) waitAndMigrate(ctx context.Context, wait time.Duration) error {
	began := time.Now()
	pause := startupFirst
	for {
		err := s.migrate(ctx)
		if err == nil || !errors.Is(err, taskstore.ErrUnavailable) || ctx.Err() != nil {
			return err
		}
		left := wait - time.Since(began)
		if left <= 0 {
			if wait > 0 {
				return fmt.Errorf("%w (waited %v for the database)", err, wait)
			}
			return err
		}
		pause = min(pause, left)
		s.log.LogAttrs(ctx, slog.LevelWarn, "pgstore: waiting for the database",
			slog.String("error", err.Error()), slog.Duration("retry_in", pause),
			slog.Duration("waited", time.Since(began).Round(time.Millisecond)), slog.Duration("wait", wait))
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("pgstore: open: %w (while waiting for the database: %w)", ctx.Err(), err)
		case <-t.C:
		}
		pause = min(2*pause, startupMax)
	}
}

// Ping asks the database for an answer, once, without retrying, within
// ctx: nil when it answers, else an error that wraps
// taskstore.ErrUnavailable when it cannot be reached (taskstore.ErrClosed
// after Close). It suits a readiness check.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()
	err := s.conn(ctx, func(c *pgx.Conn) error { return c.Ping(ctx) })
	switch f := classify(err); {
	case err == nil && s.down.Load():
		s.health(ctx, nil)
	case err != nil && (f == failUnsent || f == failLost):
		s.health(ctx, err)
	}
	return s.translate(ctx, "ping", err)
}

// Close waits for the calls in flight, closes the connection pool and
// waits for the store's goroutines. It is idempotent; the other methods
// return taskstore.ErrClosed afterwards.
func (s *Store) Close() error {
	if s.db == nil {
		return errNotOpen
	}
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(s.closing) // calls waiting to retry give up now
	// No call enters once closed is set and mu has been taken; the calls
	// already in (a Create included, whose batch runs under bgCtx) finish
	// before the pool closes and the batch context is cancelled, so a
	// call's answer always tells whether its write happened.
	s.mu.Lock()
	s.mu.Unlock()
	s.inflight.Wait()
	err := s.db.Close()
	s.bgCancel()
	s.creates.workers.Wait()
	if err != nil {
		return fmt.Errorf("pgstore: close: %w", err)
	}
	return nil
}

// taskColumns are the columns of a row, in the order of the row struct.
const taskColumns = `id, trace_id, type, created_ms, started_ms, finished_ms, application_id, user_id,
credential_id, callback_url, attempts, next_attempt_ms, delivered_ms, last_status, last_error, lease_ms,
request, response, recorder`

// row is one row of the tasks table.
type row struct {
	ID            string
	TraceID       string
	Type          string
	CreatedMs     int64
	StartedMs     int64
	FinishedMs    int64
	ApplicationID string
	UserID        string
	CredentialID  string
	CallbackURL   string
	Attempts      int
	NextAttemptMs int64
	DeliveredMs   int64
	LastStatus    int
	LastError     string
	LeaseMs       int64
	// JSON columns scan into []byte: pgx gives each Scan a new slice, and
	// NULL gives nil.
	Request  []byte
	Response []byte
	Recorder string
}

func (r *row) task() taskstore.Task {
	return taskstore.Task{
		ID: r.ID, TraceID: r.TraceID, Type: r.Type,
		Request: r.Request, Response: r.Response,
		CreatedAt:     storekit.FromMillis(r.CreatedMs),
		StartedAt:     storekit.FromMillis(r.StartedMs),
		FinishedAt:    storekit.FromMillis(r.FinishedMs),
		ApplicationID: r.ApplicationID, UserID: r.UserID, CredentialID: r.CredentialID,
		Callback: taskstore.Callback{
			URL: r.CallbackURL, Attempts: r.Attempts,
			NextAttemptAt: storekit.FromMillis(r.NextAttemptMs),
			DeliveredAt:   storekit.FromMillis(r.DeliveredMs),
			LastStatus:    r.LastStatus, LastError: r.LastError,
		},
		LeaseUntil: storekit.FromMillis(r.LeaseMs),
		Recorder:   r.Recorder,
	}
}

// dest returns the scan destinations of the row's columns, after lead (the
// destinations of columns selected before taskColumns).
func (r *row) dest(lead ...any) []any {
	return append(lead, &r.ID, &r.TraceID, &r.Type, &r.CreatedMs, &r.StartedMs, &r.FinishedMs,
		&r.ApplicationID, &r.UserID, &r.CredentialID, &r.CallbackURL, &r.Attempts, &r.NextAttemptMs,
		&r.DeliveredMs, &r.LastStatus, &r.LastError, &r.LeaseMs, &r.Request, &r.Response, &r.Recorder)
}

// conn runs fn on a pooled connection, as pgx's own *pgx.Conn. The pool,
// its limits and its lifecycle are database/sql's; the statements, their
// arguments and the scanning are pgx's native ones, which skip
// database/sql's per-column conversions (half the client CPU of a Get).
func (s *Store) conn(ctx context.Context, fn func(*pgx.Conn) error) error {
	c, err := s.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Raw(func(dc any) error { return fn(dc.(*stdlib.Conn).Conn()) })
}

// exec runs a statement and returns the number of rows it changed.
func (s *Store) exec(ctx context.Context, query string, args ...any) (n int64, err error) {
	err = s.conn(ctx, func(c *pgx.Conn) error {
		tag, err := c.Exec(ctx, query, args...)
		n = tag.RowsAffected()
		return err
	})
	return n, err
}

// selectTasks runs a query whose columns are taskColumns, preceded by one
// bigint column when withLead is set (whose values it returns as leads).
// capHint is the number of rows expected at most.
func (s *Store) selectTasks(ctx context.Context, withLead bool, capHint int, query string, args ...any) (out []taskstore.Task, leads []int64, err error) {
	return s.selectPage(ctx, withLead, capHint, 0, query, args...)
}

// selectPage is selectTasks that, with pageBytes > 0, stops once the tasks
// read weigh pageBytes (taskstore.Filter.PageBytes): the rows after are
// discarded as they arrive, never kept.
func (s *Store) selectPage(ctx context.Context, withLead bool, capHint, pageBytes int, query string, args ...any) (out []taskstore.Task, leads []int64, err error) {
	capHint = min(max(capHint, 0), 1000)
	err = s.conn(ctx, func(c *pgx.Conn) error {
		rs, err := c.Query(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rs.Close()
		out = make([]taskstore.Task, 0, capHint)
		if withLead {
			leads = make([]int64, 0, capHint)
		}
		var r row
		var lead int64
		d := r.dest()
		if withLead {
			d = r.dest(&lead)
		}
		weight := 0
		for rs.Next() {
			if pageBytes > 0 && weight >= pageBytes {
				break
			}
			if err := rs.Scan(d...); err != nil {
				return err
			}
			// Scan gives the JSON columns fresh slices, so tasks never
			// share memory.
			out = append(out, r.task())
			weight += storekit.Weight(out[len(out)-1])
			if withLead {
				leads = append(leads, lead)
			}
		}
		return rs.Err()
	})
	return out, leads, err
}

// enter is the common preamble of every method: a done context or a closed
// store stops the call before it reaches the database.
func (s *Store) enter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch {
	case s.closed.Load():
		return taskstore.ErrClosed
	case s.db == nil:
		return errNotOpen
	}
	s.inflight.Add(1)
	return nil
}

// leave ends a call admitted by enter.
func (s *Store) leave() { s.inflight.Done() }

// checkText refuses what PostgreSQL text cannot hold: NUL characters (and,
// for the fields storekit.Normalize does not check, invalid UTF-8).
func checkText(t taskstore.Task) error {
	for _, f := range []struct{ name, v string }{
		{"id", t.ID}, {"trace_id", t.TraceID}, {"type", t.Type}, {"application_id", t.ApplicationID},
		{"user_id", t.UserID}, {"credential_id", t.CredentialID},
	} {
		if strings.IndexByte(f.v, 0) >= 0 {
			return storekit.Invalidf("%s must not contain NUL characters", f.name)
		}
	}
	for _, f := range []struct{ name, v string }{
		{"callback url", t.Callback.URL}, {"callback last_error", t.Callback.LastError},
	} {
		if !storable(f.v) {
			return storekit.Invalidf("%s must be valid UTF-8 without NUL characters", f.name)
		}
	}
	return nil
}

// storable reports whether PostgreSQL text can hold v, i.e. whether a stored
// value can equal it.
func storable(v string) bool {
	return utf8.ValidString(v) && strings.IndexByte(v, 0) < 0
}

const getTask = `SELECT ` + taskColumns + ` FROM tasks WHERE id = $1`

// Get returns the task with the given id; see taskstore.Store.
func (s *Store) Get(ctx context.Context, id string) (taskstore.Task, error) {
	if err := s.enter(ctx); err != nil {
		return taskstore.Task{}, err
	}
	defer s.leave()
	if id == "" || !storable(id) {
		return taskstore.Task{}, fmt.Errorf("%w: task %q", taskstore.ErrNotFound, id)
	}
	var r row
	err := s.do(ctx, "get", idempotent, func() error {
		return s.conn(ctx, func(c *pgx.Conn) error {
			return c.QueryRow(ctx, getTask, id).Scan(r.dest()...)
		})
	})
	if errors.Is(err, taskstore.ErrNotFound) {
		return taskstore.Task{}, fmt.Errorf("%w: task %q", taskstore.ErrNotFound, id)
	}
	if err != nil {
		return taskstore.Task{}, err
	}
	return r.task(), nil
}

// Find returns a page of the tasks matching f and their total; see
// taskstore.Store. A non-empty page and its total come from one statement,
// hence from one snapshot.
func (s *Store) Find(ctx context.Context, f taskstore.Filter) ([]taskstore.Task, int, error) {
	if err := s.enter(ctx); err != nil {
		return nil, 0, err
	}
	defer s.leave()
	if err := f.Validate(); err != nil {
		return nil, 0, err
	}
	q, ok := buildFind(f)
	if !ok { // nothing can match
		return []taskstore.Task{}, 0, nil
	}
	if f.Limit == 0 {
		total, err := s.count(ctx, q)
		return []taskstore.Task{}, total, err
	}
	var page []taskstore.Task
	var totals []int64
	err := s.do(ctx, "find", idempotent, func() (err error) {
		page, totals, err = s.selectPage(ctx, true, f.Limit, f.PageBytes, q.page, q.pageArgs(f)...)
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	if len(page) == 0 {
		// No page (the offset is past the end, or nothing matches): the
		// total still has to be counted.
		total, err := s.count(ctx, q)
		return []taskstore.Task{}, total, err
	}
	return page, int(totals[0]), nil
}

func (s *Store) count(ctx context.Context, q findQuery) (int, error) {
	var total int64
	err := s.do(ctx, "count", idempotent, func() error {
		return s.conn(ctx, func(c *pgx.Conn) error {
			return c.QueryRow(ctx, q.count, q.countArgs()...).Scan(&total)
		})
	})
	return int(total), err
}

// The statements on one row found by its id (or on a list of ids) write
// their conditions on the status columns so that they imply no partial
// index's predicate (finished_ms + 0 = 0 rather than finished_ms = 0, and
// so on): the planner then always reads the row through the primary key.
// Otherwise, with statistics that take a partial index for nearly empty
// (tasks_outbox, analysed while no callback was pending; tasks_unfinished,
// analysed while nothing ran), it may plan the statement as a scan of that
// whole index filtered by id: 300 µs instead of 20 for a RecordAttempt with
// 4,000 pending callbacks (BenchmarkServerCPU, TestSingleRowPlans).
const (
	startTask = `UPDATE tasks SET started_ms = $2 WHERE id = $1 AND started_ms = 0 AND finished_ms + 0 = 0`
	taskState = `SELECT started_ms, finished_ms, callback_url, delivered_ms, next_attempt_ms, claim_ms,
last_status, last_error FROM tasks WHERE id = $1`
)

// Start records that work on the task started; see taskstore.Store. A zero
// at means now.
func (s *Store) Start(ctx context.Context, id string, at time.Time) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()
	ms := storekit.MillisOrNow(at)
	n, err := s.batched(ctx, s.starts, id, ms)
	if err != nil || n == 1 {
		return err
	}
	st, err := s.state(ctx, "start", id)
	switch {
	case err != nil:
		return err
	case st.FinishedMs == 0 && st.StartedMs == ms:
		return nil // a repeat (see taskstore.Store)
	case st.FinishedMs != 0:
		return fmt.Errorf("%w: task %q has already finished", taskstore.ErrConflict, id)
	case st.StartedMs != 0:
		return fmt.Errorf("%w: task %q has already started", taskstore.ErrConflict, id)
	}
	// It changed between the two statements: say so rather than guess.
	return fmt.Errorf("%w: task %q changed concurrently", taskstore.ErrConflict, id)
}

const finishTask = `UPDATE tasks SET response = $2, finished_ms = $3, success = $4, lease_ms = 0,
next_attempt_ms = CASE WHEN callback_url <> '' THEN $3 ELSE next_attempt_ms END
WHERE id = $1 AND finished_ms + 0 = 0`

// sameFinish tells whether a finished task holds exactly this response
// (json keeps its input text, so ::text gives the stored bytes back) and
// finish time; no row means no such task.
const sameFinish = `SELECT finished_ms = $2 AND response::text = $3 FROM tasks WHERE id = $1`

// Finish records the task's response and whether it is a success
// (taskstore.Succeeded) once, clears its lease and makes its callback due,
// in one statement; see taskstore.Store. A zero at means now.
func (s *Store) Finish(ctx context.Context, id string, response json.RawMessage, at time.Time) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()
	if err := storekit.CheckResponse(response); err != nil {
		return err
	}
	ms := storekit.MillisOrNow(at)
	n, err := s.batched(ctx, s.finishes, id, string(response), ms, taskstore.Succeeded(response))
	if err != nil || n == 1 {
		return err
	}
	// Nothing changed: no such task, another finish, or this one already
	// applied (a repeat, see taskstore.Store).
	var same bool
	err = s.do(ctx, "finish", idempotent, func() error {
		return s.conn(ctx, func(c *pgx.Conn) error {
			return c.QueryRow(ctx, sameFinish, id, ms, string(response)).Scan(&same)
		})
	})
	switch {
	case errors.Is(err, taskstore.ErrNotFound):
		return fmt.Errorf("%w: task %q", taskstore.ErrNotFound, id)
	case err != nil:
		return err
	case same:
		return nil
	}
	return fmt.Errorf("%w: task %q has already finished", taskstore.ErrConflict, id)
}

// update runs a single-row UPDATE keyed by id (the first argument) under
// retry policy p and returns the number of rows changed. An unstorable id
// changes nothing.
func (s *Store) update(ctx context.Context, op string, p retryPolicy, query, id string, args ...any) (int64, error) {
	if !storable(id) {
		return 0, nil
	}
	var n int64
	err := s.do(ctx, op, p, func() (err error) {
		n, err = s.exec(ctx, query, append([]any{id}, args...)...)
		return err
	})
	return n, err
}

type state struct {
	StartedMs     int64  `db:"started_ms"`
	FinishedMs    int64  `db:"finished_ms"`
	CallbackURL   string `db:"callback_url"`
	DeliveredMs   int64  `db:"delivered_ms"`
	NextAttemptMs int64  `db:"next_attempt_ms"`
	ClaimMs       int64  `db:"claim_ms"`
	LastStatus    int    `db:"last_status"`
	LastError     string `db:"last_error"`
}

// state reads the columns that explain why a conditional update changed
// nothing, or gives ErrNotFound.
func (s *Store) state(ctx context.Context, op, id string) (state, error) {
	var st state
	if !storable(id) || id == "" {
		return st, fmt.Errorf("%w: task %q", taskstore.ErrNotFound, id)
	}
	err := s.do(ctx, op, idempotent, func() error {
		return s.db.QueryRowxContext(ctx, taskState, id).StructScan(&st)
	})
	if errors.Is(err, taskstore.ErrNotFound) {
		return st, fmt.Errorf("%w: task %q", taskstore.ErrNotFound, id)
	}
	return st, err
}

// Delete removes the task and its pending delivery; see taskstore.Store.
func (s *Store) Delete(ctx context.Context, id string) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()
	// Not retried once it may have reached the server: a repeat of a
	// delete that was applied would answer ErrNotFound.
	n, err := s.update(ctx, "delete", safeIfUnsent, `DELETE FROM tasks WHERE id = $1`, id)
	if err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%w: task %q", taskstore.ErrNotFound, id)
	}
	return nil
}

// pruneTasks deletes the oldest tasks first. Rows locked by a concurrent
// statement (another replica's Prune, a Finish in flight) are skipped, so
// concurrent prunes never wait for each other or delete the same rows.
const pruneTasks = `WITH victims AS MATERIALIZED (
	SELECT id FROM tasks WHERE created_ms < $1 ORDER BY created_ms, id LIMIT $2 FOR UPDATE SKIP LOCKED
)
DELETE FROM tasks WHERE id = ANY(ARRAY(SELECT id FROM victims))`

// foldRows is the most count stripes a Prune folds; foldEvery is how often
// Prune folds while a pass goes on.
const (
	foldRows  = 10_000
	foldEvery = 10 * time.Second
)

// Prune deletes at most limit tasks created before the given time, oldest
// first; see taskstore.Store. Tasks locked by a concurrent write at that
// moment are left for the next call. It then folds up to foldRows count
// stripes (tasks_fold_counts) when it deleted fewer than limit (the end of
// a pass) or foldEvery has passed since this store last folded: a fold
// costs about as much as deleting 250 tasks (600 keys, 6 ms each), so a
// pass of many small calls folds now and then, not after each. A failure
// there changes no count and is only logged, since the tasks were deleted.
func (s *Store) Prune(ctx context.Context, before time.Time, limit int) (int, error) {
	if err := s.enter(ctx); err != nil {
		return 0, err
	}
	defer s.leave()
	if err := storekit.CheckLimit(limit); err != nil {
		return 0, err
	}
	var n int64
	// Not retried after a lost connection: the DELETE may have committed,
	// and a repeat would delete up to limit more tasks and report only its
	// own count.
	err := s.do(ctx, "prune", safeIfUnsent, func() (err error) {
		n, err = s.exec(ctx, pruneTasks, storekit.CeilMillis(before), limit)
		return err
	})
	if err != nil {
		return int(n), err
	}
	if last := s.lastFold.Load(); n < int64(limit) || time.Since(time.Unix(0, last)) >= foldEvery {
		if s.lastFold.CompareAndSwap(last, time.Now().UnixNano()) {
			if err := s.foldCounts(ctx); err != nil {
				s.log.LogAttrs(ctx, slog.LevelWarn, "pgstore: folding the task counts", slog.String("error", err.Error()))
			}
		}
	}
	return int(n), nil
}

// foldCounts folds up to foldRows count stripes into one row per key
// (tasks_fold_counts).
func (s *Store) foldCounts(ctx context.Context) error {
	return s.do(ctx, "fold counts", idempotent, func() error {
		_, err := s.exec(ctx, `SELECT tasks_fold_counts($1)`, foldRows)
		return err
	})
}

// renewLeases locks the unfinished rows among $1 that no other statement
// holds, skipping the others rather than waiting for them (a Start or
// Finish being written, a Delete or Prune), and sets their lease. It never
// waits for a row lock, so it never deadlocks either; lease_ms is in no
// index, so the update is HOT where the page has room.
const renewLeases = `WITH l AS MATERIALIZED (
	SELECT id FROM tasks WHERE id = ANY($1) AND finished_ms + 0 = 0 FOR UPDATE SKIP LOCKED
)
UPDATE tasks SET lease_ms = $2 WHERE id = ANY(ARRAY(SELECT id FROM l)) AND finished_ms + 0 = 0`

// RenewLeases sets the lease of the given unfinished tasks; see
// taskstore.Store. A task whose row another statement holds at that moment
// is skipped, as the Store contract allows: the next renewal covers it.
func (s *Store) RenewLeases(ctx context.Context, ids []string, until time.Time) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()
	ids = storableOnly(ids)
	if len(ids) == 0 {
		return nil
	}
	ms := storekit.ToMillis(until)
	return s.do(ctx, "renew leases", idempotent, func() error {
		_, err := s.exec(ctx, renewLeases, ids, ms)
		return err
	})
}

// abandonedTasks reads the unfinished tasks of recorder $3
// (tasks_unfinished) and sorts those whose lease ended by lease: no index
// holds lease_ms, so that lease renewals are HOT updates.
const abandonedTasks = `SELECT ` + taskColumns + ` FROM tasks
WHERE finished_ms = 0 AND lease_ms < $1 AND recorder = $3 ORDER BY lease_ms, id LIMIT $2`

// Abandoned returns at most limit unfinished tasks of the recorder whose
// lease ended before the given time, oldest lease first; see
// taskstore.Store.
func (s *Store) Abandoned(ctx context.Context, recorder string, before time.Time, limit int) ([]taskstore.Task, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := taskstore.CheckRecorder(recorder); err != nil {
		return nil, err
	}
	if err := storekit.CheckLimit(limit); err != nil {
		return nil, err
	}
	var out []taskstore.Task
	err := s.do(ctx, "abandoned", idempotent, func() (err error) {
		out, _, err = s.selectTasks(ctx, false, limit, abandonedTasks, storekit.CeilMillis(before), limit, recorder)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// claimDeliveries locks up to $3 due deliveries of recorder $4 (a range of
// tasks_outbox, which leads with the recorder), skipping rows another
// claimer holds, and moves their due time to the end of the claim, which it
// also writes to claim_ms (the delivery is in flight), in one statement. It
// returns the old due time for ordering. (The rows are found again by
// "id = ANY(ARRAY(…))", which the planner always runs as primary key
// lookups, never as a join over the table.)
var claimDeliveries = `WITH due AS MATERIALIZED (
	SELECT id, next_attempt_ms FROM tasks
	WHERE callback_url <> '' AND finished_ms <> 0 AND delivered_ms = 0 AND next_attempt_ms <> 0
	  AND recorder = $4 AND next_attempt_ms <= $1
	ORDER BY next_attempt_ms, id LIMIT $3
	FOR UPDATE SKIP LOCKED
), claimed AS (
	UPDATE tasks SET next_attempt_ms = $2, claim_ms = $2 WHERE id = ANY(ARRAY(SELECT id FROM due))
	RETURNING ` + taskColumns + `
)
SELECT due.next_attempt_ms AS due_ms, ` + claimColumns + ` FROM claimed c JOIN due ON due.id = c.id`

// claimColumns is taskColumns qualified with the alias c.
var claimColumns = func() string {
	cols := strings.Split(taskColumns, ",")
	for i, c := range cols {
		cols[i] = "c." + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}()

// ClaimDeliveries claims at most limit due callbacks of the recorder,
// earliest due first; see taskstore.Store. A zero now or a negative lease
// is invalid; a zero lease leaves them due at once.
func (s *Store) ClaimDeliveries(ctx context.Context, recorder string, now time.Time, lease time.Duration, limit int) ([]taskstore.Task, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := storekit.CheckClaim(recorder, now, lease, limit); err != nil {
		return nil, err
	}
	var claimed []taskstore.Task
	var due []int64
	// Retrying after a lost connection is safe: a claim whose answer was
	// lost only delays those deliveries until the claim expires.
	err := s.do(ctx, "claim deliveries", idempotent, func() (err error) {
		claimed, due, err = s.selectTasks(ctx, true, limit, claimDeliveries, now.UnixMilli(), storekit.ToMillis(now.Add(lease)), limit, recorder)
		return err
	})
	if err != nil {
		return nil, err
	}
	// Earliest due first, then by id (RETURNING gives no order).
	order := make([]int, len(claimed))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		if c := cmp.Compare(due[a], due[b]); c != 0 {
			return c
		}
		return strings.Compare(claimed[a].ID, claimed[b].ID)
	})
	out := make([]taskstore.Task, len(claimed))
	for i, k := range order {
		out[i] = claimed[k]
	}
	return out, nil
}

// recordAttempt records an attempt on a pending callback, unless the
// callback records it already (unclaimed and due at the attempt's next
// time, with its status and error: a repeat of a rescheduling attempt, see
// taskstore.Store).
const recordAttempt = `UPDATE tasks SET attempts = attempts + 1, last_status = $2, last_error = $3,
delivered_ms = $4, next_attempt_ms = $5, claim_ms = 0
WHERE id = $1 AND callback_url <> '' AND finished_ms <> 0 AND delivered_ms = 0 AND next_attempt_ms + 0 <> 0
AND NOT (claim_ms = 0 AND next_attempt_ms = $5 AND last_status = $2 AND last_error = $3)`

// RecordAttempt records the outcome of a delivery attempt and ends the claim
// on it; see taskstore.Store. A delivered attempt with a zero At is
// delivered now. The error text is stored with invalid UTF-8 replaced and
// NUL characters removed.
func (s *Store) RecordAttempt(ctx context.Context, id string, a taskstore.Attempt) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()
	delivered, next := storekit.AttemptMillis(a)
	msg := strings.ReplaceAll(strings.ToValidUTF8(a.Error, "\uFFFD"), "\x00", "")
	n, err := s.batched(ctx, s.records, id, a.Status, msg, delivered, next)
	if err != nil || n == 1 {
		return err
	}
	st, err := s.state(ctx, "record attempt", id)
	if err != nil {
		return err
	}
	// Every outcome ends the claim and sets delivered_ms and
	// next_attempt_ms: a callback that shows them all is a repeat.
	if st.CallbackURL != "" && st.FinishedMs != 0 && st.DeliveredMs == delivered && st.NextAttemptMs == next &&
		st.ClaimMs == 0 && st.LastStatus == a.Status && st.LastError == msg {
		return nil
	}
	why := taskstore.Task{
		FinishedAt: storekit.FromMillis(st.FinishedMs),
		Callback: taskstore.Callback{URL: st.CallbackURL,
			NextAttemptAt: storekit.FromMillis(st.NextAttemptMs), DeliveredAt: storekit.FromMillis(st.DeliveredMs)},
	}.CallbackStatus()
	return fmt.Errorf("%w: the callback of task %q is %s, not pending", taskstore.ErrConflict, id, why)
}

// storableOnly returns the values a stored string can equal.
func storableOnly(vs []string) []string {
	for _, v := range vs {
		if !storable(v) {
			out := make([]string, 0, len(vs))
			for _, v := range vs {
				if storable(v) {
					out = append(out, v)
				}
			}
			return out
		}
	}
	return vs
}

// errNotOpen is what a Store not made by Open answers.
var errNotOpen = errors.New("pgstore: Store not created with Open")
