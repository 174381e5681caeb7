package callback

import (
	"context"
	"time"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// Upkeep: the sweeper finishes abandoned tasks (and, with SoleOwner, the
// tasks a previous process left unfinished), the pruner deletes tasks past
// the retention window. Both share the store with the requests being
// served, so they work in batches and, after each batch, pause for a
// multiple of the time the batch took (pause): the work then holds a
// bounded share of the store's time, and backs off by itself when the store
// is busy, since a batch then takes longer.
const (
	// sweepBatch is how many abandoned tasks a periodic sweep reads at a
	// time; restartBatch how many the first sweep of a SoleOwner reads.
	sweepBatch   = 100
	restartBatch = 500
	// finishBatch is how many tasks one FinishMany call finishes.
	finishBatch = 250
	// pruneBatch is how many old tasks one Prune call deletes. Under 16
	// clients, 250 cost submits 1.45x their p99 without pruning and 100
	// 1.05x, for about the same length of pass (internal/reliability
	// TestLongRunPrune, 270,000 of 300,000 tasks).
	pruneBatch = 100
	// sweepShare and pruneShare are the shares of the store's time the
	// sweeper and the pruner take while they have work (see pause).
	sweepShare = 0.5
	pruneShare = 0.25
	// minPause is the shortest pause after a batch, so that writes queued
	// behind it go first.
	minPause = time.Millisecond
)

// pause waits, after a batch of background work that took the given time,
// (1-share)/share times as long (at least minPause), so that the work holds
// at most that share of the store's time while it lasts. It reports false
// when ctx ends first.
func pause(ctx context.Context, took time.Duration, share float64) bool {
	t := time.NewTimer(max(time.Duration(float64(took)*(1-share)/share), minPause))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// sweeper finishes abandoned tasks (their lease expired: the process that
// held them is gone) as interrupted, at once and then every Lease. With
// SoleOwner its first pass is recoverTasks, tried again every Lease until
// it succeeds.
func (r *Recorder) sweeper() {
	t := time.NewTicker(r.o.Lease)
	defer t.Stop()
	recovering := r.o.SoleOwner
	for {
		if recovering {
			recovering = r.recoverTasks() != nil
		} else {
			start := time.Now()
			n, err := r.sweep(r.bg, r.now(), sweepBatch, r.isActive)
			if n > 0 {
				r.log.Info("callback: abandoned tasks finished as interrupted", "tasks", n,
					"took", time.Since(start).Round(time.Millisecond).String())
			}
			if err != nil && r.bg.Err() == nil {
				r.log.Error("callback: finishing abandoned tasks", "err", err)
			}
		}
		select {
		case <-r.bg.Done():
			return
		case <-t.C:
		}
	}
}

// recoverTasks finishes as interrupted every task that a previous process
// left unfinished: with SoleOwner no other process uses the store, so such
// a task has no owner, whatever its lease says. It logs one line (how many,
// how long) and returns the first store failure.
//
// The tasks this recorder creates are created from r.started on, with
// leases from r.started+Lease on. The first pass finishes every task whose
// lease ends before that, none of them this recorder's. The second finishes
// the tasks whose leases end later (a previous process that ran with a
// longer Lease, or a clock that was ahead), telling this recorder's own
// from theirs by the creation time. It reads restartBatch tasks at a time in
// lease order, where this recorder's tasks come among them: should one read
// hold only its own (it already runs that many), the previous process's
// remaining tasks are left to the periodic sweep, which finishes them once
// their leases expire.
func (r *Recorder) recoverTasks() error {
	start := time.Now()
	n, err := r.sweep(r.bg, storekit.Millis(r.started.Add(r.o.Lease)), restartBatch, r.isActive)
	if err == nil {
		var more int
		more, err = r.sweep(r.bg, r.started.AddDate(100, 0, 0), restartBatch, func(t taskstore.Task) bool {
			return !t.CreatedAt.Before(r.started) || r.isActive(t)
		})
		n += more
	}
	if n > 0 || err == nil {
		r.log.Info("callback: tasks of a previous process finished as interrupted", "tasks", n,
			"took", time.Since(start).Round(time.Millisecond).String())
	}
	if err != nil && r.bg.Err() == nil {
		r.log.Error("callback: finishing the tasks of a previous process; trying again in a lease", "err", err)
	}
	return err
}

// isActive reports whether t is queued or running in this recorder.
func (r *Recorder) isActive(t taskstore.Task) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.active[t.ID]
	return ok
}

// sweep finishes as interrupted the unfinished tasks whose lease ended
// before the given time, except those skip reports (this recorder's own),
// limit at a time, finishBatch per store write, pausing after each write
// (sweepShare). It stops when a read returns fewer than limit tasks or none
// it may finish, and returns how many it finished and the first store
// failure.
func (r *Recorder) sweep(ctx context.Context, before time.Time, limit int, skip func(taskstore.Task) bool) (int, error) {
	total := 0
	for {
		var tasks []taskstore.Task
		err := r.retryStore(ctx, func(ctx context.Context) error {
			var err error
			tasks, err = r.store.Abandoned(ctx, r.o.Name, before, limit)
			return err
		})
		if err != nil {
			return total, err
		}
		batch := tasks[:0:0]
		for _, t := range tasks {
			if !skip(t) {
				batch = append(batch, t)
			}
		}
		kept := len(batch)
		for len(batch) > 0 {
			chunk := batch[:min(len(batch), finishBatch)]
			batch = batch[len(chunk):]
			n, took, err := r.finishAbandoned(ctx, chunk)
			total += n
			if err != nil {
				return total, err
			}
			if !pause(ctx, took, sweepShare) {
				return total, ctx.Err()
			}
		}
		// Each task read and not skipped is finished now (or was finished
		// or deleted by someone else): the next read goes further.
		if len(tasks) < limit || kept == 0 {
			return total, nil
		}
	}
}

// finishAbandoned finishes the given tasks as interrupted in one store
// write, reports each one it finished (TaskFinished, the delivery loop
// woken for a callback) and returns how many and how long the write took.
// The others were finished or deleted by someone else meanwhile.
func (r *Recorder) finishAbandoned(ctx context.Context, tasks []taskstore.Task) (int, time.Duration, error) {
	outcomes := make([]taskstore.Outcome, len(tasks))
	for i, t := range tasks {
		outcomes[i] = taskstore.Outcome{ID: t.ID, Response: failure(t.ID, t.TraceID, CodeInterrupted, msgAbandoned)}
	}
	var done []string
	start, at := time.Now(), r.now() // at: the same for every try
	err := r.retryStore(ctx, func(ctx context.Context) error {
		var err error
		done, err = r.store.FinishMany(ctx, outcomes, at)
		return err
	})
	took := time.Since(start)
	if err != nil {
		return 0, took, err
	}
	// done is in the order given: walk both.
	i := 0
	for _, id := range done {
		for tasks[i].ID != id {
			i++
		}
		t := tasks[i]
		r.log.Debug("callback: abandoned task finished as interrupted", "task_id", t.ID)
		r.finished(context.WithValue(context.Background(), taskIDKey{}, t.ID),
			TaskEvent{ID: t.ID, Type: t.Type, TraceID: t.TraceID, Code: CodeInterrupted}, t.Callback.URL != "")
	}
	return len(done), took, nil
}

// pruner deletes tasks older than the retention window: a pass at once and
// then every min(Retention/10, 1h), but not more often than once a second.
// A pass deletes pruneBatch tasks per store call and pauses after each
// (pruneShare); it logs one line when it deleted anything.
func (r *Recorder) pruner() {
	t := time.NewTicker(max(min(r.o.Retention/10, time.Hour), time.Second))
	defer t.Stop()
	for {
		before := r.now().Add(-r.o.Retention)
		start := time.Now()
		total := 0
		for r.bg.Err() == nil {
			var n int
			t0 := time.Now()
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
			if n < pruneBatch || !pause(r.bg, time.Since(t0), pruneShare) {
				break
			}
		}
		if total > 0 {
			r.log.Info("callback: pruned old tasks", "deleted", total, "created_before", before,
				"took", time.Since(start).Round(time.Millisecond).String())
		}
		select {
		case <-r.bg.Done():
			return
		case <-t.C:
		}
	}
}
