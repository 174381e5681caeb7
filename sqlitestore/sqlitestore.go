// Package sqlitestore is a taskstore.Store kept in a SQLite database file,
// for a server that wants its tasks and pending callbacks to survive a
// restart without running a database server. It uses the pure-Go driver
// modernc.org/sqlite (no cgo).
//
//	s, err := sqlitestore.Open("/var/lib/tasksd/tasks.db")
//	if err != nil {
//		return err
//	}
//	defer s.Close()
//
// # Connections
//
// Open sets the PRAGMAs in the connection string, so that each connection
// gets them when it opens: the writer's and the checkpointer's get the WAL
// journal, busy_timeout and synchronous=NORMAL (WithSynchronousFull trades
// write speed for durability across power loss); the read connections get
// busy_timeout and query_only. All writes go through one connection owned by a single
// writer goroutine; reads use separate query_only connections
// (WithReadConns), which in WAL mode never wait for the writer. A third
// connection checkpoints the WAL in the background, at most every 100ms
// while there are writes, so that writes do not wait for checkpoints (the
// writer's own checkpoint remains as a safety net for a WAL of 64 MiB).
// Once the WAL holds 16 MiB, that connection also makes SQLite start it
// over (a RESTART checkpoint, during which writes wait a few milliseconds),
// and the WAL file is cut back to 16 MiB: under a steady load the WAL stays
// near 16 MiB instead of growing to the safety net (checkpoint.go).
//
// Reads (Get, Find, Abandoned, Walk) do not go through database/sql: each call
// borrows one of the read connections of the driver for its duration
// (waiting, while all are busy, until its context is done) and runs
// statements prepared once on that connection, reading each task as one
// packed value. Find reads the first page and the total in one statement,
// and a later page as the count and then the page in one read transaction
// (as it reads a status filter with a key: the counters, then the page),
// so that the total and the page always agree. A context cancelled while a
// statement runs interrupts it (sqlite3_interrupt), which leaves the
// connection usable unless a read transaction was open. A read connection
// on which anything else failed (an I/O error, corruption, a busy timeout,
// a panic) is closed, and the next read opens a new one in its place, so
// a failure never leaves a connection in a half-done state for the next
// caller. Close waits for the calls in flight, then closes every
// connection.
//
// The writer commits in groups: write calls that arrive while a transaction
// is being written queue up and are then run together in one
// BEGIN IMMEDIATE … COMMIT. Each call still gets its own result: an
// ErrConflict or ErrNotFound of one call does not fail the others, and no call
// returns before the transaction holding its write has committed.
//
// An in-memory database (":memory:") is refused: every pooled connection
// would get a database of its own. Use the memstore package instead.
//
// # Schema
//
// The schema is created and upgraded by SQL migrations embedded in the
// package, applied in order, each in its own transaction, with the version
// recorded in PRAGMA user_version. Open upgrades a database written by an
// older version of this package and refuses one written by a newer version.
//
// Every filter Find accepts runs on an index, never on a pass over the
// table. Filters on a user, an application, one type, one trace id or only
// the creation window read the page straight out of an index in page order
// (newest first), so LIMIT stops early; lists of ids or trace ids sort their
// few matches; a list of types merges each type's newest entries. The total
// of a filter made only of application, user and types is the sum of
// counters kept by triggers, so a user holding a million tasks is counted
// in a few rows; other totals count the index range. The planner is told
// which index to use (INDEXED BY), so plans do not change with the data.
//
// # Task and callback status
//
// A task's status (pending, running, succeeded, failed) and its callback's
// status (none, waiting, pending, delivered, failed) are one generated
// column, state (10×status + callback, e.g. 34 for a failed task whose
// callback was given up), computed when read from the times, the callback
// URL and three 0/1 columns the rows keep:
//
//   - failed: the task finished with a response that is not a success.
//     Create and Finish decide it in Go with taskstore.Succeeded; SQL never
//     parses a response.
//   - gave_up: the callback was given up (RecordAttempt's last attempt, or
//     a task created that way); Redeliver clears it.
//   - claimed: ClaimDeliveries handed the delivery out; until RecordAttempt
//     or Redeliver clears it, the delivery is in flight for as long as its
//     due time (the claim's expiry) is in the future.
//
// These columns come after the request and response (schema version 3 added
// them with ALTER TABLE, which appends), but SQLite keeps 0 and 1 in the
// row's header and nowhere else, so reading them never follows a large
// row's overflow pages, and setting one never changes a row's size (so a
// claim still rewrites only the page that changed, not the overflow
// chain of a large response; a row written before version 3 gains the
// columns at its first update).
//
// Tasks in a final state (finished, and the callback, if any, delivered or
// given up) are listed by state and creation time in the partial index
// tasks_done, which a task enters once and never leaves unless redelivered;
// its entries also carry the application, user and type. The transient
// states are found through the partial indexes that hold exactly them,
// tasks_lease (unfinished tasks) and tasks_outbox (callbacks due or being
// retried). So creating, starting, claiming and retrying write no status
// index at all.
//
// A status filter alone (or with the window) merges, newest first, each
// final state's range of tasks_done with the matching transient tasks; with
// ids or trace ids it is checked on their rows. With a user, an
// application or types there are two ways to the page: along the key's
// index, reading each task's row to check its state (cheap when the
// statuses asked for are common among the key's tasks), or along the status
// indexes, skipping the tasks of other keys inside tasks_done (cheap when
// the statuses are rare). Find reads the counters first and takes the way
// that reads less, in the read transaction that then reads the page.
//
// task_counts keeps, for each (application, user, type), the number of
// tasks in each of the twelve states next to the total, and task_totals the
// same numbers for all tasks in one row, both maintained by triggers: on
// insert and delete, and on an update of a column the state is computed
// from (a start, a finish, a delivered or given-up callback, a redelivery;
// not a claim or a retry). So the total of a filter made of application,
// user, types and statuses is a sum over the same few rows as without
// statuses, and without a key (the empty filter, a status alone) it is one
// row.
//
// Redeliver and RedeliverFailed read and change the rows in one write
// transaction (BEGIN IMMEDIATE holds SQLite's write lock), so that no claim
// or attempt of this or another process comes in between. RedeliverFailed
// reads one recorder's range of tasks_failed (failed callbacks by recorder
// and finish time), never every task.
// FinishMany is one UPDATE … FROM json_each(…) RETURNING over the id index,
// one write call however many tasks it finishes.
//
// Every task carries its recorder's name (taskstore.Task.Recorder, the
// column recorder, schema version 4): tasks_outbox and tasks_lease lead
// with it, so a claim and the abandoned tasks of one recorder are one range
// of their index whatever other recorders hold. It is a TEXT column after
// the response, read by those queries from the indexes alone; old rows read
// its default, the empty string, without being rewritten.
//
// Opening a database of schema version 2 (the previous release) migrates it
// in one transaction: the three columns are added (old rows read their
// default without being rewritten), the failed flag is set on finished
// tasks whose stored response taskstore.Succeeded does not accept (run
// inside SQLite through a function the package registers with the driver
// under the name sqlitestore_succeeded), gave_up on the callbacks given up,
// tasks_done is built and the counters rebuilt from the rows. It reads the
// table a few times and rewrites only the rows it flags; a million tasks
// (a 790 MB file) took 14 seconds on two cores, and tasks_done added 11%
// to the file. No claim made by the
// previous release is taken as in flight. Stop every process of the
// previous release first: it would write tasks without the new columns.
//
// Version 4 adds the recorder column (no row rewritten) and rebuilds
// tasks_outbox and tasks_lease, and builds tasks_failed, from the rows
// they index (the pending callbacks, unfinished tasks and failed
// callbacks: the table is read once per index; 200,000 tasks, a 141 MB
// file, took 0.8 s on two cores). A process of version 3
// must be stopped first: its claims would take every recorder's callbacks.
//
// Several processes may open the same file (their writes serialize on
// SQLite's lock, waiting up to the busy timeout); group commit works within
// each process.
//
// # Space
//
// Deleted tasks (Prune, Delete) leave free pages in the file, which later
// writes reuse. A file created by this package has auto_vacuum=INCREMENTAL:
// after deletes, a background vacuumer gives the free pages beyond a
// reserve (4 MiB, or an eighth of the pages in use when that is more) back
// to the file system, 2 MiB per write call of the writer and at most a
// tenth of its time, and logs one line (WithLogger) for each run of such
// work; the file shrinks as checkpoints copy the change. A file created by
// an older version (auto_vacuum off) keeps its size: Open logs that a VACUUM,
// run offline, changes it (vacuum.go).
//
// # Errors
//
// Methods return the taskstore sentinels (ErrNotFound, ErrConflict,
// ErrClosed) or the context's error wrapped with the operation name, and
// ErrInvalid wrapped with a message naming the field (see taskstore.Reason).
// Any other failure is an *Error naming the operation and the SQLite
// result code (Code, e.g. "SQLITE_FULL"), which unwraps to the driver's
// error; its message never contains SQL or file paths (the details go to
// the logger, see WithLogger). Errors from Open do name the path,
// since they are meant for the operator who chose it.
//
// Before each group commit the writer checks that the path still names the
// file it opened: once the file (or its directory) is removed or replaced,
// SQLite would keep writing to the unlinked file and lose everything at
// Close, so writes fail with ErrFileGone instead.
//
// # Bulk loads
//
// Import stores many tasks in one all-or-nothing transaction (a duplicate id
// gives ErrConflict and stores none), for migrations and benchmarks.
package sqlitestore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/tasksapi/tasks/taskstore"
)

