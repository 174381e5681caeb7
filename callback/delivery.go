package callback

import (
	"context"
	"errors"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// deliveryLoop claims due deliveries from the store (the outbox) and hands
// each to a delivery goroutine; at most DeliveryWorkers POSTs run at once,
// and up to 4×DeliveryWorkers more goroutines wait for the store to record
// their attempts. It looks at once when started, whenever woken (a task
// finished, a retry is due soon) and every PollInterval.
func (r *Recorder) deliveryLoop() {
	defer close(r.loopDone)
	slots := make(chan struct{}, r.o.DeliveryWorkers) // one token per attempt in flight
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-r.stopLoop:
			return
		case <-r.wake:
		case <-timer.C:
		}
		r.claimDue(slots)
		timer.Reset(r.o.PollInterval)
	}
}

// claimDue claims and starts due deliveries while there are some and free
// slots to run them.
//
// A claim is a write to the store, so when the lease leaves room for a
// claimed delivery to wait for a slot (typically two attempts' duration;
// a delivery whose claim no longer covers a whole attempt is not started)
// and then run, it claims DeliveryWorkers at a time, and claims the next batch
// while half of the current one still waits for slots, so that a slot that
// frees finds a delivery ready rather than waiting for the store. Otherwise
// it claims only what can start now, so that claims do not expire while
// waiting in line.
func (r *Recorder) claimDue(slots chan struct{}) {
	if r.o.Lease < 3*r.o.AttemptTimeout {
		r.claimEach(slots)
		return
	}
	n := cap(slots)
	type claim struct {
		tasks []taskstore.Task
		err   error
	}
	var (
		queue    []taskstore.Task // claimed, waiting for a slot
		inflight chan claim       // the claim under way, if any
		drained  bool             // the last claim found fewer than asked
	)
	for {
		if inflight == nil && !drained && len(queue) <= n/2 {
			inflight = make(chan claim, 1)
			go func(ch chan<- claim) {
				ctx, cancel := context.WithTimeout(r.deliverCtx, storeTimeout)
				defer cancel()
				tasks, err := r.store.ClaimDeliveries(ctx, r.now(), r.o.Lease, n)
				ch <- claim{tasks, err}
			}(inflight)
		}
		if len(queue) == 0 && inflight == nil {
			return
		}
		var free chan struct{} // nil (never ready) while nothing is queued
		if len(queue) > 0 {
			free = slots
		}
		select {
		case c := <-inflight:
			inflight = nil
			if c.err != nil {
				r.log.Error("callback: claiming due deliveries", "err", c.err)
				drained = true // the next tick tries again
			}
			drained = drained || len(c.tasks) < n
			queue = append(queue, c.tasks...)
		case free <- struct{}{}:
			t := queue[0]
			queue = queue[1:]
			if !r.startIfCovered(t, slots) {
				<-slots
			}
		case <-r.stopLoop:
			// A claim under way must end before Close returns. What was
			// claimed starts while slots are free (Close gives running
			// deliveries a grace period); the rest is left to expire and
			// be retried after the lease.
			if inflight != nil {
				queue = append(queue, (<-inflight).tasks...)
			}
			for _, t := range queue {
				select {
				case slots <- struct{}{}:
					if !r.startIfCovered(t, slots) {
						<-slots
					}
				default:
					return
				}
			}
			return
		}
	}
}

// claimEach claims one delivery per free slot, when the lease is too short
// to claim ahead.
func (r *Recorder) claimEach(slots chan struct{}) {
	for {
		// Claim only when at least one delivery can start now.
		select {
		case slots <- struct{}{}:
		case <-r.stopLoop:
			return
		}
		free := 1
	fill:
		for free < cap(slots) {
			select {
			case slots <- struct{}{}:
				free++
			default:
				break fill
			}
		}
		ctx, cancel := context.WithTimeout(r.deliverCtx, storeTimeout)
		tasks, err := r.store.ClaimDeliveries(ctx, r.now(), r.o.Lease, free)
		cancel()
		for range free - min(free, len(tasks)) {
			<-slots
		}
		if err != nil {
			r.log.Error("callback: claiming due deliveries", "err", err)
			return // the next tick tries again
		}
		for _, t := range tasks {
			r.start(t, slots)
		}
		if len(tasks) < free {
			return
		}
	}
}

