// Package memstore is an in-memory taskstore.Store, for unit tests and for
// servers whose tasks need not outlive the process.
//
// It passes the same conformance suite (taskstore/storetest) as the database
// stores. Tasks are kept as values: every task a method returns is a copy,
// and a task passed to Create is copied, so a caller can never change stored
// state through a slice it holds.
//
// # Indexes
//
// Lookups by id and trace id go through maps. Tasks are also kept in ordered
// indexes — one for all tasks, one per application, per user, per
// (application, user) pair, per type and per shared trace id — sorted by
// (CreatedAt, ID), so Find serves a page newest first from the end of the
// most selective index (the set field with the fewest tasks) without
// touching other tenants' tasks. When no other field restricts that index,
// as for the application and user of a scoped principal, the total count
// costs O(1) (O(log n) with a created_at window); otherwise Find walks the
// index's entries inside the window and filters them. The callback outbox
// and the run leases have indexes of their own, one set per recorder name
// (Task.Recorder), so ClaimDeliveries and Abandoned cost O(limit · log n)
// whatever the number of tasks, and never read another recorder's tasks.
//
// # Task and callback status
//
// A task's status (pending, running, succeeded, failed) and its callback's
// status (none, waiting, pending, delivered, failed) together take one of
// twelve states. The state follows from the stored fields and one bit, the
// success of the response (taskstore.Succeeded), computed once when Create or
// Finish stores the response. Every ordered index by CreatedAt but the trace
// ones is tagged: besides its entries it keeps one byte per entry holding
// the task's state, a count of each state per chunk of entries and a Fenwick
// tree over those counts. A Status or CallbackStatus filter selects a set of
// states, and a tagged index counts its entries in those states, finds the
// one at a rank among them and walks them without reading the tasks, so the
// filters cost what the filters without them cost: a status alone, or a
// status with the application, the user, both, or a type, gives its total
// in O(log n) and its page in O(log n + Limit) (plus the scan of at most two
// chunks of tags per task listed, for a rare state), whatever the offset.
// Several types merge their indexes as they do without a status; with trace
// ids or ids, the state is checked on each of their tasks. The plan compares
// the sources by their entries in the states selected, so CallbackStatus
// failed alone over a million tasks reads only its page.
//
// The tags cost about one byte per task per index, and a state change
// (Start, Finish, RecordAttempt, Redeliver) rewrites the task's tag in each
// of its tagged indexes (up to five: all, type, application, user, pair),
// O(log n) each, moving no entry.
//
// # Redelivery
//
// The failed callbacks have an index of their own (per recorder), ordered
// by FinishedAt, so
// RedeliverFailed costs O(log n + limit · log n). ClaimDeliveries sets a bit
// in the task's record marking the delivery as in flight; RecordAttempt and
// Redeliver clear it. Redeliver leaves a delivery alone while its claim
// lasts (the claim's end, its NextAttemptAt, is later than the time given)
// and makes it due at that time once the claim has expired; a pending
// callback that is not in flight keeps an earlier due time. All of it
// happens under the write lock, hence atomically with respect to
// ClaimDeliveries, RecordAttempt and other Redeliver calls.
//
// # Concurrency and limits
//
// A Store is safe for concurrent use; one sync.RWMutex lets reads run in
// parallel and serialises writes. A store holds at most about four billion
// tasks. Memory per task is the task's own bytes (request, response and
// strings) plus about 400 bytes.
//
// # Times
//
// Like every store it keeps times in Unix milliseconds, in UTC. The zero
// time passed as the time of Start, Finish, FinishMany, Redeliver,
// RedeliverFailed or a delivered Attempt means the current time, as a zero
// CreatedAt does on Create.
package memstore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// Store is an in-memory taskstore.Store. Create one with New; the zero Store
// is not usable.
type Store struct {
	mu     sync.RWMutex
	closed bool

	recs slab
	byID map[string]uint32

	all     index             // every task, byCreated
	byTrace map[string]*index // byCreated, per trace id of two or more tasks
	trace1  map[string]uint32 // the task of a trace id held by one task only
	byApp   map[string]*index // byCreated, per application id
	byUser  map[string]*index // byCreated, per user id
	byPair  map[pair]*index   // byCreated, per (application, user), both set
	byType  map[string]*index // byCreated, per type
	// boxes holds, per recorder name (Task.Recorder), the indexes of the
	// recorder's background work: its run leases, its callback outbox and
	// its failed callbacks.
	boxes map[string]*outbox
}

