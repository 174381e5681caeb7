package callback

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// Defaults applied by New to zero Options fields.
const (
	DefaultWorkers          = 8
	DefaultQueue            = 1024
	DefaultTaskTimeout      = 10 * time.Minute
	DefaultMaxBodyBytes     = 32 << 20
	DefaultMaxRequestBytes  = 4 << 20
	DefaultQueueBytes       = 256 << 20
	DefaultAttemptTimeout   = 15 * time.Second
	DefaultConnectTimeout   = 5 * time.Second
	DefaultFirstByteTimeout = 10 * time.Second
	DefaultDeliveryWorkers  = 32
	DefaultHostFailures     = 5
	DefaultHostPause        = 10 * time.Second
	DefaultMaxHostPause     = 5 * time.Minute
	DefaultLogInterval      = 30 * time.Second
	DefaultPollInterval     = time.Second
	DefaultLease            = time.Minute
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
	// QueuePerPrincipal is how many of the Queue places the tasks of one
	// principal (an application and user: tasks whose ApplicationID and
	// UserID are the same) may take. Beyond it that principal's
	// submissions get 429 (ErrQueueFull) while the others' are accepted.
	// Queued tasks are run fairly: the workers take the principals that
	// have tasks waiting in turn, one task each, so a principal that
	// queued a thousand tasks delays another's next task by at most one
	// task per worker. Default Queue/4 (at least 1).
	QueuePerPrincipal int
	// QueueBytes bounds the bytes held in memory for tasks from their
	// acceptance to the end of their run: the request body Wrap keeps for
	// the wrapped handler (for a multipart form, its file parts included),
	// or the size of Submit's Request. A task that would take the total
	// past it is refused like a full queue (429, ErrQueueFull), unless
	// nothing is held (a task larger than the budget then runs alone).
	// Default 256 MiB.
	QueueBytes int64
	// QueueBytesPerPrincipal is the share of QueueBytes one principal's
	// tasks may hold, with the same rule. Default QueueBytes/4.
	QueueBytesPerPrincipal int64
	// TaskTimeout bounds one task's run; a task that takes longer finishes
	// with the failure code "timeout". Default 10 minutes.
	TaskTimeout time.Duration
	// MaxBodyBytes caps the JSON or multipart bodies of callback-mode
	// requests, which Wrap holds in memory; a larger one is refused with
	// 400 bad_request. Requests without callback_url are not limited by it:
	// Wrap streams them to the handler (see Wrap), except when no
	// temporary file can be created: then a body larger than MaxBodyBytes
	// is refused as before streaming, and a warning logged. Default 32 MiB.
	MaxBodyBytes int64
	// MaxRequestBytes caps a task's stored request (Task.Request): a
	// callback-mode JSON body, compacted; the JSON object describing a
	// multipart form, in which form fields are JSON strings (escapes
	// counted: a control byte takes 6) and each file part is its name,
	// content type, size and SHA-256, whatever its size; or Submit's
	// Request. A larger one is refused before anything is stored: Wrap
	// answers 400 bad_request naming the limit, Submit returns
	// ErrRequestTooLarge. Default 4 MiB.
	MaxRequestBytes int64

	// Name names the recorder. It is stored with every task the recorder
	// creates (taskstore.Task.Recorder), and the recorder delivers, sweeps
	// and recovers only the tasks of its name, with its own Schedule,
	// Secret, AllowPrivateNetworks and Hooks: several services (say,
	// handler.WithTypes over one store) each run a recorder of their own
	// name. Replicas of one service (processes sharing a database) share
	// a name and share its deliveries. At most 64 printable ASCII
	// characters. Default "", the default recorder, whose tasks are those
	// stored before recorders had names.
	//
	// In one process, New refuses (ErrNameInUse) a second recorder of the
	// same name on the same store whose Secret, Schedule,
	// AllowPrivateNetworks or set of Hooks differs, until the first is
	// closed.
	Name string

	// Schedule is the callback delivery schedule. Default DefaultSchedule().
	Schedule Schedule
	// Secret, when set ("whsec_" followed by base64), signs every callback
	// with the Standard Webhooks webhook-signature header.
	Secret string
	// AllowPrivateNetworks lets callbacks reach loopback, private and
	// link-local addresses. Off by default: a callback_url whose host is
	// such an address as an IP literal, or localhost, is refused at submit
	// (400 bad_request, ErrBadCallbackURL), and a name resolving to one is
	// refused at connect time and given up. Turn it on for tests and
	// in-house receivers only.
	AllowPrivateNetworks bool
	// AttemptTimeout bounds one delivery attempt. Default 15 seconds. It
	// must be shorter than Lease.
	AttemptTimeout time.Duration
	// ConnectTimeout bounds the connection of a delivery attempt (name
	// resolution included) and FirstByteTimeout the wait for the
	// receiver's answer once the callback is sent, each within
	// AttemptTimeout. Defaults 5 and 10 seconds.
	ConnectTimeout   time.Duration
	FirstByteTimeout time.Duration
	// DeliveryWorkers is how many delivery attempts (POSTs) run at once.
	// An attempt's slot frees when its POST ends, while the store records
	// it; up to 4×DeliveryWorkers attempts may wait to be recorded. When
	// Lease is at least 3×AttemptTimeout, due deliveries are claimed
	// DeliveryWorkers at a time, the next batch while half of the last
	// still waits for a slot. A claim covers the POST, not the wait to be
	// recorded: should the store take longer than Lease to record an
	// attempt, the delivery may be claimed and sent again (delivery is at
	// least once). Default 32.
	DeliveryWorkers int
	// DeliveriesPerHost caps the attempts in flight to one receiver (a
	// callback URL's host and port), and DeliveriesPerPrincipal those of
	// the tasks of one principal, so that a receiver that hangs, or one
	// tenant's many callbacks, hold at most that many of the
	// DeliveryWorkers slots and the others' callbacks go on. A claimed
	// delivery that cannot start for a cap waits in memory while its
	// claim lasts (up to one more round per receiver), else it is handed
	// back to the store (taskstore.Store.DeferDeliveries) a little later,
	// without counting an attempt. Defaults DeliveryWorkers/2 and
	// 3×DeliveryWorkers/4 (at least 1): a principal whose receiver hangs
	// still has slots for its other receivers, and the other principals
	// have the rest.
	DeliveriesPerHost      int
	DeliveriesPerPrincipal int
	// HostFailures consecutive failed attempts to one receiver (no answer,
	// a timeout, or a 5xx, 408 or 429 status) pause deliveries to it for
	// HostPause: its due callbacks are handed back to the store until then
	// (DeferDeliveries: no attempt is counted, so a pause does not use up
	// their Schedule). Then one attempt probes the receiver: an answer
	// resumes its deliveries, a failure pauses it again for twice as long,
	// up to MaxHostPause. A receiver that never answers thus costs a probe
	// per MaxHostPause, and its callbacks stay pending (not given up)
	// until it answers or the tasks are pruned. Defaults 5, 10 seconds
	// and 5 minutes.
	HostFailures int
	HostPause    time.Duration
	MaxHostPause time.Duration
	// LogInterval is how often failed deliveries are summed up in the
	// log: at most one line per receiver host per interval (failed
	// attempts, retries scheduled, callbacks given up and deferred, the
	// last error), plus one line when a receiver is paused and one when it
	// answers again. Each attempt's details are logged at Debug level.
	// Default 30 seconds.
	LogInterval time.Duration
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
	// SoleOwner declares that this recorder is the only one of its Name
	// using the store (SQLite, memstore): every task of that name left
	// unfinished when New runs can only belong to a process that died, so
	// the sweeper's first pass finishes them all as "interrupted" at once,
	// in the background, instead of waiting for their leases to expire
	// (see New). Recorders of other names may run on the same store, in
	// this process or another: their tasks are never swept by this one.
	// New refuses (ErrNameInUse) a SoleOwner recorder beside another of
	// its name on the same store in this process, and any beside it.
	SoleOwner bool
	// Retention, when positive, prunes tasks created longer ago than this,
	// in the background, every min(Retention/10, 1h) but not more often
	// than once a second. A pass deletes 100 tasks per store call and
	// pauses after each call for three times as long as it took, so that
	// it takes at most a quarter of the store's time and backs off when the
	// store is busy.
	Retention time.Duration

	// Logger receives the recorder's logs. Default slog.Default().
	Logger *slog.Logger
	// Hooks are optional functions called on task and delivery events
	// (see Hooks).
	Hooks Hooks

	// WrapTransport, when set, wraps the HTTP transport of callback
	// deliveries, for example to trace them:
	//
	//	WrapTransport: func(rt http.RoundTripper) http.RoundTripper { return otelhttp.NewTransport(rt) },
	//
	// New calls it once with the recorder's own transport, and every
	// delivery attempt goes through the RoundTripper it returns, which must
	// pass each request on to rt. Connections are still made by the
	// recorder's own dialer, so the SSRF guard (see AllowPrivateNetworks),
	// ConnectTimeout and FirstByteTimeout keep applying. Each request's
	// context carries the task id (TaskID) and is the context given to the
	// DeliveryAttempted hook. It must not return nil.
	WrapTransport func(http.RoundTripper) http.RoundTripper

	// Now is the clock (a test seam). Default time.Now.
	Now func() time.Time
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
	// Deferred counts the deliveries handed back to the store without an
	// attempt, because their receiver was paused or busy (see
	// Options.HostFailures and Options.DeliveriesPerHost).
	Deferred uint64
	// Queued and Running are the tasks currently waiting for a worker and
	// running; HeldBytes the bytes held for them (see Options.QueueBytes).
	Queued    int
	Running   int
	HeldBytes int64
	// PausedHosts is how many receiver hosts are paused after failing
	// (see Options.HostFailures).
	PausedHosts int
}

