package callback

import (
	"context"
	"errors"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// claimResult is the answer to one ClaimDeliveries call of the loop.
type claimResult struct {
	tasks []taskstore.Task
	asked int
	err   error
}

// deliveryLoop claims due deliveries from the store (the outbox) and
// dispatches them (see hosts.go): at most DeliveryWorkers POSTs run at
// once, at most DeliveriesPerHost to one receiver and DeliveriesPerPrincipal
// for one principal, and up to 4×DeliveryWorkers more goroutines wait for
// the store to record their attempts. It looks at once when started,
// whenever woken (a task finished, a retry or a deferred delivery is due
// soon), when an attempt ends and every PollInterval.
//
// When the lease leaves room for a claimed delivery to wait and then run
// (Lease at least 3×AttemptTimeout) it claims DeliveryWorkers at a time
// (more while most of what it claims goes back to the store) and claims
// the next batch while there are free slots or half of the last still
// waits for one, keeping at most 4×DeliveryWorkers in memory. Otherwise it
// claims only what can start now, so that claims do not expire while
// waiting in line.
func (r *Recorder) deliveryLoop() {
	defer close(r.loopDone)
	n := r.o.DeliveryWorkers
	ahead := r.o.Lease >= 3*r.o.AttemptTimeout
	maxHeld := 4 * n
	var (
		held     []heldTask       // claimed, not started
		inflight chan claimResult // the claim under way, if any
		drained  bool             // the last claim found fewer than asked
		rewoken  bool             // woken while a claim was under way
		size     = n              // the next claim's size
		arrived  int              // tasks of the claim just received
		full     = true           // the next dispatch weighs every held delivery
	)
	// The loop wakes every PollInterval and when deferred deliveries
	// become due (later holds their times, to wakeGrain).
	var later wakeTimes
	nextPoll := r.now().Add(r.o.PollInterval)
	timer := time.NewTimer(r.o.PollInterval)
	defer timer.Stop()
	for {
		if full {
			var deferred int
			held, deferred = r.dispatch(held, ahead, maxHeld, &later)
			if arrived > 0 {
				// Most of a claim handed back: the due deliveries ahead are
				// those of receivers that cannot take them now; claim
				// further at once.
				if 2*deferred >= arrived {
					size = min(2*size, maxHeld)
				} else {
					size = n
				}
				arrived = 0
			}
		} else {
			held = r.startFree(held)
		}
		full = false
		if inflight == nil && !drained {
			r.disp.mu.Lock()
			free := n - r.disp.inflight
			r.disp.mu.Unlock()
			want := 0
			switch room := maxHeld - len(held); {
			case ahead && room >= max(n/2, 1) && (free > 0 || len(held) <= n/2):
				want = min(size, room)
			case !ahead && free > 0 && len(held) == 0:
				want = free
			}
			if want > 0 {
				inflight = r.claim(want)
			}
		}
		select {
		case <-r.stopLoop:
			if inflight != nil {
				for _, t := range (<-inflight).tasks {
					held = append(held, r.hold(t))
				}
			}
			r.stopDispatch(held)
			return
		case c := <-inflight:
			inflight = nil
			if c.err != nil {
				r.log.Error("callback: claiming due deliveries", "err", c.err)
				drained = !rewoken // the next tick tries again
			} else {
				drained = len(c.tasks) < c.asked && !rewoken
				arrived = len(c.tasks)
				for _, t := range c.tasks {
					held = append(held, r.hold(t))
				}
			}
			rewoken, full = false, true
		case <-r.disp.freed:
		case <-r.wake:
			drained, full = false, true
			rewoken = inflight != nil // that claim may have looked too early
		case <-timer.C:
			drained, full = false, true
			rewoken = inflight != nil
			now := r.now()
			later.popUntil(now)
			if !now.Before(nextPoll) {
				nextPoll = now.Add(r.o.PollInterval)
			}
			next := nextPoll
			if t, ok := later.first(); ok && t.Before(next) {
				next = t
			}
			timer.Reset(max(next.Sub(now), 0))
			continue
		}
		// Deferrals may want an earlier wake-up than the timer's.
		if t, ok := later.first(); ok && later.changed {
			later.changed = false
			if t.Before(nextPoll) {
				timer.Reset(max(t.Sub(r.now()), 0))
			}
		}
	}
}

// heldTask is a claimed delivery waiting in the loop, with its receiver and
// principal.
type heldTask struct {
	t  taskstore.Task
	h  *hostState
	pk string
}

// hold looks up a claimed delivery's receiver and principal.
func (r *Recorder) hold(t taskstore.Task) heldTask {
	r.disp.mu.Lock()
	key, ok := r.disp.keys[t.Callback.URL]
	if !ok {
		key = hostKey(t.Callback.URL)
		if len(r.disp.keys) >= maxKeys {
			clear(r.disp.keys)
		}
		r.disp.keys[t.Callback.URL] = key
	}
	h := r.disp.host(key)
	h.held++
	r.disp.mu.Unlock()
	return heldTask{t: t, h: h, pk: taskPrincipal(t)}
}

// wakeTimes is a set of times, to wakeGrain, in a min-heap.
type wakeTimes struct {
	h       []time.Time
	set     map[time.Time]struct{}
	changed bool // a time was added before the first
}

func (w *wakeTimes) add(t time.Time) {
	t = t.Add(wakeGrain - 1).Truncate(wakeGrain)
	if _, ok := w.set[t]; ok {
		return
	}
	if w.set == nil {
		w.set = make(map[time.Time]struct{})
	}
	w.set[t] = struct{}{}
	if len(w.h) == 0 || t.Before(w.h[0]) {
		w.changed = true
	}
	w.h = append(w.h, t)
	for i := len(w.h) - 1; i > 0; { // sift up
		p := (i - 1) / 2
		if !w.h[i].Before(w.h[p]) {
			break
		}
		w.h[i], w.h[p] = w.h[p], w.h[i]
		i = p
	}
}

func (w *wakeTimes) first() (time.Time, bool) {
	if len(w.h) == 0 {
		return time.Time{}, false
	}
	return w.h[0], true
}

// popUntil drops the times at or before now.
func (w *wakeTimes) popUntil(now time.Time) {
	for len(w.h) > 0 && !w.h[0].After(now) {
		delete(w.set, w.h[0])
		last := len(w.h) - 1
		w.h[0] = w.h[last]
		w.h = w.h[:last]
		for i := 0; ; { // sift down
			l, m := 2*i+1, i
			if l < len(w.h) && w.h[l].Before(w.h[m]) {
				m = l
			}
			if l+1 < len(w.h) && w.h[l+1].Before(w.h[m]) {
				m = l + 1
			}
			if m == i {
				break
			}
			w.h[i], w.h[m] = w.h[m], w.h[i]
			i = m
		}
	}
}

// claim starts a ClaimDeliveries call for up to want deliveries.
func (r *Recorder) claim(want int) chan claimResult {
	ch := make(chan claimResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(r.io, storeTimeout)
		defer cancel()
		tasks, err := r.store.ClaimDeliveries(ctx, r.o.Name, r.now(), r.o.Lease, want)
		ch <- claimResult{tasks, want, err}
	}()
	return ch
}

// dispatch goes through the claimed deliveries in the order they were
// claimed (earliest due first): it starts those that may start, keeps in
// memory those that will find room soon (a free slot, or their receiver's
// or principal's within holdWait, while their claim lasts; with ahead
// only, up to maxHeld) and hands the others back to the store. It returns
// the deliveries it kept and how many it handed back.
func (r *Recorder) dispatch(held []heldTask, ahead bool, maxHeld int, later *wakeTimes) (kept []heldTask, deferred int) {
	if len(held) == 0 {
		return held, 0
	}
	now, wall := r.now(), time.Now()
	var back []taskstore.Deferral
	var starts []heldTask
	var probes []bool
	giveBack := func(x heldTask, at time.Time) {
		back = append(back, taskstore.Deferral{ID: x.t.ID, ClaimedUntil: x.t.Callback.NextAttemptAt, Next: at})
		x.h.deferred++
		x.h.held--
		later.add(at)
	}
	kept = held[:0]
	var counted []*hostState // hosts whose waiting count this pass set
	r.disp.mu.Lock()
	for _, x := range held {
		h := x.h
		v, probe := r.admit(h, x.pk, x.t, now, wall)
		switch v {
		case startNow:
			h.held--
			starts = append(starts, x)
			probes = append(probes, probe)
		case startOver:
			// Its claim would end during the attempt: hand it back, due
			// now, rather than risk two processes sending at once.
			giveBack(x, now)
		case paused:
			giveBack(x, afterPause(h))
		case wait:
			if !ahead {
				giveBack(x, now.Add(minDefer))
				continue
			}
			kept = append(kept, x)
		case blocked:
			// The k-th delivery waiting for h this time round: kept when
			// it should find room soon, else handed back for about when
			// it should, at the pace the receiver takes them.
			if h.waiting == 0 {
				counted = append(counted, h)
			}
			h.waiting++
			w := r.expectedWait(h, h.waiting)
			if ahead && w <= holdWait && len(kept) < maxHeld && now.Add(w+r.o.AttemptTimeout).Before(x.t.Callback.NextAttemptAt) {
				kept = append(kept, x)
				continue
			}
			giveBack(x, now.Add(min(max(w, minDefer), r.o.MaxHostPause)))
		}
	}
	for _, h := range counted {
		h.waiting = 0
	}
	r.disp.mu.Unlock()
	clear(held[len(kept):]) // let the tasks handed on go
	for i, x := range starts {
		r.start(x, probes[i], wall)
	}
	if len(back) > 0 {
		r.handBack(back)
	}
	return kept, len(back)
}

// startFree starts held deliveries, earliest claimed first, while slots are
// free: the light pass made when an attempt ends. It leaves the others as
// they are (the next full dispatch weighs them).
func (r *Recorder) startFree(held []heldTask) []heldTask {
	if len(held) == 0 {
		return held
	}
	now, wall := r.now(), time.Now()
	var starts []heldTask
	var probes []bool
	kept := held[:0]
	r.disp.mu.Lock()
	for i, x := range held {
		if r.disp.inflight >= r.o.DeliveryWorkers {
			kept = append(kept, held[i:]...)
			break
		}
		v, probe := r.admit(x.h, x.pk, x.t, now, wall)
		if v != startNow {
			kept = append(kept, x)
			continue
		}
		x.h.held--
		starts = append(starts, x)
		probes = append(probes, probe)
	}
	r.disp.mu.Unlock()
	clear(held[len(kept):])
	for i, x := range starts {
		r.start(x, probes[i], wall)
	}
	return kept
}

// handBack defers deliveries in the background (a store write); a failure,
// or Close giving up, leaves them claimed until their claims expire.
func (r *Recorder) handBack(ds []taskstore.Deferral) {
	r.deliveries.Add(1)
	go func() {
		defer r.deliveries.Done()
		var n int
		err := r.retryStore(r.io, func(ctx context.Context) error {
			var err error
			n, err = r.store.DeferDeliveries(ctx, ds)
			return err
		})
		if err != nil {
			if r.io.Err() == nil {
				r.log.Error("callback: handing deliveries back to the store", "deliveries", len(ds), "err", err)
			}
			return
		}
		r.c.deferred.Add(uint64(n))
	}()
}

// wakeAt wakes the delivery loop at t (rounded up to wakeGrain), unless a
// wake-up is already set for that moment.
func (r *Recorder) wakeAt(t time.Time) {
	slot := t.Add(wakeGrain - 1).Truncate(wakeGrain)
	r.wakeMu.Lock()
	defer r.wakeMu.Unlock()
	if _, ok := r.wakes[slot]; ok {
		return
	}
	r.wakes[slot] = struct{}{}
	time.AfterFunc(max(slot.Sub(r.now()), 0), func() {
		r.wakeMu.Lock()
		delete(r.wakes, slot)
		r.wakeMu.Unlock()
		r.wakeDelivery()
	})
}

// wakeGrain is the resolution of wakeAt: wake-ups within it are one.
const wakeGrain = 10 * time.Millisecond

// stopDispatch ends the loop's work when Close stops it: the claimed
// deliveries that can start now start (Close gives running deliveries a
// grace period); the others are handed back to the store, due now, for the
// next start or another process.
func (r *Recorder) stopDispatch(held []heldTask) {
	now, wall := r.now(), time.Now()
	var back []taskstore.Deferral
	for _, x := range held {
		r.disp.mu.Lock()
		v, probe := r.admit(x.h, x.pk, x.t, now, wall)
		x.h.held--
		r.disp.mu.Unlock()
		if v == startNow {
			r.start(x, probe, wall)
			continue
		}
		back = append(back, taskstore.Deferral{ID: x.t.ID, ClaimedUntil: x.t.Callback.NextAttemptAt, Next: now})
	}
	if len(back) > 0 {
		r.handBack(back)
	}
}

// start runs one delivery attempt in a goroutine; admit took its slot at
// began (wall clock).
func (r *Recorder) start(x heldTask, probe bool, began time.Time) {
	r.deliveries.Add(1)
	go func() {
		defer r.deliveries.Done()
		r.deliver(x.t, x.h, x.pk, probe, began)
	}()
}

// deliver makes one attempt to deliver t's callback and records it. The
// attempt's slot frees once the POST is over: the next attempt may start
// while this one is being recorded. At most 4×DeliveryWorkers attempts
// wait to be recorded; beyond that, a finished attempt keeps its slot until
// a recording place frees, so that claims slow down to what the store can
// record.
func (r *Recorder) deliver(t taskstore.Task, h *hostState, pk string, probe bool, began time.Time) {
	now := r.now()
	ctx := context.WithValue(r.io, taskIDKey{}, t.ID) // the attempt's context
	res := r.sender.Send(ctx, t.Callback.URL, t.ID, t.Response, now)
	if r.io.Err() != nil {
		// Cancelled by Close: not an attempt. The claim expires and the
		// next start (or another process) retries.
		r.ended(h, pk, probe, began, res, neutral)
		return
	}
	select {
	case r.recording <- struct{}{}:
	case <-r.io.Done(): // Close gave up: left unrecorded, as above
		r.ended(h, pk, probe, began, res, neutral)
		return
	}
	r.ended(h, pk, probe, began, res, classify(res))
	defer func() { <-r.recording }()
	attempt := t.Callback.Attempts + 1
	// The sender describes every failed attempt in res.Err ("" when
	// delivered).
	a := taskstore.Attempt{At: now, Status: res.Status, Error: res.Err, Delivered: res.Delivered}
	if !res.Delivered && !res.Gone && !res.Permanent {
		// Retried on the schedule; past its end a.Next stays zero: given up.
		a.Next, _ = r.o.Schedule.next(attempt, now, res.RetryAfter)
	}
	// A delivered callback whose recording fails while the store is
	// unavailable is held here and recorded once it answers: sending it
	// again after the claim would be a duplicate.
	err := r.untilStored(r.io, "delivery attempt", t.ID, func(ctx context.Context) error {
		return r.store.RecordAttempt(ctx, t.ID, a)
	})
	if err != nil {
		switch {
		case errors.Is(err, taskstore.ErrNotFound) || errors.Is(err, taskstore.ErrConflict):
			r.log.Warn("callback: delivery attempt not recorded: the task was deleted or its callback settled", "task_id", t.ID, "err", err)
		case r.io.Err() != nil:
			r.log.Warn("callback: delivery attempt not recorded: Close gave up waiting for the store; it is made again once its claim expires",
				"task_id", t.ID, "err", err)
		default:
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
		// Summed up per receiver every LogInterval (deliveryLog).
		r.c.givenUp.Add(1)
		r.noteAttempt(h, true)
		r.log.Debug("callback: delivery given up", "task_id", t.ID, "host", h.key, "attempt", attempt, "status", res.Status, "err", a.Error)
	default:
		r.noteAttempt(h, false)
		r.log.Debug("callback: delivery failed; will retry", "task_id", t.ID, "host", h.key, "attempt", attempt, "status", res.Status, "err", a.Error, "next", a.Next)
		if d := a.Next.Sub(r.now()); d < r.o.PollInterval {
			r.wakeAt(a.Next)
		}
	}
	callHook(r, "DeliveryAttempted", t.ID, r.o.Hooks.DeliveryAttempted, ctx, DeliveryEvent{
		TaskID: t.ID, Type: t.Type, TraceID: t.TraceID, Attempt: attempt, Status: res.Status,
		Delivered: a.Delivered, GaveUp: gaveUp, Next: a.Next, Err: a.Error, Duration: time.Since(began),
	})
}
