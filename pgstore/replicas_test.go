package pgstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/internal/pgtest"
	"github.com/tasksapi/tasks/pgstore"
	"github.com/tasksapi/tasks/taskstore"
)

// receiver counts callbacks by webhook-id.
type receiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	got map[string]int
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{got: map[string]int{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("webhook-id")
		rc.mu.Lock()
		rc.got[id]++
		rc.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) counts() map[string]int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := make(map[string]int, len(rc.got))
	for k, v := range rc.got {
		out[k] = v
	}
	return out
}

// killable is a store that a test can cut off, as if the process using it
// had died: after kill, every call fails and nothing more reaches the
// database.
type killable struct {
	taskstore.Store
	dead atomic.Bool
}

// errKilled is what a killed replica's store calls return. It wraps
// taskstore.ErrClosed so the recorder does not retry them.
var errKilled = fmt.Errorf("replica killed: %w", taskstore.ErrClosed)

func (k *killable) Create(ctx context.Context, t taskstore.Task) error {
	if k.dead.Load() {
		return errKilled
	}
	return k.Store.Create(ctx, t)
}
func (k *killable) Get(ctx context.Context, id string) (taskstore.Task, error) {
	if k.dead.Load() {
		return taskstore.Task{}, errKilled
	}
	return k.Store.Get(ctx, id)
}
func (k *killable) Find(ctx context.Context, f taskstore.Filter) ([]taskstore.Task, int, error) {
	if k.dead.Load() {
		return nil, 0, errKilled
	}
	return k.Store.Find(ctx, f)
}
func (k *killable) Start(ctx context.Context, id string, at time.Time) error {
	if k.dead.Load() {
		return errKilled
	}
	return k.Store.Start(ctx, id, at)
}
func (k *killable) Finish(ctx context.Context, id string, resp json.RawMessage, at time.Time) error {
	if k.dead.Load() {
		return errKilled
	}
	return k.Store.Finish(ctx, id, resp, at)
}
func (k *killable) Delete(ctx context.Context, id string) error {
	if k.dead.Load() {
		return errKilled
	}
	return k.Store.Delete(ctx, id)
}
func (k *killable) Prune(ctx context.Context, before time.Time, limit int) (int, error) {
	if k.dead.Load() {
		return 0, errKilled
	}
	return k.Store.Prune(ctx, before, limit)
}
func (k *killable) RenewLeases(ctx context.Context, ids []string, until time.Time) error {
	if k.dead.Load() {
		return errKilled
	}
	return k.Store.RenewLeases(ctx, ids, until)
}
func (k *killable) Abandoned(ctx context.Context, recorder string, before time.Time, limit int) ([]taskstore.Task, error) {
	if k.dead.Load() {
		return nil, errKilled
	}
	return k.Store.Abandoned(ctx, recorder, before, limit)
}
func (k *killable) ClaimDeliveries(ctx context.Context, recorder string, now time.Time, lease time.Duration, limit int) ([]taskstore.Task, error) {
	if k.dead.Load() {
		return nil, errKilled
	}
	return k.Store.ClaimDeliveries(ctx, recorder, now, lease, limit)
}
func (k *killable) RecordAttempt(ctx context.Context, id string, a taskstore.Attempt) error {
	if k.dead.Load() {
		return errKilled
	}
	return k.Store.RecordAttempt(ctx, id, a)
}

type replica struct {
	store *killable
	rec   *callback.Recorder
}

// replicas starts n recorders, each over its own pgstore (its own pool, as
// separate processes would have) on one database schema.
func replicas(t *testing.T, n int, lease time.Duration) []*replica {
	t.Helper()
	url := pgtest.FreshSchema(t, pgtest.URL(t))
	var out []*replica
	for range n {
		s, err := pgstore.Open(context.Background(), url, pgstore.WithMaxOpenConns(10))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		k := &killable{Store: s}
		rec, err := callback.New(k, callback.Options{
			Workers: 8, DeliveryWorkers: 8, Lease: lease, AttemptTimeout: lease * 2 / 3,
			PollInterval: 20 * time.Millisecond, AllowPrivateNetworks: true,
			Schedule: callback.Schedule{0, 10 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond,
				80 * time.Millisecond, 160 * time.Millisecond, 320 * time.Millisecond, 640 * time.Millisecond},
			Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			rec.Close(ctx)
		})
		out = append(out, &replica{store: k, rec: rec})
	}
	return out
}

