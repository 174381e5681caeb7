package pgstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// Create stores tasks with group commit: a Create that finds fewer than
// maxCreateStatements INSERTs running runs its own at once, on the caller's
// goroutine, so a lone caller pays no extra latency; Creates that arrive while
// maxCreateStatements INSERTs are running queue up and the next free slot
// inserts them all with one statement (one round trip, one commit, one
// trigger run). Under many concurrent callers this multiplies throughput,
// since the server's cost is mostly per statement rather than per row.

const (
	// maxCreateStatements is how many create INSERTs run at once.
	maxCreateStatements = 4
	// maxCreateBatch is the most tasks one INSERT stores.
	maxCreateBatch = 256
)

// Inserts write taskColumns and success (NULL unless the task is
// finished).
const insertTask = `INSERT INTO tasks (` + taskColumns + `, success)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
ON CONFLICT (id) DO NOTHING`

// insertTasks stores a batch from one array per column. A task whose id
// exists already (or comes twice in the batch) is skipped; RETURNING names
// the ones stored.
const insertTasks = `INSERT INTO tasks (` + taskColumns + `, success)
SELECT id, trace_id, type, created_ms, started_ms, finished_ms, application_id, user_id, credential_id,
	callback_url, attempts, next_attempt_ms, delivered_ms, last_status, last_error, lease_ms,
	request::json, response::json, recorder, success
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::text[],
	$8::text[], $9::text[], $10::text[], $11::integer[], $12::bigint[], $13::bigint[], $14::integer[],
	$15::text[], $16::bigint[], $17::text[], $18::text[], $19::text[], $20::boolean[])
	AS u(id, trace_id, type, created_ms, started_ms, finished_ms, application_id, user_id, credential_id,
	callback_url, attempts, next_attempt_ms, delivered_ms, last_status, last_error, lease_ms, request, response,
	recorder, success)
ON CONFLICT (id) DO NOTHING
RETURNING id`

// pendingCreate is one Create waiting for its batch.
type pendingCreate struct {
	ctx  context.Context
	t    taskstore.Task
	err  error
	done chan struct{}
}

// createQueue is the group-commit state of a Store.
type createQueue struct {
	mu      sync.Mutex
	waiting []*pendingCreate
	running int            // INSERTs in flight
	workers sync.WaitGroup // goroutines started to insert later arrivals
}

// Create stores a new task; see taskstore.Store. If ctx is cancelled while
// its INSERT is in flight, Create returns the context's error (at once, or
// when the batch it leads ends) and the task may still have been stored.
func (s *Store) Create(ctx context.Context, t taskstore.Task) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	defer s.leave()
	t, err := storekit.Normalize(t, time.Now())
	if err != nil {
		return err
	}
	if err := checkText(t); err != nil {
		return err
	}
	p := &pendingCreate{ctx: ctx, t: t, done: make(chan struct{})}
	q := &s.creates
	q.mu.Lock()
	q.waiting = append(q.waiting, p)
	lead := q.running < maxCreateStatements
	if lead {
		q.running++
	}
	q.mu.Unlock()
	if lead {
		// This goroutine inserts the batch holding p (at least), then
		// hands any later arrivals to a new goroutine so that its caller
		// returns now.
		s.insertWaiting()
	}
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// insertWaiting takes the waiting creates (up to maxCreateBatch) and
// inserts them, then passes the slot on: to a new goroutine when more
// creates are waiting, else back to the queue.
func (s *Store) insertWaiting() {
	q := &s.creates
	q.mu.Lock()
	n := min(len(q.waiting), maxCreateBatch)
	batch := slices.Clone(q.waiting[:n])
	q.waiting = slices.Delete(q.waiting, 0, n)
	q.mu.Unlock()

	s.insertBatch(batch)

	q.mu.Lock()
	more := len(q.waiting) > 0
	if !more {
		q.running--
	}
	q.mu.Unlock()
	if more {
		q.workers.Go(s.insertWaiting)
	}
}

