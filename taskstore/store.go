package taskstore

import (
	"context"
	"encoding/json"
	"time"
)

// Store keeps tasks. Implementations are safe for concurrent use by many
// goroutines (and, for shared-database stores, by many processes).
//
// Every method takes a context first; a cancelled context aborts the call
// with the context's error. Returned tasks are copies: changing them never
// changes the stored task. Times given to a store are truncated to the
// millisecond; a zero time argument of Start, Finish or RecordAttempt (at,
// a delivered Attempt's At) means the current time. Errors other than the
// sentinels (ErrNotFound, ErrConflict, ErrInvalid, ErrClosed) are system
// failures; those that wrap ErrUnavailable say the store cannot reach its
// data for now and the call may succeed later.
//
// Start, Finish and RecordAttempt are safe to repeat: a call that finds
// the task exactly as the same call would have left it (the repeat of a
// write whose answer was lost, say to a dropped database connection)
// succeeds and changes nothing. Exactly is defined on each; it includes
// the time given, so a caller that may repeat a call passes an explicit,
// non-zero time and the same one each time.
//
// # Recorders
//
// Every task carries the name of the callback recorder that created it
// (Task.Recorder; "" is the default recorder), so that several recorders,
// each with its own secret, schedule and hooks, share one store and each
// delivers only its own callbacks. The methods that select tasks for a
// recorder's background work take the name and select only that
// recorder's tasks: ClaimDeliveries (delivery), Abandoned (the sweep of
// abandoned tasks) and RedeliverFailed (recovery). The methods that act
// on tasks given by id (Start, Finish, FinishMany, RenewLeases,
// DeferDeliveries, RecordAttempt, Redeliver, Delete) do not look at it:
// their callers hold ids of tasks they own (a claim, a lease) or, for
// Redeliver, have checked whose the tasks are (callback.Recorder.Redeliver
// skips other recorders' tasks); a task made due by Redeliver is delivered
// by its own recorder whoever called it. Get, Find, Walk and Prune cover
// every recorder's tasks. An invalid name (CheckRecorder) gives
// ErrInvalid.
//
// The conformance suite in taskstore/storetest asserts these rules for
// every backend.
type Store interface {
	// Create stores a new task. The task is validated and normalized with
	// storekit.Normalize (ErrInvalid naming the field). A task with the same id
	// already stored gives ErrConflict and changes nothing. Request and
	// Response are kept byte for byte.
	Create(ctx context.Context, t Task) error

	// Get returns the task with the given id, or ErrNotFound.
	Get(ctx context.Context, id string) (Task, error)

	// Find returns the page of tasks matching f (every field of Filter,
	// the task and callback statuses included), newest first (CreatedAt
	// descending, then ID descending), skipping f.Offset and returning at
	// most f.Limit, together with the total number of tasks matching f
	// regardless of Offset and Limit. An invalid filter (negative Limit or
	// Offset) gives ErrInvalid. The page is never nil.
	Find(ctx context.Context, f Filter) (page []Task, total int, err error)

	// Start records that work on the task started at the given time. It
	// gives ErrNotFound for an unknown id, and ErrConflict (changing
	// nothing) when the task has already started or finished, except that
	// a repeat succeeds: an unfinished task whose StartedAt is already at
	// (the same millisecond) is left as it is and Start returns nil.
	Start(ctx context.Context, id string, at time.Time) error

	// Finish records the task's response (valid JSON, else ErrInvalid) and
	// FinishedAt, exactly once: finishing a finished task gives ErrConflict
	// and changes nothing; an unknown id gives ErrNotFound. It clears the
	// run lease and, when the task has a callback URL, makes the callback
	// due at the finish time, in the same atomic write, so that a recorded
	// response is never without its pending delivery.
	//
	// A repeat succeeds: when the task is already finished with this very
	// response (the same bytes) at this very time (FinishedAt is at, to the
	// millisecond), Finish returns nil and changes nothing. Any other
	// response or time, including one that differs only in white space,
	// is a second finish and gives ErrConflict.
	Finish(ctx context.Context, id string, response json.RawMessage, at time.Time) error

	// FinishMany finishes many tasks in one atomic write, each as Finish
	// would: every listed task that exists and is unfinished gets its
	// response, FinishedAt = at, its run lease cleared and, when it has a
	// callback URL, its callback due at at. It returns the ids it finished,
	// in the order given, each once. Unknown ids and tasks already finished
	// are left out of the answer and unchanged: where Finish gives
	// ErrNotFound or ErrConflict, FinishMany skips the task. An id listed
	// twice is finished with its first response. Every response is checked
	// first, as Finish checks it: one that is not valid JSON gives
	// ErrInvalid and finishes none. An empty list is a no-op.
	//
	// The write is all or nothing: once it returns nil, every task of the
	// answer is finished; after a system failure, either every task it
	// would have finished is, or none is. Since a finished task is skipped,
	// calling again with the same list is safe. It is meant for finishing
	// tasks in bulk (callback.Recorder finishes abandoned tasks with it),
	// in lists of some hundreds.
	FinishMany(ctx context.Context, outcomes []Outcome, at time.Time) ([]string, error)

	// Delete removes the task and its pending delivery. An unknown id gives
	// ErrNotFound.
	Delete(ctx context.Context, id string) error

	// Prune deletes at most limit tasks (limit > 0, else ErrInvalid) whose
	// CreatedAt is strictly before the given time, oldest first, whatever
	// their state, and returns how many it deleted. Call it again while it
	// returns limit.
	Prune(ctx context.Context, before time.Time, limit int) (int, error)

	// RenewLeases sets LeaseUntil of the given unfinished tasks to until.
	// Unknown or finished ids are ignored. An empty list is a no-op. A
	// store shared by several processes may skip, rather than wait for, a
	// task that another call is writing at that very moment (its Start or
	// Finish, say): callers renew long before a lease ends (the recorder
	// every third of it), so the next renewal covers a skipped one.
	RenewLeases(ctx context.Context, ids []string, until time.Time) error

	// Abandoned returns at most limit (> 0) unfinished tasks of the given
	// recorder (Task.Recorder) whose
	// LeaseUntil is before the given time (a zero LeaseUntil counts as
	// expired), oldest lease first (then by ID). Their owner is gone: a caller finishes
	// them as interrupted (Finish makes that safe when several do).
	Abandoned(ctx context.Context, recorder string, before time.Time, limit int) ([]Task, error)

	// ClaimDeliveries returns at most limit (> 0) tasks of the given
	// recorder (Task.Recorder) whose callback is
	// pending and due (Callback.NextAttemptAt at or before now), the
	// earliest due first (then by ID), and claims them: their NextAttemptAt moves to
	// now+lease in the same atomic write, so no other ClaimDeliveries call
	// (from this or another process) returns them before the claim expires.
	// A claimer that dies simply lets the claim expire; the delivery then
	// becomes due again. The returned tasks carry the new NextAttemptAt.
	// Until RecordAttempt ends it or it expires, a claim marks the delivery
	// as in flight, which Redeliver respects.
	// Another recorder's due callbacks are neither returned nor claimed.
	// A zero now, a negative lease or a limit below 1 gives ErrInvalid
	// (storekit.CheckClaim).
	ClaimDeliveries(ctx context.Context, recorder string, now time.Time, lease time.Duration, limit int) ([]Task, error)

	// DeferDeliveries hands claimed deliveries back without an attempt:
	// for each Deferral whose task's callback is pending and still held by
	// the claim that ends at its ClaimedUntil (the NextAttemptAt
	// ClaimDeliveries returned), the delivery becomes due at its Next and
	// the claim ends; Attempts, LastStatus and LastError are unchanged. A
	// task that claim no longer holds (unknown, deleted, not pending, never
	// claimed, or claimed again after the claim expired) is left alone. It
	// returns how many deliveries it deferred. A zero ClaimedUntil or Next
	// gives ErrInvalid and changes nothing; an empty list is a no-op.
	//
	// A claimer uses it for a delivery it decided not to attempt now (its
	// receiver is paused or busy), so that the delivery is neither counted
	// as an attempt nor held until the claim expires. It is atomic with
	// respect to ClaimDeliveries, RecordAttempt and Redeliver on the same
	// tasks.
	DeferDeliveries(ctx context.Context, ds []Deferral) (int, error)

	// RecordAttempt records the outcome of a delivery attempt: Attempts
	// grows by one, LastStatus and LastError take the attempt's values, and
	// the callback becomes delivered (DeliveredAt = a.At), rescheduled
	// (NextAttemptAt = a.Next) or given up (a.Next zero); a claim on it
	// ends. An unknown id
	// gives ErrNotFound; a task whose callback is not pending (no URL,
	// unfinished, delivered or given up) gives ErrConflict and changes
	// nothing.
	//
	// A repeat succeeds and changes nothing (Attempts does not grow): an
	// attempt whose outcome the callback already records, with LastStatus
	// and LastError equal to the attempt's (LastError as the store keeps
	// it) and, for a delivered attempt, a delivered callback whose
	// DeliveredAt is a.At; for a rescheduled one (a.Next set), a pending
	// callback that no claim holds whose NextAttemptAt is a.Next; for one
	// that gives up, a failed callback. (An attempt is made on a claimed
	// callback, and a claim is ended only by recording an attempt or by
	// Redeliver, so the first recording of an attempt is never taken for
	// a repeat.)
	RecordAttempt(ctx context.Context, id string, a Attempt) error

	// Redeliver makes the callbacks of the listed tasks due again at the
	// given time (now when zero) and returns the ids it made due, in the
	// order given, each once. Only finished tasks with a callback URL
	// qualify; unknown ids, unfinished tasks and tasks without a callback
	// are left out of the answer, and an empty list is a no-op.
	//
	// A delivered or failed callback becomes pending (DeliveredAt cleared,
	// NextAttemptAt = at), and so does a pending one waiting for a retry.
	// Attempts, LastStatus and LastError are kept: the next attempt counts
	// on. A delivery claimed by ClaimDeliveries whose claim has not expired
	// is under way: it is left to that attempt (whose RecordAttempt, or
	// DeferDeliveries, decides what follows) and its id is in the answer, so that a redelivery never
	// sends a second copy while one is in flight.
	//
	// Redeliver is atomic with respect to ClaimDeliveries, RecordAttempt
	// and other Redeliver calls on the same tasks, in this process and in
	// others sharing the store.
	Redeliver(ctx context.Context, ids []string, at time.Time) ([]string, error)

	// RedeliverFailed makes due again, as Redeliver does, the failed
	// callbacks (CallbackFailed) of at most limit (> 0, else ErrInvalid)
	// tasks of the given recorder (Task.Recorder) that finished at or
	// after since, and returns their ids. Call it
	// again while it returns limit ids: each call takes callbacks that are
	// still failed, so a loop ends.
	RedeliverFailed(ctx context.Context, recorder string, since, at time.Time, limit int) ([]string, error)

	// Walk returns at most limit (> 0, else ErrInvalid) tasks that come
	// strictly after the cursor `after` in ascending order of CreatedAt
	// (stored milliseconds), then ID compared byte by byte; the zero
	// Cursor starts before every task. The answer is never nil; fewer than
	// limit tasks (none included) means the walk reached the end.
	//
	// Walking a whole store is a loop that passes the Cursor of the last
	// record returned (Record.Cursor) to the next call. Each call costs
	// O(log n + limit): it seeks the position in an index on (CreatedAt,
	// ID) and reads forward, with no OFFSET and no count, so a walk of n
	// tasks costs n reads and one seek per call. A walk is not a
	// snapshot: each call reads the store as it is then. A task created
	// during a walk is returned if its position is after the walk's
	// position at the time; a task changed after the walk has passed it
	// is not returned again; a deleted one is not returned once deleted.
	//
	// Each Record carries the task as Get returns it and whether its
	// callback delivery is claimed (Record.Claimed), which no Task field
	// shows. Walk changes nothing. A store may refuse with ErrInvalid a
	// cursor whose ID no task of it can have (pgstore: a NUL character).
	Walk(ctx context.Context, after Cursor, limit int) ([]Record, error)

	// Close releases the store's resources and waits for its background
	// work. It is idempotent; other methods return ErrClosed afterwards.
	Close() error
}
