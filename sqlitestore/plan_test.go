package sqlitestore

import (
	"context"
	"database/sql/driver"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// Matches a full pass over a table, e.g. "SCAN tasks" or
// "SCAN tasks USING COVERING INDEX tasks_created" (the latter visits every
// index entry, so it is as much a full pass as the former).
var (
	scanTasks  = regexp.MustCompile(`\bSCAN tasks\b`)
	scanCounts = regexp.MustCompile(`\bSCAN task_counts\b`)
)

// explain returns the detail lines of EXPLAIN QUERY PLAN for query, run on
// a connection of the read pool.
func explain(t *testing.T, s *Store, query string, args []any) []string {
	t.Helper()
	ctx := context.Background()
	c, err := s.reads.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.reads.release(ctx, c, nil)
	st, err := c.prepare(ctx, "EXPLAIN QUERY PLAN "+query)
	if err != nil {
		t.Fatalf("EXPLAIN QUERY PLAN %s: %v", query, err)
	}
	defer st.Close()
	rows, err := st.QueryContext(ctx, c.bind(args))
	if err != nil {
		t.Fatalf("EXPLAIN QUERY PLAN %s: %v", query, err)
	}
	defer rows.Close()
	var lines []string
	dest := make([]driver.Value, 4)
	for {
		err := rows.Next(dest)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		detail, ok := dest[3].(string)
		if !ok {
			t.Fatalf("EXPLAIN QUERY PLAN detail is a %T", dest[3])
		}
		lines = append(lines, detail)
	}
	return lines
}

// subqueryNumber matches the numbers EXPLAIN QUERY PLAN gives subqueries,
// which differ between a statement and the one embedding it.
var subqueryNumber = regexp.MustCompile(`(SUBQUERY |subquery-)\d+`)

// planLines returns the lines of a plan sorted, without subquery numbers
// and without the SCALAR SUBQUERY lines (a count made of subqueries has
// its own, and the first-page statement embeds the count as one).
func planLines(plan []string) []string {
	var out []string
	for _, l := range plan {
		l = subqueryNumber.ReplaceAllString(l, "${1}N")
		if l == "SCALAR SUBQUERY N" {
			continue
		}
		out = append(out, l)
	}
	slices.Sort(out)
	return out
}

func openInternal(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "tasks.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// statusCases are the status filters TestFindPlans crosses with every
// other filter shape: none, each status alone, each callback status alone,
// and pairs that select one state, one final and one transient.
var statusCases = []struct {
	st taskstore.Status
	cb taskstore.CallbackStatus
}{
	{"", ""},
	{taskstore.StatusPending, ""}, {taskstore.StatusRunning, ""},
	{taskstore.StatusSucceeded, ""}, {taskstore.StatusFailed, ""},
	{"", taskstore.CallbackWaiting}, {"", taskstore.CallbackPending},
	{"", taskstore.CallbackDelivered}, {"", taskstore.CallbackFailed},
	{taskstore.StatusFailed, taskstore.CallbackFailed},
	{taskstore.StatusSucceeded, taskstore.CallbackPending},
	{taskstore.StatusRunning, taskstore.CallbackWaiting},
}

// transientScan matches the walk of a partial index whose entries are
// exactly the tasks in transient states: tasks_lease (unfinished) and
// tasks_outbox (callback pending).
var transientScan = regexp.MustCompile(`^SCAN tasks USING INDEX (tasks_lease|tasks_outbox)\b`)

// TestFindPlans checks, for every combination of the six filter fields the
// handler can send (ids, trace_ids, application_id, user_id, types, created
// window), with one and with two values in each list, and each with every
// case of statusCases, that neither the page query nor the count query
// makes a full pass over the tasks table.
//
// The exceptions: the page of the empty filter (every task, newest first)
// walks tasks_created from the newest end and stops after Offset+Limit
// entries (EXPLAIN QUERY PLAN calls any index walk without a range
// "SCAN … USING INDEX", whether or not LIMIT ends it early); and a status
// filter on transient states read along the status indexes walks
// tasks_lease or tasks_outbox, partial indexes that hold only the tasks in
// those states (unfinished, callback pending), never a finished task in a
// final state. Counts made only of application, user, types and statuses
// read task_counts by its keys, or without a key the one row of
// task_totals.
//
// A status filter with a key has two page routes (see buildFind); both
// are checked, and so are the counter queries that choose between them.
//
// It also checks that the shapes whose driving indexes yield rows in page
// order sort nothing (no temporary B-tree), so that LIMIT stops early: a
// single range, or a merge of ranges (the types of a list, the final
// states of a status filter).
func TestFindPlans(t *testing.T) {
	s := openInternal(t)
	const (
		fIDs = 1 << iota
		fTraces
		fApp
		fUser
		fTypes
		fWindow
	)
	names := []string{"ids", "trace_ids", "app", "user", "types", "window"}
	for mask := 0; mask < 1<<len(names); mask++ {
		for _, n := range []int{1, 2} {
			for _, sc := range statusCases {
				var parts []string
				for i, name := range names {
					if mask&(1<<i) != 0 {
						parts = append(parts, name)
					}
				}
				name := strings.Join(parts, "+")
				if name == "" {
					name = "none"
				}
				if n == 2 {
					name += "/lists-of-2"
				}
				if sc.st != "" || sc.cb != "" {
					name += fmt.Sprintf("/status=%s,callback=%s", sc.st, sc.cb)
				}
				list := func(prefix string) []string {
					if n == 1 {
						return []string{prefix + "1"}
					}
					return []string{prefix + "1", prefix + "2"}
				}
				f := taskstore.Filter{Limit: 12, Offset: 3, Status: sc.st, CallbackStatus: sc.cb}
				if mask&fIDs != 0 {
					f.IDs = list("id")
				}
				if mask&fTraces != 0 {
					f.TraceIDs = list("tr")
				}
				if mask&fApp != 0 {
					f.ApplicationID = "app"
				}
				if mask&fUser != 0 {
					f.UserID = "user"
				}
				if mask&fTypes != 0 {
					f.Types = list("type")
				}
				if mask&fWindow != 0 {
					f.CreatedMin = time.UnixMilli(1_700_000_000_000)
					f.CreatedMax = time.UnixMilli(1_800_000_000_000)
				}
				t.Run(name, func(t *testing.T) {
					checkFindPlans(t, s, f, mask, n)
				})
			}
		}
	}
}

func checkFindPlans(t *testing.T, s *Store, f taskstore.Filter, mask, n int) {
	const fIDs, fTraces, fApp, fUser, fTypes, fWindow = 1, 2, 4, 8, 16, 32
	q, ok := buildFind(f)
	if !ok {
		t.Fatal("buildFind refused a satisfiable filter")
	}
	status := f.Status != "" || f.CallbackStatus != ""
	keyed := mask&(fApp|fUser|fTypes) != 0
	byIDs := mask&(fIDs|fTraces) != 0
	if got, want := q.choice != nil, status && keyed && !byIDs; got != want {
		t.Fatalf("two routes = %v, want %v", got, want)
	}
	type route struct {
		name string
		q    findQuery
		// byState: the page is read along the status indexes.
		byState bool
	}
	routes := []route{{"key", q, status && !keyed && !byIDs}}
	if q.choice != nil {
		routes = append(routes, route{"state", q.choice.alt, true})
		for _, c := range []struct {
			what, sql string
			args      []any
		}{{"stats", q.choice.statsSQL, q.choice.statsArgs}, {"global", q.choice.globalSQL, nil}} {
			plan := explain(t, s, c.sql, c.args)
			t.Logf("%s: %s", c.what, strings.Join(plan, " | "))
			table := map[string]string{"stats": "task_counts", "global": "task_totals"}[c.what]
			if !strings.Contains(strings.Join(plan, "\n"), table) {
				t.Errorf("%s query does not read %s: %q\n%s", c.what, table, plan, c.sql)
			}
			for _, line := range plan {
				if scanTasks.MatchString(line) {
					t.Errorf("%s query scans the tasks table: %q\n%s", c.what, line, c.sql)
				}
				if c.what == "stats" && scanCounts.MatchString(line) {
					t.Errorf("stats query scans task_counts although the filter has a key: %q\n%s", line, c.sql)
				}
			}
		}
	}
	// States whose tasks are listed outside tasks_done (no page order).
	var transient []int
	if status {
		_, lease, outbox := splitStates(filterStates(f.Status, f.CallbackStatus))
		transient = append(lease, outbox...)
	}
	for _, r := range routes {
		page := explain(t, s, r.q.pageSQL, r.q.pageArgs)
		count := explain(t, s, r.q.countSQL, r.q.countArgs)
		t.Logf("%s page:  %s", r.name, strings.Join(page, " | "))
		t.Logf("%s count: %s", r.name, strings.Join(count, " | "))
		if r.q.choice == nil && q.choice == nil {
			// The first-page statement runs the page and the count (as a
			// scalar subquery) with the same plans.
			first := explain(t, s, r.q.firstSQL, r.q.firstArgs)
			if got, want := planLines(first), planLines(append(slices.Clone(page), count...)); !slices.Equal(got, want) {
				t.Errorf("first-page plan %q\nis not the page's and the count's %q", got, want)
			}
		}
		allowed := func(line string) bool {
			if mask == 0 && !status && strings.Contains(line, "INDEX tasks_created") {
				return true
			}
			return r.byState && len(transient) > 0 && transientScan.MatchString(line)
		}
		for _, line := range page {
			if scanTasks.MatchString(line) && !allowed(line) {
				t.Errorf("%s page query scans the tasks table: %q\n%s", r.name, line, r.q.pageSQL)
			}
		}
		if r.byState {
			for _, want := range indexesOf(filterStates(f.Status, f.CallbackStatus)) {
				if !strings.Contains(strings.Join(page, "\n"), want) {
					t.Errorf("%s page does not read %s:\n%s", r.name, want, strings.Join(page, "\n"))
				}
			}
		}
		for _, line := range count {
			if scanTasks.MatchString(line) && !allowed(line) {
				t.Errorf("%s count query scans the tasks table: %q\n%s", r.name, line, r.q.countSQL)
			}
			if scanCounts.MatchString(line) && keyed {
				t.Errorf("%s count query scans task_counts: %q\n%s", r.name, line, r.q.countSQL)
			}
		}
		countersOnly := mask&(fIDs|fTraces|fWindow) == 0
		counters := "task_totals" // one row
		if keyed {
			counters = "task_counts"
		}
		if usesCounters := strings.Contains(r.q.countSQL, counters); usesCounters != countersOnly {
			t.Errorf("%s count reads %s = %v, want %v:\n%s", r.name, counters, usesCounters, countersOnly, r.q.countSQL)
		}
		// Ranges of tasks_done, and merges of them or of the types' ranges
		// of tasks_type, are in page order; tasks_lease and tasks_outbox,
		// the ids and a list of trace ids are not.
		ordered := len(transient) == 0
		if !r.byState {
			ordered = mask&fIDs == 0 && !(mask&fTraces != 0 && n > 1)
		}
		if ordered {
			for _, line := range page {
				if strings.Contains(line, "TEMP B-TREE") {
					t.Errorf("%s page query sorts (%q) although its index is in page order:\n%s", r.name, line, r.q.pageSQL)
				}
			}
		}
	}
}

// indexesOf returns the indexes that list the tasks in the given states.
func indexesOf(states []int) []string {
	done, lease, outbox := splitStates(states)
	var out []string
	if len(done) > 0 {
		out = append(out, "INDEX tasks_done (state=?")
	}
	if len(lease) > 0 {
		out = append(out, "INDEX tasks_lease")
	}
	if len(outbox) > 0 {
		out = append(out, "INDEX tasks_outbox")
	}
	return out
}

// TestOtherPlans checks that the outbox, lease, prune, id lookups, bulk
// finishes and redeliveries run on their indexes: a claim, the abandoned
// tasks and RedeliverFailed on one recorder's range of tasks_outbox,
// tasks_lease and tasks_failed, in the index's order.
func TestOtherPlans(t *testing.T) {
	s := openInternal(t)
	for _, tc := range []struct {
		name, sql, index string
		args             []any
	}{
		{"get", readGetSQL, "tasks_id", []any{"x"}},
		{"claim", claimSelectSQL, "SEARCH tasks USING INDEX tasks_outbox (recorder=? AND next_attempt_ms<?)", []any{"", 1, 10}},
		{"claimUpdate", claimUpdateSQL, "PRIMARY KEY", []any{1, `[1,2]`}},
		{"abandoned", readAbandonedSQL, "SEARCH tasks USING INDEX tasks_lease (recorder=? AND lease_ms<?)", []any{"", 1, 10}},
		{"prune", pruneSQL, "tasks_created", []any{1, 10}},
		{"renew", renewSQL, "tasks_id", []any{1, `["a","b"]`}},
		{"recordDelivered", recordDeliveredSQL, "tasks_id", []any{204, "", 1, "x"}},
		{"recordRetry", recordRetrySQL, "tasks_id", []any{500, "e", 1, "x", 1, 500, "e"}},
		{"sameAttempt", sameAttemptSQL, "tasks_id", []any{"x", 0, 1, 500, "e"}},
		{"recordGiveUp", recordGiveUpSQL, "tasks_id", []any{410, "e", "x"}},
		{"redeliverSelect", redeliverSelectSQL, "tasks_id", []any{`["a","b"]`}},
		{"redeliverUpdate", redeliverUpdateSQL, "tasks_id", []any{1, `["a","b"]`, 1, 1}},
		{"failedSelect", failedSelectSQL, "SEARCH tasks USING INDEX tasks_failed (recorder=? AND finished_ms>?)", []any{"", 1, 10}},
		{"failedUpdate", failedUpdateSQL, "PRIMARY KEY", []any{1, `[1,2]`}},
		{"finishMany", finishManySQL, "tasks_id", []any{1, `[["a","{}",0],["b","{}",1]]`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := explain(t, s, tc.sql, tc.args)
			t.Logf("%s", strings.Join(plan, " | "))
			joined := strings.Join(plan, "\n")
			if !strings.Contains(joined, tc.index) {
				t.Errorf("plan does not use %s:\n%s", tc.index, joined)
			}
			for _, line := range plan {
				if scanTasks.MatchString(line) {
					t.Errorf("scans the tasks table: %q", line)
				}
				if strings.Contains(line, "TEMP B-TREE") {
					t.Errorf("sorts: %q", line)
				}
			}
		})
	}
}
