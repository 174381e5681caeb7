package callback

import (
	"context"
	"fmt"
	"runtime/debug"
	"time"
)

// Hooks are optional functions called when something happens, to feed
// metrics or traces. They are called synchronously from the recorder's
// goroutines, possibly concurrently: keep them fast and safe for concurrent
// use. A nil hook is skipped. A hook that panics is recovered: the panic is
// logged at Error level with the hook's name and stack, as a task handler's
// panic is, and the recorder goes on as if the hook had returned.
//
// Each hook gets a context carrying the values of the work it reports on
// (for the task and delivery hooks, the task id that TaskID reads); its
// cancellation is not the hook's to obey.
type Hooks struct {
	// TaskCreated is called once a task has been stored and queued, with
	// the values of the request's context (Wrap) or of Submit's, without
	// its cancellation: the context the task's run derives from.
	TaskCreated func(context.Context, TaskEvent)
	// TaskStarted is called when a worker starts running a task (its start
	// recorded), with the task's run context: the one the wrapped handler
	// or Submit's run function is about to get.
	TaskStarted func(context.Context, TaskEvent)
	// TaskFinished is called once a task's response has been recorded,
	// with the values of the task's run context (for a task finished as
	// interrupted by a sweep, a context carrying its id only).
	TaskFinished func(context.Context, TaskEvent)
	// DeliveryAttempted is called after every recorded delivery attempt,
	// with the attempt's context: the one its HTTP request carried through
	// Options.WrapTransport.
	DeliveryAttempted func(context.Context, DeliveryEvent)
	// Redelivered is called after Redeliver or Recover made callbacks due
	// again, with their context and the task ids (once per store call:
	// Recover calls it once per batch).
	Redelivered func(ctx context.Context, ids []string)
}

// TaskEvent describes a task for Hooks.
type TaskEvent struct {
	ID      string
	Type    string
	TraceID string
	// Success and Code are set for TaskFinished: Code is the failure code
	// ("api_error", "timeout", "interrupted", or the upstream's own) when
	// Success is false.
	Success bool
	Code    string
	// Duration is the run time for TaskFinished (zero when the task never
	// ran, e.g. interrupted while queued).
	Duration time.Duration
}

// DeliveryEvent describes one delivery attempt for Hooks.
type DeliveryEvent struct {
	TaskID string
	// Type and TraceID are the task's.
	Type    string
	TraceID string
	// Attempt counts this task's attempts, starting at 1.
	Attempt int
	// Status is the receiver's HTTP status, 0 when there was no answer.
	Status int
	// Delivered: the receiver accepted the callback. GaveUp: no further
	// attempt will be made. Neither: another attempt is scheduled at Next.
	Delivered bool
	GaveUp    bool
	Next      time.Time
	// Err describes a failed attempt.
	Err      string
	Duration time.Duration
}

// callHook calls the hook h, when set, with ctx and ev; a panic in it is
// logged (with the hook's name, the task id when there is one, and the
// stack) and goes no further.
func callHook[E any](r *Recorder, name, taskID string, h func(context.Context, E), ctx context.Context, ev E) {
	if h == nil {
		return
	}
	defer func() {
		if v := recover(); v != nil {
			r.log.ErrorContext(ctx, "callback: hook panicked", "hook", name, "task_id", taskID,
				"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
	}()
	h(ctx, ev)
}