// outbox is the indexes of one recorder's tasks that ClaimDeliveries,
// Abandoned and RedeliverFailed read.
type outbox struct {
	name   string // the recorder's, interned
	leases index  // unfinished tasks, byLease
	due    index  // pending callbacks, byDue
	failed index  // failed callbacks, byFinished
}

// box returns the indexes of the recorder of the task in r, creating them
// when needed; the caller holds the write lock.
func (s *Store) box(r *rec) *outbox {
	b := s.boxes[r.recorder]
	if b == nil {
		b = &outbox{name: strings.Clone(r.recorder)}
		s.boxes[b.name] = b
	}
	return b
}

// emptyBox stands for the indexes of a recorder without tasks.
var emptyBox = &outbox{}

// boxOf returns the indexes of the named recorder for reading: an empty
// one when it has no tasks.
func (s *Store) boxOf(recorder string) *outbox {
	if b := s.boxes[recorder]; b != nil {
		return b
	}
	return emptyBox
}

var _ taskstore.Store = (*Store)(nil)

// pair keys the index of one user of one application: the filter a scoped
// principal (Principal.Scope) sends on every list.
type pair struct{ app, user string }

// New returns an empty store. It starts no goroutines; Close only releases
// the memory.
func New() *Store {
	return &Store{
		byID:    make(map[string]uint32),
		all:     index{tagged: true},
		byTrace: make(map[string]*index),
		trace1:  make(map[string]uint32),
		byApp:   make(map[string]*index),
		byUser:  make(map[string]*index),
		byPair:  make(map[pair]*index),
		byType:  make(map[string]*index),
		boxes:   make(map[string]*outbox),
	}
}

// Create stores a new task; see taskstore.Store.
func (s *Store) Create(ctx context.Context, t taskstore.Task) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t, err := storekit.Normalize(t, time.Now()) // copies the JSON: the store owns it
	if err != nil {
		return err
	}
	ok := t.Finished() && taskstore.Succeeded(t.Response)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.byID == nil {
		return s.unusable()
	}
	if _, ok := s.byID[t.ID]; ok {
		return fmt.Errorf("%w: task %q already exists", taskstore.ErrConflict, t.ID)
	}
	slot, err := s.recs.alloc()
	if err != nil {
		return err
	}
	*s.recs.at(slot) = rec{
		id: t.ID, traceID: t.TraceID, typ: t.Type,
		app: t.ApplicationID, user: t.UserID, cred: t.CredentialID,
		url: t.Callback.URL, lastErr: t.Callback.LastError,
		request: t.Request, response: t.Response,
		created:   storekit.ToMillis(t.CreatedAt),
		started:   storekit.ToMillis(t.StartedAt),
		finished:  storekit.ToMillis(t.FinishedAt),
		lease:     storekit.ToMillis(t.LeaseUntil),
		next:      storekit.ToMillis(t.Callback.NextAttemptAt),
		delivered: storekit.ToMillis(t.Callback.DeliveredAt),
		attempts:  uint32(t.Callback.Attempts), lastStatus: int32(t.Callback.LastStatus),
		ok: ok, recorder: t.Recorder,
	}
	s.byID[t.ID] = slot
	s.link(slot)
	return nil
}

// link adds a freshly written record to every index it belongs to, and
// interns its keyed strings (one copy per distinct value).
func (s *Store) link(slot uint32) {
	r := s.recs.at(slot)
	s.all.insert(&s.recs, byCreated, slot)
	r.typ = s.keyed(s.byType, r.typ, slot, true)
	if r.traceID != "" {
		s.linkTrace(slot, r)
	}
	if r.app != "" {
		r.app = s.keyed(s.byApp, r.app, slot, true)
	}
	if r.user != "" {
		r.user = s.keyed(s.byUser, r.user, slot, true)
	}
	if r.app != "" && r.user != "" {
		k := pair{r.app, r.user}
		ix := s.byPair[k]
		if ix == nil {
			ix = &index{tagged: true}
			s.byPair[k] = ix
		}
		ix.insert(&s.recs, byCreated, slot)
	}
	switch b := s.box(r); {
	case r.finished == 0:
		b.leases.insert(&s.recs, byLease, slot)
	case r.pending():
		b.due.insert(&s.recs, byDue, slot)
	case r.gaveUp():
		b.failed.insert(&s.recs, byFinished, slot)
	}
	r.recorder = s.boxes[r.recorder].name // interned
}

