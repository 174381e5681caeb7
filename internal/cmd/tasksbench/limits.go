package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/pgstore"
	"github.com/tasksapi/tasks/sqlitestore"
	"github.com/tasksapi/tasks/taskstore"
)

// Rows 9 and 10 (issue #19): callback mode against what a durable store can
// do at best at the same concurrency (the store's own writes called
// directly, no recorder), with the old bare-handler and plain-client
// references kept as rows 9b and 10b (information), and the same over
// pgstore (9pg, 10pg) when a PostgreSQL URL is given.

// submitBody is a callback-mode image request of about 250 bytes.
var submitBody = []byte(`{"model":"gpt-image-1","prompt":"A watercolor painting of a cat sitting on a windowsill at dusk, soft light","size":"1024x1024","quality":"high","n":1,"callback_url":"https://client.example.com/hooks/images/v1","trace_id":"bench-trace"}`)

// storedSubmit is the request Wrap stores for submitBody: the body without
// callback_url and trace_id, compacted.
var storedSubmit = func() json.RawMessage {
	var m map[string]any
	if err := json.Unmarshal(submitBody, &m); err != nil {
		panic(err)
	}
	delete(m, "callback_url")
	delete(m, "trace_id")
	out, _ := json.Marshal(m)
	return out
}()

// submittedTask is the task Wrap creates for submitBody (principal aside:
// the bench's requests carry none), with its lease.
func submittedTask(lease time.Duration) taskstore.Task {
	now := time.Now()
	return taskstore.Task{
		ID: uuid.Must(uuid.NewV7()).String(), TraceID: "bench-trace", Type: "images_generations",
		Request: storedSubmit, CreatedAt: now, LeaseUntil: now.Add(lease),
		Callback: taskstore.Callback{URL: "https://client.example.com/hooks/images/v1"},
	}
}

// info makes r a row without a target, shown for information.
func info(r Result, row string) Result {
	r.Row, r.Target, r.Pass, r.Info = row, "—", true, true
	return r
}

// submit measures callback-mode submissions through Wrap over sqlitestore
// (row 9: against the store's Create called directly; 9b: against the bare
// handler), over memstore (the recorder alone, row 14) and over pgstore
// (9pg) when -pg is set.
func (b *bench) submit(ctx context.Context) ([]Result, error) {
	s, err := sqlitestore.Open(filepath.Join(b.scratch, "submit.db"))
	if err != nil {
		return nil, err
	}
	defer s.Close()
	m, err := b.submitOver(ctx, s, true)
	if err != nil {
		return nil, err
	}
	storeRef := "sqlitestore Create of the same tasks called directly from as many goroutines (no HTTP, no recorder)"
	out := []Result{
		throughput("callback submit (Wrap) over sqlitestore", storeRef, m.pair(0, 1), 0.8),
		info(throughput("callback submit (Wrap) over sqlitestore, against the bare handler",
			`bare handler answering a constant {"task_id"}`, m.pair(0, 2), 0), "b"),
	}
	if b.cfg.PG != "" {
		u, drop, err := b.freshSchema(ctx, "tasksbench_submit_")
		if err != nil {
			return nil, err
		}
		defer drop()
		ps, err := pgstore.Open(ctx, u)
		if err != nil {
			return nil, err
		}
		defer ps.Close()
		m, err := b.submitOver(ctx, ps, false)
		if err != nil {
			return nil, err
		}
		r := throughput("callback submit (Wrap) over pgstore",
			"pgstore Create of the same tasks called directly from as many goroutines (no HTTP, no recorder)", m.pair(0, 1), 0.8)
		r.Row = "pg"
		out = append(out, r)
	}
	mem := memstore.New()
	defer mem.Close()
	m, err = b.submitOver(ctx, mem, true)
	if err != nil {
		return nil, err
	}
	out = append(out, throughput("recorder alone: callback submit (Wrap) over memstore",
		`bare handler answering a constant {"task_id"}`, m.pair(0, 2), 0.5))
	return out, nil
}

// heldLease is the lease of held-back tasks: long enough that no lease
// renewal runs during a measurement.
const heldLease = time.Hour

