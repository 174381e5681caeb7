package pgstore

import (
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// findQuery is the SQL of one Find call.
type findQuery struct {
	// count answers the total alone; its arguments are args.
	count string
	// page answers the page with the total in every row (column total);
	// its arguments are args, then limit and offset.
	page string
	args []any
	// fromCounts is true when the total is summed from the counters
	// (task_counts, task_status_counts or task_totals).
	fromCounts bool
	// planEachTime is true when the statements must be planned for their
	// values rather than run from a cached, generic plan: a window's
	// selectivity ranges from one row to the whole table, so no single
	// plan suits every window.
	planEachTime bool
}

// countArgs are the arguments of the count statement.
func (q findQuery) countArgs() []any { return q.withMode(q.args) }

// pageArgs are the arguments of the page statement.
func (q findQuery) pageArgs(f taskstore.Filter) []any {
	return q.withMode(append(slices.Clip(q.args), f.Limit, f.Offset))
}

// withMode prefixes args with pgx's execution mode when the statement must
// be planned for its values: QueryExecModeExec runs it as an unnamed
// statement, which PostgreSQL always plans with the actual parameters.
func (q findQuery) withMode(args []any) []any {
	if !q.planEachTime {
		return args
	}
	return append([]any{pgx.QueryExecModeExec}, args...)
}

// buildFind returns the statements for f. ok is false when nothing can
// match (an empty window, or lists holding only values no stored task can
// have), so that no statement is needed.
//
// Each list with one value becomes "col = $n" rather than "col = ANY($n)",
// which gives the planner a better estimate for cached (generic) plans.
func buildFind(f taskstore.Filter) (q findQuery, ok bool) {
	minMs, maxMs, empty := storekit.CreatedRange(f)
	if empty {
		return q, false
	}
	var where []string
	arg := func(v any) string {
		q.args = append(q.args, v)
		return "$" + strconv.Itoa(len(q.args))
	}
	in := func(col string, vs []string) bool {
		vs = storableOnly(vs)
		switch len(vs) {
		case 0:
			return false
		case 1:
			where = append(where, col+" = "+arg(vs[0]))
		default:
			where = append(where, col+" = ANY("+arg(vs)+")")
		}
		return true
	}
	eq := func(col, v string) bool {
		if !storable(v) {
			return false
		}
		where = append(where, col+" = "+arg(v))
		return true
	}
	if len(f.IDs) > 0 && !in("id", f.IDs) {
		return q, false
	}
	if len(f.TraceIDs) > 0 {
		if !in("trace_id", f.TraceIDs) {
			return q, false
		}
		// Lets the planner use the partial index on non-empty trace ids
		// even in a generic plan, where it cannot see the values.
		if !slices.Contains(f.TraceIDs, "") {
			where = append(where, "trace_id <> ''")
		}
	}
	// The counters answer a filter of application, user, types and
	// statuses only.
	q.fromCounts = len(f.IDs) == 0 && len(f.TraceIDs) == 0 && f.CreatedMin.IsZero() && f.CreatedMax.IsZero()
	if f.ApplicationID != "" {
		if !eq("application_id", f.ApplicationID) {
			return q, false
		}
	}
	if f.UserID != "" {
		if !eq("user_id", f.UserID) {
			return q, false
		}
	}
	if len(f.Types) > 0 && !in("type", f.Types) {
		return q, false
	}
	if !possible(f.Status, f.CallbackStatus) {
		return q, false
	}
	// The counters are keyed by what where holds so far (application,
	// user, type) and, in task_status_counts and task_totals, by the two
	// statuses; task_totals' rows with both statuses '*' count every task.
	// The status conditions are literals, never parameters, so that a
	// cached generic plan can still prove that a partial index's predicate
	// holds.
	keyed := len(where) > 0
	countWhere := slices.Clone(where)
	counters := "task_counts"
	switch {
	case f.Status != "" || f.CallbackStatus != "":
		counters = "task_status_counts"
		if f.Status != "" {
			countWhere = append(countWhere, "status = '"+string(f.Status)+"'")
		}
		if f.CallbackStatus != "" {
			countWhere = append(countWhere, "callback_status = '"+string(f.CallbackStatus)+"'")
		}
	case !keyed:
		countWhere = append(countWhere, "status = '*' AND callback_status = '*'")
	}
	if !keyed {
		counters = "task_totals"
	}
	if f.Status != "" {
		where = append(where, statusCond[f.Status])
	}
	if f.CallbackStatus != "" {
		where = append(where, callbackCond[f.CallbackStatus])
	}
	if !f.CreatedMin.IsZero() {
		where = append(where, "created_ms >= "+arg(minMs))
		q.planEachTime = true
	}
	if !f.CreatedMax.IsZero() {
		where = append(where, "created_ms <= "+arg(maxMs))
		q.planEachTime = true
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	if q.fromCounts {
		// Without ids, trace ids or a window, countWhere names only
		// columns the counters have.
		q.count = "SELECT coalesce(sum(n), 0)::bigint FROM " + counters + " WHERE " + strings.Join(countWhere, " AND ")
	} else {
		q.count = "SELECT count(*) FROM tasks" + cond
	}
	n := len(q.args)
	q.page = "SELECT (" + q.count + ") AS total, " + taskColumns + " FROM tasks" + cond +
		" ORDER BY created_ms DESC, id DESC LIMIT $" + strconv.Itoa(n+1) + " OFFSET $" + strconv.Itoa(n+2)
	return q, true
}

// statusCond is the condition on a tasks row for each task status, and
// callbackCond for each callback status (taskstore.Task.Status and
// CallbackStatus read from the columns). The partial indexes tasks_failed,
// tasks_callback_failed and tasks_unfinished have these conditions (or a
// part of them) as predicates, so the planner can use them for these
// filters.
var (
	statusCond = map[taskstore.Status]string{
		taskstore.StatusPending:   "finished_ms = 0 AND started_ms = 0",
		taskstore.StatusRunning:   "finished_ms = 0 AND started_ms <> 0",
		taskstore.StatusSucceeded: "finished_ms <> 0 AND success",
		taskstore.StatusFailed:    "finished_ms <> 0 AND NOT success",
	}
	callbackCond = map[taskstore.CallbackStatus]string{
		taskstore.CallbackWaiting:   "callback_url <> '' AND finished_ms = 0",
		taskstore.CallbackPending:   "callback_url <> '' AND finished_ms <> 0 AND delivered_ms = 0 AND next_attempt_ms <> 0",
		taskstore.CallbackDelivered: "callback_url <> '' AND finished_ms <> 0 AND delivered_ms <> 0",
		taskstore.CallbackFailed:    "callback_url <> '' AND finished_ms <> 0 AND delivered_ms = 0 AND next_attempt_ms = 0",
	}
)

// possible reports whether a task can have both statuses (empty means
// any): the callback of an unfinished task is waiting, and only its.
func possible(st taskstore.Status, cb taskstore.CallbackStatus) bool {
	if st == "" || cb == "" {
		return true
	}
	unfinished := st == taskstore.StatusPending || st == taskstore.StatusRunning
	return unfinished == (cb == taskstore.CallbackWaiting)
}
