package callback

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tasksapi/tasks/internal/webhook"
	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// Errors returned by Submit. Wrap answers them with error bodies,
// {"error":{"code":"…","message":"…"},"trace_id":"…"} (see the README's
// "Guarantees").
var (
	// ErrQueueFull: Options.Queue tasks are already waiting for a worker.
	// Nothing was stored; retry later.
	ErrQueueFull = errors.New("callback: task queue is full")
	// ErrClosed: the recorder is closed (or closing) and takes no new
	// tasks, or its store is closed. It wraps taskstore.ErrClosed, so one
	// test, errors.Is(err, ErrClosed) or errors.Is(err,
	// taskstore.ErrClosed), catches both: every method that meets a closed
	// store returns ErrClosed itself.
	ErrClosed = fmt.Errorf("callback: recorder or store closed: %w", taskstore.ErrClosed)
	// ErrNotNew: the Recorder is a zero value, not made by New.
	ErrNotNew = errors.New("callback: Recorder not created with New")
	// ErrBadCallbackURL: the callback URL is not an absolute http or https
	// URL of at most MaxCallbackURLLength bytes or, unless
	// Options.AllowPrivateNetworks, its host is an IP literal the delivery
	// guard refuses (loopback, private, link-local, …) or a localhost name.
	// The returned error wraps it with the reason.
	ErrBadCallbackURL = errors.New("callback: callback_url must be an absolute http or https URL")
)

const (
	// storeTimeout bounds the recorder's own store calls (bookkeeping that
	// must not hang on a stuck store, and must survive a cancelled request).
	storeTimeout = 30 * time.Second
	// closeGrace is how long, once Close's context has ended, the
	// recorder's store writes (the interrupted tasks' responses, the
	// outcomes of delivery attempts) and delivery attempts in flight may
	// still go on; and how long after that Close waits for the goroutines
	// stuck in a store that ignores its context, before leaving them
	// behind.
	closeGrace = 500 * time.Millisecond
	// stageGrace is how long, once Close has given up, each later stage
	// of its shutdown (the delivery loop, the background goroutines) may
	// still take to end before it is left behind.
	stageGrace = 50 * time.Millisecond
	// renewChunk is how many ids go into one RenewLeases call.
	renewChunk = 500
)

// A Recorder runs callback mode on top of a taskstore.Store: Wrap turns
// callback-mode requests into stored tasks run by a bounded worker pool, and
// a delivery loop POSTs each finished task's response to its callback URL,
// retrying on the Options.Schedule, with the store as the outbox.
//
// A Recorder is safe for concurrent use. Create it with New and stop it with
// Close; it never closes the store.
type Recorder struct {
	store  taskstore.Store
	o      Options
	log    *slog.Logger
	sender *webhook.Sender
	c      counters

	mu         sync.Mutex
	closed     bool
	waiting    int // places reserved or queued, at most o.Queue
	running    int
	heldBytes  int64                      // held by reserved, queued and running tasks
	queue      fairQueue                  // the queued tasks
	active     map[string]struct{}        // ids queued or running: their leases are renewed
	waiters    map[string][]chan struct{} // Wait calls per task id, woken when it finishes
	submitting sync.WaitGroup             // reservations not yet enqueued or released
	ready      chan struct{}              // one token per queued task

	// hardStop is cancelled when Close's context ends: running tasks are
	// cancelled and every remaining one is finished as interrupted.
	hardStop       context.Context
	hardStopCancel context.CancelFunc
	// started is when New ran, to the millisecond: the tasks this recorder
	// creates are created from then on.
	started time.Time
	// bg is cancelled last, stopping the renewer, sweeper and pruner.
	bg       context.Context
	bgCancel context.CancelFunc
	// io is the context of delivery attempts and of the store writes that
	// Close waits for: cancelled closeGrace after Close's context ends (or
	// when Close returns), so that a hung store cannot hold Close.
	io       context.Context
	ioCancel context.CancelFunc

	wake     chan struct{} // wakes the delivery loop
	disp     dispatcher    // delivery scheduling (hosts.go)
	wakeMu   sync.Mutex
	wakes    map[time.Time]struct{} // when timers wake the delivery loop (wakeAt)
	stopLoop chan struct{}          // stops the delivery loop
	loopDone chan struct{}

	workersWG  sync.WaitGroup
	bgWG       sync.WaitGroup
	deliveries sync.WaitGroup // in-flight delivery attempts
	recording  chan struct{}  // one token per attempt being recorded

	closeOnce sync.Once
	// releaseName ends the recorder's registration under its name (names.go).
	releaseName func()
}