// keyed inserts slot into m[key], creating that index (tagged or not) when
// needed, and returns the interned key.
func (s *Store) keyed(m map[string]*index, key string, slot uint32, tagged bool) string {
	ix := m[key]
	if ix == nil {
		// Cloned so that a key never pins a larger buffer of the caller.
		ix = &index{key: strings.Clone(key), tagged: tagged}
		m[ix.key] = ix
	}
	ix.insert(&s.recs, byCreated, slot)
	return ix.key
}

// restate records the state of the task in slot in the tagged indexes (all,
// type, application, user, pair) after a change from old; the other
// indexes are the caller's business.
func (s *Store) restate(slot uint32, old state) {
	r := s.recs.at(slot)
	if r.state() == old {
		return
	}
	s.all.retag(&s.recs, byCreated, slot)
	s.byType[r.typ].retag(&s.recs, byCreated, slot)
	if r.app != "" {
		s.byApp[r.app].retag(&s.recs, byCreated, slot)
	}
	if r.user != "" {
		s.byUser[r.user].retag(&s.recs, byCreated, slot)
	}
	if r.app != "" && r.user != "" {
		s.byPair[pair{r.app, r.user}].retag(&s.recs, byCreated, slot)
	}
}

// unlink removes a record from every index; the inverse of link.
func (s *Store) unlink(slot uint32) {
	r := s.recs.at(slot)
	s.all.remove(&s.recs, byCreated, slot)
	s.unkeyed(s.byType, r.typ, slot)
	if r.traceID != "" {
		s.unlinkTrace(slot, r.traceID)
	}
	if r.app != "" {
		s.unkeyed(s.byApp, r.app, slot)
	}
	if r.user != "" {
		s.unkeyed(s.byUser, r.user, slot)
	}
	if r.app != "" && r.user != "" {
		k := pair{r.app, r.user}
		ix := s.byPair[k]
		ix.remove(&s.recs, byCreated, slot)
		if ix.n == 0 {
			delete(s.byPair, k)
		}
	}
	switch b := s.box(r); {
	case r.finished == 0:
		b.leases.remove(&s.recs, byLease, slot)
	case r.pending():
		b.due.remove(&s.recs, byDue, slot)
	case r.gaveUp():
		b.failed.remove(&s.recs, byFinished, slot)
	}
}

// linkTrace indexes the trace id of r. Most trace ids belong to one task (a
// client's id for one request): those cost one map entry; a trace id shared
// by a second task gets an ordered index.
func (s *Store) linkTrace(slot uint32, r *rec) {
	if ix := s.byTrace[r.traceID]; ix != nil {
		ix.insert(&s.recs, byCreated, slot)
		r.traceID = ix.key
		return
	}
	other, ok := s.trace1[r.traceID]
	if !ok {
		s.trace1[r.traceID] = slot
		return
	}
	delete(s.trace1, r.traceID)
	r.traceID = s.keyed(s.byTrace, r.traceID, slot, false)
	s.recs.at(other).traceID = s.keyed(s.byTrace, r.traceID, other, false)
}

// unlinkTrace is the inverse of linkTrace: a trace id left with one task
// goes back to the map.
func (s *Store) unlinkTrace(slot uint32, trace string) {
	ix := s.byTrace[trace]
	if ix == nil {
		delete(s.trace1, trace)
		return
	}
	ix.remove(&s.recs, byCreated, slot)
	if ix.n == 1 {
		s.trace1[ix.key] = ix.chunks[0][0]
		delete(s.byTrace, trace)
	}
}

func (s *Store) unkeyed(m map[string]*index, key string, slot uint32) {
	ix := m[key]
	ix.remove(&s.recs, byCreated, slot)
	if ix.n == 0 {
		delete(m, key)
	}
}

// drop deletes the task in slot.
func (s *Store) drop(slot uint32) {
	s.unlink(slot)
	delete(s.byID, s.recs.at(slot).id)
	s.recs.release(slot)
}