// work is a task's run function: a short random delay, then a JSON object.
func work(i int) func(context.Context) (json.RawMessage, error) {
	return func(ctx context.Context) (json.RawMessage, error) {
		select {
		case <-time.After(time.Duration(rand.IntN(10)) * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)), nil
	}
}

// hang is the run function of a task that only ends when the recorder gives
// up on it.
func hang(ctx context.Context) (json.RawMessage, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

func submit(r *replica, url string, i int, run func(context.Context) (json.RawMessage, error)) (string, error) {
	return r.rec.Submit(context.Background(), callback.Submission{
		Type: "images_generations", CallbackURL: url, Request: json.RawMessage(fmt.Sprintf(`{"prompt":"task %d"}`, i)),
	}, run)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v, still not %s: %s", d, what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// settled reports whether every task is finished and its callback recorded
// as delivered in the store, and the receiver got each one.
func settled(t *testing.T, s taskstore.Store, rc *receiver, ids []string) (bool, string) {
	got := rc.counts()
	for _, id := range ids {
		x, err := s.Get(context.Background(), id)
		if err != nil {
			t.Fatalf("Get(%s): %v", id, err)
		}
		if !x.Finished() {
			return false, "task " + id + " unfinished"
		}
		if x.CallbackStatus() != taskstore.CallbackDelivered {
			return false, fmt.Sprintf("task %s callback %v", id, x.CallbackStatus())
		}
		if got[id] == 0 {
			return false, "receiver never got " + id
		}
	}
	return true, ""
}

// TestReplicas runs three recorders over one PostgreSQL database, as three
// replicas of a server would: 300 callback-mode tasks spread across them all
// finish and every callback is delivered exactly once; then, with a short
// lease, one replica dies mid-run and every callback is still delivered at
// least once.
func TestReplicas(t *testing.T) {
	pgtest.URL(t)
	const tasks = 300

	t.Run("AllLive", func(t *testing.T) {
		rs := replicas(t, 3, 10*time.Second)
		rc := newReceiver(t)
		ids := make([]string, tasks)
		var wg sync.WaitGroup
		for i := range tasks {
			wg.Go(func() {
				id, err := submit(rs[i%3], rc.srv.URL+"/cb", i, work(i))
				if err != nil {
					t.Errorf("Submit %d: %v", i, err)
				}
				ids[i] = id
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		waitFor(t, 60*time.Second, "all delivered", func() (bool, string) { return settled(t, rs[0].store, rc, ids) })
		for id, n := range rc.counts() {
			if n != 1 {
				t.Errorf("callback %s delivered %d times while every replica was live", id, n)
			}
		}
		var delivered uint64
		for i, r := range rs {
			st := r.rec.Stats()
			delivered += st.Delivered
			if st.Delivered == 0 {
				t.Errorf("replica %d delivered nothing: the outbox is not shared", i)
			}
		}
		if delivered != tasks {
			t.Errorf("replicas recorded %d deliveries, want %d", delivered, tasks)
		}
	})

	t.Run("OneDies", func(t *testing.T) {
		rs := replicas(t, 3, 600*time.Millisecond)
		rc := newReceiver(t)
		owner := map[string]int{} // task id → replica that acknowledged it
		var mu sync.Mutex
		run := func(i, r int) {
			// Replica 2's tasks are still queued or running when it dies.
			fn := work(i)
			if r == 2 {
				fn = hang
			}
			id, err := submit(rs[r], rc.srv.URL+"/cb", i, fn)
			if err != nil {
				t.Errorf("Submit %d to replica %d: %v", i, r, err)
				return
			}
			mu.Lock()
			owner[id] = r
			mu.Unlock()
		}
		var wg sync.WaitGroup
		for i := range tasks / 2 {
			wg.Go(func() { run(i, i%3) })
		}
		wg.Wait()
		// Mid-run: replica 2 stops reaching the database, as if its process
		// had died, and is shut down without grace. Its tasks and whatever
		// deliveries it had claimed are left to the others.
		rs[2].store.dead.Store(true)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		rs[2].rec.Close(ctx)
		for i := tasks / 2; i < tasks; i++ {
			wg.Go(func() { run(i, i%2) })
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		ids := make([]string, 0, len(owner))
		for id := range owner {
			ids = append(ids, id)
		}
		waitFor(t, 60*time.Second, "all delivered", func() (bool, string) { return settled(t, rs[0].store, rc, ids) })

		// The dead replica's tasks were finished as interrupted by the live
		// ones once their leases ran out; no live replica's task was.
		interrupted := 0
		for id, r := range owner {
			x, err := rs[0].store.Get(context.Background(), id)
			if err != nil {
				t.Fatal(err)
			}
			var resp struct {
				Success bool `json:"success"`
				Error   struct {
					Code string `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(x.Response, &resp); err != nil {
				t.Fatalf("task %s response %s: %v", id, x.Response, err)
			}
			switch {
			case r == 2 && (resp.Success || resp.Error.Code != "interrupted"):
				t.Errorf("task %s of the dead replica: response %s, want the interrupted failure", id, x.Response)
			case r != 2 && !resp.Success:
				t.Errorf("task %s of a live replica: response %s, want success", id, x.Response)
			case r == 2:
				interrupted++
			}
		}
		twice := 0
		for _, n := range rc.counts() {
			if n > 1 {
				twice++
			}
		}
		t.Logf("%d tasks, %d of them interrupted on the dead replica; %d callbacks delivered more than once", len(ids), interrupted, twice)
	})
}

// BenchmarkDeliveries measures callback deliveries per second from a shared
// outbox of b.N due callbacks, drained by one recorder and by three (each on
// its own pgstore, as separate replicas would be). The receiver takes 20 ms
// to answer, like a real webhook endpoint, so a replica's throughput is
// bounded by its delivery workers (16) waiting on receivers; more replicas
// add workers.
func BenchmarkDeliveries(b *testing.B) {
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("replicas=%d", n), func(b *testing.B) {
			url := pgtest.FreshSchema(b, pgtest.URL(b))
			setup, err := pgstore.Open(context.Background(), url)
			if err != nil {
				b.Fatal(err)
			}
			setup.Close()
			var got atomic.Int64
			done := make(chan struct{})
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(20 * time.Millisecond)
				w.WriteHeader(http.StatusNoContent)
				if got.Add(1) == int64(b.N) {
					close(done)
				}
			}))
			defer srv.Close()
			due := time.Now().Add(-time.Second).UnixMilli()
			pgtest.Exec(b, url, fmt.Sprintf(`INSERT INTO tasks (id, type, created_ms, finished_ms, callback_url,
				next_attempt_ms, request, response)
				SELECT 'd-' || g, 'images_generations', %d, %d, '%s/cb', %d, '{}', '{"success":true}'
				FROM generate_series(1, %d) g`, due, due, srv.URL, due, b.N))

			b.ResetTimer()
			start := time.Now()
			var recs []*callback.Recorder
			for range n {
				s, err := pgstore.Open(context.Background(), url, pgstore.WithMaxOpenConns(20))
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				rec, err := callback.New(s, callback.Options{
					DeliveryWorkers: 16, PollInterval: 10 * time.Millisecond, Lease: 30 * time.Second,
					AttemptTimeout: 10 * time.Second, AllowPrivateNetworks: true, Logger: slog.New(slog.DiscardHandler),
				})
				if err != nil {
					b.Fatal(err)
				}
				recs = append(recs, rec)
			}
			select {
			case <-done:
			case <-time.After(5 * time.Minute):
				b.Fatalf("%d of %d callbacks delivered after 5 minutes", got.Load(), b.N)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "deliveries/s")
			for _, rec := range recs {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				rec.Close(ctx)
				cancel()
			}
		})
	}
}
