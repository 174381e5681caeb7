package reliability

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// ErrInjected is the system failure a FaultStore injects.
var ErrInjected = errors.New("reliability: injected store failure")

// Op names a Store method.
type Op string

// The Store methods a FaultStore can fail.
const (
	OpCreate          Op = "Create"
	OpGet             Op = "Get"
	OpFind            Op = "Find"
	OpStart           Op = "Start"
	OpFinish          Op = "Finish"
	OpFinishMany      Op = "FinishMany"
	OpDelete          Op = "Delete"
	OpPrune           Op = "Prune"
	OpRenewLeases     Op = "RenewLeases"
	OpAbandoned       Op = "Abandoned"
	OpClaimDeliveries Op = "ClaimDeliveries"
	OpRecordAttempt   Op = "RecordAttempt"
	OpRedeliver       Op = "Redeliver"
	OpRedeliverFailed Op = "RedeliverFailed"
	OpDeferDeliveries Op = "DeferDeliveries"
)

// Fault says what happens to one call.
type Fault int

const (
	// NoFault: the call goes through.
	NoFault Fault = iota
	// FailBefore: the call fails with ErrInjected and changes nothing.
	FailBefore
	// FailAfter: the call goes through, then reports ErrInjected, as when
	// a commit succeeded but its answer was lost.
	FailAfter
)

// Schedule decides the fault of the n-th call (from 1) of one method.
type Schedule func(n int) Fault

// Randomly fails a call with FailBefore with probability before, else with
// FailAfter with probability after, drawing from a generator seeded with
// seed.
func Randomly(seed uint64, before, after float64) Schedule {
	var mu sync.Mutex
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	return func(int) Fault {
		mu.Lock()
		x := rng.Float64()
		mu.Unlock()
		switch {
		case x < before:
			return FailBefore
		case x < before+after:
			return FailAfter
		}
		return NoFault
	}
}

// FaultStore wraps a taskstore.Store and fails the calls its schedules
// choose with ErrInjected, before or after passing them on. It is safe for
// concurrent use.
type FaultStore struct {
	inner taskstore.Store

	mu        sync.Mutex
	schedules map[Op]Schedule
	calls     map[Op]int
	injected  map[Op]int
}

var _ taskstore.Store = (*FaultStore)(nil)

// NewFaultStore wraps inner; no call fails until Fail sets a schedule.
func NewFaultStore(inner taskstore.Store) *FaultStore {
	return &FaultStore{inner: inner, schedules: map[Op]Schedule{}, calls: map[Op]int{}, injected: map[Op]int{}}
}

// Fail sets the schedule of op; nil removes it.
func (s *FaultStore) Fail(op Op, sch Schedule) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sch == nil {
		delete(s.schedules, op)
	} else {
		s.schedules[op] = sch
	}
}

// Heal removes every schedule: from now on every call goes through.
func (s *FaultStore) Heal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.schedules)
}

// Injected returns how many calls of each method failed.
func (s *FaultStore) Injected() map[Op]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[Op]int, len(s.injected))
	for k, v := range s.injected {
		out[k] = v
	}
	return out
}

func (s *FaultStore) fault(op Op) Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[op]++
	sch := s.schedules[op]
	if sch == nil {
		return NoFault
	}
	f := sch(s.calls[op])
	if f != NoFault {
		s.injected[op]++
	}
	return f
}

// call runs f under op's schedule.
func (s *FaultStore) call(op Op, f func() error) error {
	switch s.fault(op) {
	case FailBefore:
		return ErrInjected
	case FailAfter:
		if err := f(); err != nil {
			return err
		}
		return ErrInjected
	}
	return f()
}

func (s *FaultStore) Create(ctx context.Context, t taskstore.Task) error {
	return s.call(OpCreate, func() error { return s.inner.Create(ctx, t) })
}

func (s *FaultStore) Get(ctx context.Context, id string) (t taskstore.Task, err error) {
	err = s.call(OpGet, func() error { t, err = s.inner.Get(ctx, id); return err })
	if err != nil {
		return taskstore.Task{}, err
	}
	return t, nil
}

func (s *FaultStore) Find(ctx context.Context, f taskstore.Filter) (page []taskstore.Task, total int, err error) {
	err = s.call(OpFind, func() error { page, total, err = s.inner.Find(ctx, f); return err })
	if err != nil {
		return nil, 0, err
	}
	return page, total, nil
}

func (s *FaultStore) Start(ctx context.Context, id string, at time.Time) error {
	return s.call(OpStart, func() error { return s.inner.Start(ctx, id, at) })
}

func (s *FaultStore) Finish(ctx context.Context, id string, response json.RawMessage, at time.Time) error {
	return s.call(OpFinish, func() error { return s.inner.Finish(ctx, id, response, at) })
}

func (s *FaultStore) FinishMany(ctx context.Context, outcomes []taskstore.Outcome, at time.Time) (done []string, err error) {
	err = s.call(OpFinishMany, func() error { done, err = s.inner.FinishMany(ctx, outcomes, at); return err })
	if err != nil {
		return nil, err
	}
	return done, nil
}

func (s *FaultStore) Delete(ctx context.Context, id string) error {
	return s.call(OpDelete, func() error { return s.inner.Delete(ctx, id) })
}

func (s *FaultStore) Prune(ctx context.Context, before time.Time, limit int) (n int, err error) {
	err = s.call(OpPrune, func() error { n, err = s.inner.Prune(ctx, before, limit); return err })
	if err != nil {
		return 0, err
	}
	return n, nil
}

func (s *FaultStore) RenewLeases(ctx context.Context, ids []string, until time.Time) error {
	return s.call(OpRenewLeases, func() error { return s.inner.RenewLeases(ctx, ids, until) })
}

func (s *FaultStore) Abandoned(ctx context.Context, recorder string, before time.Time, limit int) (ts []taskstore.Task, err error) {
	err = s.call(OpAbandoned, func() error { ts, err = s.inner.Abandoned(ctx, recorder, before, limit); return err })
	if err != nil {
		return nil, err
	}
	return ts, nil
}

func (s *FaultStore) ClaimDeliveries(ctx context.Context, recorder string, now time.Time, lease time.Duration, limit int) (ts []taskstore.Task, err error) {
	err = s.call(OpClaimDeliveries, func() error { ts, err = s.inner.ClaimDeliveries(ctx, recorder, now, lease, limit); return err })
	if err != nil {
		return nil, err
	}
	return ts, nil
}

func (s *FaultStore) RecordAttempt(ctx context.Context, id string, a taskstore.Attempt) error {
	return s.call(OpRecordAttempt, func() error { return s.inner.RecordAttempt(ctx, id, a) })
}

func (s *FaultStore) Redeliver(ctx context.Context, ids []string, at time.Time) (out []string, err error) {
	err = s.call(OpRedeliver, func() error { out, err = s.inner.Redeliver(ctx, ids, at); return err })
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *FaultStore) RedeliverFailed(ctx context.Context, recorder string, since, at time.Time, limit int) (out []string, err error) {
	err = s.call(OpRedeliverFailed, func() error { out, err = s.inner.RedeliverFailed(ctx, recorder, since, at, limit); return err })
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (s *FaultStore) DeferDeliveries(ctx context.Context, ds []taskstore.Deferral) (n int, err error) {
	err = s.call(OpDeferDeliveries, func() error { n, err = s.inner.DeferDeliveries(ctx, ds); return err })
	if err != nil {
		return 0, err
	}
	return n, nil
}

// Close closes the wrapped store; it never fails by schedule.
func (s *FaultStore) Close() error { return s.inner.Close() }