// lookup returns the slot of id; the caller holds the lock and has checked
// that the store is open.
func (s *Store) lookup(id string) (uint32, error) {
	slot, ok := s.byID[id]
	if !ok {
		return 0, fmt.Errorf("%w: %q", taskstore.ErrNotFound, id)
	}
	return slot, nil
}

// tasks returns the tasks in slots as values, with one allocation for all
// their JSON.
func (s *Store) tasks(slots []uint32) []taskstore.Task {
	size := 0
	for _, slot := range slots {
		r := s.recs.at(slot)
		size += len(r.request) + len(r.response)
	}
	buf := make([]byte, 0, size)
	out := make([]taskstore.Task, len(slots))
	for i, slot := range slots {
		out[i] = s.recs.at(slot).task(&buf)
	}
	return out
}

// update runs fn on the task with the given id under the write lock
// (ErrClosed after Close, ErrNotFound for an unknown id).
func (s *Store) update(id string, fn func(slot uint32, r *rec) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.byID == nil {
		return s.unusable()
	}
	slot, err := s.lookup(id)
	if err != nil {
		return err
	}
	return fn(slot, s.recs.at(slot))
}

// Get returns a copy of the task with the given id; see taskstore.Store.
func (s *Store) Get(ctx context.Context, id string) (taskstore.Task, error) {
	if err := ctx.Err(); err != nil {
		return taskstore.Task{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed || s.byID == nil {
		return taskstore.Task{}, s.unusable()
	}
	slot, err := s.lookup(id)
	if err != nil {
		return taskstore.Task{}, err
	}
	r := s.recs.at(slot)
	buf := make([]byte, 0, len(r.request)+len(r.response))
	return r.task(&buf), nil
}

// Start records when work on the task started; see taskstore.Store. A zero
// at means now.
func (s *Store) Start(ctx context.Context, id string, at time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ms := storekit.MillisOrNow(at)
	return s.update(id, func(slot uint32, r *rec) error {
		switch {
		case r.finished != 0:
			return fmt.Errorf("%w: task %q has already finished", taskstore.ErrConflict, id)
		case r.started == ms:
			return nil // a repeat
		case r.started != 0:
			return fmt.Errorf("%w: task %q has already started", taskstore.ErrConflict, id)
		}
		old := r.state()
		r.started = ms
		s.restate(slot, old)
		return nil
	})
}

// Finish records the task's response, once; see taskstore.Store. A zero at
// means now.
func (s *Store) Finish(ctx context.Context, id string, response json.RawMessage, at time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := storekit.CheckResponse(response); err != nil {
		return err
	}
	ms := storekit.MillisOrNow(at)
	response = bytes.Clone(response)
	ok := taskstore.Succeeded(response)
	return s.update(id, func(slot uint32, r *rec) error {
		switch {
		case r.finished == ms && bytes.Equal(r.response, response):
			return nil // a repeat
		case r.finished != 0:
			return fmt.Errorf("%w: task %q has already finished", taskstore.ErrConflict, id)
		}
		s.finish(slot, response, ms, ok)
		return nil
	})
}

// finish records the response of the unfinished task in slot (the store
// owns response; ok is whether it is a success) and moves the task from the
// leases to the callback outbox; the caller holds the write lock.
func (s *Store) finish(slot uint32, response json.RawMessage, ms int64, ok bool) {
	r := s.recs.at(slot)
	old, b := r.state(), s.box(r)
	b.leases.remove(&s.recs, byLease, slot)
	r.response, r.finished, r.lease, r.ok = response, ms, 0, ok
	if r.url != "" {
		r.next = ms
	}
	if r.pending() {
		b.due.insert(&s.recs, byDue, slot)
	}
	s.restate(slot, old)
}

// Delete removes the task and its pending delivery; see taskstore.Store.
func (s *Store) Delete(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.update(id, func(slot uint32, _ *rec) error {
		s.drop(slot)
		return nil
	})
}

// Prune deletes at most limit tasks created strictly before the given time,
// oldest first; see taskstore.Store. It costs O(limit · log n).
func (s *Store) Prune(ctx context.Context, before time.Time, limit int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := storekit.CheckLimit(limit); err != nil {
		return 0, err
	}
	cut := storekit.CeilMillis(before)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.byID == nil {
		return 0, s.unusable()
	}
	victims := make([]uint32, 0, min(limit, s.all.n))
	s.all.each(func(slot uint32) bool {
		if len(victims) == limit || s.recs.at(slot).created >= cut {
			return false
		}
		victims = append(victims, slot)
		return true
	})
	for _, slot := range victims {
		s.drop(slot)
	}
	return len(victims), nil
}

// RenewLeases sets the lease of the given unfinished tasks; see
// taskstore.Store.
func (s *Store) RenewLeases(ctx context.Context, ids []string, until time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	ms := storekit.ToMillis(until)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.byID == nil {
		return s.unusable()
	}
	for _, id := range ids {
		slot, ok := s.byID[id]
		if !ok {
			continue
		}
		r := s.recs.at(slot)
		if r.finished != 0 || r.lease == ms {
			continue
		}
		b := s.box(r)
		b.leases.remove(&s.recs, byLease, slot)
		r.lease = ms
		b.leases.insert(&s.recs, byLease, slot)
	}
	return nil
}

// Abandoned returns at most limit unfinished tasks of the recorder whose
// lease ended strictly before the given time, oldest lease (a zero one)
// first; see taskstore.Store.
func (s *Store) Abandoned(ctx context.Context, recorder string, before time.Time, limit int) ([]taskstore.Task, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := taskstore.CheckRecorder(recorder); err != nil {
		return nil, err
	}
	if err := storekit.CheckLimit(limit); err != nil {
		return nil, err
	}
	cut := storekit.CeilMillis(before)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed || s.byID == nil {
		return nil, s.unusable()
	}
	var slots []uint32
	s.boxOf(recorder).leases.each(func(slot uint32) bool {
		if len(slots) == limit {
			return false
		}
		if k, _ := s.recs.sortKey(byLease, slot); k >= cut {
			return false
		}
		slots = append(slots, slot)
		return true
	})
	return s.tasks(slots), nil
}

// ClaimDeliveries returns and claims at most limit due callbacks, earliest
// due first; see taskstore.Store. A zero now or a negative lease is invalid;
// a zero lease leaves the deliveries due at once.
func (s *Store) ClaimDeliveries(ctx context.Context, recorder string, now time.Time, lease time.Duration, limit int) ([]taskstore.Task, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := storekit.CheckClaim(recorder, now, lease, limit); err != nil {
		return nil, err
	}
	nowMs := now.UnixMilli() // due means NextAttemptAt <= now: floor
	until := storekit.ToMillis(now.Add(lease))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.byID == nil {
		return nil, s.unusable()
	}
	var slots []uint32
	b := s.boxOf(recorder)
	b.due.each(func(slot uint32) bool {
		if len(slots) == limit || s.recs.at(slot).next > nowMs {
			return false
		}
		slots = append(slots, slot)
		return true
	})
	for _, slot := range slots {
		r := s.recs.at(slot)
		old := r.state()
		b.due.remove(&s.recs, byDue, slot)
		r.next, r.claimed = until, true
		s.settle(slot, old)
	}
	return s.tasks(slots), nil
}

// RecordAttempt records the outcome of a delivery attempt; see
// taskstore.Store. A delivered attempt with a zero At is delivered now.
func (s *Store) RecordAttempt(ctx context.Context, id string, a taskstore.Attempt) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	delivered, next := storekit.AttemptMillis(a)
	return s.update(id, func(slot uint32, r *rec) error {
		if r.recorded(a, delivered, next) {
			return nil // a repeat
		}
		if !r.pending() {
			return fmt.Errorf("%w: the callback of task %q is %s, not pending", taskstore.ErrConflict, id, taskstore.Task{
				FinishedAt: storekit.FromMillis(r.finished),
				Callback: taskstore.Callback{URL: r.url,
					NextAttemptAt: storekit.FromMillis(r.next), DeliveredAt: storekit.FromMillis(r.delivered)},
			}.CallbackStatus())
		}
		old := r.state()
		s.box(r).due.remove(&s.recs, byDue, slot)
		r.attempts++
		r.lastStatus, r.lastErr = int32(a.Status), a.Error
		r.delivered, r.next, r.claimed = delivered, next, false
		s.settle(slot, old)
		return nil
	})
}

// settle puts the finished task in slot, just taken out of the callback
// outbox or the failed callbacks with its state old, back into whichever of
// them its callback now belongs to, and records its new state.
func (s *Store) settle(slot uint32, old state) {
	r := s.recs.at(slot)
	switch b := s.box(r); {
	case r.pending():
		b.due.insert(&s.recs, byDue, slot)
	case r.gaveUp():
		b.failed.insert(&s.recs, byFinished, slot)
	}
	s.restate(slot, old)
}

// Redeliver makes the callbacks of the listed tasks due again; see
// taskstore.Store. A zero at means now. A delivery is in flight while its
// claim lasts (the claim's end is later than at); an expired claim is made
// due at at.
func (s *Store) Redeliver(ctx context.Context, ids []string, at time.Time) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ms := storekit.MillisOrNow(at)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.byID == nil {
		return nil, s.unusable()
	}
	out := make([]string, 0, len(ids))
	var seen map[uint32]bool
	for _, id := range ids {
		slot, ok := s.byID[id]
		if !ok {
			continue
		}
		r := s.recs.at(slot)
		if r.url == "" || r.finished == 0 || seen[slot] {
			continue
		}
		if seen == nil {
			seen = make(map[uint32]bool, len(ids))
		}
		seen[slot] = true
		s.redeliver(slot, ms)
		out = append(out, r.id)
	}
	return out, nil
}

