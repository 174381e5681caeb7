package sqlitestore

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/jmoiron/sqlx"
)

// maxBatch bounds how many write calls share one transaction.
const maxBatch = 128

// States of a writeOp.
const (
	opQueued    int32 = iota
	opTaken           // the writer runs it; its result will be sent
	opCancelled       // the caller gave up before the writer took it
)

// writeOp is one write call waiting for the writer goroutine.
type writeOp struct {
	// run executes the call on the writer connection, inside the batch's
	// transaction when there is one. It must be safe to run again (the
	// writer re-runs the other calls of a batch it had to roll back) and
	// may run at most one statement that changes the database, so that a
	// constraint failure undoes only its own change (SQLite aborts the
	// statement, not the transaction).
	run func(*writer) error
	// tx asks for a transaction even when the call runs alone.
	tx bool
	// solo runs the call in a transaction of its own, never grouped with
	// other calls: for calls that change many rows and must be all or
	// nothing (Import). A solo call's error rolls its transaction back.
	solo  bool
	state atomic.Int32
	done  chan error // buffered, receives exactly one result
}

var opPool = sync.Pool{New: func() any { return &writeOp{done: make(chan error, 1)} }}

// writer owns the single write connection. One goroutine (run) drains the
// queue of write calls and executes as many as are waiting in one
// transaction: group commit.
type writer struct {
	conn    *sqlx.Conn
	ch      chan *writeOp
	exited  chan struct{}
	started bool
	batch   []*writeOp
	solo    []*writeOp
	results []error

	// Transactions committed and rolled back (tests and benchmarks read
	// them to see how calls were grouped).
	commits, rollbacks atomic.Int64

	begin, commit, rollback *sqlx.Stmt

	// guard runs before each batch; its error fails the whole
	// batch without writing (see ErrFileGone).
	guard func() error

	// ckpt is told after each batch that the WAL grew.
	ckpt *checkpointer

	insert, start, finish, exists, del, prune, renew *sqlx.Stmt
	recordDelivered, recordRetry, recordGiveUp       *sqlx.Stmt
	// Whether a write that changed nothing is the repeat of one already
	// applied (see taskstore.Store): Start, Finish, RecordAttempt.
	sameStart, sameFinish, sameAttempt *sqlx.Stmt
	claimSelect, claimUpdate           *sqlx.Stmt
	redeliverSelect, redeliverUpdate   *sqlx.Stmt
	failedSelect, failedUpdate         *sqlx.Stmt
	finishMany                         *sqlx.Stmt
}

func newWriter(ctx context.Context, conn *sqlx.Conn) (*writer, error) {
	w := &writer{conn: conn, ch: make(chan *writeOp, 4*maxBatch), exited: make(chan struct{})}
	for _, p := range []struct {
		dst **sqlx.Stmt
		sql string
	}{
		{&w.begin, `BEGIN IMMEDIATE`},
		{&w.commit, `COMMIT`},
		{&w.rollback, `ROLLBACK`},
		{&w.insert, insertSQL},
		{&w.start, `UPDATE tasks SET started_ms = ? WHERE id = ? AND started_ms = 0 AND finished_ms = 0`},
		{&w.finish, finishSQL},
		{&w.exists, `SELECT count(*) FROM tasks WHERE id = ?`},
		{&w.del, `DELETE FROM tasks WHERE id = ?`},
		{&w.prune, pruneSQL},
		{&w.renew, renewSQL},
		{&w.recordDelivered, recordDeliveredSQL},
		{&w.recordRetry, recordRetrySQL},
		{&w.recordGiveUp, recordGiveUpSQL},
		{&w.sameStart, `SELECT count(*) FROM tasks WHERE id = ? AND started_ms = ? AND finished_ms = 0`},
		{&w.sameFinish, `SELECT count(*) FROM tasks WHERE id = ? AND finished_ms = ? AND response = ?`},
		{&w.sameAttempt, sameAttemptSQL},
		{&w.claimSelect, claimSelectSQL},
		{&w.claimUpdate, claimUpdateSQL},
		{&w.redeliverSelect, redeliverSelectSQL},
		{&w.redeliverUpdate, redeliverUpdateSQL},
		{&w.failedSelect, failedSelectSQL},
		{&w.failedUpdate, failedUpdateSQL},
		{&w.finishMany, finishManySQL},
	} {
		st, err := conn.PreparexContext(ctx, p.sql)
		if err != nil {
			w.close()
			return nil, err
		}
		*p.dst = st
	}
	return w, nil
}

