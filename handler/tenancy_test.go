package handler_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/handler"
	"github.com/tasksapi/tasks/taskstore"
)

// TestTenancy: two tenants' random tasks in one store. Through every action
// and every combination of batch filters (asking for the other tenant's
// application, user, ids and trace ids too), a tenant never sees, counts or
// deletes the other's tasks; the operator sees all. Expected answers come
// from the test's own model, byte for byte.
func TestTenancy(t *testing.T) {
	eachBackend(t, testTenancy)
}

type owner struct{ app, user string }

var (
	ownerA     = owner{"app-A", "user-A"}
	ownerB     = owner{"app-B", "user-B"}
	tenancyPrs = []struct {
		name, token string
		p           taskstore.Principal
	}{
		{"TenantA", "tok-A", taskstore.Principal{ApplicationID: ownerA.app, UserID: ownerA.user, CredentialID: "cred-A"}},
		{"TenantB", "tok-B", taskstore.Principal{ApplicationID: ownerB.app, UserID: ownerB.user}},
		{"AppA", "tok-appA", taskstore.Principal{ApplicationID: ownerA.app}},
		{"Operator", "tok-op", taskstore.Principal{}},
	}
	tenancyTypes  = []string{"images_generations", "images_edits", "flux_generations"}
	tenancyTraces = []string{"trace-0", "trace-1", "trace-2", "trace-3", "trace-4", "trace-5"}
	tenancyBase   = time.Date(2025, 11, 14, 17, 0, 0, 0, time.UTC)
)

func randomTasks(rng *rand.Rand, n int) []taskstore.Task {
	owners := []owner{ownerA, ownerA, ownerA, ownerB, ownerB, ownerB,
		{ownerA.app, ownerB.user}, {ownerB.app, ownerA.user}, {}, {ownerA.app, ""}}
	tasks := make([]taskstore.Task, n)
	for i := range tasks {
		o := owners[rng.IntN(len(owners))]
		created := tenancyBase.Add(time.Duration(rng.IntN(3000)) * time.Millisecond) // ties happen
		task := taskstore.Task{
			ID:            fmt.Sprintf("%08x-%04d", rng.Uint32(), i),
			Type:          tenancyTypes[rng.IntN(len(tenancyTypes))],
			Request:       json.RawMessage(fmt.Sprintf(`{"prompt":"task %d","n":1}`, i)),
			CreatedAt:     created,
			ApplicationID: o.app,
			UserID:        o.user,
		}
		if rng.IntN(5) > 0 {
			task.TraceID = tenancyTraces[rng.IntN(len(tenancyTraces))]
		}
		if rng.IntN(3) > 0 {
			task.StartedAt = created.Add(time.Millisecond)
		}
		if rng.IntN(2) == 0 {
			task.FinishedAt = created.Add(time.Duration(rng.IntN(60000)) * time.Millisecond)
			task.Response = json.RawMessage(fmt.Sprintf(`{"success":%v,"task_id":%q}`, rng.IntN(3) > 0, task.ID))
		}
		if rng.IntN(3) > 0 {
			task.Callback.URL = "https://hooks.example.com/" + task.ID
			if task.Finished() {
				switch rng.IntN(3) {
				case 0:
					task.Callback.NextAttemptAt = task.FinishedAt
				case 1:
					task.Callback.Attempts, task.Callback.LastStatus, task.Callback.DeliveredAt = 1, 200, task.FinishedAt.Add(time.Second)
				default:
					task.Callback.Attempts, task.Callback.LastStatus = 1, 410
				}
			}
		}
		tasks[i] = task
	}
	return tasks
}

// batchQuery is a retrieve_batch request and its meaning in the model.
type batchQuery struct {
	body   string
	ids    []string
	traces []string
	app    string
	user   string
	typ    string
	minMs  int64 // -1: none
	maxMs  int64
	status taskstore.Status
	cb     taskstore.CallbackStatus
	offset int
	limit  int
}

func (q batchQuery) match(t taskstore.Task) bool {
	ms := t.CreatedAt.UnixMilli()
	return (q.ids == nil || slices.Contains(q.ids, t.ID)) &&
		(q.traces == nil || slices.Contains(q.traces, t.TraceID)) &&
		(q.app == "" || q.app == t.ApplicationID) &&
		(q.user == "" || q.user == t.UserID) &&
		(q.typ == "" || q.typ == t.Type) &&
		(q.minMs < 0 || ms >= q.minMs) &&
		(q.maxMs < 0 || ms <= q.maxMs) &&
		(q.status == "" || q.status == t.Status()) &&
		(q.cb == "" || q.cb == t.CallbackStatus())
}

