package callback

import (
	"context"
	"time"
)

// recoverBatch is how many failed callbacks Recover makes due per store
// call.
const recoverBatch = 500

// Redeliver makes the callbacks of the given tasks due again now and starts
// delivering them at once (not at the next poll of the store). It returns
// the ids it made due, in the order given: only finished tasks with a
// callback URL qualify, whatever their callback's status (delivered,
// failed, or pending with a retry scheduled later); the others are left
// out. The next attempt carries the same webhook-id and body as before and
// counts on from the attempts already made, so it follows the rest of
// Options.Schedule: a callback that had used up its attempts is given up
// again if this one fails.
//
// A delivery in flight at that moment is not sent twice: its id is in the
// answer and the attempt under way decides what follows (see
// taskstore.Store.Redeliver). A callback to a receiver paused after failing
// (Options.HostFailures) waits for the pause to end, like any other.
//
// Only this recorder's tasks (created by a recorder of its Options.Name)
// qualify: another recorder's tasks are left out of the answer, as its
// callbacks are signed and scheduled by that recorder. Redeliver reads the
// listed tasks to tell (one store read) before it makes them due.
//
// Redeliver does not check who may see the tasks: the Tasks API's
// redeliver action does that before it calls it.
func (r *Recorder) Redeliver(ctx context.Context, ids ...string) ([]string, error) {
	if r.ready == nil {
		return nil, ErrNotNew
	}
	if r.isClosed() {
		return nil, ErrClosed
	}
	own, err := r.ownTasks(ctx, ids)
	if err != nil {
		return nil, closedErr(err)
	}
	done, err := r.store.Redeliver(ctx, own, r.now())
	if err != nil {
		return nil, closedErr(err)
	}
	r.redelivered(ctx, done)
	return done, nil
}

// Recover makes due again every failed callback (given up: 410 Gone, a
// refused address, attempts used up) of this recorder's tasks (its
// Options.Name) that finished at or after since, like Redeliver, in
// batches of a few hundred, and returns how many it made due. Deliveries start as soon as each batch is made due. When ctx
// ends it stops between batches and returns what it made due so far with
// ctx's error.
func (r *Recorder) Recover(ctx context.Context, since time.Time) (int, error) {
	if r.ready == nil {
		return 0, ErrNotNew
	}
	if r.isClosed() {
		return 0, ErrClosed
	}
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		ids, err := r.store.RedeliverFailed(ctx, r.o.Name, since, r.now(), recoverBatch)
		if err != nil {
			return total, closedErr(err)
		}
		total += len(ids)
		r.redelivered(ctx, ids)
		if len(ids) < recoverBatch {
			return total, nil
		}
	}
}

// redelivered counts callbacks made due again, tells the hook, and wakes
// the delivery loop.
func (r *Recorder) redelivered(ctx context.Context, ids []string) {
	if len(ids) == 0 {
		return
	}
	r.c.redelivered.Add(uint64(len(ids)))
	callHook(r, "Redelivered", "", r.o.Hooks.Redelivered, ctx, ids)
	r.wakeDelivery()
}

func (r *Recorder) isClosed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}