// RedeliverFailed makes due again the failed callbacks of at most limit
// tasks of the recorder finished at or after since, the earliest finished
// first; see taskstore.Store. It costs O(log n + limit · log n) from the
// recorder's index of failed callbacks, whatever the number of tasks.
func (s *Store) RedeliverFailed(ctx context.Context, recorder string, since, at time.Time, limit int) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := taskstore.CheckRecorder(recorder); err != nil {
		return nil, err
	}
	if err := storekit.CheckLimit(limit); err != nil {
		return nil, err
	}
	from, ms := storekit.CeilMillis(since), storekit.MillisOrNow(at)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.byID == nil {
		return nil, s.unusable()
	}
	var slots []uint32
	failed := &s.boxOf(recorder).failed
	ci, j := failed.search(&s.recs, byFinished, func(k int64, _ uint32) bool { return k >= from })
	failed.from(ci, j, func(slot uint32) bool {
		slots = append(slots, slot)
		return len(slots) < limit
	})
	out := make([]string, len(slots))
	for i, slot := range slots {
		s.redeliver(slot, ms)
		out[i] = s.recs.at(slot).id
	}
	return out, nil
}

// redeliver makes the callback of the finished task in slot, which has a
// callback URL, due at ms, unless a claim that lasts beyond ms has it in
// flight. A pending callback due before ms keeps its place.
func (s *Store) redeliver(slot uint32, ms int64) {
	r := s.recs.at(slot)
	old, next := r.state(), ms
	switch {
	case r.pending():
		if r.claimed && r.next > ms {
			return // in flight: its RecordAttempt decides what follows
		}
		if !r.claimed { // (an expired claim's end is no due time to keep)
			next = min(r.next, ms)
		}
		r.claimed = false
		if next == r.next {
			return
		}
		s.box(r).due.remove(&s.recs, byDue, slot)
	case r.gaveUp():
		s.box(r).failed.remove(&s.recs, byFinished, slot)
	}
	r.delivered, r.next, r.claimed = 0, next, false
	s.settle(slot, old)
}

// Close releases the tasks. It is idempotent; every other method returns
// taskstore.ErrClosed afterwards.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	if s.byID == nil {
		return errNotNew
	}
	s.closed = true
	s.recs = slab{}
	s.byID, s.byTrace, s.trace1, s.byApp, s.byUser, s.byType, s.byPair = nil, nil, nil, nil, nil, nil, nil
	s.all, s.boxes = index{}, nil
	return nil
}

// errNotNew is what a Store not made by New answers.
var errNotNew = errors.New("memstore: Store not created with New")

// unusable is the error of a call on a closed Store or on a zero Store;
// s.mu is held.
func (s *Store) unusable() error {
	if s.closed {
		return taskstore.ErrClosed
	}
	return errNotNew
}
