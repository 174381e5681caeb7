package sqlitestore

import (
	"context"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// Find returns the page of tasks matching f, newest first, and the total
// number of matches (see taskstore.Store). The count and the page are read
// from one snapshot (one statement for the first page, one read transaction
// for a later one), so they agree with each other.
func (s *Store) Find(ctx context.Context, f taskstore.Filter) ([]taskstore.Task, int, error) {
	const op = "find"
	if err := s.enter(ctx, op); err != nil {
		return nil, 0, err
	}
	defer s.leave()
	if err := f.Validate(); err != nil {
		return nil, 0, err
	}
	q, ok := buildFind(f)
	if !ok {
		return []taskstore.Task{}, 0, nil
	}
	q.pageBytes = f.PageBytes
	var (
		page  []taskstore.Task
		total int
	)
	err := s.reads.do(ctx, func(c *readConn) (err error) {
		page, total, err = c.find(ctx, q, f.Offset)
		return err
	})
	if err != nil {
		return nil, 0, s.translate(op, err)
	}
	return page, total, nil
}

// findQuery is a Find filter as SQL: the page query, the count query, and
// for the first page both in one statement (the count as a column next to
// each row).
type findQuery struct {
	pageSQL, countSQL, firstSQL    string
	pageArgs, countArgs, firstArgs []any
	limit                          int
	pageBytes                      int // Filter.PageBytes
	// choice is set when the page can be read along two routes (a status
	// filter with a user, an application or types): q itself walks the
	// key's index, choice.alt the status indexes. Find picks one from the
	// counters (see readConn.chooseRoute).
	choice *routeChoice
}

// routeChoice holds what Find needs to choose between the routes of a
// filter made of a key (user, application, types) and statuses.
type routeChoice struct {
	alt findQuery
	// statsSQL returns, from task_counts, the key's tasks and the tasks
	// matching the key and the statuses; globalSQL, from task_totals, the
	// tasks in the filter's final and in its transient states, whatever
	// their key.
	statsSQL, globalSQL string
	statsArgs           []any
	// countIsMatch: the filter's total is statsSQL's second column (no
	// window), so no count query runs.
	countIsMatch bool
}

// withFirst sets q.firstSQL and q.firstArgs from the count and page
// queries.
func (q findQuery) withFirst() findQuery {
	q.firstSQL = `SELECT (` + q.countSQL + `) AS n, ` + strings.TrimPrefix(q.pageSQL, `SELECT `)
	q.firstArgs = append(slices.Clip(q.countArgs), q.pageArgs...)
	return q
}

// maxUnion is the most types a types-only filter merges with UNION ALL; a
// longer list is read with IN and sorted.
const maxUnion = 8

const orderDesc = ` ORDER BY created_ms DESC, id DESC`

// buildFind translates f into SQL. ok is false when no task can match (an
// empty window, lists holding only strings no stored task can have, or a
// status and a callback status that exclude each other).
//
// The driving index is chosen here, by the shape of the filter, and forced
// with INDEXED BY, so that plans do not depend on table statistics. In order
// of preference: ids (unique), trace ids (few tasks each), user, application,
// types, and the creation time. Every index but tasks_id ends in
// (created_ms, id), so an equality on its first column yields rows already
// in page order and LIMIT stops early; the creation window becomes a range
// inside it.
//
// The total of a filter made only of application, user and types is the sum
// of the counters in task_counts (kept by triggers), O(number of (application,
// user, type) triples matched) instead of a pass over every matching task;
// with none of them (the empty filter) it is the one row of task_totals.
// Other totals are a COUNT(*) over the driving index's range.
//
// A status or callback status filter is one set of values of the state
// column (state.go). With ids or trace ids it is checked on their rows.
// Alone (or with only the window) it drives the page through the status
// indexes (stateRoute). With a key (user, application, types) there are two
// routes: the key's index, checking each task's state, which is cheap when
// the statuses are common among the key's tasks; or the status indexes,
// checking each task's key, which is cheap when they are rare overall. Find
// chooses between them from the counters (readConn.findChoosing). Totals
// without ids, trace ids or window are sums of the per-state counters.
func buildFind(f taskstore.Filter) (q findQuery, ok bool) {
	minMs, maxMs, empty := storekit.CreatedRange(f)
	if empty {
		return q, false
	}
	ids, okIDs := validList(f.IDs)
	traces, okTraces := validList(f.TraceIDs)
	types, okTypes := validList(f.Types)
	if !okIDs || !okTraces || !okTypes ||
		!utf8.ValidString(f.ApplicationID) || !utf8.ValidString(f.UserID) {
		return q, false
	}
	fs := findShape{
		f: f, ids: ids, traces: traces, types: dedupe(types),
		window: !f.CreatedMin.IsZero() || !f.CreatedMax.IsZero(), minMs: minMs, maxMs: maxMs,
	}
	if f.Status != "" || f.CallbackStatus != "" {
		fs.states = filterStates(f.Status, f.CallbackStatus)
		if len(fs.states) == 0 {
			return q, false
		}
	}
	keyed := f.UserID != "" || f.ApplicationID != "" || len(fs.types) > 0
	switch {
	case fs.states == nil || len(ids) > 0 || len(fs.traces) > 0:
		return fs.keyRoute(), true
	case !keyed:
		return fs.stateRoute(), true
	}
	q = fs.keyRoute()
	c := &routeChoice{alt: fs.stateRoute(), countIsMatch: !fs.window}
	var cw where
	fs.keyTerms(&cw, "type")
	c.statsSQL = `SELECT COALESCE(SUM(n), 0), COALESCE(SUM(` + counterSum(fs.states) + `), 0) FROM task_counts` + cw.sql()
	c.statsArgs = cw.args
	done, lease, outbox := splitStates(fs.states)
	c.globalSQL = `SELECT ` + sumOrZero(done) + `, ` + sumOrZero(append(lease, outbox...)) + ` FROM task_totals`
	q.choice = c
	return q, true
}

// sumOrZero is the SQL sum of the counters of states, 0 for none.
func sumOrZero(states []int) string {
	if len(states) == 0 {
		return "0"
	}
	return counterSum(states)
}

// findShape is a validated filter: its lists cleaned of strings no task
// can have, types deduplicated, the window in milliseconds, and the states
// of its status filters (nil when it has none).
type findShape struct {
	f                  taskstore.Filter
	ids, traces, types []string
	window             bool
	minMs, maxMs       int64
	states             []int
}

// traceDriven reports whether the trace ids drive the page: tasks_trace is
// partial, it holds only tasks with a trace id, so a list asking for the
// empty trace id cannot use it.
func (fs *findShape) traceDriven() bool {
	return len(fs.traces) > 0 && !slices.Contains(fs.traces, "")
}

// keyTerms adds the application and user equalities and the types list
// (naming the column typeCol) to w.
func (fs *findShape) keyTerms(w *where, typeCol string) {
	if fs.f.ApplicationID != "" {
		w.eq("application_id", fs.f.ApplicationID)
	}
	if fs.f.UserID != "" {
		w.eq("user_id", fs.f.UserID)
	}
	w.list(typeCol, fs.types)
}

// counterCount is the total from the counters: the tasks of the matching
// (application, user, type) rows of task_counts, or of their matching
// states; without a key, the one row of task_totals.
func (fs *findShape) counterCount() (string, []any) {
	sum := "n"
	if fs.states != nil {
		sum = counterSum(fs.states)
	}
	var c where
	fs.keyTerms(&c, "type")
	if len(c.terms) == 0 {
		return `SELECT ` + sum + ` FROM task_totals`, nil
	}
	return `SELECT COALESCE(SUM(` + sum + `), 0) FROM task_counts` + c.sql(), c.args
}

// keyRoute is the filter read along its ids, trace ids, user, application,
// types or creation time, with the statuses (if any) checked on each row.
func (fs *findShape) keyRoute() (q findQuery) {
	f := fs.f
	var driver string
	switch {
	case len(fs.ids) > 0:
		driver = "tasks_id"
	case fs.traceDriven():
		driver = "tasks_trace"
	case f.UserID != "":
		driver = "tasks_user"
	case f.ApplicationID != "":
		driver = "tasks_app"
	case len(fs.types) > 0:
		driver = "tasks_type"
	default:
		driver = "tasks_created"
	}

	var w where
	w.list("id", fs.ids)
	w.list("trace_id", fs.traces)
	if driver == "tasks_trace" {
		w.term("trace_id <> ''") // the partial index's condition, verbatim
	}
	if f.ApplicationID != "" {
		w.eq("application_id", f.ApplicationID)
	}
	if f.UserID != "" {
		w.eq("user_id", f.UserID)
	}
	if fs.window {
		w.term("created_ms BETWEEN ? AND ?", fs.minMs, fs.maxMs)
	}
	if fs.states != nil {
		w.term(stateTerm(fs.states))
	}

	// Count.
	if len(fs.ids) == 0 && len(fs.traces) == 0 && !fs.window {
		q.countSQL, q.countArgs = fs.counterCount()
	} else {
		c := w.clone()
		c.list("type", fs.types)
		q.countSQL = `SELECT count(*) FROM tasks INDEXED BY ` + driver + c.sql()
		q.countArgs = c.args
	}

	// Page.
	q.limit = f.Limit
	if driver == "tasks_type" && len(fs.types) > 1 && len(fs.types) <= maxUnion {
		// IN over several types would read every match and sort them.
		// Instead the types' ranges of tasks_type, each in page order,
		// are merged (index only, unless statuses are checked), and only
		// the page's rows are read from the table.
		legs := make([]leg, len(fs.types))
		for i, typ := range fs.types {
			m := w.clone()
			m.eq("type", typ)
			legs[i] = leg{index: "tasks_type", where: m}
		}
		return fs.merge(q, legs)
	}
	w.list("type", fs.types)
	q.pageSQL = `SELECT ` + packedColumn + ` FROM tasks INDEXED BY ` + driver + w.sql() + orderDesc + ` LIMIT ? OFFSET ?`
	q.pageArgs = append(w.args, int64(f.Limit), int64(f.Offset))
	return q.withFirst()
}

// leg is one index range of a merged page: the tasks of one index matching
// where.
type leg struct {
	index string
	where where
}

// merge sets q's page to the legs' tasks merged newest first: SQLite
// merges the legs (MERGE (UNION ALL)), each read in page order from its
// index (a leg on an index not in page order, tasks_lease or tasks_outbox,
// is sorted), so the merge stops after Offset+Limit index entries, and
// only the page's rows are then read whole, by rowid, in the order the
// merge gave (which the outer ORDER BY keeps without sorting again).
func (fs *findShape) merge(q findQuery, legs []leg) findQuery {
	var b strings.Builder
	b.WriteString(`SELECT ` + packedColumn + ` FROM (SELECT rid AS r, created_ms AS c, id AS i FROM (`)
	for i, l := range legs {
		if i > 0 {
			b.WriteString(` UNION ALL `)
		}
		b.WriteString(`SELECT rid, created_ms, id FROM tasks INDEXED BY ` + l.index + l.where.sql())
		q.pageArgs = append(q.pageArgs, l.where.args...)
	}
	b.WriteString(orderDesc + ` LIMIT ? OFFSET ?)) CROSS JOIN tasks ON tasks.rid = r ORDER BY c DESC, i DESC`)
	q.pageSQL = b.String()
	q.pageArgs = append(q.pageArgs, int64(fs.f.Limit), int64(fs.f.Offset))
	return q.withFirst()
}

// stateRoute is a status filter (with no ids or trace ids) read along the
// status indexes: each final state's range of tasks_done, in page order,
// and the unfinished and callback-pending tasks from tasks_lease and
// tasks_outbox, whose entries are exactly the tasks in those transient
// states. The application, user, types and window are checked on each row
// (the window on tasks_done's index).
func (fs *findShape) stateRoute() (q findQuery) {
	var common where
	fs.keyTerms(&common, "type")
	if fs.window {
		common.term("created_ms BETWEEN ? AND ?", fs.minMs, fs.maxMs)
	}
	done, lease, outbox := splitStates(fs.states)
	var legs []leg
	for _, st := range done {
		var w where
		w.term(doneStates) // the partial index's condition, verbatim
		w.term(stateTerm([]int{st}))
		w.add(common)
		legs = append(legs, leg{index: "tasks_done", where: w})
	}
	if len(lease) > 0 {
		var w where
		w.term(unfinishedCond)
		w.term(stateTerm(lease))
		w.add(common)
		legs = append(legs, leg{index: "tasks_lease", where: w})
	}
	if len(outbox) > 0 {
		var w where
		w.term(pending)
		w.term(stateTerm(outbox))
		w.add(common)
		legs = append(legs, leg{index: "tasks_outbox", where: w})
	}

	// Count.
	if !fs.window {
		q.countSQL, q.countArgs = fs.counterCount()
	} else {
		parts := make([]string, len(legs))
		for i, l := range legs {
			parts[i] = `(SELECT count(*) FROM tasks INDEXED BY ` + l.index + l.where.sql() + `)`
			q.countArgs = append(q.countArgs, l.where.args...)
		}
		q.countSQL = `SELECT ` + strings.Join(parts, ` + `)
	}

	// Page.
	q.limit = fs.f.Limit
	if len(legs) == 1 && legs[0].index == "tasks_done" {
		w := legs[0].where
		q.pageSQL = `SELECT ` + packedColumn + ` FROM tasks INDEXED BY tasks_done` + w.sql() + orderDesc + ` LIMIT ? OFFSET ?`
		q.pageArgs = append(slices.Clone(w.args), int64(fs.f.Limit), int64(fs.f.Offset))
		return q.withFirst()
	}
	return fs.merge(q, legs)
}

// satAdd is a+b for non-negative a and b, saturating instead of
// overflowing.
func satAdd(a, b int) int {
	if a > math.MaxInt-b {
		return math.MaxInt
	}
	return a + b
}

// where collects ANDed terms and their arguments.
type where struct {
	terms []string
	args  []any
}

func (w *where) term(t string, args ...any) {
	w.terms = append(w.terms, t)
	w.args = append(w.args, args...)
}

func (w *where) eq(col string, v any) { w.term(col+" = ?", v) }

// list adds "col is one of vs": an equality for one value, else a json_each
// list, which keeps the statement text (and so the prepared statement) the
// same whatever the length, and never runs into SQLite's limit on the number
// of parameters.
func (w *where) list(col string, vs []string) {
	switch len(vs) {
	case 0:
	case 1:
		w.eq(col, vs[0])
	default:
		w.term(col+" IN (SELECT value FROM json_each(?))", jsonList(vs))
	}
}

// add appends o's terms and arguments to w.
func (w *where) add(o where) {
	w.terms = append(w.terms, o.terms...)
	w.args = append(w.args, o.args...)
}

func (w *where) clone() where {
	return where{terms: slices.Clone(w.terms), args: slices.Clone(w.args)}
}

func (w *where) sql() string {
	if len(w.terms) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(w.terms, " AND ")
}

// validList drops the strings that are not valid UTF-8: no stored task has
// one (storekit.Normalize). ok is false when the list was non-empty and
// nothing is left, so that nothing can match.
func validList(vs []string) (out []string, ok bool) {
	for i, v := range vs {
		if !utf8.ValidString(v) {
			out = slices.Clone(vs[:i])
			for _, v := range vs[i+1:] {
				if utf8.ValidString(v) {
					out = append(out, v)
				}
			}
			return out, len(out) > 0
		}
	}
	return vs, true
}

func dedupe(vs []string) []string {
	if len(vs) < 2 {
		return vs
	}
	out := slices.Clone(vs)
	slices.Sort(out)
	return slices.Compact(out)
}