// Option configures Open.
type Option func(*options)

type options struct {
	syncFull    bool
	readConns   int
	busyTimeout time.Duration
	logger      *slog.Logger
	newFile     bool // set by Open: the file is absent or empty, so auto_vacuum can be set
}

// WithSynchronousFull sets PRAGMA synchronous=FULL: every commit is synced to
// disk, so a committed task survives a power loss, at the cost of write
// throughput. The default, NORMAL, is safe against a crash of the process and
// may lose the last commits only on a power loss or operating system crash.
func WithSynchronousFull() Option { return func(o *options) { o.syncFull = true } }

// WithReadConns sets how many read connections Get, Find, Abandoned and Walk
// share (default: the larger of 4 and GOMAXPROCS); a read waits while all
// are busy. Each connection keeps its own page cache (SQLite's default,
// about 2 MiB) and its own prepared statements. Values below 1 are treated
// as 1.
func WithReadConns(n int) Option { return func(o *options) { o.readConns = max(n, 1) } }

// WithBusyTimeout sets how long a connection waits for a lock held by
// another connection or process before failing (default 10s).
func WithBusyTimeout(d time.Duration) Option {
	return func(o *options) { o.busyTimeout = max(d, 0) }
}

// WithLogger sets the logger that receives the details of system failures
// (the SQLite message, which callers never see) and of schema migrations,
// WAL checkpoints and vacuums. Without it, or with nil, they go to
// slog.Default() as it is when Open is called; pass
// slog.New(slog.DiscardHandler) to log nothing.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Store is a taskstore.Store on a SQLite database file. It is safe for
// concurrent use. Create one with Open and release it with Close.
type Store struct {
	log   *slog.Logger
	wdb   *sqlx.DB // the single writer connection, owned by w
	w     *writer
	reads *readPool // the query_only read connections
	vac   *vacuumer // nil when the file has auto_vacuum off

	mu       sync.RWMutex // guards closed; held for reading while entering a call
	closed   bool
	inflight sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

var _ taskstore.Store = (*Store)(nil)

// Open opens (creating it when missing) the SQLite database at path, brings
// its schema up to date and returns a Store on it. path is a plain file path;
// its directory must exist. ":memory:", "file:" URIs and paths containing
// '?' are refused.
//
// Open fails when the database was written by a newer version of this package
// (its schema version is higher than the one this code knows), and when the
// file is not a SQLite database.
func Open(path string, opts ...Option) (*Store, error) {
	o := options{readConns: max(4, runtime.GOMAXPROCS(0)), busyTimeout: 10 * time.Second}
	for _, opt := range opts {
		opt(&o)
	}
	if err := checkPath(path); err != nil {
		return nil, err
	}
	log := o.logger
	if log == nil {
		log = slog.Default()
	}

	if fi, err := os.Stat(path); errors.Is(err, os.ErrNotExist) || (err == nil && fi.Size() == 0) {
		o.newFile = true
	}
	ctx := context.Background()
	wdb, err := sqlx.Open("sqlite", dsn(path, o, true))
	if err != nil {
		return nil, openError(path, "open", err)
	}
	oneConn(wdb)
	conn, err := wdb.Connx(ctx)
	if err != nil {
		wdb.Close()
		return nil, openError(path, "open", err)
	}
	fail := func(what string, err error) (*Store, error) {
		conn.Close()
		wdb.Close()
		return nil, openError(path, what, err)
	}
	if err := migrate(ctx, conn, log); err != nil {
		return fail("migrate", err)
	}
	var autoVacuum int
	if err := conn.GetContext(ctx, &autoVacuum, "PRAGMA auto_vacuum"); err != nil {
		return fail("open", err)
	}
	w, err := newWriter(ctx, conn)
	if err != nil {
		return fail("prepare", err)
	}
	opened, err := os.Stat(path)
	if err != nil {
		w.close()
		return fail("open", err)
	}
	w.guard = func() error { return checkSameFile(path, opened) }

	co := o
	co.busyTimeout = restartWait // see checkpoint.go
	co.newFile = false
	cdb, err := sqlx.Open("sqlite", dsn(path, co, true))
	if err != nil {
		w.close()
		return fail("open checkpoint connection", err)
	}
	oneConn(cdb)
	reads, err := newReadPool(dsn(path, o, false), o.readConns)
	if err == nil {
		err = reads.warm(ctx)
	}
	if err != nil {
		if reads != nil {
			reads.close()
		}
		cdb.Close()
		w.close()
		return fail("open read pool", err)
	}
	s := &Store{log: log, wdb: wdb, w: w, reads: reads}
	w.ckpt = newCheckpointer(cdb, log)
	w.started = true
	go w.run()
	if autoVacuum == autoVacuumIncremental {
		s.vac = newVacuumer(s, log)
	} else {
		log.Info("sqlitestore: this database file keeps its size when tasks are deleted (auto_vacuum is off: "+
			"it was created by an older version); VACUUM it offline to have space given back (see the README)", "path", path)
	}
	return s, nil
}

// checkPath refuses what cannot be a shared file database.
func checkPath(path string) error {
	switch {
	case path == "":
		return errors.New("sqlitestore: open: empty database path")
	case path == ":memory:" || strings.HasPrefix(path, "file:"):
		return fmt.Errorf("sqlitestore: open %q: in-memory databases and URIs are not supported "+
			"(each pooled connection would see its own database); give a file path, or use memstore", path)
	case strings.ContainsRune(path, '?'):
		return fmt.Errorf("sqlitestore: open %q: the path must not contain '?'", path)
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("sqlitestore: open %s: directory %s does not exist", path, dir)
	case err != nil:
		return fmt.Errorf("sqlitestore: open %s: %w", path, err)
	case !fi.IsDir():
		return fmt.Errorf("sqlitestore: open %s: %s is not a directory", path, dir)
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("sqlitestore: open %s: is a directory", path)
	}
	return nil
}

// dsn builds the connection string: every PRAGMA is in it, so that every
// connection the pool opens gets the same settings.
func dsn(path string, o options, writer bool) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", o.busyTimeout.Milliseconds()))
	if writer {
		if o.newFile {
			// Only a database without tables takes it (vacuum.go), and
			// setting it is a write: given on new files only, so that
			// opening an existing file changes nothing in it unless a
			// migration is due.
			q.Add("_pragma", "auto_vacuum(INCREMENTAL)")
		}
		sync := "NORMAL"
		if o.syncFull {
			sync = "FULL"
		}
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous("+sync+")")
		// Statement journals (one per statement inside a group commit)
		// and temporary sort trees stay in memory, not in temporary files.
		q.Add("_pragma", "temp_store(MEMORY)")
		// Checkpoints run in the background (checkpoint.go); the
		// writer's own is a safety net.
		q.Add("_pragma", fmt.Sprintf("wal_autocheckpoint(%d)", walSafetyPages))
		// Keep the WAL file from staying large after a burst of writes.
		q.Add("_pragma", fmt.Sprintf("journal_size_limit(%d)", walTargetPages*pageSize))
		q.Set("_txlock", "immediate")
	} else {
		q.Add("_pragma", "query_only(1)")
	}
	return path + "?" + q.Encode()
}

