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
}

// reserve takes a queue slot for a task about to be stored. On success the
// caller must call enqueue or release.
func (r *Recorder) reserve() error {
	if r.jobs == nil {
		return ErrNotNew
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closed:
		return ErrClosed
	case r.waiting >= r.o.Queue:
		return ErrQueueFull
	}
	r.waiting++
	r.submitting.Add(1)
	return nil
}

// release gives back a slot whose task was not stored.
func (r *Recorder) release() {
	r.mu.Lock()
	r.waiting--
	r.mu.Unlock()
	r.submitting.Done()
}

// createTask reserves a place in the queue and stores t as a new task,
// setting its ID, CreatedAt and LeaseUntil; it returns the id. The store
// call keeps ctx's values but not its cancellation (it is bounded by
// storeTimeout instead): once Create has started, a caller that gives up
// must not leave behind a stored task that nobody queued. On success the
// caller must enqueue the task; on error the reservation is released. The
// errors are reserve's (ErrClosed, ErrQueueFull) or the store's.
func (r *Recorder) createTask(ctx context.Context, t taskstore.Task) (string, error) {
	if err := r.reserve(); err != nil {
		return "", err
	}
	t.ID, t.CreatedAt = newTaskID(), r.now()
	t.LeaseUntil = t.CreatedAt.Add(r.o.Lease)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	err := r.store.Create(sctx, t)
	cancel()
	if err != nil {
		r.release()
		return "", closedErr(err)
	}
	return t.ID, nil
}

// enqueue hands a stored task to the workers. The reserved slot guarantees
// room in the channel, so it never blocks.
func (r *Recorder) enqueue(j *job) {
	r.mu.Lock()
	r.active[j.id] = struct{}{}
	r.mu.Unlock()
	// Counted and announced before a worker can take it, so that no
	// TaskFinished comes before its TaskCreated.
	r.c.tasksCreated.Add(1)
	if h := r.o.Hooks.TaskCreated; h != nil {
		h(TaskEvent{ID: j.id, Type: j.typ, TraceID: j.traceID})
	}
	r.jobs <- j
	r.submitting.Done()
}

func (r *Recorder) worker() {
	defer r.workersWG.Done()
	for j := range r.jobs {
		r.mu.Lock()
		r.waiting--
		r.running++
		r.mu.Unlock()
		r.runJob(j)
		r.mu.Lock()
		r.running--
		delete(r.active, j.id)
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
	err := r.untilStored(r.hardStop.Done(), "task start", j.id, func(ctx context.Context) error { return r.store.Start(ctx, j.id, started) })
	switch {
	case errors.Is(err, taskstore.ErrNotFound), errors.Is(err, taskstore.ErrConflict):
		// Deleted, or finished by someone else (its lease had expired).
		r.log.Warn("callback: task not run: it was deleted or already finished", "task_id", j.id, "err", err)
		return
	case err != nil:
		r.log.Error("callback: recording task start", "task_id", j.id, "err", err)
	}

	ctx, cancel := context.WithTimeout(j.base, r.o.TaskTimeout)
	stop := context.AfterFunc(r.hardStop, cancel)
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
	err := r.untilStored(r.hardStop.Done(), "task response", j.id, func(ctx context.Context) error {
		return r.store.Finish(ctx, j.id, resp, at)
	})
	switch {
	case errors.Is(err, taskstore.ErrNotFound), errors.Is(err, taskstore.ErrConflict):
		r.log.Warn("callback: task response not recorded: it was deleted or already finished", "task_id", j.id, "err", err)
		return
	case err != nil:
		// The lease is no longer renewed: once it expires a sweeper
		// finishes the task as interrupted, so it does not stay
		// unfinished forever.
		r.log.Error("callback: recording task response", "task_id", j.id, "err", err)
		return
	}
	r.finished(TaskEvent{ID: j.id, Type: j.typ, TraceID: j.traceID, Success: ok, Code: code, Duration: dur}, j.callback)
}

// finished counts a task whose response was recorded, calls the
// TaskFinished hook and, when the task has a callback, wakes the delivery
// loop.
func (r *Recorder) finished(ev TaskEvent, callback bool) {
	r.wakeWaiters(ev.ID)
	r.c.tasksFinished.Add(1)
	if !ev.Success {
		r.c.tasksFailed.Add(1)
	}
	if h := r.o.Hooks.TaskFinished; h != nil {
		h(ev)
	}
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
			err := r.retryUnavailable(r.bg.Done(), r.o.Lease/3, "task leases", "", func(ctx context.Context) error { return r.store.RenewLeases(ctx, chunk, until) })
			if err != nil && r.bg.Err() == nil {
				r.log.Error("callback: renewing task leases", "tasks", len(chunk), "err", err)
			}
		}
	}
}

