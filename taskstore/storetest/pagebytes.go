package storetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// testPageBytes: Filter.PageBytes ends a page once the tasks on it weigh
// that many bytes (request and response), after at least one task, without
// changing the total; along every route a store has (first page or not, a
// key, a status).
func testPageBytes(t *testing.T, s taskstore.Store) {
	var all []taskstore.Task
	weight := map[string]int{}
	for i := range 40 {
		x := task(fmt.Sprintf("w-%02d", i), i%13)
		x.UserID = []string{"u1", "u2"}[i%2]
		x.Request = json.RawMessage(`{"p":"` + strings.Repeat("r", i*37%200) + `"}`)
		mustCreate(t, s, x)
		if i%3 != 0 {
			resp := json.RawMessage(`{"success":true,"d":"` + strings.Repeat("s", i*53%300) + `"}`)
			must(t, s.Finish(ctx, x.ID, resp, base))
			x.Response, x.FinishedAt = resp, base
		}
		all = append(all, x)
		weight[x.ID] = storekit.Weight(x)
	}
	_, _, err := s.Find(ctx, taskstore.Filter{Limit: 1, PageBytes: -1})
	wantErr(t, "Find with a negative PageBytes", err, taskstore.ErrInvalid)

	for _, f := range []taskstore.Filter{
		{Limit: 30},
		{Limit: 100, Offset: 5},
		{UserID: "u2", Limit: 15},
		{UserID: "u1", Limit: 15, Offset: 3},
		{Status: taskstore.StatusSucceeded, Limit: 20},
		{Status: taskstore.StatusPending, UserID: "u1", Limit: 20, Offset: 1},
		{IDs: []string{"w-03", "w-17", "w-29", "w-30"}, Limit: 4},
	} {
		full, total := expect(all, f)
		for _, pb := range []int{1, 100, 250, 600, 2000, 1 << 30} {
			f.PageBytes = pb
			got, gotTotal := find(t, s, f)
			var want []string
			w := 0
			for _, id := range full {
				if w >= pb {
					break
				}
				want = append(want, id)
				w += weight[id]
			}
			if gotTotal != total || !slices.Equal(got, want) {
				t.Fatalf("Find(%+v)\n got %d %v\nwant %d %v", f, gotTotal, got, total, want)
			}
		}
	}
}