type counters struct {
	tasksCreated, tasksFinished, tasksFailed atomic.Uint64
	deliveriesAttempted, delivered, givenUp  atomic.Uint64
	redelivered, deferred                    atomic.Uint64
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
	neg("QueuePerPrincipal", int64(o.QueuePerPrincipal))
	neg("QueueBytes", o.QueueBytes)
	neg("QueueBytesPerPrincipal", o.QueueBytesPerPrincipal)
	neg("MaxBodyBytes", o.MaxBodyBytes)
	neg("MaxRequestBytes", o.MaxRequestBytes)
	neg("AttemptTimeout", int64(o.AttemptTimeout))
	neg("ConnectTimeout", int64(o.ConnectTimeout))
	neg("FirstByteTimeout", int64(o.FirstByteTimeout))
	neg("DeliveryWorkers", int64(o.DeliveryWorkers))
	neg("DeliveriesPerHost", int64(o.DeliveriesPerHost))
	neg("DeliveriesPerPrincipal", int64(o.DeliveriesPerPrincipal))
	neg("HostFailures", int64(o.HostFailures))
	neg("HostPause", int64(o.HostPause))
	neg("MaxHostPause", int64(o.MaxHostPause))
	neg("LogInterval", int64(o.LogInterval))
	neg("PollInterval", int64(o.PollInterval))
	neg("Lease", int64(o.Lease))
	neg("Retention", int64(o.Retention))
	neg("StoreGrace", int64(o.StoreGrace))
	if len(o.Schedule) > 0 {
		if err := o.Schedule.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := checkName(o.Name); err != nil {
		errs = append(errs, err)
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
	setDefault(&o.QueuePerPrincipal, max(1, o.Queue/4))
	setDefault(&o.QueueBytes, DefaultQueueBytes)
	setDefault(&o.QueueBytesPerPrincipal, max(1, o.QueueBytes/4))
	setDefault(&o.MaxBodyBytes, DefaultMaxBodyBytes)
	setDefault(&o.MaxRequestBytes, DefaultMaxRequestBytes)
	setDefault(&o.AttemptTimeout, DefaultAttemptTimeout)
	setDefault(&o.ConnectTimeout, DefaultConnectTimeout)
	setDefault(&o.FirstByteTimeout, DefaultFirstByteTimeout)
	setDefault(&o.DeliveryWorkers, DefaultDeliveryWorkers)
	setDefault(&o.DeliveriesPerHost, max(1, o.DeliveryWorkers/2))
	setDefault(&o.DeliveriesPerPrincipal, max(1, 3*o.DeliveryWorkers/4))
	setDefault(&o.HostFailures, DefaultHostFailures)
	setDefault(&o.HostPause, DefaultHostPause)
	setDefault(&o.MaxHostPause, max(DefaultMaxHostPause, o.HostPause))
	setDefault(&o.LogInterval, DefaultLogInterval)
	setDefault(&o.PollInterval, DefaultPollInterval)
	setDefault(&o.Lease, DefaultLease)
	setDefault(&o.StoreGrace, DefaultStoreGrace)
	if len(o.Schedule) == 0 {
		o.Schedule = DefaultSchedule()
	} else {
		o.Schedule = append(Schedule(nil), o.Schedule...) // the caller may reuse its slice
	}
	if o.MaxHostPause < o.HostPause {
		return o, fmt.Errorf("callback: invalid options: MaxHostPause (%v) must not be shorter than HostPause (%v)", o.MaxHostPause, o.HostPause)
	}
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