// sweeper finishes abandoned tasks (their lease expired: the process that
// held them is gone) as interrupted, at once and then every Lease.
func (r *Recorder) sweeper() {
	t := time.NewTicker(r.o.Lease)
	defer t.Stop()
	for {
		if err := r.sweep(r.bg, r.now()); err != nil && r.bg.Err() == nil {
			r.log.Error("callback: finishing abandoned tasks", "err", err)
		}
		select {
		case <-r.bg.Done():
			return
		case <-t.C:
		}
	}
}

// sweep finishes as interrupted the unfinished tasks whose lease expired
// before the given time, except this recorder's own. It stops when a batch
// makes no progress and returns the first store failure.
func (r *Recorder) sweep(ctx context.Context, before time.Time) error {
	for {
		var tasks []taskstore.Task
		err := r.retryStore(ctx, func(ctx context.Context) error {
			var err error
			tasks, err = r.store.Abandoned(ctx, before, sweepBatch)
			return err
		})
		if err != nil {
			return err
		}
		progress := 0
		var firstErr error
		for _, t := range tasks {
			r.mu.Lock()
			_, own := r.active[t.ID]
			r.mu.Unlock()
			if own {
				continue
			}
			resp, at := failure(t.ID, t.TraceID, CodeInterrupted, msgAbandoned), r.now()
			err := r.retryStore(ctx, func(ctx context.Context) error { return r.store.Finish(ctx, t.ID, resp, at) })
			switch {
			case errors.Is(err, taskstore.ErrNotFound), errors.Is(err, taskstore.ErrConflict):
				progress++ // someone else finished or deleted it
			case err != nil:
				if firstErr == nil {
					firstErr = err
				}
			default:
				progress++
				r.log.Info("callback: abandoned task finished as interrupted", "task_id", t.ID)
				r.finished(TaskEvent{ID: t.ID, Type: t.Type, TraceID: t.TraceID, Code: CodeInterrupted}, t.Callback.URL != "")
			}
		}
		if len(tasks) < sweepBatch || progress == 0 {
			return firstErr
		}
	}
}

// pruner deletes tasks older than the retention window, at once and then
// every min(Retention/10, 1h), but not more often than once a second.
func (r *Recorder) pruner() {
	t := time.NewTicker(max(min(r.o.Retention/10, time.Hour), time.Second))
	defer t.Stop()
	for {
		before := r.now().Add(-r.o.Retention)
		total := 0
		for r.bg.Err() == nil {
			var n int
			err := r.retryStore(r.bg, func(ctx context.Context) error {
				var err error
				n, err = r.store.Prune(ctx, before, pruneBatch)
				return err
			})
			total += n
			if err != nil {
				if r.bg.Err() == nil {
					r.log.Error("callback: pruning old tasks", "err", err)
				}
				break
			}
			if n < pruneBatch {
				break
			}
		}
		if total > 0 {
			r.log.Info("callback: pruned old tasks", "deleted", total, "created_before", before)
		}
		select {
		case <-r.bg.Done():
			return
		case <-t.C:
		}
	}
}