func ids(tasks []taskstore.Task) []string {
	out := make([]string, len(tasks))
	for i, t := range tasks {
		out[i] = t.ID
	}
	return out
}

// randomQuery builds a retrieve_batch request using the filters whose bits
// are set in mask.
func randomQuery(rng *rand.Rand, mask int, tasks []taskstore.Task) batchQuery {
	q := batchQuery{minMs: -1, maxMs: -1, limit: 12} // the contract's default, not handler.DefaultLimit
	var fields []string
	quoteAll := func(list []string) string {
		b, _ := json.Marshal(list)
		return string(b)
	}
	if mask&1 != 0 {
		for range 1 + rng.IntN(6) {
			q.ids = append(q.ids, tasks[rng.IntN(len(tasks))].ID)
		}
		q.ids = append(q.ids, "missing-id")
		fields = append(fields, `"ids":`+quoteAll(q.ids))
	}
	if mask&2 != 0 {
		for range 1 + rng.IntN(3) {
			q.traces = append(q.traces, tenancyTraces[rng.IntN(len(tenancyTraces))])
		}
		fields = append(fields, `"trace_ids":`+quoteAll(q.traces))
	}
	if mask&4 != 0 {
		q.app = []string{ownerA.app, ownerB.app, "app-X"}[rng.IntN(3)]
		fields = append(fields, fmt.Sprintf(`"application_id":%q`, q.app))
	}
	if mask&8 != 0 {
		q.user = []string{ownerA.user, ownerB.user, "user-X"}[rng.IntN(3)]
		fields = append(fields, fmt.Sprintf(`"user_id":%q`, q.user))
	}
	if mask&16 != 0 {
		q.typ = slices.Concat(tenancyTypes, []string{"other"})[rng.IntN(len(tenancyTypes)+1)]
		fields = append(fields, fmt.Sprintf(`"type":%q`, q.typ))
	}
	seconds := func(ms int64) string { // exact decimal seconds, sometimes integral
		if ms%1000 == 0 {
			return fmt.Sprint(ms / 1000)
		}
		return fmt.Sprintf("%d.%03d", ms/1000, ms%1000)
	}
	if mask&32 != 0 {
		q.minMs = tenancyBase.UnixMilli() + int64(rng.IntN(3000))
		if rng.IntN(4) == 0 {
			q.minMs -= q.minMs % 1000
		}
		fields = append(fields, `"created_at_min":`+seconds(q.minMs))
	}
	if mask&64 != 0 {
		q.maxMs = tenancyBase.UnixMilli() + int64(rng.IntN(3000))
		fields = append(fields, `"created_at_max":`+seconds(q.maxMs))
	}
	if rng.IntN(3) == 0 {
		q.status = taskstore.Statuses[rng.IntN(len(taskstore.Statuses))]
		fields = append(fields, fmt.Sprintf(`"status":%q`, q.status))
	}
	if rng.IntN(3) == 0 {
		q.cb = taskstore.CallbackStatuses[rng.IntN(len(taskstore.CallbackStatuses))]
		fields = append(fields, fmt.Sprintf(`"callback_status":%q`, q.cb))
	}
	if mask&128 != 0 {
		q.offset, q.limit = rng.IntN(40), 1+rng.IntN(handler.MaxLimit)
		fields = append(fields, fmt.Sprintf(`"offset":%d,"limit":%d`, q.offset, q.limit))
	}
	rng.Shuffle(len(fields), func(i, j int) { fields[i], fields[j] = fields[j], fields[i] })
	q.body = `{"action":"retrieve_batch"` + strings.Join(append([]string{""}, fields...), ",") + `}`
	return q
}

