package callback

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// deliveryLoop claims due deliveries from the store (the outbox) and hands
// each to a delivery goroutine, at most DeliveryWorkers at a time. It looks
// at once when started, whenever woken (a task finished, a retry is due
// soon) and every PollInterval.
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
// A claim is a write to the store, so it claims in batches: when the lease
// leaves room for a claimed delivery to wait for a slot (at most one
// attempt's duration) and then run, it claims up to DeliveryWorkers at once
// and starts each as a slot frees; otherwise it claims only what can start
// now, so that claims do not expire while waiting in line.
func (r *Recorder) claimDue(slots chan struct{}) {
	batch := 1
	if r.o.Lease >= 3*r.o.AttemptTimeout {
		batch = cap(slots)
	}
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
		want := max(free, batch)
		ctx, cancel := context.WithTimeout(r.deliverCtx, storeTimeout)
		tasks, err := r.store.ClaimDeliveries(ctx, r.now(), r.o.Lease, want)
		cancel()
		for range free - min(free, len(tasks)) {
			<-slots
		}
		if err != nil {
			r.log.Error("callback: claiming due deliveries", "err", err)
			return // the next tick tries again
		}
		for i, t := range tasks {
			if i >= free {
				// Claimed ahead: wait for a slot. If the loop stops
				// first, the claim simply expires and the delivery is
				// retried later.
				select {
				case slots <- struct{}{}:
				case <-r.stopLoop:
					return
				}
				if r.now().Add(r.o.AttemptTimeout).After(t.Callback.NextAttemptAt) {
					// Too little of the claim is left for a whole
					// attempt: leave it to expire and be claimed again,
					// rather than risk two processes sending at once.
					<-slots
					continue
				}
			}
			r.deliveries.Add(1)
			go func() {
				defer func() { <-slots }()
				defer r.deliveries.Done()
				r.deliver(t)
			}()
		}
		if len(tasks) < want {
			return
		}
	}
}

// deliver makes one attempt to deliver t's callback and records it.
func (r *Recorder) deliver(t taskstore.Task) {
	now := r.now()
	began := time.Now()
	res := r.sender.Send(r.deliverCtx, t.Callback.URL, t.ID, t.Response, now)
	if r.deliverCtx.Err() != nil {
		// Cancelled by Close: not an attempt. The claim expires and the
		// next start (or another process) retries.
		return
	}
	attempt := t.Callback.Attempts + 1
	a := taskstore.Attempt{At: now, Status: res.Status, Error: res.Err}
	switch {
	case res.Delivered:
		a.Delivered, a.Error = true, ""
	case res.Gone || res.Permanent:
		// give up: a.Next stays zero
	default:
		if next, ok := r.o.Schedule.Next(attempt, now, res.RetryAfter, rand.Float64); ok {
			a.Next = next
		}
	}
	if !a.Delivered && a.Error == "" {
		a.Error = "status " + strconv.Itoa(res.Status)
	}
	err := r.retryStore(context.WithoutCancel(r.deliverCtx), func(ctx context.Context) error {
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