// heldBackWrap returns a Recorder's Wrap over s whose image handler waits
// for stop: the workers are held back, so what is measured is the
// submission path alone (parse, store, queue, answer). stop records the held-back backlog
// as interrupted at once and releases the handlers.
func heldBackWrap(s taskstore.Store, queue int) (h http.Handler, stop func(), err error) {
	gate := make(chan struct{})
	rec, err := callback.New(s, callback.Options{Queue: queue, Lease: heldLease, Logger: discard})
	if err != nil {
		return nil, nil, err
	}
	images := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-gate:
		case <-r.Context().Done():
		}
		io.WriteString(w, `{"created":1721626477,"data":[{"url":"https://img.example/1.png"}]}`)
	})
	return rec.Wrap("images_generations", images), func() {
		cctx, cancel := context.WithCancel(context.Background())
		cancel()
		rec.Close(cctx)
		close(gate)
	}, nil
}

// submitOver compares, interleaved, Wrap over s (side 0) with s.Create of
// the same tasks from as many goroutines (side 1) and, with bare, a bare
// handler answering a constant {"task_id"} (side 2).
func (b *bench) submitOver(ctx context.Context, s taskstore.Store, bare bool) (medians, error) {
	wrap, stopRec, err := heldBackWrap(s, 1<<20)
	if err != nil {
		return medians{}, err
	}
	defer stopRec()
	bareHandler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"task_id":"7489df4c-ef03-4de0-b598-e9a590793434","trace_id":"bench-trace"}`)
	})
	oursURL, bareURL, client, stop, err := servePair(wrap, bareHandler, b.cfg.Concurrency)
	if err != nil {
		return medians{}, err
	}
	defer stop()
	bodies := [][]byte{submitBody}
	if err := checkAnswer(client, oursURL, submitBody, func(got []byte) error {
		if !bytes.HasPrefix(got, []byte(`{"task_id":"`)) {
			return fmt.Errorf("Wrap answered %s", got)
		}
		return nil
	}); err != nil {
		return medians{}, err
	}
	c := b.cfg.Concurrency
	create := load{conc: c, op: func(ctx context.Context, _ int) error {
		return s.Create(ctx, submittedTask(heldLease))
	}}
	loads := []load{post(client, oursURL, bodies, c), create}
	if bare {
		loads = append(loads, post(client, bareURL, bodies, c))
	}
	return compareN(ctx, b.cfg, loads...)
}

// receiver is a loopback callback receiver counting what it received;
// onReceipt, when set, is called with each callback's webhook-id.
type receiver struct {
	url       string
	n         atomic.Int64
	stop      func()
	onReceipt atomic.Pointer[func(id string, at time.Time)]
}

func newReceiver() (*receiver, error) {
	r := &receiver{}
	url, stop, err := serve(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		at := time.Now()
		io.Copy(io.Discard, req.Body)
		if f := r.onReceipt.Load(); f != nil {
			(*f)(req.Header.Get("webhook-id"), at)
		}
		r.n.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	r.url, r.stop = url+"/cb", stop
	return r, err
}

// waitFor waits until the receiver has received n callbacks.
func (r *receiver) waitFor(ctx context.Context, n int64) error {
	deadline := time.Now().Add(5 * time.Minute)
	for r.n.Load() < n {
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("receiver got %d of %d callbacks", r.n.Load(), n)
		}
		time.Sleep(200 * time.Microsecond)
	}
	return nil
}

// backlogStore is a store for one delivery round, filled through load and
// removed by remove once closed.
type backlogStore struct {
	s      taskstore.Store
	load   func(context.Context, []taskstore.Task) error
	remove func()
}

