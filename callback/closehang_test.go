package callback_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/taskstore"
)

// hungStore wraps a store whose writes, once hang names them, hang: until
// their context ends, or (deaf) until the test releases them, ignoring
// their context as a broken driver would. A released call fails.
type hungStore struct {
	taskstore.Store
	deaf    bool
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	hung    map[string]bool
	entered map[string]int
}

func newHungStore(inner taskstore.Store, deaf bool) *hungStore {
	return &hungStore{Store: inner, deaf: deaf, release: make(chan struct{}), hung: map[string]bool{}, entered: map[string]int{}}
}

// hang makes the named methods hang from now on.
func (s *hungStore) hang(methods ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range methods {
		s.hung[m] = true
	}
}

// heal makes every method answer again and releases the calls hung.
func (s *hungStore) heal() {
	s.mu.Lock()
	clear(s.hung)
	s.mu.Unlock()
	s.once.Do(func() { close(s.release) })
}

func (s *hungStore) calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entered[method]
}

// block hangs when method is hung; it reports whether it did, and the
// error to return then.
func (s *hungStore) block(ctx context.Context, method string) (bool, error) {
	s.mu.Lock()
	hung := s.hung[method]
	if hung {
		s.entered[method]++
	}
	s.mu.Unlock()
	if !hung {
		return false, nil
	}
	if s.deaf {
		<-s.release
		return true, errors.New("hungStore: " + method + " released")
	}
	<-ctx.Done()
	return true, ctx.Err()
}

func (s *hungStore) Create(ctx context.Context, t taskstore.Task) error {
	if hung, err := s.block(ctx, "Create"); hung {
		return err
	}
	return s.Store.Create(ctx, t)
}

func (s *hungStore) Start(ctx context.Context, id string, at time.Time) error {
	if hung, err := s.block(ctx, "Start"); hung {
		return err
	}
	return s.Store.Start(ctx, id, at)
}

func (s *hungStore) Finish(ctx context.Context, id string, resp json.RawMessage, at time.Time) error {
	if hung, err := s.block(ctx, "Finish"); hung {
		return err
	}
	return s.Store.Finish(ctx, id, resp, at)
}

func (s *hungStore) FinishMany(ctx context.Context, outcomes []taskstore.Outcome, at time.Time) ([]string, error) {
	if hung, err := s.block(ctx, "FinishMany"); hung {
		return nil, err
	}
	return s.Store.FinishMany(ctx, outcomes, at)
}

func (s *hungStore) RecordAttempt(ctx context.Context, id string, a taskstore.Attempt) error {
	if hung, err := s.block(ctx, "RecordAttempt"); hung {
		return err
	}
	return s.Store.RecordAttempt(ctx, id, a)
}

func (s *hungStore) RenewLeases(ctx context.Context, ids []string, until time.Time) error {
	if hung, err := s.block(ctx, "RenewLeases"); hung {
		return err
	}
	return s.Store.RenewLeases(ctx, ids, until)
}

func (s *hungStore) ClaimDeliveries(ctx context.Context, recorder string, now time.Time, lease time.Duration, limit int) ([]taskstore.Task, error) {
	if hung, err := s.block(ctx, "ClaimDeliveries"); hung {
		return nil, err
	}
	return s.Store.ClaimDeliveries(ctx, recorder, now, lease, limit)
}

func (s *hungStore) DeferDeliveries(ctx context.Context, ds []taskstore.Deferral) (int, error) {
	if hung, err := s.block(ctx, "DeferDeliveries"); hung {
		return 0, err
	}
	return s.Store.DeferDeliveries(ctx, ds)
}

func (s *hungStore) Abandoned(ctx context.Context, recorder string, before time.Time, limit int) ([]taskstore.Task, error) {
	if hung, err := s.block(ctx, "Abandoned"); hung {
		return nil, err
	}
	return s.Store.Abandoned(ctx, recorder, before, limit)
}