// New validates the options, creates a Recorder on store and starts its
// background work: the task workers, the delivery loop (which at once
// resumes every delivery that is due, e.g. left by a previous process), the
// lease renewer, the sweeper that finishes abandoned tasks as "interrupted"
// (at once and then every Lease) and, with a Retention, the pruner. It
// returns at once, whatever the store holds: the recorder takes tasks while
// its background work goes on.
//
// With Options.SoleOwner, the sweeper's first pass finishes every task a
// previous process left unfinished (whatever its lease says) as
// "interrupted", in batches, and logs one line with how many and how long
// it took; tasks submitted to this recorder meanwhile are never among them.
// Should the store fail, the pass is tried again every Lease.
func New(store taskstore.Store, o Options) (*Recorder, error) {
	if store == nil {
		return nil, errors.New("callback: New: nil store")
	}
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	sender, err := webhook.NewSender(webhook.Options{
		Secret:               o.Secret,
		AllowPrivateNetworks: o.AllowPrivateNetworks,
		Timeout:              o.AttemptTimeout,
		ConnectTimeout:       o.ConnectTimeout,
		FirstByteTimeout:     o.FirstByteTimeout,
		WrapTransport:        o.WrapTransport,
	})
	if err != nil {
		return nil, fmt.Errorf("callback: %w", err)
	}
	releaseName, err := claimName(store, o)
	if err != nil {
		return nil, err
	}
	r := &Recorder{
		store:     store,
		o:         o,
		log:       o.Logger,
		sender:    sender,
		active:    make(map[string]struct{}),
		queue:     newFairQueue(),
		ready:     make(chan struct{}, o.Queue),
		wake:      make(chan struct{}, 1),
		disp:      newDispatcher(),
		wakes:     make(map[time.Time]struct{}),
		stopLoop:  make(chan struct{}),
		loopDone:  make(chan struct{}),
		recording: make(chan struct{}, 4*o.DeliveryWorkers),
	}
	r.releaseName = releaseName
	r.started = storekit.Millis(r.now())
	r.hardStop, r.hardStopCancel = context.WithCancel(context.Background())
	r.bg, r.bgCancel = context.WithCancel(context.Background())
	r.io, r.ioCancel = context.WithCancel(context.Background())

	r.workersWG.Add(o.Workers)
	for range o.Workers {
		go r.worker()
	}
	go r.deliveryLoop()
	r.goBackground(r.deliveryLog)
	r.goBackground(r.renewer)
	r.goBackground(r.sweeper)
	if o.Retention > 0 {
		r.goBackground(r.pruner)
	}
	return r, nil
}

func (r *Recorder) goBackground(f func()) {
	r.bgWG.Add(1)
	go func() {
		defer r.bgWG.Done()
		f()
	}()
}

func (r *Recorder) now() time.Time { return r.o.Now() }

// Close stops the recorder:
//
//  1. it takes no new tasks: Wrap answers 429 too_many_requests and Submit
//     returns ErrClosed (requests that are not callback mode still pass
//     through to their handler);
//  2. queued and running tasks go on until they finish or ctx ends; when ctx
//     ends, running tasks are cancelled and every task not yet finished is
//     recorded with the "interrupted" failure (its callback stays due in the
//     store for the next start);
//  3. the delivery loop stops; attempts in flight may go on while ctx lasts;
//  4. the lease renewer, sweeper and pruner stop, and Close waits for every
//     goroutine it started, except handler goroutines of cancelled tasks that
//     ignore their context (see Wrap).
//
// Once ctx has ended, Close returns within about a second whatever the
// store does: half a second after ctx ends, the store writes still under
// way (the interrupted tasks' responses, the outcomes of delivery attempts,
// a submission being stored) and the delivery attempts in flight are
// cancelled through their contexts, and half a second later Close stops
// waiting. What it could not record is left as a crash leaves it, and
// nothing is lost: a task whose response was not recorded keeps its lease
// until it expires, then a sweeper (of any recorder on the store, such as
// the next one started) finishes it as "interrupted" and its callback is
// sent; a delivery attempt whose
// outcome was not recorded is sent again once its claim expires. A store
// that ignores its contexts keeps the goroutines blocked in it until it
// answers (Close logs a warning when it leaves any behind).
//
// Close returns ctx's error when tasks had to be interrupted or a store
// call abandoned, else nil. It does not close the store. Calling it again
// is a no-op that returns nil.
func (r *Recorder) Close(ctx context.Context) error {
	if r.ready == nil {
		return ErrNotNew
	}
	var err error
	r.closeOnce.Do(func() { err = r.close(ctx) })
	return err
}