// startIfCovered starts t's attempt, holding the slot the caller took, when
// t's claim lasts for a whole attempt. Otherwise it reports false: the claim
// is left to expire and be claimed again, rather than risk two processes
// sending at once.
func (r *Recorder) startIfCovered(t taskstore.Task, slots chan struct{}) bool {
	if r.now().Add(r.o.AttemptTimeout).After(t.Callback.NextAttemptAt) {
		return false
	}
	r.start(t, slots)
	return true
}

// start runs one delivery attempt in a goroutine holding one of slots.
func (r *Recorder) start(t taskstore.Task, slots chan struct{}) {
	r.deliveries.Add(1)
	go func() {
		defer r.deliveries.Done()
		r.deliver(t, func() { <-slots })
	}()
}

// deliver makes one attempt to deliver t's callback and records it. It
// calls done, which frees the attempt's slot, once the POST is over: the
// next attempt may start while this one is being recorded. At most
// 4×DeliveryWorkers attempts wait to be recorded; beyond that, a finished
// attempt keeps its slot until a recording place frees, so that claims
// slow down to what the store can record.
func (r *Recorder) deliver(t taskstore.Task, done func()) {
	now := r.now()
	began := time.Now()
	res := r.sender.Send(r.deliverCtx, t.Callback.URL, t.ID, t.Response, now)
	if r.deliverCtx.Err() != nil {
		// Cancelled by Close: not an attempt. The claim expires and the
		// next start (or another process) retries.
		done()
		return
	}
	r.recording <- struct{}{}
	done()
	defer func() { <-r.recording }()
	attempt := t.Callback.Attempts + 1
	// The sender describes every failed attempt in res.Err ("" when
	// delivered).
	a := taskstore.Attempt{At: now, Status: res.Status, Error: res.Err, Delivered: res.Delivered}
	if !res.Delivered && !res.Gone && !res.Permanent {
		// Retried on the schedule; past its end a.Next stays zero: given up.
		a.Next, _ = r.o.Schedule.Next(attempt, now, res.RetryAfter, nil)
	}
	// A delivered callback whose recording fails while the store is
	// unavailable is held here and recorded once it answers: sending it
	// again after the claim would be a duplicate.
	err := r.untilStored(r.deliverCtx.Done(), "delivery attempt", t.ID, func(ctx context.Context) error {
		return r.store.RecordAttempt(ctx, t.ID, a)
	})
	if err != nil {
		if errors.Is(err, taskstore.ErrNotFound) || errors.Is(err, taskstore.ErrConflict) {
			r.log.Warn("callback: delivery attempt not recorded: the task was deleted or its callback settled", "task_id", t.ID, "err", err)
		} else {
			// The claim expires and the delivery becomes due again.
			r.log.Error("callback: recording delivery attempt", "task_id", t.ID, "err", err)
		}
		return
	}
	gaveUp := !a.Delivered && a.Next.IsZero()
	r.c.deliveriesAttempted.Add(1)
	switch {
	case a.Delivered:
		r.c.delivered.Add(1)
		r.log.Debug("callback: delivered", "task_id", t.ID, "attempt", attempt, "status", res.Status)
	case gaveUp:
		r.c.givenUp.Add(1)
		r.log.Warn("callback: delivery given up", "task_id", t.ID, "attempt", attempt, "status", res.Status, "err", a.Error)
	default:
		r.log.Info("callback: delivery failed; will retry", "task_id", t.ID, "attempt", attempt, "status", res.Status, "err", a.Error, "next", a.Next)
		if d := a.Next.Sub(r.now()); d < r.o.PollInterval {
			time.AfterFunc(max(d, 0), r.wakeDelivery)
		}
	}
	if h := r.o.Hooks.DeliveryAttempted; h != nil {
		h(DeliveryEvent{
			TaskID: t.ID, Attempt: attempt, Status: res.Status, Delivered: a.Delivered, GaveUp: gaveUp,
			Next: a.Next, Err: a.Error, Duration: time.Since(began),
		})
	}
}
