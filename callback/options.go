package callback

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/tasksapi/tasks/internal/webhook"
	"github.com/tasksapi/tasks/taskstore"
)

// Schedule lists the delays before each delivery attempt of a callback; its
// length is the number of attempts. The first attempt is made as soon as the
// task finishes, whatever the first delay says; each later attempt waits its
// delay (with ±20% jitter, and at least as long as the receiver's Retry-After)
// after the previous one failed.
type Schedule = webhook.Schedule

// DefaultSchedule is the delivery schedule used when Options.Schedule is
// empty, in the spirit of Standard Webhooks: at once, then after 5s, 5m, 30m,
// 2h, 5h and 10h.
var DefaultSchedule = webhook.DefaultSchedule

// ParseSchedule parses a comma-separated list of delays such as
// "0s,5s,5m,30m,2h,5h,10h" (the format of a command-line flag).
func ParseSchedule(s string) (Schedule, error) { return webhook.ParseSchedule(s) }

// Defaults applied by New to zero Options fields.
const (
	DefaultWorkers         = 8
	DefaultQueue           = 1024
	DefaultTaskTimeout     = 10 * time.Minute
	DefaultMaxBodyBytes    = 32 << 20
	DefaultAttemptTimeout  = webhook.DefaultTimeout
	DefaultDeliveryWorkers = 16
	DefaultPollInterval    = time.Second
	DefaultLease           = time.Minute
)

// Options configure a Recorder. The zero value is usable: every zero field
// takes the default documented on it.
type Options struct {
	// Principal returns the caller of a callback-mode request, stamped on
	// the task it creates. Default: the principal that authentication
	// middleware (handler.Authenticate) stored in the request context with
	// taskstore.NewContext, or the zero Principal when there is none.
	Principal func(*http.Request) taskstore.Principal

	// Workers is how many tasks run at once. Default 8.
	Workers int
	// Queue is how many accepted tasks may wait for a worker. When it is
	// full, Wrap answers 429 too_many_requests and Submit returns
	// ErrQueueFull; nothing is stored. Default 1024.
	Queue int
	// TaskTimeout bounds one task's run; a task that takes longer finishes
	// with the failure code "timeout". Default 10 minutes.
	TaskTimeout time.Duration
	// MaxBodyBytes caps the JSON or multipart request bodies that Wrap
	// reads to look for callback_url; a larger body is refused with 400
	// bad_request. Default 32 MiB.
	MaxBodyBytes int64

	// Schedule is the callback delivery schedule. Default DefaultSchedule.
	Schedule Schedule
	// Secret, when set ("whsec_" followed by base64), signs every callback
	// with the Standard Webhooks webhook-signature header.
	Secret string
	// AllowPrivateNetworks lets callbacks reach loopback, private and
	// link-local addresses. Off by default: such a callback is refused at
	// connect time and given up. Turn it on for tests and in-house
	// receivers only.
	AllowPrivateNetworks bool
	// AttemptTimeout bounds one delivery attempt. Default 15 seconds. It
	// must be shorter than Lease.
	AttemptTimeout time.Duration
	// DeliveryWorkers is how many delivery attempts (POSTs) run at once.
	// An attempt's slot frees when its POST ends, while the store records
	// it; up to 4×DeliveryWorkers attempts may wait to be recorded. When
	// Lease is at least 3×AttemptTimeout, due deliveries are claimed
	// DeliveryWorkers at a time, the next batch while half of the last
	// still waits for a slot. A claim covers the POST, not the wait to be
	// recorded: should the store take longer than Lease to record an
	// attempt, the delivery may be claimed and sent again (delivery is at
	// least once). Default 16.
	DeliveryWorkers int
	// PollInterval is how often the outbox is checked for due deliveries.
	// Finishing a task, and a retry due sooner than this, wake the delivery
	// loop at once. Default 1 second.
	PollInterval time.Duration
	// Lease is how long a queued or running task, and a claimed delivery,
	// stays reserved to this recorder without renewal. Task leases are
	// renewed every Lease/3; a task whose lease expired (its process died)
	// is finished as "interrupted" by whichever recorder sweeps first.
	// Default 1 minute.
	Lease time.Duration
	// StoreGrace is how long the recorder keeps retrying a write that the
	// store reports unavailable (taskstore.ErrUnavailable: its database
	// restarting, say) and that must not be lost: a task's start, its
	// response, and the outcome of a delivery attempt (a callback the
	// receiver accepted is not sent again because its recording failed).
	// The result waits in memory, and is written within about a second
	// of the store answering again. Meanwhile the task's lease is renewed
	// as soon as the store answers; an outage longer than about two
	// thirds of Lease (for a delivery, than what is left of its claim)
	// may let another process sweep the task, or claim and send the
	// delivery again, first. Past StoreGrace, or when Close gives up, the write is
	// dropped: the task is finished as "interrupted" once its lease
	// expires, the delivery retried once its claim does. Default 5
	// minutes.
	StoreGrace time.Duration
	// SoleOwner declares that this recorder is the only one using the store
	// (SQLite, memstore): New then finishes every unfinished task at once
	// as "interrupted", since it can only belong to a process that died,
	// instead of waiting for its lease to expire.
	SoleOwner bool
	// Retention, when positive, prunes tasks created longer ago than this,
	// in the background, in batches of 1000, every min(Retention/10, 1h)
	// but not more often than once a second.
	Retention time.Duration

	// Logger receives the recorder's logs. Default slog.Default().
	Logger *slog.Logger
	// Hooks are optional functions called on task and delivery events.
	Hooks Hooks

	// Now is the clock (a test seam). Default time.Now.
	Now func() time.Time
	// Transport, when set, replaces the HTTP transport of callback
	// deliveries. It bypasses the connect-time address guard of
	// AllowPrivateNetworks: a test seam, not for production.
	Transport http.RoundTripper
}

