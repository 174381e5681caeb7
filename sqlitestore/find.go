package sqlitestore

import (
	"context"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/tasksapi/tasks/taskstore"
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
// empty window, or lists holding only strings no stored task can have).
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
// user, type) triples matched) instead of a pass over every matching task.
// Other totals are a COUNT(*) over the driving index's range.
func buildFind(f taskstore.Filter) (q findQuery, ok bool) {
	minMs, maxMs, empty := f.CreatedRange()
	if empty {
		return q, false
	}
	window := !f.CreatedMin.IsZero() || !f.CreatedMax.IsZero()
	ids, okIDs := validList(f.IDs)
	traces, okTraces := validList(f.TraceIDs)
	types, okTypes := validList(f.Types)
	if !okIDs || !okTraces || !okTypes ||
		!utf8.ValidString(f.ApplicationID) || !utf8.ValidString(f.UserID) {
		return q, false
	}
	types = dedupe(types)

	var driver string
	switch {
	case len(ids) > 0:
		driver = "tasks_id"
	case len(traces) > 0 && !slices.Contains(traces, ""):
		// tasks_trace is partial (trace_id <> ''): it holds only tasks
		// with a trace id, so a list asking for "" cannot use it.
		driver = "tasks_trace"
	case f.UserID != "":
		driver = "tasks_user"
	case f.ApplicationID != "":
		driver = "tasks_app"
	case len(types) > 0:
		driver = "tasks_type"
	default:
		driver = "tasks_created"
	}

	var w where
	w.list("id", ids)
	w.list("trace_id", traces)
	if driver == "tasks_trace" {
		w.term("trace_id <> ''") // the partial index's condition, verbatim
	}
	if f.ApplicationID != "" {
		w.eq("application_id", f.ApplicationID)
	}
	if f.UserID != "" {
		w.eq("user_id", f.UserID)
	}
	if window {
		w.term("created_ms BETWEEN ? AND ?", minMs, maxMs)
	}

	// Count.
	if len(ids) == 0 && len(traces) == 0 && !window {
		var c where
		if f.ApplicationID != "" {
			c.eq("application_id", f.ApplicationID)
		}
		if f.UserID != "" {
			c.eq("user_id", f.UserID)
		}
		c.list("type", types)
		q.countSQL = `SELECT COALESCE(SUM(n), 0) FROM task_counts` + c.sql()
		q.countArgs = c.args
	} else {
		c := w.clone()
		c.list("type", types)
		q.countSQL = `SELECT count(*) FROM tasks INDEXED BY ` + driver + c.sql()
		q.countArgs = c.args
	}

	// Page.
	q.limit = f.Limit
	if driver == "tasks_type" && len(types) > 1 && len(types) <= maxUnion {
		// IN over several types would read every match and sort them.
		// Instead each type's newest Offset+Limit tasks come out of
		// tasks_type in order (index only), are merged, and only the
		// page's rows are read from the table.
		var b strings.Builder
		b.WriteString(`SELECT ` + packedColumn + ` FROM tasks NOT INDEXED WHERE rid IN (SELECT rid FROM (`)
		for i, typ := range types {
			if i > 0 {
				b.WriteString(` UNION ALL `)
			}
			m := w.clone()
			m.eq("type", typ)
			b.WriteString(`SELECT * FROM (SELECT rid, created_ms, id FROM tasks INDEXED BY tasks_type`)
			b.WriteString(m.sql() + orderDesc + ` LIMIT ?)`)
			q.pageArgs = append(q.pageArgs, m.args...)
			q.pageArgs = append(q.pageArgs, int64(satAdd(f.Offset, f.Limit)))
		}
		b.WriteString(`)` + orderDesc + ` LIMIT ? OFFSET ?)` + orderDesc)
		q.pageSQL = b.String()
		q.pageArgs = append(q.pageArgs, int64(f.Limit), int64(f.Offset))
		return q.withFirst(), true
	}
	w.list("type", types)
	q.pageSQL = `SELECT ` + packedColumn + ` FROM tasks INDEXED BY ` + driver + w.sql() + orderDesc + ` LIMIT ? OFFSET ?`
	q.pageArgs = append(w.args, int64(f.Limit), int64(f.Offset))
	return q.withFirst(), true
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
// one (taskstore.Normalize). ok is false when the list was non-empty and
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