// insertBatch stores the batch and completes each pending create.
func (s *Store) insertBatch(batch []*pendingCreate) {
	live := batch[:0:0]
	for _, p := range batch {
		if err := p.ctx.Err(); err != nil {
			p.complete(err) // gave up before its statement was sent
			continue
		}
		live = append(live, p)
	}
	switch len(live) {
	case 0:
		return
	case 1:
		live[0].complete(s.insertOne(live[0].ctx, live[0].t))
		return
	}
	// Sorted by id, concurrent batches take row locks in one order, so
	// duplicates across them cannot deadlock.
	slices.SortStableFunc(live, func(a, b *pendingCreate) int { return strings.Compare(a.t.ID, b.t.ID) })
	inserted, err := s.insertMany(live)
	switch {
	case rowError(err):
		// One bad row fails the whole statement: store them one by one
		// so that each caller gets its own answer.
		for _, p := range live {
			p.complete(s.insertOne(p.ctx, p.t))
		}
		return
	case err != nil:
		// Anything else (the database unavailable past the retry grace,
		// a closing store) may have come after the commit: inserting
		// again would answer a stored task with ErrConflict. Every caller
		// gets the error; its task may have been stored, as with any
		// failed write. (A lost answer that a retry could settle is
		// settled by insertMany.)
		for _, p := range live {
			p.complete(err)
		}
		return
	}
	s.grew(len(inserted))
	for _, p := range live {
		if inserted[p.t.ID] {
			inserted[p.t.ID] = false // a second create of the same id in the batch conflicts
			p.complete(nil)
		} else {
			p.complete(fmt.Errorf("%w: task %q already exists", taskstore.ErrConflict, p.t.ID))
		}
	}
}

// rowError reports whether err is one that a row of the statement caused:
// invalid input, or a data exception or integrity violation (SQLSTATE class
// 22 or 23) reported by the server. Such a statement was rolled back.
func rowError(err error) bool {
	if errors.Is(err, taskstore.ErrInvalid) {
		return true
	}
	var pe *Error
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23"))
}

func (p *pendingCreate) complete(err error) {
	p.err = err
	close(p.done)
}

// insertOne stores one task with a plain INSERT.
func (s *Store) insertOne(ctx context.Context, t taskstore.Task) error {
	var response, success any // NULL unless finished
	if t.Response != nil {
		response, success = string(t.Response), taskstore.Succeeded(t.Response)
	}
	args := []any{
		t.ID, t.TraceID, t.Type, storekit.ToMillis(t.CreatedAt), storekit.ToMillis(t.StartedAt),
		storekit.ToMillis(t.FinishedAt), t.ApplicationID, t.UserID, t.CredentialID, t.Callback.URL,
		t.Callback.Attempts, storekit.ToMillis(t.Callback.NextAttemptAt), storekit.ToMillis(t.Callback.DeliveredAt),
		t.Callback.LastStatus, t.Callback.LastError, storekit.ToMillis(t.LeaseUntil),
		string(t.Request), response, t.Recorder, success,
	}
	var n int64
	doubt := false // an attempt's answer was lost: its INSERT may have been applied
	err := s.do(ctx, "create", idempotent, func() (err error) {
		n, err = s.exec(ctx, insertTask, args...)
		doubt = doubt || classify(err) == failLost
		return err
	})
	if err != nil {
		return err
	}
	if n == 0 && doubt {
		mine, err := s.ownRows(ctx, []string{t.ID}, []int64{args[3].(int64)}, []string{string(t.Request)})
		if err != nil || mine[t.ID] {
			return err
		}
	}
	if n == 0 {
		return fmt.Errorf("%w: task %q already exists", taskstore.ErrConflict, t.ID)
	}
	s.grew(1)
	return nil
}

// Statistics of a new table: a store that opened on an empty or never
// analysed tasks table analyses it once it has stored youngAnalyze1 tasks,
// and again at youngAnalyze2.
const (
	youngAnalyze1 = 1_000
	youngAnalyze2 = 10_000
)

// grew counts k tasks stored by this store, and analyses a young table
// (see Store.young) when the count passes youngAnalyze1 or youngAnalyze2,
// in the background. Without statistics the planner takes a filter on
// types or a status for a selective one: on 100,000 fresh tasks, a
// retrieve_batch with the status pending took 54 ms through a bitmap scan
// of every task, against 0.4 ms once analysed; autovacuum analyses a new
// table only at its first visit, up to autovacuum_naptime (a minute by
// default) later.
func (s *Store) grew(k int) {
	if !s.young.Load() {
		return
	}
	n := s.created.Add(int64(k))
	for _, at := range []int64{youngAnalyze1, youngAnalyze2} {
		if n >= at && n-int64(k) < at {
			s.creates.workers.Go(s.analyzeYoung)
		}
	}
	if n >= youngAnalyze2 {
		s.young.Store(false)
	}
}

