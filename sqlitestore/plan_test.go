package sqlitestore

import (
	"context"
	"database/sql/driver"
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

// planLines returns the lines of a plan sorted, without subquery numbers,
// and without the SCALAR SUBQUERY lines when dropScalar is set.
func planLines(plan []string, dropScalar bool) []string {
	var out []string
	for _, l := range plan {
		l = subqueryNumber.ReplaceAllString(l, "${1}N")
		if dropScalar && l == "SCALAR SUBQUERY N" {
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

// TestFindPlans checks, for every combination of the six filter fields the
// handler can send (ids, trace_ids, application_id, user_id, types, created
// window), with one and with two values in each list, that neither the page
// query nor the count query makes a full pass over the tasks table.
//
// The one exception is the page of the empty filter (every task, newest
// first): it walks tasks_created from the newest end and stops after
// Offset+Limit entries. EXPLAIN QUERY PLAN calls any index walk without a
// range "SCAN … USING INDEX", whether or not LIMIT ends it early, so the
// test accepts that line only there; its count reads task_counts.
//
// It also checks that the shapes whose driving index yields rows in page
// order sort nothing (no temporary B-tree), so that LIMIT stops early.
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
			list := func(prefix string) []string {
				if n == 1 {
					return []string{prefix + "1"}
				}
				return []string{prefix + "1", prefix + "2"}
			}
			f := taskstore.Filter{Limit: 12, Offset: 3}
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
				q, ok := buildFind(f)
				if !ok {
					t.Fatal("buildFind refused a satisfiable filter")
				}
				page := explain(t, s, q.pageSQL, q.pageArgs)
				count := explain(t, s, q.countSQL, q.countArgs)
				first := explain(t, s, q.firstSQL, q.firstArgs)
				t.Logf("page:  %s", strings.Join(page, " | "))
				t.Logf("count: %s", strings.Join(count, " | "))
				t.Logf("first: %s", strings.Join(first, " | "))
				// The first-page statement runs the page and the count
				// (as a scalar subquery) with the same plans.
				if got, want := planLines(first, true), planLines(append(slices.Clone(page), count...), false); !slices.Equal(got, want) {
					t.Errorf("first-page plan %q\nis not the page's and the count's %q", got, want)
				}
				for _, line := range page {
					if scanTasks.MatchString(line) && !(mask == 0 && strings.Contains(line, "INDEX tasks_created")) {
						t.Errorf("page query scans the tasks table: %q\n%s", line, q.pageSQL)
					}
				}
				for _, line := range count {
					if scanTasks.MatchString(line) {
						t.Errorf("count query scans the tasks table: %q\n%s", line, q.countSQL)
					}
					if scanCounts.MatchString(line) && mask != 0 {
						t.Errorf("count query scans task_counts: %q\n%s", line, q.countSQL)
					}
				}
				countersOnly := mask&(fIDs|fTraces|fWindow) == 0
				if usesCounters := strings.Contains(q.countSQL, "task_counts"); usesCounters != countersOnly {
					t.Errorf("count reads task_counts = %v, want %v:\n%s", usesCounters, countersOnly, q.countSQL)
				}
				typesMerge := mask&(fIDs|fTraces|fApp|fUser) == 0 && mask&fTypes != 0 && n > 1
				ordered := mask&fIDs == 0 && !(mask&fTraces != 0 && n > 1) && !typesMerge
				if ordered {
					for _, line := range page {
						if strings.Contains(line, "TEMP B-TREE") {
							t.Errorf("page query sorts (%q) although its index is in page order:\n%s", line, q.pageSQL)
						}
					}
				}
			})
		}
	}
}

// TestOtherPlans checks that the outbox, lease, prune and id lookups run on
// their indexes.
func TestOtherPlans(t *testing.T) {
	s := openInternal(t)
	for _, tc := range []struct {
		name, sql, index string
		args             []any
	}{
		{"get", readGetSQL, "tasks_id", []any{"x"}},
		{"claim", claimSelectSQL, "tasks_outbox", []any{1, 10}},
		{"claimUpdate", claimUpdateSQL, "PRIMARY KEY", []any{1, `[1,2]`}},
		{"abandoned", readAbandonedSQL, "tasks_lease", []any{1, 10}},
		{"prune", pruneSQL, "tasks_created", []any{1, 10}},
		{"renew", renewSQL, "tasks_id", []any{1, `["a","b"]`}},
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
			}
		})
	}
}
