package callback

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// job is a stored task waiting for, or held by, a worker.
type job struct {
	id, typ, traceID string
	callback         bool
	// base is the context the run derives from: detached from the client's
	// cancellation, carrying the request's values, the principal and the
	// task id.
	base context.Context
	run  func(ctx context.Context) outcome
	// owner is the queue of the task's principal; bytes what the task holds
	// in memory until its run ends (see Options.QueueBytes).
	owner *tenantQueue
	bytes int64
}

// reserve takes a queue place, and bytes of the memory budget, for a task
// of principal p about to be stored. On success the caller must call
// enqueue or release with the returned queue.
func (r *Recorder) reserve(p taskstore.Principal, bytes int64) (*tenantQueue, error) {
	if r.ready == nil {
		return nil, ErrNotNew
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, ErrClosed
	}
	key := principalKey(p)
	tq := r.queue.byKey[key]
	if tq == nil {
		tq = &tenantQueue{}
	}
	switch {
	case r.waiting >= r.o.Queue:
		return nil, ErrQueueFull
	case tq.reserved >= r.o.QueuePerPrincipal:
		return nil, errPrincipalQueueFull
	case tq.bytes > 0 && tq.bytes+bytes > r.o.QueueBytesPerPrincipal:
		return nil, errPrincipalBytesFull
	case r.heldBytes > 0 && r.heldBytes+bytes > r.o.QueueBytes:
		return nil, errQueueBytesFull
	}
	if r.queue.byKey[key] == nil {
		r.queue.byKey[key] = tq
		tq.key = key
	}
	r.waiting++
	r.heldBytes += bytes
	tq.reserved++
	tq.bytes += bytes
	r.submitting.Add(1)
	return tq, nil
}

// release gives back a place (and its bytes) whose task was not stored.
func (r *Recorder) release(tq *tenantQueue, bytes int64) {
	r.mu.Lock()
	r.waiting--
	tq.reserved--
	r.unhold(tq, bytes)
	r.mu.Unlock()
	r.submitting.Done()
}

// unhold gives back bytes of the memory budget, forgetting tq once it
// holds nothing. r.mu is held.
func (r *Recorder) unhold(tq *tenantQueue, bytes int64) {
	r.heldBytes -= bytes
	tq.bytes -= bytes
	if tq.reserved == 0 && tq.bytes == 0 && len(tq.jobs) == 0 && r.queue.byKey[tq.key] == tq {
		delete(r.queue.byKey, tq.key)
	}
}

// createTask reserves a place in the queue and stores t as a new task,
// setting its ID, CreatedAt and LeaseUntil; it returns the id and the
// principal's queue. bytes is what the task will hold in memory until its
// run ends. The store call keeps ctx's values but not its cancellation (it
// is bounded by storeTimeout instead, and by Close giving up): once Create
// has started, a caller that gives up must not leave behind a stored task
// that nobody queued. On
// success the caller must enqueue the task; on error the reservation is
// released. The errors are reserve's (ErrClosed, or ErrQueueFull alone or
// wrapped with the principal's or the memory budget's reason) or the
// store's.
func (r *Recorder) createTask(ctx context.Context, t taskstore.Task, bytes int64) (string, *tenantQueue, error) {
	p := taskstore.Principal{ApplicationID: t.ApplicationID, UserID: t.UserID}
	tq, err := r.reserve(p, bytes)
	if err != nil {
		return "", nil, err
	}
	t.ID, t.CreatedAt, t.Recorder = newTaskID(), r.now(), r.o.Name
	t.LeaseUntil = t.CreatedAt.Add(r.o.Lease)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	stop := context.AfterFunc(r.io, cancel)
	err = r.store.Create(sctx, t)
	stop()
	cancel()
	if err != nil {
		r.release(tq, bytes)
		return "", nil, closedErr(err)
	}
	return t.ID, tq, nil
}

// enqueue hands a stored task to the workers: it joins its principal's
// queue. The reserved place guarantees a token's room in r.ready, so it
// never blocks.
func (r *Recorder) enqueue(j *job) {
	r.mu.Lock()
	r.active[j.id] = struct{}{}
	r.queue.push(j)
	r.mu.Unlock()
	// Counted and announced before a worker can take it, so that no
	// TaskFinished comes before its TaskCreated.
	r.c.tasksCreated.Add(1)
	callHook(r, "TaskCreated", j.id, r.o.Hooks.TaskCreated, j.base, TaskEvent{ID: j.id, Type: j.typ, TraceID: j.traceID})
	r.ready <- struct{}{}
	r.submitting.Done()
}

// worker runs queued tasks: each token in r.ready stands for one queued
// task, and the fair queue says which one comes next.
func (r *Recorder) worker() {
	defer r.workersWG.Done()
	for range r.ready {
		r.mu.Lock()
		j := r.queue.pop()
		r.waiting--
		j.owner.reserved--
		r.running++
		r.mu.Unlock()
		r.runJob(j)
		r.mu.Lock()
		r.running--
		delete(r.active, j.id)
		r.unhold(j.owner, j.bytes)
		r.mu.Unlock()
	}
}

