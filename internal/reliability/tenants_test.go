package reliability

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/internal/tasksdtest"
)

// caller is a token and the principal the tokens file gives it.
type caller struct {
	name, token, app, user string
}

var (
	callerA  = caller{"tenant-a", tokenA, "app-a", "user-a"}
	callerB  = caller{"tenant-b", tokenB, "app-b", "user-b"}
	callerOp = caller{"operator", tokenOp, "", ""}
)

// modelTask is what the tenancy model knows of a stored task.
type modelTask struct {
	id, app, user, typ, trace string
	createdMs                 int64
}

func (c caller) sees(m modelTask) bool {
	return (c.app == "" || c.app == m.app) && (c.user == "" || c.user == m.user)
}

// parseMillis reads a wire time (Unix seconds with at most 3 decimals).
func parseMillis(n json.Number) (int64, error) {
	sec, frac, _ := strings.Cut(string(n), ".")
	if len(frac) > 3 {
		return 0, fmt.Errorf("time %s has more than 3 decimals", n)
	}
	s, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return 0, err
	}
	f, _ := strconv.ParseInt((frac + "000")[:3], 10, 64)
	return s*1000 + f, nil
}

func millisNumber(ms int64) json.Number {
	return json.Number(fmt.Sprintf("%d.%03d", ms/1000, ms%1000))
}

