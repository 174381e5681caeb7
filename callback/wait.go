package callback

import (
	"context"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// waitPoll bounds how long Wait goes without asking the store: a task
// finished by another process sharing the store (its sweeper, say) is
// seen within this time.
const waitPoll = 250 * time.Millisecond

// Wait waits until the task with the given id has finished (its response
// is recorded, by this recorder or by any process sharing the store) and
// returns it as stored. A task finished by this recorder is returned as
// soon as its response is recorded; one finished elsewhere within a
// quarter of a second. It returns taskstore.ErrNotFound when there is no
// such task (or it was deleted while waiting), and ctx's error when ctx
// ends first. It does not wait for the task's callback: poll the task's
// CallbackStatus for that.
//
// Wait is meant for code that submits with Submit and wants the outcome in
// the same process (a worker of another kind, a test), not for serving
// clients, which poll the Tasks API.
func (r *Recorder) Wait(ctx context.Context, id string) (taskstore.Task, error) {
	if r.store == nil {
		return taskstore.Task{}, ErrNotNew
	}
	for {
		done := r.waitFor(id)
		t, err := r.store.Get(ctx, id)
		switch {
		case err != nil:
			r.stopWaiting(id, done)
			return taskstore.Task{}, closedErr(err)
		case t.Finished():
			r.stopWaiting(id, done)
			return t, nil
		}
		timer := time.NewTimer(waitPoll)
		select {
		case <-done:
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			r.stopWaiting(id, done)
			return taskstore.Task{}, ctx.Err()
		}
		timer.Stop()
		r.stopWaiting(id, done)
	}
}

// waitFor registers a waiter for the task id: the returned channel is
// closed when this recorder records the task's response.
func (r *Recorder) waitFor(id string) chan struct{} {
	ch := make(chan struct{})
	r.mu.Lock()
	if r.waiters == nil {
		r.waiters = make(map[string][]chan struct{})
	}
	r.waiters[id] = append(r.waiters[id], ch)
	r.mu.Unlock()
	return ch
}

// stopWaiting removes a waiter that no longer waits.
func (r *Recorder) stopWaiting(id string, ch chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	list := r.waiters[id]
	for i, c := range list {
		if c == ch {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(r.waiters, id)
	} else {
		r.waiters[id] = list
	}
}

// wakeWaiters tells the waiters of task id that its response is recorded.
func (r *Recorder) wakeWaiters(id string) {
	r.mu.Lock()
	list := r.waiters[id]
	delete(r.waiters, id)
	r.mu.Unlock()
	for _, ch := range list {
		close(ch)
	}
}