// delivery measures a Recorder delivering a backlog of due callbacks over
// sqlitestore (row 10: against the store's claims and attempts called
// directly plus a plain client's POSTs; 10b: against the plain client
// alone), over pgstore (10pg) when -pg is set, and over memstore (the
// recorder alone, row 15).
func (b *bench) delivery(ctx context.Context) ([]Result, error) {
	rcv, err := newReceiver()
	if err != nil {
		return nil, err
	}
	defer rcv.stop()
	round := 0
	overSQLite := func(ctx context.Context) (backlogStore, error) {
		round++
		path := filepath.Join(b.scratch, fmt.Sprintf("delivery-%d.db", round))
		s, err := sqlitestore.Open(path)
		if err != nil {
			return backlogStore{}, err
		}
		return backlogStore{s: s, load: s.Import, remove: func() {
			for _, suffix := range []string{"", "-wal", "-shm"} {
				os.Remove(path + suffix)
			}
		}}, nil
	}
	overMemstore := func(context.Context) (backlogStore, error) {
		s := memstore.New()
		return backlogStore{s: s, remove: func() {}, load: func(ctx context.Context, tasks []taskstore.Task) error {
			for _, t := range tasks {
				if err := s.Create(ctx, t); err != nil {
					return err
				}
			}
			return nil
		}}, nil
	}
	m, err := b.deliveryOver(ctx, rcv, overSQLite, true)
	if err != nil {
		return nil, err
	}
	storeRef := "plain http.Client posting the same bodies, plus per delivery the same ClaimDeliveries and RecordAttempt on sqlitestore, same concurrency"
	plainRef := "plain http.Client posting the same bodies at the same concurrency"
	out := []Result{
		throughput("callback delivery to a loopback receiver (Recorder over sqlitestore)", storeRef, m.pair(0, 1), 0.8),
		info(throughput("callback delivery to a loopback receiver (Recorder over sqlitestore), against the plain client",
			plainRef, m.pair(0, 2), 0), "b"),
	}
	if b.cfg.PG != "" {
		overPG := func(ctx context.Context) (backlogStore, error) {
			u, drop, err := b.freshSchema(ctx, "tasksbench_delivery_")
			if err != nil {
				return backlogStore{}, err
			}
			s, err := pgstore.Open(ctx, u)
			if err != nil {
				drop()
				return backlogStore{}, err
			}
			return backlogStore{s: s, load: s.Import, remove: drop}, nil
		}
		m, err := b.deliveryOver(ctx, rcv, overPG, false)
		if err != nil {
			return nil, err
		}
		r := throughput("callback delivery to a loopback receiver (Recorder over pgstore)",
			"plain http.Client posting the same bodies, plus per delivery the same ClaimDeliveries and RecordAttempt on pgstore, same concurrency",
			m.pair(0, 1), 0.8)
		r.Row = "pg"
		out = append(out, r)
	}
	m, err = b.deliveryOver(ctx, rcv, overMemstore, true)
	if err != nil {
		return nil, err
	}
	out = append(out, throughput("recorder alone: callback delivery (Recorder over memstore)", plainRef, m.pair(0, 2), 0.7))
	return out, nil
}

