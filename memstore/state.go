package memstore

import "github.com/tasksapi/tasks/taskstore"

// state is a task's status and callback status in one small number: the tag
// tagged indexes keep for each entry. Of the twenty pairs, twelve can occur:
// an unfinished task's callback is waiting (or absent), a finished one's is
// pending, delivered or failed (or absent).
type state uint8

const (
	pendingNone state = iota // pending, no callback
	pendingWaiting
	runningNone
	runningWaiting
	succeededNone
	succeededPending
	succeededDelivered
	succeededFailed
	failedNone
	failedPending
	failedDelivered
	failedFailed
	nStates
)

// stateNames gives the status and callback status of each state.
var stateNames = [nStates]struct {
	status   taskstore.Status
	callback taskstore.CallbackStatus
}{
	{taskstore.StatusPending, taskstore.CallbackNone},
	{taskstore.StatusPending, taskstore.CallbackWaiting},
	{taskstore.StatusRunning, taskstore.CallbackNone},
	{taskstore.StatusRunning, taskstore.CallbackWaiting},
	{taskstore.StatusSucceeded, taskstore.CallbackNone},
	{taskstore.StatusSucceeded, taskstore.CallbackPending},
	{taskstore.StatusSucceeded, taskstore.CallbackDelivered},
	{taskstore.StatusSucceeded, taskstore.CallbackFailed},
	{taskstore.StatusFailed, taskstore.CallbackNone},
	{taskstore.StatusFailed, taskstore.CallbackPending},
	{taskstore.StatusFailed, taskstore.CallbackDelivered},
	{taskstore.StatusFailed, taskstore.CallbackFailed},
}

// state returns the task's state, as Task.Status and Task.CallbackStatus
// report it.
func (r *rec) state() state {
	cb := state(0) // offset of the callback status within a task status
	if r.finished == 0 {
		if r.url != "" {
			cb = 1 // waiting
		}
		if r.started != 0 {
			return runningNone + cb
		}
		return pendingNone + cb
	}
	if r.url != "" {
		switch {
		case r.delivered != 0:
			cb = 2
		case r.next != 0:
			cb = 1
		default:
			cb = 3
		}
	}
	if r.ok {
		return succeededNone + cb
	}
	return failedNone + cb
}

// stateSet is a set of states, a bit each.
type stateSet uint16

// allStates holds every state: no status filter.
const allStates stateSet = 1<<nStates - 1

func (set stateSet) has(s state) bool { return set>>s&1 != 0 }

// statesOf returns the states a filter on the task status and the callback
// status selects (an empty value selects every status).
func statesOf(status taskstore.Status, callback taskstore.CallbackStatus) stateSet {
	var set stateSet
	for s, n := range stateNames {
		if (status == "" || n.status == status) && (callback == "" || n.callback == callback) {
			set |= 1 << s
		}
	}
	return set
}