func (r *Recorder) close(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()

	// When ctx ends: running tasks are interrupted at once; the store
	// writes and deliveries still under way are cancelled closeGrace
	// later; and closeGrace after that, Close stops waiting (giveUp).
	giveUp := make(chan struct{})
	returned := make(chan struct{})
	defer close(returned)
	go func() {
		select {
		case <-ctx.Done():
		case <-returned:
			return
		}
		r.hardStopCancel()
		t := time.NewTimer(closeGrace)
		defer t.Stop()
		for _, step := range []func(){r.ioCancel, func() { close(giveUp) }} {
			select {
			case <-t.C:
			case <-returned:
				return
			}
			step()
			t.Reset(closeGrace)
		}
	}()
	var err error
	abandoned := 0 // stages whose goroutines were left behind
	wait := func(done <-chan struct{}) bool {
		select {
		case <-done:
			return true
		case <-giveUp:
			// A stage that was not stuck (the delivery loop, the background
			// goroutines, told to stop only now) still gets a moment to end.
			t := time.NewTimer(stageGrace)
			defer t.Stop()
			select {
			case <-done:
				return true
			case <-t.C:
				abandoned++
				return false
			}
		}
	}

	// Submissions being stored enqueue their tasks (or give their places
	// back); then the workers drain the queue and end.
	go func() {
		r.submitting.Wait()
		close(r.ready)
	}()
	workersDone := make(chan struct{})
	go func() {
		r.workersWG.Wait()
		close(workersDone)
	}()
	select {
	case <-workersDone:
	default:
		select {
		case <-workersDone:
		case <-ctx.Done():
			err = ctx.Err() // tasks are interrupted
			wait(workersDone)
		}
	}
	r.hardStopCancel()

	close(r.stopLoop)
	if wait(r.loopDone) {
		// Attempts in flight go on while ctx lasts (and closeGrace more).
		deliveriesDone := make(chan struct{})
		go func() {
			r.deliveries.Wait()
			close(deliveriesDone)
		}()
		wait(deliveriesDone)
	}
	r.ioCancel()

	r.bgCancel()
	bgDone := make(chan struct{})
	go func() {
		r.bgWG.Wait()
		close(bgDone)
	}()
	wait(bgDone)
	r.sender.CloseIdleConnections()
	r.releaseName()
	if abandoned > 0 {
		r.log.Warn("callback: Close gave up waiting: store calls or hooks that ignore their context are left behind",
			"stages", abandoned)
		if err == nil {
			err = ctx.Err()
		}
	}
	return err
}

// Stats returns a snapshot of the recorder's counters.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	queued, running, held := r.waiting, r.running, r.heldBytes
	r.mu.Unlock()
	return Stats{
		TasksCreated:        r.c.tasksCreated.Load(),
		TasksFinished:       r.c.tasksFinished.Load(),
		TasksFailed:         r.c.tasksFailed.Load(),
		DeliveriesAttempted: r.c.deliveriesAttempted.Load(),
		Delivered:           r.c.delivered.Load(),
		GivenUp:             r.c.givenUp.Load(),
		Redelivered:         r.c.redelivered.Load(),
		Deferred:            r.c.deferred.Load(),
		Queued:              queued,
		Running:             running,
		HeldBytes:           held,
		PausedHosts:         r.pausedHosts(),
	}
}

type taskIDKey struct{}

// TaskID returns the id of the task whose run ctx belongs to: the wrapped
// handler of a callback-mode request, or a Submit run function, can use it
// to log or report progress.
func TaskID(ctx context.Context) (string, bool) {
	id, ok := ctx.Value(taskIDKey{}).(string)
	return id, ok
}

// wakeDelivery makes the delivery loop look for due deliveries now.
func (r *Recorder) wakeDelivery() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// retryStore runs a bookkeeping store call, retrying system failures (not
// the sentinel errors) a few times with a short pause, each try bounded by
// storeTimeout; it gives up when ctx ends.
func (r *Recorder) retryStore(ctx context.Context, f func(ctx context.Context) error) error {
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			t := time.NewTimer(time.Duration(attempt) * 100 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return err
			case <-t.C:
			}
		}
		cctx, cancel := context.WithTimeout(ctx, storeTimeout)
		err = f(cctx)
		cancel()
		if err == nil || isSentinel(err) || ctx.Err() != nil {
			return err
		}
	}
	return err
}

func isSentinel(err error) bool {
	return errors.Is(err, taskstore.ErrNotFound) || errors.Is(err, taskstore.ErrConflict) ||
		errors.Is(err, taskstore.ErrInvalid) || errors.Is(err, taskstore.ErrClosed)
}

// closedErr turns a store's ErrClosed into the recorder's (which wraps it),
// so that callers need one test for a shutdown.
func closedErr(err error) error {
	if errors.Is(err, taskstore.ErrClosed) && !errors.Is(err, ErrClosed) {
		return ErrClosed
	}
	return err
}