// runJob runs one task and records its response.
func (r *Recorder) runJob(j *job) {
	if r.hardStop.Err() != nil { // Close gave up waiting: do not start
		r.finishTask(j, failure(j.id, j.traceID, CodeInterrupted, msgShutdown), false, CodeInterrupted, 0)
		return
	}
	started := r.now()
	// Not worth waiting for once Close gives up: the run is then cut short.
	err := r.untilStored(r.hardStop, "task start", j.id, func(ctx context.Context) error { return r.store.Start(ctx, j.id, started) })
	switch {
	case errors.Is(err, taskstore.ErrNotFound), errors.Is(err, taskstore.ErrConflict):
		// Deleted, or finished by someone else (its lease had expired).
		r.log.Warn("callback: task not run: it was deleted or already finished", "task_id", j.id, "err", err)
		return
	case err != nil && r.hardStop.Err() == nil:
		r.log.Error("callback: recording task start", "task_id", j.id, "err", err)
	}

	ctx, cancel := context.WithTimeout(j.base, r.o.TaskTimeout)
	stop := context.AfterFunc(r.hardStop, cancel)
	callHook(r, "TaskStarted", j.id, r.o.Hooks.TaskStarted, ctx, TaskEvent{ID: j.id, Type: j.typ, TraceID: j.traceID})
	done := make(chan outcome, 1)
	go func() { done <- r.safeRun(ctx, j) }()
	var o outcome
	got := false
	select {
	case o = <-done:
		got = true
	case <-ctx.Done():
		select {
		case o = <-done: // it made it after all
			got = true
		default:
			// The handler may ignore its context; it is left to finish on
			// its own and its answer is discarded.
		}
	}
	ctxErr, cause := ctx.Err(), context.Cause(ctx)
	stop()
	cancel()
	dur := r.now().Sub(started)

	var (
		resp []byte
		ok   bool
		code string
	)
	if got {
		resp, ok, code = verdict(j.id, j.traceID, o)
	}
	if ctxErr != nil && !ok {
		// Cut short (or failing because it was): say why.
		code = CodeTimeout
		msg := fmt.Sprintf(msgTimeoutFmt, r.o.TaskTimeout)
		if !errors.Is(cause, context.DeadlineExceeded) {
			code, msg = CodeInterrupted, msgShutdown
		}
		resp = failure(j.id, j.traceID, code, msg)
	}
	r.finishTask(j, resp, ok, code, dur)
}

// safeRun runs the task, turning a panic into a failed outcome.
func (r *Recorder) safeRun(ctx context.Context, j *job) (o outcome) {
	defer func() {
		if v := recover(); v != nil {
			r.log.Error("callback: task handler panicked", "task_id", j.id, "type", j.typ,
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			o = outcome{panicked: true}
		}
	}()
	return j.run(ctx)
}

// finishTask records j's response and reports it (finished). A task someone
// else already finished (or deleted) is left alone.
func (r *Recorder) finishTask(j *job, resp []byte, ok bool, code string, dur time.Duration) {
	at := r.now() // the same for every try, so that a repeat is recognised
	err := r.untilStored(r.io, "task response", j.id, func(ctx context.Context) error {
		return r.store.Finish(ctx, j.id, resp, at)
	})
	switch {
	case errors.Is(err, taskstore.ErrNotFound), errors.Is(err, taskstore.ErrConflict):
		r.log.Warn("callback: task response not recorded: it was deleted or already finished", "task_id", j.id, "err", err)
		return
	case err != nil && r.io.Err() != nil:
		r.log.Warn("callback: task response not recorded: Close gave up waiting for the store; the task is finished as interrupted once its lease expires",
			"task_id", j.id, "err", err)
		return
	case err != nil:
		// The lease is no longer renewed: once it expires a sweeper
		// finishes the task as interrupted, so it does not stay
		// unfinished forever.
		r.log.Error("callback: recording task response", "task_id", j.id, "err", err)
		return
	}
	r.finished(j.base, TaskEvent{ID: j.id, Type: j.typ, TraceID: j.traceID, Success: ok, Code: code, Duration: dur}, j.callback)
}

// finished counts a task whose response was recorded, calls the
// TaskFinished hook with ctx and, when the task has a callback, wakes the
// delivery loop.
func (r *Recorder) finished(ctx context.Context, ev TaskEvent, callback bool) {
	r.wakeWaiters(ev.ID)
	r.c.tasksFinished.Add(1)
	if !ev.Success {
		r.c.tasksFailed.Add(1)
	}
	callHook(r, "TaskFinished", ev.ID, r.o.Hooks.TaskFinished, ctx, ev)
	if callback {
		r.wakeDelivery()
	}
}

// renewer extends the leases of the queued and running tasks every Lease/3.
func (r *Recorder) renewer() {
	t := time.NewTicker(r.o.Lease / 3)
	defer t.Stop()
	for {
		select {
		case <-r.bg.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		ids := make([]string, 0, len(r.active))
		for id := range r.active {
			ids = append(ids, id)
		}
		r.mu.Unlock()
		until := r.now().Add(r.o.Lease)
		for len(ids) > 0 {
			n := min(len(ids), renewChunk)
			chunk := ids[:n]
			ids = ids[n:]
			err := r.retryUnavailable(r.bg, r.o.Lease/3, "task leases", "", func(ctx context.Context) error { return r.store.RenewLeases(ctx, chunk, until) })
			if err != nil && r.bg.Err() == nil {
				r.log.Error("callback: renewing task leases", "tasks", len(chunk), "err", err)
			}
		}
	}
}