// deliveryOver measures deliveries from stores that open makes, one per
// round, filled with a backlog of due callbacks: a Recorder (side 0); a
// plain client posting the same bodies, each delivery claimed and recorded
// by calling the store directly as the recorder does (side 1); with plain,
// the plain client alone (side 2).
func (b *bench) deliveryOver(ctx context.Context, rcv *receiver, open func(context.Context) (backlogStore, error), plain bool) (medians, error) {
	n, c := b.cfg.deliveryBatch, b.cfg.Concurrency
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = genTask(i).Response
	}
	const lease = time.Minute // the recorder's default
	round := 0
	// backlog opens a store holding n finished tasks whose callbacks are
	// due, with bodies[i] as the response of the i-th.
	backlog := func(ctx context.Context) (backlogStore, func(), error) {
		round++
		bs, err := open(ctx)
		if err != nil {
			return backlogStore{}, nil, err
		}
		now := time.Now()
		tasks := make([]taskstore.Task, n)
		for i := range tasks {
			t := genTask(round*n + i)
			t.ID = uuid.Must(uuid.NewV7()).String()
			t.Response = bodies[i]
			t.Callback = taskstore.Callback{URL: rcv.url, NextAttemptAt: now.Add(-time.Second)}
			tasks[i] = t
		}
		cleanup := func() {
			bs.s.Close()
			bs.remove()
		}
		if err := bs.load(ctx, tasks); err != nil {
			cleanup()
			return backlogStore{}, nil, err
		}
		return bs, cleanup, nil
	}
	// ours: a Recorder starting over the backlog, until the receiver has
	// it all.
	ours := batchTimer{prepare: func(ctx context.Context) (func(context.Context) (int, error), func(), error) {
		bs, closeStore, err := backlog(ctx)
		if err != nil {
			return nil, nil, err
		}
		var rec *callback.Recorder
		cleanup := func() {
			if rec != nil {
				cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				rec.Close(cctx)
				cancel()
			}
			closeStore()
		}
		do := func(ctx context.Context) (int, error) {
			start := rcv.n.Load()
			var err error
			// One receiver may take every slot: the row compares c POSTs
			// in flight with the references' c (the per-receiver cap is
			// the reliability tests' subject).
			rec, err = callback.New(bs.s, callback.Options{
				AllowPrivateNetworks: true, DeliveryWorkers: c, DeliveriesPerHost: c, DeliveriesPerPrincipal: c,
				Workers: 1, Lease: lease, Logger: discard,
			})
			if err != nil {
				return 0, err
			}
			return n, rcv.waitFor(ctx, start+int64(n))
		}
		return do, cleanup, nil
	}}
	// store reference: one goroutine claims the due deliveries c at a
	// time (as the recorder does with DeliveryWorkers c) and hands them to
	// c goroutines, each posting one with a plain client and recording
	// the attempt on the store.
	withStore := batchTimer{prepare: func(ctx context.Context) (func(context.Context) (int, error), func(), error) {
		bs, closeStore, err := backlog(ctx)
		if err != nil {
			return nil, nil, err
		}
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: max(64, c)}}
		cleanup := func() {
			client.CloseIdleConnections()
			closeStore()
		}
		do := func(ctx context.Context) (int, error) {
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			claimed := make(chan taskstore.Task, c)
			errs := make(chan error, c+1)
			go func() {
				defer close(claimed)
				for got := 0; got < n; {
					tasks, err := claimDeliveries(ctx, bs.s, time.Now(), lease, c)
					if err != nil {
						errs <- err
						return
					}
					if len(tasks) == 0 {
						errs <- fmt.Errorf("claimed %d of %d deliveries", got, n)
						return
					}
					got += len(tasks)
					for _, t := range tasks {
						claimed <- t
					}
				}
				errs <- nil
			}()
			for range c {
				go func() {
					for t := range claimed {
						resp, err := client.Post(t.Callback.URL, "application/json", bytes.NewReader(t.Response))
						if err != nil {
							errs <- err
							cancel()
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						a := taskstore.Attempt{At: time.Now(), Status: resp.StatusCode, Delivered: true}
						if err := bs.s.RecordAttempt(ctx, t.ID, a); err != nil {
							errs <- err
							cancel()
							return
						}
					}
					errs <- nil
				}()
			}
			var first error
			for range c + 1 {
				if err := <-errs; err != nil && first == nil {
					first = err
				}
			}
			return n, first
		}
		return do, cleanup, nil
	}}
	// plain reference: a plain http.Client posting the same n bodies from
	// c goroutines.
	plainClient := batchTimer{prepare: func(ctx context.Context) (func(context.Context) (int, error), func(), error) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: max(64, c)}}
		do := func(ctx context.Context) (int, error) {
			var next atomic.Int64
			errs := make(chan error, c)
			for range c {
				go func() {
					for {
						i := next.Add(1) - 1
						if i >= int64(n) {
							errs <- nil
							return
						}
						resp, err := client.Post(rcv.url, "application/json", bytes.NewReader(bodies[i]))
						if err != nil {
							errs <- err
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				}()
			}
			var first error
			for range c {
				if err := <-errs; err != nil && first == nil {
					first = err
				}
			}
			return n, first
		}
		return do, client.CloseIdleConnections, nil
	}}
	timers := []batchTimer{ours, withStore}
	if plain {
		timers = append(timers, plainClient)
	}
	return compareBatchesN(ctx, b.cfg, timers...)
}

// claimDeliveries is the store call the recorder makes to claim due
// deliveries (the default recorder's, as tasksd's).
func claimDeliveries(ctx context.Context, s taskstore.Store, now time.Time, lease time.Duration, limit int) ([]taskstore.Task, error) {
	return s.ClaimDeliveries(ctx, "", now, lease, limit)
}
