package callback

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/tasksapi/tasks/taskstore"
)

// The reasons a task finds no room, each an ErrQueueFull.
var (
	errPrincipalQueueFull = fmt.Errorf("%w: too many tasks of this principal are waiting", ErrQueueFull)
	errPrincipalBytesFull = fmt.Errorf("%w: this principal's waiting tasks hold too many bytes", ErrQueueFull)
	errQueueBytesFull     = fmt.Errorf("%w: waiting tasks hold too many bytes", ErrQueueFull)
)

// ErrRequestTooLarge: Submit's Request is longer than
// Options.MaxRequestBytes. Nothing was stored. The returned error wraps it
// with the limit.
var ErrRequestTooLarge = errors.New("callback: request too large to store")

// principalKey identifies a principal for the per-principal limits: its
// application and user (the credential is not a tenant of its own).
func principalKey(p taskstore.Principal) string {
	return strconv.Itoa(len(p.ApplicationID)) + ":" + p.ApplicationID + p.UserID
}

// fairQueue holds the queued tasks, one first-in first-out queue per
// principal, and hands them out round-robin over the principals that have
// some: a principal with many tasks waiting delays another's next task by
// at most one task. Guarded by Recorder.mu.
type fairQueue struct {
	byKey map[string]*tenantQueue // principals that hold places or bytes
	ring  []*tenantQueue          // principals with queued tasks, in turn
	next  int                     // index in ring of the next one served
}

// tenantQueue is one principal's share of the queue.
type tenantQueue struct {
	key      string
	jobs     []*job // queued, oldest first
	reserved int    // places reserved or queued
	bytes    int64  // held by its reserved, queued and running tasks
}

func newFairQueue() fairQueue { return fairQueue{byKey: make(map[string]*tenantQueue)} }

// push queues j behind its principal's other tasks.
func (q *fairQueue) push(j *job) {
	tq := j.owner
	if len(tq.jobs) == 0 {
		// It joins the turn just before the principal served next, so
		// it waits for a whole round at most.
		q.ring = append(q.ring, nil)
		copy(q.ring[q.next+1:], q.ring[q.next:])
		q.ring[q.next] = tq
		q.next = (q.next + 1) % len(q.ring)
	}
	tq.jobs = append(tq.jobs, j)
}

// pop takes the next task: the oldest of the principal whose turn it is.
// The queue must not be empty.
func (q *fairQueue) pop() *job {
	tq := q.ring[q.next]
	j := tq.jobs[0]
	tq.jobs[0] = nil
	tq.jobs = tq.jobs[1:]
	if len(tq.jobs) == 0 {
		tq.jobs = nil // let the backing array go
		q.ring = append(q.ring[:q.next], q.ring[q.next+1:]...)
		if q.next == len(q.ring) {
			q.next = 0
		}
	} else {
		q.next = (q.next + 1) % len(q.ring)
	}
	return j
}
