package memstore

import (
	"context"
	"slices"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// Find returns the page of tasks matching f, newest first, and the total
// number of matches; see taskstore.Store.
//
// The page comes from the most selective set field: the ids, the trace ids,
// the user within the application, the user, the application, the types
// (whichever holds the fewest tasks), else the index of all tasks. The task
// and callback statuses select states; every index but the trace ones knows
// the state of its entries, so it counts and walks only those in the states
// selected, and the plan compares the sources by that count. The created_at
// window narrows that index by binary search; the other set fields are
// checked on each entry inside the window. When no other field is set, the
// total costs O(log n) and the page O(log n + Limit), whatever the offset.
// An empty string among f.TraceIDs matches the tasks without a trace id.
func (s *Store) Find(ctx context.Context, f taskstore.Filter) ([]taskstore.Task, int, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	if err := f.Validate(); err != nil {
		return nil, 0, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed || s.byID == nil {
		return nil, 0, s.unusable()
	}
	minMs, maxMs, empty := storekit.CreatedRange(f)
	set := statesOf(f.Status, f.CallbackStatus)
	if empty || set == 0 { // (a running task's callback is never delivered)
		return []taskstore.Task{}, 0, nil
	}
	q := s.plan(f, set, minMs, maxMs)
	var (
		slots []uint32
		total int
		err   error
	)
	if q.src == srcIDs {
		slots, total = s.findIDs(q, f.Offset, f.Limit)
	} else {
		slots, total, err = s.findRuns(ctx, q, f.Offset, f.Limit)
		if err != nil {
			return nil, 0, err
		}
	}
	if f.PageBytes > 0 {
		weight := 0
		for i, slot := range slots {
			if weight >= f.PageBytes {
				slots = slots[:i]
				break
			}
			r := s.recs.at(slot)
			weight += len(r.request) + len(r.response)
		}
	}
	return s.tasks(slots), total, nil
}

// source is where a query takes its candidates from.
type source uint8

const (
	srcAll source = iota
	srcIDs
	srcTraces
	srcPair
	srcUser
	srcApp
	srcTypes
)

// query is a planned Find: a source of candidates and the residual
// conditions checked on each of them.
type query struct {
	src   source
	slots []uint32 // srcIDs: the distinct tasks named
	runs  []*index // any other source: disjoint byCreated indexes

	minMs, maxMs int64 // the created_at window, inclusive

	// The states selected by the task and callback statuses. Tagged runs
	// yield only the entries in these states; the others (the ids, the trace
	// indexes) check them on each candidate when checkState is set.
	set        stateSet
	checkState bool

	// Residual conditions: the set fields other than the source. A nil set
	// or an empty string does not restrict.
	ids, traces, types map[string]struct{}
	app, user          string
}

// trivial reports whether every candidate inside the window matches.
func (q *query) trivial() bool {
	return q.ids == nil && q.traces == nil && q.types == nil && q.app == "" && q.user == "" && !q.checkState
}

// match checks the residual conditions (not the window).
func (q *query) match(r *rec) bool {
	if q.app != "" && r.app != q.app || q.user != "" && r.user != q.user {
		return false
	}
	if q.checkState && !q.set.has(r.state()) {
		return false
	}
	return in(q.ids, r.id) && in(q.traces, r.traceID) && in(q.types, r.typ)
}

func in(set map[string]struct{}, v string) bool {
	if set == nil {
		return true
	}
	_, ok := set[v]
	return ok
}

func toSet(vs []string) map[string]struct{} {
	if len(vs) == 0 {
		return nil
	}
	set := make(map[string]struct{}, len(vs))
	for _, v := range vs {
		set[v] = struct{}{}
	}
	return set
}

// plan picks the source with the fewest candidates and makes the other set
// fields residual conditions. The candidates of a tagged source are its
// entries in the states of set.
func (s *Store) plan(f taskstore.Filter, set stateSet, minMs, maxMs int64) *query {
	q := &query{src: srcAll, runs: []*index{&s.all}, minMs: minMs, maxMs: maxMs, set: set}
	best := -1 // candidates of the best source so far; -1: none set yet
	pick := func(src source, n int, slots []uint32, runs []*index) {
		if best < 0 || n < best {
			best, q.src, q.slots, q.runs = n, src, slots, runs
		}
	}
	if len(f.IDs) > 0 {
		var slots []uint32
		for id := range toSet(f.IDs) {
			if slot, ok := s.byID[id]; ok {
				slots = append(slots, slot)
			}
		}
		pick(srcIDs, len(slots), slots, nil)
	}
	// An empty trace id matches the tasks without one, which no trace index
	// holds: such a list is only checked on the candidates of another source.
	if len(f.TraceIDs) > 0 && !slices.Contains(f.TraceIDs, "") {
		runs, n := s.traceRuns(f.TraceIDs)
		pick(srcTraces, n, nil, runs)
	}
	if f.UserID != "" && f.ApplicationID != "" {
		var runs []*index
		n := 0
		if ix := s.byPair[pair{f.ApplicationID, f.UserID}]; ix != nil {
			runs, n = []*index{ix}, ix.count(set)
		}
		pick(srcPair, n, nil, runs)
	}
	if f.UserID != "" {
		runs, n := keyedRuns(s.byUser, []string{f.UserID}, set)
		pick(srcUser, n, nil, runs)
	}
	if f.ApplicationID != "" {
		runs, n := keyedRuns(s.byApp, []string{f.ApplicationID}, set)
		pick(srcApp, n, nil, runs)
	}
	if len(f.Types) > 0 {
		runs, n := keyedRuns(s.byType, f.Types, set)
		pick(srcTypes, n, nil, runs)
	}
	// The index of all tasks in the states selected beats the ids or trace
	// ids when those name more tasks (the keyed sources never hold more).
	if set != allStates && best >= 0 {
		if n := s.all.count(set); n < best {
			best, q.src, q.slots, q.runs = n, srcAll, nil, []*index{&s.all}
		}
	}
	q.checkState = set != allStates && (q.src == srcIDs || q.src == srcTraces)
	if q.src != srcIDs {
		q.ids = toSet(f.IDs)
	}
	if q.src != srcTraces {
		q.traces = toSet(f.TraceIDs)
	}
	if q.src != srcTypes {
		q.types = toSet(f.Types)
	}
	if q.src != srcUser && q.src != srcPair {
		q.user = f.UserID
	}
	if q.src != srcApp && q.src != srcPair {
		q.app = f.ApplicationID
	}
	return q
}

// keyedRuns returns the indexes of the distinct keys present in m and their
// number of tasks in the states of set.
func keyedRuns(m map[string]*index, keys []string, set stateSet) ([]*index, int) {
	runs := make([]*index, 0, len(keys))
	n := 0
	for _, k := range keys {
		ix := m[k]
		if ix == nil || slices.Contains(runs, ix) {
			continue
		}
		runs = append(runs, ix)
		n += ix.count(set)
	}
	return runs, n
}

// traceRuns returns the tasks of the distinct trace ids, as indexes, and
// their number.
func (s *Store) traceRuns(traces []string) ([]*index, int) {
	runs := make([]*index, 0, len(traces))
	seen := make([]string, 0, len(traces))
	n := 0
	for _, tr := range traces {
		if slices.Contains(seen, tr) {
			continue
		}
		seen = append(seen, tr)
		if ix := s.byTrace[tr]; ix != nil {
			runs = append(runs, ix)
			n += ix.n
		} else if slot, ok := s.trace1[tr]; ok {
			runs = append(runs, &index{chunks: [][]uint32{{slot}}, last: []int64{s.recs.at(slot).created}, n: 1})
			n++
		}
	}
	return runs, n
}

// newer orders slots newest first: CreatedAt descending, then ID descending.
func (sl *slab) newer(a, b uint32) bool {
	ra, rb := sl.at(a), sl.at(b)
	if ra.created != rb.created {
		return ra.created > rb.created
	}
	return ra.id > rb.id
}

// page returns the bounds of the page [lo, hi) among total matches.
func page(total, offset, limit int) (lo, hi int) {
	lo = min(offset, total)
	return lo, lo + min(limit, total-lo)
}

// findIDs answers a query whose source is a list of ids.
func (s *Store) findIDs(q *query, offset, limit int) ([]uint32, int) {
	match := q.slots[:0]
	for _, slot := range q.slots {
		r := s.recs.at(slot)
		if r.created >= q.minMs && r.created <= q.maxMs && q.match(r) { // (the state too)
			match = append(match, slot)
		}
	}
	slices.SortFunc(match, func(a, b uint32) int {
		if s.recs.newer(a, b) {
			return -1
		}
		return 1 // ids are unique: never equal
	})
	lo, hi := page(len(match), offset, limit)
	return match[lo:hi], len(match)
}

// ctxEvery is how many index entries a scan visits between checks of its
// context.
const ctxEvery = 1 << 12

// findRuns answers a query whose source is one or more disjoint indexes.
func (s *Store) findRuns(ctx context.Context, q *query, offset, limit int) ([]uint32, int, error) {
	m := merger{sl: &s.recs, cs: make([]cursor, 0, len(q.runs))}
	total := 0
	for _, ix := range q.runs {
		lo, hi := ix.createdBounds(&s.recs, q.minMs, q.maxMs, q.set)
		if hi > lo {
			m.cs = append(m.cs, ix.down(q.set, hi-1, hi-lo))
			total += hi - lo
		}
	}
	if q.trivial() {
		lo, hi := page(total, offset, limit)
		slots := make([]uint32, 0, hi-lo)
		if hi == lo {
			return slots, total, nil
		}
		if len(m.cs) == 1 {
			// Straight to the page: O(log n) whatever the offset.
			c := m.cs[0]
			c = c.ix.down(c.set, c.rank-lo, hi-lo)
			for ok := true; ok; ok = c.next() {
				slots = append(slots, c.slot())
			}
			return slots, total, nil
		}
		m.init()
		for i := 0; i < hi; i++ {
			if i%ctxEvery == ctxEvery-1 {
				if err := ctx.Err(); err != nil {
					return nil, 0, err
				}
			}
			slot, _ := m.pop()
			if i >= lo {
				slots = append(slots, slot)
			}
		}
		return slots, total, nil
	}
	// Residual conditions: count every candidate inside the window.
	m.init()
	slots := make([]uint32, 0, min(limit, 128))
	total = 0
	for i := 0; ; i++ {
		if i%ctxEvery == ctxEvery-1 {
			if err := ctx.Err(); err != nil {
				return nil, 0, err
			}
		}
		slot, ok := m.pop()
		if !ok {
			break
		}
		if !q.match(s.recs.at(slot)) {
			continue
		}
		if total >= offset && total-offset < limit {
			slots = append(slots, slot)
		}
		total++
	}
	return slots, total, nil
}

// merger merges disjoint index runs newest first: a binary heap of cursors
// ordered by their current entry.
type merger struct {
	sl *slab
	cs []cursor
}

func (m *merger) init() {
	for i := len(m.cs)/2 - 1; i >= 0; i-- {
		m.down(i)
	}
}

// pop returns the newest remaining entry and advances past it.
func (m *merger) pop() (uint32, bool) {
	if len(m.cs) == 0 {
		return 0, false
	}
	slot := m.cs[0].slot()
	if !m.cs[0].next() {
		last := len(m.cs) - 1
		m.cs[0] = m.cs[last]
		m.cs = m.cs[:last]
	}
	m.down(0)
	return slot, true
}

func (m *merger) down(i int) {
	for {
		top, l, r := i, 2*i+1, 2*i+2
		if l < len(m.cs) && m.sl.newer(m.cs[l].slot(), m.cs[top].slot()) {
			top = l
		}
		if r < len(m.cs) && m.sl.newer(m.cs[r].slot(), m.cs[top].slot()) {
			top = r
		}
		if top == i {
			return
		}
		m.cs[i], m.cs[top] = m.cs[top], m.cs[i]
		i = top
	}
}