func testTenancy(t *testing.T, open func(testing.TB) taskstore.Store) {
	rng := rand.New(rand.NewPCG(3, 1))
	s := open(t)
	tasks := randomTasks(rng, 200)
	mustCreate(t, s, tasks...)
	toks := map[string]taskstore.Principal{}
	for _, pr := range tenancyPrs {
		toks[pr.token] = pr.p
	}
	auth := handler.Tokens(toks)
	wire := func(ts ...taskstore.Task) string {
		var b []byte
		for i, task := range ts {
			if i > 0 {
				b = append(b, ',')
			}
			b = task.AppendJSON(b)
		}
		return string(b)
	}

	mounts := []struct {
		name  string
		types []string
	}{{"AllTypes", nil}, {"OpenAITypes", tenancyTypes[:2]}}
	for _, m := range mounts {
		h := handler.New(s, auth, handler.WithTypes(m.types...))
		mountSees := func(task taskstore.Task) bool { return m.types == nil || slices.Contains(m.types, task.Type) }
		for _, pr := range tenancyPrs {
			t.Run(m.name+"/"+pr.name, func(t *testing.T) {
				visible := func(task taskstore.Task) bool {
					return mountSees(task) &&
						(pr.p.ApplicationID == "" || pr.p.ApplicationID == task.ApplicationID) &&
						(pr.p.UserID == "" || pr.p.UserID == task.UserID)
				}
				ask := func(body string) string {
					t.Helper()
					rec := serve(h, call{auth: "Bearer " + pr.token, body: body})
					if rec.Code != http.StatusOK {
						t.Fatalf("%s: %d %s", body, rec.Code, rec.Body)
					}
					return rec.Body.String()
				}
				check := func(body, want string) {
					t.Helper()
					if got := ask(body); got != want {
						t.Errorf("%s:\n got %.300s\nwant %.300s", body, got, want)
					}
				}

				nVisible := 0
				for _, task := range tasks {
					want := "{}"
					if visible(task) {
						want = wire(task)
						nVisible++
					}
					check(fmt.Sprintf(`{"id":%q}`, task.ID), want)
					if task.TraceID != "" {
						check(fmt.Sprintf(`{"id":%q,"trace_id":%q}`, task.ID, task.TraceID), want)
					}
					check(fmt.Sprintf(`{"id":%q,"trace_id":"trace-X"}`, task.ID), "{}")
				}
				if pr.p.IsOperator() && m.types == nil && nVisible != len(tasks) {
					t.Errorf("the operator sees %d of %d tasks", nVisible, len(tasks))
				}
				if !pr.p.IsOperator() && nVisible == 0 {
					t.Fatalf("the fixture gives %s nothing to see", pr.name)
				}
				sorted := slices.Clone(tasks)
				slices.SortFunc(sorted, newestFirst)
				for _, trace := range slices.Concat(tenancyTraces, []string{"trace-X"}) {
					want := "{}"
					for _, task := range sorted {
						if task.TraceID == trace && visible(task) {
							want = wire(task)
							break
						}
					}
					check(fmt.Sprintf(`{"action":"retrieve","trace_id":%q}`, trace), want)
				}
				for mask := range 256 {
					for range 2 {
						q := randomQuery(rng, mask, tasks)
						var all []taskstore.Task
						for _, task := range sorted {
							if visible(task) && q.match(task) {
								all = append(all, task)
							}
						}
						page := all[min(q.offset, len(all)):min(q.offset+q.limit, len(all))]
						check(q.body, fmt.Sprintf(`{"items":[%s],"count":%d}`, wire(page...), len(all)))
					}
				}
			})
		}
	}

	// redeliver: only what the caller can see, finished, with a callback.
	h := handler.New(s, auth)
	for _, pr := range tenancyPrs {
		t.Run("Redeliver/"+pr.name, func(t *testing.T) {
			for chunk := range slices.Chunk(tasks, 7) {
				var want []string
				for _, task := range chunk {
					if pr.p.CanSee(task) && task.Finished() && task.Callback.URL != "" {
						want = append(want, task.ID)
					}
				}
				body, _ := json.Marshal(map[string]any{"action": "redeliver", "ids": ids(chunk)})
				list, _ := json.Marshal(append([]string{}, want...))
				wantBody := fmt.Sprintf(`{"redelivered":%s,"count":%d}`, list, len(want))
				if got := serve(h, call{auth: "Bearer " + pr.token, body: string(body)}).Body.String(); got != wantBody {
					t.Errorf("%s:\n got %s\nwant %s", body, got, wantBody)
				}
			}
		})
	}

	// delete: nobody deletes what they cannot see; what they can see goes.
	remaining := slices.Clone(tasks)
	for _, pr := range tenancyPrs[:3] { // tenants first, then the app principal
		t.Run("Delete/"+pr.name, func(t *testing.T) {
			var kept []taskstore.Task
			for _, task := range remaining {
				canSee := pr.p.CanSee(task)
				body := serve(h, call{auth: "Bearer " + pr.token, body: fmt.Sprintf(`{"action":"delete","id":%q}`, task.ID)}).Body.String()
				if want := fmt.Sprintf(`{"id":%q,"deleted":%v}`, task.ID, canSee); body != want {
					t.Errorf("got %s, want %s", body, want)
				}
				if !canSee {
					kept = append(kept, task)
				}
			}
			remaining = kept
			op := serve(h, call{auth: "Bearer tok-op", body: `{"action":"retrieve_batch","limit":1}`}).Body.String()
			if want := fmt.Sprintf(`"count":%d}`, len(remaining)); !strings.HasSuffix(op, want) {
				t.Errorf("after %s's deletes the operator counts %s, want %s", pr.name, op, want)
			}
		})
	}
}