// oneConn makes db a pool of one connection that stays open: SQLite state
// (the writer's prepared statements, the checkpointer's) lives in it.
func oneConn(db *sqlx.DB) {
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
}

func openError(path, what string, err error) error {
	return fmt.Errorf("sqlitestore: open %s: %s: %w", path, what, err)
}

// enter admits a call: it fails with ErrClosed once Close has begun, and with
// the context's error when ctx is done. A successful enter must be paired
// with leave.
func (s *Store) enter(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("sqlitestore: %s: %w", op, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	switch {
	case s.closed:
		return fmt.Errorf("sqlitestore: %s: %w", op, taskstore.ErrClosed)
	case s.w == nil:
		return errNotOpen
	}
	s.inflight.Add(1)
	return nil
}

// errNotOpen is what a Store not made by Open answers.
var errNotOpen = errors.New("sqlitestore: Store not created with Open")

func (s *Store) leave() { s.inflight.Done() }

// Close waits for the calls in flight, stops the writer and closes the
// database. It is idempotent; other methods return taskstore.ErrClosed
// afterwards.
func (s *Store) Close() error {
	if s.w == nil {
		return errNotOpen
	}
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.vac.close()
		s.inflight.Wait()
		errR := s.reads.close()
		errC := s.w.ckpt.close()
		errW := s.w.close()
		errD := s.wdb.Close()
		if err := errors.Join(errR, errC, errW, errD); err != nil {
			s.log.Error("sqlitestore: close", "err", err)
			s.closeErr = errors.New("sqlitestore: close: failed to close the database cleanly")
		}
	})
	return s.closeErr
}

// ErrFileGone is returned by writes once the database file has been
// removed or replaced since Open: SQLite would keep writing to the unlinked
// file, and everything written would vanish at Close. Reopen the store.
var ErrFileGone = errors.New("sqlitestore: the database file was removed or replaced after Open")

// checkSameFile reports ErrFileGone when path no longer names the file
// opened. It costs one stat per group commit.
func checkSameFile(path string, opened os.FileInfo) error {
	fi, err := os.Stat(path)
	if err != nil || !os.SameFile(fi, opened) {
		return ErrFileGone
	}
	return nil
}