// Statements that plan_test.go and bench_test.go use as well.
const (
	insertSQL = `INSERT INTO tasks (id, trace_id, type, created_ms, started_ms, finished_ms,
		application_id, user_id, credential_id, callback_url, attempts, next_attempt_ms,
		delivered_ms, last_status, last_error, lease_ms, request, response, failed, gave_up, recorder)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	// Finish's arguments: response, finish time, failed (0 or 1, from
	// taskstore.Succeeded), finish time again, id.
	finishSQL = `UPDATE tasks SET response = ?, finished_ms = ?, lease_ms = 0, failed = ?,
		next_attempt_ms = CASE WHEN callback_url <> '' THEN ? ELSE next_attempt_ms END
		WHERE id = ? AND finished_ms = 0`
	pruneSQL = `DELETE FROM tasks WHERE rid IN (SELECT rid FROM tasks INDEXED BY tasks_created
		WHERE created_ms < ? ORDER BY created_ms, id LIMIT ?)`
	renewSQL = `UPDATE tasks INDEXED BY tasks_id SET lease_ms = ?
		WHERE id IN (SELECT value FROM json_each(?)) AND finished_ms = 0`
	// Arguments: the recorder, the time, the limit.
	claimSelectSQL = `SELECT rid, ` + taskColumns + ` FROM tasks INDEXED BY tasks_outbox
		WHERE recorder = ? AND ` + pending + ` AND next_attempt_ms <= ? ORDER BY next_attempt_ms, id LIMIT ?`
	// A claim moves the due time to the claim's expiry and marks the
	// delivery in flight; neither column enters the state, so a claim
	// writes no index but tasks_outbox and fires no counter trigger.
	claimUpdateSQL = `UPDATE tasks SET next_attempt_ms = ?, claimed = 1 WHERE rid IN (SELECT value FROM json_each(?))`

	// RecordAttempt's three outcomes, each setting only the columns it
	// changes: a retry changes no column of the state, so it writes
	// neither tasks_done nor the counters. Each ends the claim. Arguments:
	// status, error, then the delivery time or the next attempt (not for
	// giving up), then the id.
	recordDeliveredSQL = `UPDATE tasks SET attempts = attempts + 1, last_status = ?, last_error = ?,
		delivered_ms = ?, next_attempt_ms = 0, claimed = 0
		WHERE id = ? AND ` + pending
	// A retry that the callback already records (unclaimed, due at the
	// same time, with the same status and error) is a repeat: it changes
	// nothing. Arguments: status, error, next attempt, id, then the next
	// attempt, status and error again.
	recordRetrySQL = `UPDATE tasks SET attempts = attempts + 1, last_status = ?, last_error = ?,
		next_attempt_ms = ?, claimed = 0
		WHERE id = ? AND ` + pending + `
		AND NOT (claimed = 0 AND next_attempt_ms = ? AND last_status = ? AND last_error = ?)`
	// sameAttemptSQL counts the task (0 or 1) whose callback records the
	// attempt already: each outcome leaves the claim ended and sets
	// delivered_ms and next_attempt_ms (the delivery time or 0, the next
	// attempt or 0). Arguments: id, delivered, next, status, error.
	sameAttemptSQL = `SELECT count(*) FROM tasks WHERE id = ? AND callback_url <> '' AND finished_ms <> 0
		AND delivered_ms = ? AND next_attempt_ms = ? AND claimed = 0 AND last_status = ? AND last_error = ?`
	recordGiveUpSQL = `UPDATE tasks SET attempts = attempts + 1, last_status = ?, last_error = ?,
		next_attempt_ms = 0, gave_up = 1, claimed = 0
		WHERE id = ? AND ` + pending

	// Redeliver: the listed tasks that qualify (finished, with a callback
	// URL), then the change of those that are neither in flight (claimed,
	// the claim not expired at the given time) nor pending and due by then
	// already. Arguments of the UPDATE: the time, the list, the time
	// again, the time again.
	redeliverSelectSQL = `SELECT id FROM tasks INDEXED BY tasks_id
		WHERE id IN (SELECT value FROM json_each(?)) AND finished_ms <> 0 AND callback_url <> ''`
	redeliverUpdateSQL = `UPDATE tasks INDEXED BY tasks_id
		SET next_attempt_ms = ?, delivered_ms = 0, gave_up = 0, claimed = 0
		WHERE id IN (SELECT value FROM json_each(?)) AND finished_ms <> 0 AND callback_url <> ''
		AND NOT (claimed = 1 AND next_attempt_ms > ?)
		AND NOT (claimed = 0 AND delivered_ms = 0 AND gave_up = 0 AND next_attempt_ms BETWEEN 1 AND ?)`

	// RedeliverFailed: failed callbacks (states 24 and 34) of one
	// recorder's tasks finished at or after a time, the earliest finished
	// first, from tasks_failed (a range of it), and their change by rowid.
	// Arguments: the recorder, the time, the limit.
	failedSelectSQL = `SELECT rid, id FROM tasks INDEXED BY tasks_failed
		WHERE state IN (24, 34) AND recorder = ? AND finished_ms >= ? ORDER BY finished_ms, id LIMIT ?`
	failedUpdateSQL = `UPDATE tasks SET next_attempt_ms = ?, delivered_ms = 0, gave_up = 0, claimed = 0
		WHERE rid IN (SELECT value FROM json_each(?))`
)

// pending is the condition of a task whose callback is due or scheduled; it
// is also the condition of the partial index tasks_outbox, written the same
// way so that SQLite can use the index.
const pending = `callback_url <> '' AND finished_ms <> 0 AND delivered_ms = 0 AND next_attempt_ms <> 0`

// batchYields is how many times the writer lets other goroutines run
// before it commits a batch that could take more calls: callers that are
// about to submit (their HTTP request parsed, say) join this transaction
// instead of waiting for the next. Each commit writes every B-tree page it
// touched to the WAL, so fewer, larger transactions cost less per call;
// with 16 HTTP clients this raised callback submissions from 0.29x to
// 0.35x of a bare handler (tasksbench, interleaved runs).
const batchYields = 2

// run is the writer goroutine: it takes every call waiting in the queue (up
// to maxBatch) and executes them together, until the queue is closed.
func (w *writer) run() {
	defer close(w.exited)
	for o := range w.ch {
		w.batch = append(w.batch[:0], o)
		yields := 0
	fill:
		for len(w.batch) < maxBatch {
			select {
			case o, ok := <-w.ch:
				if !ok {
					break fill
				}
				w.batch = append(w.batch, o)
			default:
				if yields < batchYields {
					yields++
					runtime.Gosched()
					continue
				}
				break fill
			}
		}
		live, solo := w.batch[:0], w.solo[:0]
		for _, o := range w.batch {
			if o.state.CompareAndSwap(opQueued, opTaken) {
				if o.solo {
					solo = append(solo, o)
				} else {
					live = append(live, o)
				}
			}
		}
		if err := w.guard(); err != nil {
			for _, o := range live {
				o.done <- err
			}
			for _, o := range solo {
				o.done <- err
			}
		} else {
			w.exec(live)
			for _, o := range solo {
				w.execSolo(o)
			}
		}
		w.ckpt.committed()
		clear(w.batch)
		clear(solo)
		w.solo = solo[:0]
	}
}

// exec runs ops and sends each its result once the outcome is final.
func (w *writer) exec(ops []*writeOp) {
	switch {
	case len(ops) == 0:
		return
	case len(ops) == 1 && !ops[0].tx:
		// Alone, a single-statement call is atomic without BEGIN/COMMIT.
		ops[0].done <- ops[0].run(w)
		return
	}
	if _, err := w.begin.Exec(); err != nil {
		for _, o := range ops {
			o.done <- err
		}
		return
	}
	w.results = w.results[:0]
	for i, o := range ops {
		err := o.run(w)
		if !callLocal(err) {
			// A system failure may have rolled back the whole transaction.
			// Give this call its error and run the others again without it.
			w.rollback.Exec()
			w.rollbacks.Add(1)
			o.done <- err
			rest := make([]*writeOp, 0, len(ops)-1)
			rest = append(append(rest, ops[:i]...), ops[i+1:]...)
			w.exec(rest)
			return
		}
		w.results = append(w.results, err)
	}
	if _, err := w.commit.Exec(); err != nil {
		w.rollback.Exec()
		w.rollbacks.Add(1)
		for _, o := range ops {
			o.done <- err
		}
		return
	}
	w.commits.Add(1)
	for i, o := range ops {
		o.done <- w.results[i]
	}
}

// execSolo runs o alone in its own transaction, all or nothing.
func (w *writer) execSolo(o *writeOp) {
	if _, err := w.begin.Exec(); err != nil {
		o.done <- err
		return
	}
	if err := o.run(w); err != nil {
		w.rollback.Exec()
		w.rollbacks.Add(1)
		o.done <- err
		return
	}
	if _, err := w.commit.Exec(); err != nil {
		w.rollback.Exec()
		w.rollbacks.Add(1)
		o.done <- err
		return
	}
	w.commits.Add(1)
	o.done <- nil
}

// close stops the writer goroutine (after the calls already queued) and
// closes the statements. The caller guarantees no call is being submitted.
func (w *writer) close() error {
	if w.started {
		close(w.ch)
		<-w.exited
	}
	for _, st := range []*sqlx.Stmt{w.begin, w.commit, w.rollback, w.insert, w.start, w.finish,
		w.exists, w.del, w.prune, w.renew, w.recordDelivered, w.recordRetry, w.recordGiveUp,
		w.sameStart, w.sameFinish, w.sameAttempt,
		w.claimSelect, w.claimUpdate, w.redeliverSelect, w.redeliverUpdate, w.failedSelect, w.failedUpdate, w.finishMany} {
		if st != nil {
			st.Close()
		}
	}
	return w.conn.Close()
}

// write hands run to the writer and waits for its result. A call whose
// context ends before the writer takes it is dropped and returns the
// context's error; once taken, it runs to completion and its true result is
// returned, so a write never happens behind the back of a caller told it
// failed.
func (s *Store) write(ctx context.Context, tx bool, run func(*writer) error) error {
	return s.submit(ctx, tx, false, run)
}

// submit is write, with solo asking for a transaction of the call's own.
func (s *Store) submit(ctx context.Context, tx, solo bool, run func(*writer) error) error {
	o := opPool.Get().(*writeOp)
	o.run, o.tx, o.solo = run, tx, solo
	o.state.Store(opQueued)
	select {
	case s.w.ch <- o:
	case <-ctx.Done():
		o.run = nil
		opPool.Put(o)
		return ctx.Err()
	}
	var err error
	select {
	case err = <-o.done:
	case <-ctx.Done():
		if o.state.CompareAndSwap(opQueued, opCancelled) {
			// The writer will skip it and never send: o must not be reused.
			return ctx.Err()
		}
		err = <-o.done
	}
	o.run = nil
	opPool.Put(o)
	return err
}

// callLocal reports whether err leaves the batch's transaction intact: no
// error, a domain error decided by the call itself, or a constraint
// violation (SQLite undoes only the failing statement).
func callLocal(err error) bool {
	return err == nil || isDomain(err) || isConstraint(err)
}