var allWrites = []string{"Create", "Start", "Finish", "FinishMany", "RecordAttempt", "RenewLeases", "ClaimDeliveries", "DeferDeliveries", "Abandoned"}

// TestCloseKeepsDeadlineOverHungStore: the store hangs while the recorder
// has a delivery being recorded, a task running and a submission being
// stored. Close with a 200 ms deadline returns the deadline's error within
// about a second of it, whether the store honours its contexts or ignores
// them (then the calls stuck in it are left behind). What Close could not
// record is left as after a crash: the next start finishes the running
// task as "interrupted" and sends the callback whose recording was lost
// again.
func TestCloseKeepsDeadlineOverHungStore(t *testing.T) {
	for _, deaf := range []bool{false, true} {
		name := "HonoursContext"
		if deaf {
			name = "IgnoresContext"
		}
		t.Run(name, func(t *testing.T) {
			mem := newMemStore(t)
			hs := newHungStore(mem, deaf)
			t.Cleanup(hs.heal)
			rcv := newReceiver(t, nil)
			o := callback.Options{Workers: 2, Lease: 2 * time.Second, AttemptTimeout: time.Second}
			rec, err := startRecorder(t, hs, o)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			sub := callback.Submission{Type: "t", Request: json.RawMessage(`{}`), CallbackURL: rcv.URL + "/cb"}

			// A callback delivered, whose recording hangs.
			hs.hang("RecordAttempt")
			delivered, err := rec.Submit(ctx, sub, func(context.Context) (json.RawMessage, error) {
				return json.RawMessage(`{"ok":true}`), nil
			})
			if err != nil {
				t.Fatal(err)
			}
			eventually(t, "the callback sent and its recording hung", func() bool { return rcv.count() == 1 && hs.calls("RecordAttempt") == 1 })

			// A task running until it is cancelled, whose response's
			// recording hangs.
			started := make(chan struct{})
			running, err := rec.Submit(ctx, sub, func(ctx context.Context) (json.RawMessage, error) {
				close(started)
				<-ctx.Done()
				return nil, ctx.Err()
			})
			if err != nil {
				t.Fatal(err)
			}
			<-started
			hs.hang(allWrites...)

			// A submission being stored.
			go rec.Submit(ctx, sub, func(context.Context) (json.RawMessage, error) { return json.RawMessage(`{}`), nil })
			eventually(t, "a Create hung", func() bool { return hs.calls("Create") == 1 })

			cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			began := time.Now()
			closed := make(chan error, 1)
			go func() { closed <- rec.Close(cctx) }()
			select {
			case err = <-closed:
			case <-time.After(20 * time.Second): // bounds a hang, not a timing
				t.Fatalf("Close with a 200 ms deadline has not returned after 20 s")
			}
			t.Logf("Close with a 200 ms deadline over a hung store returned after %v", time.Since(began).Round(time.Millisecond))
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Close = %v, want context.DeadlineExceeded", err)
			}

			// The next start finds the state a crash leaves.
			hs.heal()
			newRecorder(t, mem, callback.Options{SoleOwner: true, Lease: 2 * time.Second, AttemptTimeout: time.Second})
			if task := waitFinished(t, mem, running); !jsonHasCode(task.Response, callback.CodeInterrupted) {
				t.Fatalf("the running task's response is %s, want the %q failure", task.Response, callback.CodeInterrupted)
			}
			for _, id := range []string{delivered, running} {
				if task := waitDelivery(t, mem, id); task.CallbackStatus() != taskstore.CallbackDelivered {
					t.Fatalf("callback status %v", task.CallbackStatus())
				}
			}
			if n := rcv.count(); n < 3 {
				t.Fatalf("receiver got %d callbacks, want the lost one again and the interrupted task's", n)
			}
		})
	}
}

// jsonHasCode reports whether a failure response carries the code.
func jsonHasCode(resp []byte, code string) bool {
	var r struct {
		Error struct{ Code string } `json:"error"`
	}
	return json.Unmarshal(resp, &r) == nil && r.Error.Code == code
}