// analyzeYoung analyses the tasks table, under the store's own context.
func (s *Store) analyzeYoung() {
	ctx := s.bgCtx
	err := s.do(ctx, "analyze", idempotent, func() error {
		_, err := s.exec(ctx, `ANALYZE tasks`)
		return err
	})
	if err != nil && ctx.Err() == nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "pgstore: analysing the new tasks table", slog.String("error", err.Error()))
	}
}

// ownRows returns which of the tasks (ids, with their creation times and
// requests) are stored with exactly that creation time and request: after
// an INSERT whose answer was lost, the rows it wrote, since task ids are
// fresh UUIDs that nobody else creates.
func (s *Store) ownRows(ctx context.Context, ids []string, created []int64, requests []string) (map[string]bool, error) {
	mine := make(map[string]bool, len(ids))
	err := s.do(ctx, "create", idempotent, func() error {
		clear(mine)
		return s.conn(ctx, func(c *pgx.Conn) error {
			rows, err := c.Query(ctx, ownRows, ids, created, requests)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					return err
				}
				mine[id] = true
			}
			return rows.Err()
		})
	})
	return mine, err
}

const ownRows = `SELECT t.id FROM unnest($1::text[], $2::bigint[], $3::text[]) AS u(id, created_ms, request)
JOIN tasks t ON t.id = u.id AND t.created_ms = u.created_ms AND t.request::text = u.request`

// insertMany stores the batch with one statement and returns the ids it
// stored. It runs under the store's own context (closed by Close), not one
// caller's: the statement serves every caller in the batch.
func (s *Store) insertMany(batch []*pendingCreate) (map[string]bool, error) {
	n := len(batch)
	var (
		ids, traces, types, apps, users, creds, urls, lastErrs, requests = make([]string, n), make([]string, n),
			make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n),
			make([]string, n), make([]string, n)
		responses                                          = make([]*string, n)
		recorders                                          = make([]string, n)
		successes                                          = make([]*bool, n)
		created, started, finished, next, delivered, lease = make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
		attempts, statuses                                 = make([]int32, n), make([]int32, n)
	)
	for i, p := range batch {
		t := p.t
		ids[i], traces[i], types[i] = t.ID, t.TraceID, t.Type
		created[i], started[i], finished[i] = storekit.ToMillis(t.CreatedAt), storekit.ToMillis(t.StartedAt), storekit.ToMillis(t.FinishedAt)
		apps[i], users[i], creds[i], urls[i] = t.ApplicationID, t.UserID, t.CredentialID, t.Callback.URL
		attempts[i], next[i], delivered[i] = int32(t.Callback.Attempts), storekit.ToMillis(t.Callback.NextAttemptAt), storekit.ToMillis(t.Callback.DeliveredAt)
		statuses[i], lastErrs[i], lease[i] = int32(t.Callback.LastStatus), t.Callback.LastError, storekit.ToMillis(t.LeaseUntil)
		requests[i], recorders[i] = string(t.Request), t.Recorder
		if t.Response != nil {
			r, ok := string(t.Response), taskstore.Succeeded(t.Response)
			responses[i], successes[i] = &r, &ok
		}
	}
	inserted := make(map[string]bool, n)
	ctx := s.bgCtx
	doubt := false // an attempt's answer was lost: its INSERT may have been applied
	err := s.do(ctx, "create", idempotent, func() (err error) {
		defer func() { doubt = doubt || classify(err) == failLost }()
		clear(inserted)
		return s.conn(ctx, func(c *pgx.Conn) error {
			rows, err := c.Query(ctx, insertTasks, ids, traces, types, created, started, finished, apps, users,
				creds, urls, attempts, next, delivered, statuses, lastErrs, lease, requests, responses, recorders, successes)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					return err
				}
				inserted[id] = true
			}
			return rows.Err()
		})
	})
	if err != nil || !doubt || len(inserted) == n {
		return inserted, err
	}
	// The rows the lost attempt stored are found as already there: those
	// holding exactly this task are this batch's.
	mine, err := s.ownRows(ctx, ids, created, requests)
	for id := range mine {
		inserted[id] = true
	}
	return inserted, err
}