// TestTenants: two tenants and an operator send randomized traffic over
// every action (retrieve by id, by trace_id, by both; retrieve_batch with
// every filter: ids, trace_ids, application_id, user_id, type, created_at
// window, offset, limit; delete) through tasksd. Every answer equals what
// a model of the store predicts for the caller's scope: no tenant reads,
// counts or deletes a task of the other; the operator sees everything.
func TestTenants(t *testing.T) {
	perTenant := pick(30, 300)
	rounds := pick(500, 5000)
	seed := uint64(time.Now().UnixNano())
	t.Logf("tenants: seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 11))

	d := tasksdtest.Start(t, nil, "-db", filepath.Join(t.TempDir(), "tasks.db"), "-tokens", writeTokens(t), "-standin-delay", "0s")
	traces := []string{"t0", "t1", "t2", "t3", "t4"}

	// Each tenant (and the operator, a little) creates tasks through the
	// three image routes.
	owner := map[string]caller{}
	for i := range 2*perTenant + perTenant/5 {
		c := []caller{callerA, callerB}[i%2]
		if i >= 2*perTenant {
			c = callerOp
		}
		trace := ""
		if rng.IntN(4) > 0 {
			trace = traces[rng.IntN(len(traces))]
		}
		var a answer
		switch rng.IntN(3) {
		case 0:
			a = mustPost(t, d.URL()+genPath, c.token, map[string]any{"prompt": "p", "async": true, "trace_id": trace})
		case 1:
			a = mustPost(t, d.URL()+chatPath, c.token, map[string]any{"async": true, "trace_id": trace,
				"messages": []any{map[string]any{"role": "user", "content": "p"}}})
		default:
			fields := []string{"prompt", "p", "async", "true"}
			if trace != "" {
				fields = append(fields, "trace_id", trace)
			}
			body, ct := multipartBody("image", fields...)
			var err error
			if a, err = send(t.Context(), "POST", d.URL()+editsPath, c.token, ct, body); err != nil {
				t.Fatal(err)
			}
		}
		if a.status != 200 {
			t.Fatalf("submit as %s: %d %s", c.name, a.status, a.raw)
		}
		owner[a.str("task_id")] = c
		if rng.IntN(3) == 0 {
			time.Sleep(2 * time.Millisecond) // spread created_at a little; ties stay common
		}
	}

	// The model: every task as the operator sees it.
	model := map[string]modelTask{}
	for _, w := range fetchAll(t, d.URL()) {
		ms, err := parseMillis(w.CreatedAt)
		if err != nil {
			t.Fatal(err)
		}
		m := modelTask{id: w.ID, app: w.ApplicationID, user: w.UserID, typ: w.Type, trace: w.TraceID, createdMs: ms}
		if c, ok := owner[w.ID]; !ok || c.app != m.app || c.user != m.user {
			t.Fatalf("task %s: stored with application %q, user %q; created by %+v", w.ID, m.app, m.user, c)
		}
		model[w.ID] = m
	}
	if len(model) != len(owner) {
		t.Fatalf("the operator sees %d tasks, %d were created", len(model), len(owner))
	}
	allIDs := keys(model)
	slices.Sort(allIDs)
	randomID := func() string {
		if rng.IntN(10) == 0 {
			return "00000000-0000-4000-8000-000000000000"
		}
		return allIDs[rng.IntN(len(allIDs))]
	}
	// expected returns the ids a caller's filter matches, newest first.
	expected := func(c caller, match func(modelTask) bool) []string {
		var out []modelTask
		for _, m := range model {
			if c.sees(m) && match(m) {
				out = append(out, m)
			}
		}
		slices.SortFunc(out, func(x, y modelTask) int {
			return cmp.Or(cmp.Compare(y.createdMs, x.createdMs), strings.Compare(y.id, x.id))
		})
		ids := make([]string, len(out))
		for i, m := range out {
			ids[i] = m.id
		}
		return ids
	}
	// checkRecord checks a retrieve answer against the expected id ("" for {}).
	checkRecord := func(c caller, req map[string]any, a answer, want string) {
		t.Helper()
		switch {
		case a.status != 200:
			t.Errorf("%s %v: %d %s", c.name, req, a.status, a.raw)
		case want == "" && string(a.raw) != "{}":
			t.Errorf("%s %v: got %.200s, want {}", c.name, req, a.raw)
		case want != "" && a.str("id") != want:
			t.Errorf("%s %v: got %.200s, want task %s", c.name, req, a.raw, want)
		case want != "" && (c.app != "" && a.str("application_id") != c.app || c.user != "" && a.str("user_id") != c.user):
			t.Errorf("%s read another tenant's task: %.300s", c.name, a.raw)
		}
	}

	stats := map[string]int{}
	crossDeletes := 0
	for range rounds {
		c := []caller{callerA, callerA, callerB, callerB, callerOp}[rng.IntN(5)]
		switch p := rng.IntN(100); {
		case p < 15: // retrieve by id
			id := randomID()
			req := map[string]any{"action": "retrieve", "id": id}
			want := ""
			if m, ok := model[id]; ok && c.sees(m) {
				want = id
			}
			checkRecord(c, req, mustPost(t, d.URL()+tasksPath, c.token, req), want)
			stats["retrieve id"]++
		case p < 25: // retrieve by trace_id: the newest visible match
			tr := append(traces, "nope")[rng.IntN(len(traces)+1)]
			req := map[string]any{"trace_id": tr} // action defaults to retrieve
			want := ""
			if ids := expected(c, func(m modelTask) bool { return m.trace == tr }); len(ids) > 0 {
				want = ids[0]
			}
			checkRecord(c, req, mustPost(t, d.URL()+tasksPath, c.token, req), want)
			stats["retrieve trace_id"]++
		case p < 32: // retrieve by both: must match both
			id, tr := randomID(), traces[rng.IntN(len(traces))]
			req := map[string]any{"action": "retrieve", "id": id, "trace_id": tr}
			want := ""
			if m, ok := model[id]; ok && c.sees(m) && m.trace == tr {
				want = id
			}
			checkRecord(c, req, mustPost(t, d.URL()+tasksPath, c.token, req), want)
			stats["retrieve both"]++
		case p < 85: // retrieve_batch with random filters
			req := map[string]any{}
			var ids, trs []string
			var app, user, typ string
			minMs, maxMs := int64(-1), int64(-1)
			if rng.IntN(2) == 0 {
				for range 1 + rng.IntN(8) {
					ids = append(ids, randomID())
				}
				req["ids"] = ids
			}
			if rng.IntN(10) < 3 {
				trs = []string{traces[rng.IntN(len(traces))], append(traces, "nope")[rng.IntN(len(traces)+1)]}
				req["trace_ids"] = trs
			}
			if rng.IntN(4) == 0 {
				app = []string{"app-a", "app-b", "app-x"}[rng.IntN(3)]
				req["application_id"] = app
			}
			if rng.IntN(4) == 0 {
				user = []string{"user-a", "user-b", "user-x"}[rng.IntN(3)]
				req["user_id"] = user
			}
			if rng.IntN(4) == 0 {
				typ = []string{"images_generations", "images_edits", "chat_completions_image"}[rng.IntN(3)]
				req["type"] = typ
			}
			if rng.IntN(5) == 0 {
				minMs = model[allIDs[rng.IntN(len(allIDs))]].createdMs
				req["created_at_min"] = millisNumber(minMs)
			}
			if rng.IntN(5) == 0 {
				maxMs = model[allIDs[rng.IntN(len(allIDs))]].createdMs
				req["created_at_max"] = millisNumber(maxMs)
			}
			offset, limit := rng.IntN(4), 1+rng.IntN(30)
			req["offset"], req["limit"] = offset, limit
			want := expected(c, func(m modelTask) bool {
				return (ids == nil || slices.Contains(ids, m.id)) && (trs == nil || slices.Contains(trs, m.trace)) &&
					(app == "" || m.app == app) && (user == "" || m.user == user) && (typ == "" || m.typ == typ) &&
					(minMs < 0 || m.createdMs >= minMs) && (maxMs < 0 || m.createdMs <= maxMs)
			})
			b, raw := retrieveBatch(t, d.URL(), c.token, req)
			var got []string
			for _, it := range b.Items {
				got = append(got, it.ID)
				if c.app != "" && it.ApplicationID != c.app || c.user != "" && it.UserID != c.user {
					t.Errorf("%s read another tenant's task through retrieve_batch %v: %s", c.name, req, it.ID)
				}
			}
			page := want[min(offset, len(want)):min(offset+limit, len(want))]
			if *b.Count != len(want) || !slices.Equal(got, page) && !(len(got) == 0 && len(page) == 0) {
				t.Errorf("%s retrieve_batch %v:\n got count %d %v\nwant count %d %v\n%.500s", c.name, req, *b.Count, got, len(want), page, raw)
			}
			stats["retrieve_batch"]++
		default: // delete, mostly aimed at the other tenant
			id := randomID()
			if c == callerOp && rng.IntN(4) > 0 {
				continue // the operator deletes rarely, to keep tasks around
			}
			m, exists := model[id]
			want := exists && c.sees(m)
			if exists && !want {
				crossDeletes++
			}
			req := map[string]any{"action": "delete", "id": id}
			a := mustPost(t, d.URL()+tasksPath, c.token, req)
			if wantRaw, _ := json.Marshal(map[string]any{"id": id, "deleted": want}); a.status != 200 || !jsonEqual(a.raw, wantRaw) {
				t.Errorf("%s delete %s (owner %q/%q): %d %s, want %s", c.name, id, m.app, m.user, a.status, a.raw, wantRaw)
			}
			if want {
				delete(model, id)
			}
			stats["delete"]++
		}
		if t.Failed() {
			break
		}
	}
	// What was not deleted through the model is still there.
	b, _ := retrieveBatch(t, d.URL(), tokenOp, map[string]any{"limit": 1})
	if *b.Count != len(model) {
		t.Errorf("the operator counts %d tasks; the model holds %d", *b.Count, len(model))
	}
	t.Logf("tenants: %d tasks from 2 tenants and the operator, %d requests %v; %d deletes aimed at another tenant's task, all refused",
		len(owner), rounds, stats, crossDeletes)
}