// Hooks are optional functions called when something happens, for example
// to feed metrics. They are called synchronously from the recorder's
// goroutines, possibly concurrently: keep them fast and safe for concurrent
// use. A nil hook is skipped.
type Hooks struct {
	// TaskCreated is called once a task has been stored and queued.
	TaskCreated func(TaskEvent)
	// TaskFinished is called once a task's response has been recorded.
	TaskFinished func(TaskEvent)
	// DeliveryAttempted is called after every recorded delivery attempt.
	DeliveryAttempted func(DeliveryEvent)
	// Redelivered is called after Redeliver or Recover made callbacks due
	// again, with their task ids (once per store call: Recover calls it
	// once per batch).
	Redelivered func(ids []string)
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

// Stats is a snapshot of a Recorder's counters, for metrics.
type Stats struct {
	// TasksCreated counts tasks stored by Wrap and Submit.
	TasksCreated uint64
	// TasksFinished counts responses recorded by this recorder (successes
	// and failures, including interrupted tasks it swept up);
	// TasksFailed counts the failures among them.
	TasksFinished uint64
	TasksFailed   uint64
	// DeliveriesAttempted counts recorded delivery attempts; Delivered the
	// callbacks accepted by their receiver; GivenUp the callbacks abandoned
	// (410 Gone, refused address, attempts exhausted).
	DeliveriesAttempted uint64
	Delivered           uint64
	GivenUp             uint64
	// Redelivered counts the callbacks that Redeliver and Recover made
	// due again.
	Redelivered uint64
	// Queued and Running are the tasks currently waiting for a worker and
	// running.
	Queued  int
	Running int
}

type counters struct {
	tasksCreated, tasksFinished, tasksFailed atomic.Uint64
	deliveriesAttempted, delivered, givenUp  atomic.Uint64
	redelivered                              atomic.Uint64
}

// withDefaults validates o and fills in its zero fields.
func (o Options) withDefaults() (Options, error) {
	var errs []error
	neg := func(name string, v int64) {
		if v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative", name))
		}
	}
	neg("Workers", int64(o.Workers))
	neg("Queue", int64(o.Queue))
	neg("TaskTimeout", int64(o.TaskTimeout))
	neg("MaxBodyBytes", o.MaxBodyBytes)
	neg("AttemptTimeout", int64(o.AttemptTimeout))
	neg("DeliveryWorkers", int64(o.DeliveryWorkers))
	neg("PollInterval", int64(o.PollInterval))
	neg("Lease", int64(o.Lease))
	neg("Retention", int64(o.Retention))
	neg("StoreGrace", int64(o.StoreGrace))
	if len(o.Schedule) > 0 {
		if err := o.Schedule.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return o, fmt.Errorf("callback: invalid options: %w", errors.Join(errs...))
	}
	if o.Principal == nil {
		o.Principal = principalFromContext
	}
	setDefault(&o.Workers, DefaultWorkers)
	setDefault(&o.Queue, DefaultQueue)
	setDefault(&o.TaskTimeout, DefaultTaskTimeout)
	setDefault(&o.MaxBodyBytes, DefaultMaxBodyBytes)
	setDefault(&o.AttemptTimeout, DefaultAttemptTimeout)
	setDefault(&o.DeliveryWorkers, DefaultDeliveryWorkers)
	setDefault(&o.PollInterval, DefaultPollInterval)
	setDefault(&o.Lease, DefaultLease)
	setDefault(&o.StoreGrace, DefaultStoreGrace)
	if len(o.Schedule) == 0 {
		o.Schedule = DefaultSchedule
	}
	o.Schedule = append(Schedule(nil), o.Schedule...) // the caller may reuse its slice
	if o.Lease <= o.AttemptTimeout {
		return o, fmt.Errorf("callback: invalid options: Lease (%v) must be longer than AttemptTimeout (%v), or a slow delivery attempt could be claimed twice", o.Lease, o.AttemptTimeout)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, nil
}

func setDefault[T int | int64 | time.Duration](p *T, def T) {
	if *p == 0 {
		*p = def
	}
}

func principalFromContext(r *http.Request) taskstore.Principal {
	p, _ := taskstore.FromContext(r.Context())
	return p
}
