package sqlitestore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// TestFindRoutesAgree reads every status filter with a key along both of
// its routes (the key's index, the status indexes), whatever Find would
// choose, and checks each against the filter computed in Go.
func TestFindRoutesAgree(t *testing.T) {
	s := openInternal(t)
	ctx := context.Background()
	var all []taskstore.Task
	for i := range 300 {
		all = append(all, v2Task(i))
	}
	if err := s.Import(ctx, all); err != nil {
		t.Fatal(err)
	}
	for i, x := range all {
		all[i], _ = storekit.Normalize(x, time.Now())
	}
	keys := []taskstore.Filter{
		{UserID: "u1"}, {ApplicationID: "app2"}, {Types: []string{"b"}}, {Types: []string{"a", "c"}},
		{ApplicationID: "app1", UserID: "u0"},
		{UserID: "u2", CreatedMin: time.UnixMilli(1_700_000_030_000), CreatedMax: time.UnixMilli(1_700_000_200_000)},
	}
	routes := 0
	for _, k := range keys {
		for _, st := range append([]taskstore.Status{""}, taskstore.Statuses[:]...) {
			for _, cb := range append([]taskstore.CallbackStatus{""}, taskstore.CallbackStatuses[:]...) {
				if st == "" && cb == "" {
					continue
				}
				for _, lim := range []struct{ offset, limit int }{{0, 500}, {2, 3}, {1, 0}} {
					f := k
					f.Status, f.CallbackStatus, f.Offset, f.Limit = st, cb, lim.offset, lim.limit
					q, ok := buildFind(f)
					if !ok {
						if len(filterStates(st, cb)) == 0 {
							continue
						}
						t.Fatalf("buildFind(%+v) refused a satisfiable filter", f)
					}
					if q.choice == nil {
						t.Fatalf("buildFind(%+v): one route", f)
					}
					key := q
					key.choice = nil
					for _, r := range []struct {
						name string
						q    findQuery
					}{{"key", key}, {"state", q.choice.alt}} {
						var (
							page  []taskstore.Task
							total int
						)
						err := s.reads.do(ctx, func(c *readConn) (err error) {
							page, total, err = c.find(ctx, r.q, f.Offset)
							return err
						})
						if err != nil {
							t.Fatal(err)
						}
						checkPage(t, r.name+" route", f, page, total, all)
						routes++
					}
					page, total, err := s.Find(ctx, f)
					if err != nil {
						t.Fatal(err)
					}
					checkPage(t, "Find", f, page, total, all)
				}
			}
		}
	}
	if routes == 0 {
		t.Fatal("no filter was read along both routes")
	}
}

// checkPage compares a page and a total with the filter computed in Go over
// all.
func checkPage(t *testing.T, what string, f taskstore.Filter, page []taskstore.Task, total int, all []taskstore.Task) {
	t.Helper()
	var want []string
	for _, x := range all {
		if matches(x, f) {
			want = append(want, x.ID)
		}
	}
	slices.SortFunc(want, func(a, b string) int { return strings.Compare(b, a) }) // ids grow with creation
	wantTotal := len(want)
	want = want[min(f.Offset, len(want)):]
	want = want[:min(f.Limit, len(want))]
	var got []string
	for _, x := range page {
		got = append(got, x.ID)
	}
	if total != wantTotal || !slices.Equal(got, want) {
		t.Fatalf("%s(%+v) = %d %v, want %d %v", what, f, total, got, wantTotal, want)
	}
}

// TestFindChoosesRoute checks the choice between the routes of a status
// filter with a key: statuses rare among the key's tasks (a few failed
// callbacks in an application holding every task) are read along the
// status indexes, common ones (delivered) along the key's index.
func TestFindChoosesRoute(t *testing.T) {
	s := openInternal(t)
	ctx := context.Background()
	var tasks []taskstore.Task
	for i := range 2000 {
		created := time.UnixMilli(1_700_000_000_000 + int64(i))
		x := taskstore.Task{
			ID: fmt.Sprintf("t%04d", i), Type: "images_generations", Request: []byte(`{}`),
			Response: []byte(`{"success":true}`), ApplicationID: "app", UserID: fmt.Sprintf("u%d", i%10),
			CreatedAt: created, StartedAt: created, FinishedAt: created.Add(time.Second),
			Callback: taskstore.Callback{URL: "https://hooks.example.com/", Attempts: 1, LastStatus: 204,
				DeliveredAt: created.Add(2 * time.Second)},
		}
		if i%200 == 3 { // 10 given up
			x.Callback.DeliveredAt, x.Callback.LastStatus = time.Time{}, 410
		}
		tasks = append(tasks, x)
	}
	if err := s.Import(ctx, tasks); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		f         taskstore.Filter
		total     int
		viaStatus bool
	}{
		{taskstore.Filter{ApplicationID: "app", CallbackStatus: taskstore.CallbackFailed, Limit: 5}, 10, true},
		{taskstore.Filter{UserID: "u3", CallbackStatus: taskstore.CallbackFailed, Limit: 5}, 10, true}, // all of them u3's
		{taskstore.Filter{UserID: "u4", CallbackStatus: taskstore.CallbackDelivered, Limit: 5}, 200, false},
		{taskstore.Filter{ApplicationID: "app", CallbackStatus: taskstore.CallbackDelivered, Limit: 5}, 1990, false},
		{taskstore.Filter{ApplicationID: "app", Status: taskstore.StatusPending, Limit: 5}, 0, false},
	} {
		before := s.reads.stateRoutes.Load()
		page, total, err := s.Find(ctx, tc.f)
		if err != nil || total != tc.total || len(page) != min(5, tc.total) {
			t.Fatalf("Find(%+v) = %d tasks, total %d, %v; want total %d", tc.f, len(page), total, err, tc.total)
		}
		if got := s.reads.stateRoutes.Load() != before; got != tc.viaStatus {
			t.Errorf("Find(%+v) read along the status indexes = %v, want %v", tc.f, got, tc.viaStatus)
		}
	}
}

// TestStateTerm checks, in SQLite, that the condition stateTerm writes for
// the states of every status and callback status filter (and for a list
// no filter makes) holds for exactly those of the values the state column
// takes.
func TestStateTerm(t *testing.T) {
	s := openInternal(t)
	ctx := context.Background()
	lists := [][]int{{0, 24, 33}}
	for _, st := range append([]taskstore.Status{""}, taskstore.Statuses[:]...) {
		for _, cb := range append([]taskstore.CallbackStatus{""}, taskstore.CallbackStatuses[:]...) {
			if states := filterStates(st, cb); len(states) > 0 && (st != "" || cb != "") {
				lists = append(lists, states)
			}
		}
	}
	for _, states := range lists {
		term := stateTerm(states)
		if strings.Count(term, ",") > 1 {
			t.Errorf("stateTerm(%v) = %q: an IN list of more than two values", states, term)
		}
		for _, v := range allStates {
			var got int64
			err := s.reads.do(ctx, func(c *readConn) (err error) {
				got, err = c.queryOne(ctx, `SELECT (`+term+`) FROM (SELECT ? AS state)`, []any{int64(v)})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if want := slices.Contains(states, v); (got == 1) != want {
				t.Errorf("%s with state %d = %d, want %v", term, v, got, want)
			}
		}
	}
}
