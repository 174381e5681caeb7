package memstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) taskstore.Store { return memstore.New() })
}

var (
	ctx  = context.Background()
	base = time.Date(2025, 11, 14, 17, 50, 7, 967_000_000, time.UTC)
)

func newStore(t *testing.T) *memstore.Store {
	t.Helper()
	s := memstore.New()
	t.Cleanup(func() { s.Close() })
	return s
}

func task(id string, ms int) taskstore.Task {
	return taskstore.Task{
		ID: id, Type: "images_generations",
		Request:   json.RawMessage(`{"prompt":"` + id + `"}`),
		CreatedAt: base.Add(time.Duration(ms) * time.Millisecond),
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func ids(ts []taskstore.Task) []string {
	out := make([]string, len(ts))
	for i, x := range ts {
		out[i] = x.ID
	}
	return out
}

// Tasks created newest first (the worst case for an append-only index) are
// still listed newest first, across many index chunks and pages.
func TestOutOfOrderInsert(t *testing.T) {
	s := newStore(t)
	const n = 3000
	for i := n - 1; i >= 0; i-- {
		x := task(fmt.Sprintf("t%04d", i), i/3) // three per millisecond
		x.UserID = "u"
		must(t, s.Create(ctx, x))
	}
	var got []string
	for off := 0; ; off += 100 {
		page, total, err := s.Find(ctx, taskstore.Filter{UserID: "u", Offset: off, Limit: 100})
		must(t, err)
		if total != n {
			t.Fatalf("total = %d, want %d", total, n)
		}
		if len(page) == 0 {
			break
		}
		got = append(got, ids(page)...)
	}
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprintf("t%04d", n-1-i)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("order broken; first 6 = %v", got[:6])
	}
}

// After Delete and Prune every index answers as if the tasks never existed.
func TestDeleteAndPruneMaintainIndexes(t *testing.T) {
	s := newStore(t)
	for i := 0; i < 1200; i++ {
		x := task(fmt.Sprintf("t%04d", i), i)
		x.UserID = fmt.Sprintf("u%d", i%3)
		x.ApplicationID = "app"
		x.TraceID = fmt.Sprintf("tr%d", i%2)
		x.Type = []string{"a", "b"}[i%2]
		must(t, s.Create(ctx, x))
	}
	for i := 0; i < 1200; i += 3 { // every task of u0
		must(t, s.Delete(ctx, fmt.Sprintf("t%04d", i)))
	}
	n, err := s.Prune(ctx, base.Add(600*time.Millisecond), 10_000)
	must(t, err)
	if n != 400 { // u1 and u2 tasks among the first 600
		t.Fatalf("pruned %d, want 400", n)
	}
	for _, tc := range []struct {
		f    taskstore.Filter
		want int
	}{
		{taskstore.Filter{}, 400},
		{taskstore.Filter{UserID: "u0"}, 0},
		{taskstore.Filter{UserID: "u1"}, 200},
		{taskstore.Filter{ApplicationID: "app"}, 400},
		{taskstore.Filter{TraceIDs: []string{"tr0"}}, 200},
		{taskstore.Filter{Types: []string{"a", "b"}}, 400},
		{taskstore.Filter{Types: []string{"a"}, CreatedMax: base.Add(899 * time.Millisecond)}, 100},
		{taskstore.Filter{IDs: []string{"t0000", "t0601", "t0603"}}, 1},
	} {
		f := tc.f
		f.Limit = 1000
		page, total, err := s.Find(ctx, f)
		must(t, err)
		if total != tc.want || len(page) != tc.want {
			t.Errorf("Find(%+v): %d items, total %d, want %d", tc.f, len(page), total, tc.want)
		}
		for _, x := range page {
			if x.CreatedAt.Before(base.Add(600*time.Millisecond)) || x.UserID == "u0" {
				t.Fatalf("deleted task %s still listed", x.ID)
			}
		}
	}
	// Re-creating a deleted id reuses its place.
	must(t, s.Create(ctx, task("t0000", 0)))
	if _, total, _ := s.Find(ctx, taskstore.Filter{}); total != 401 {
		t.Fatalf("total after re-create = %d, want 401", total)
	}
}

// The tasks of a page share one buffer for their JSON; growing one task's
// slice never overwrites the next task's bytes.
func TestPageJSONIsIndependent(t *testing.T) {
	s := newStore(t)
	must(t, s.Create(ctx, task("a", 0)))
	must(t, s.Create(ctx, task("b", 1)))
	page, _, err := s.Find(ctx, taskstore.Filter{Limit: 2})
	must(t, err)
	_ = append(page[0].Request, `XXXXXXXXXXXXXXXXXXXXXXXX`...)
	if string(page[1].Request) != `{"prompt":"a"}` {
		t.Fatalf("second task's request clobbered: %s", page[1].Request)
	}
	page[1].Request[2] = 'Z'
	got, err := s.Get(ctx, "a")
	must(t, err)
	if string(got.Request) != `{"prompt":"a"}` {
		t.Fatalf("stored request changed: %s", got.Request)
	}
}

// Issue 6: memory per task is at most twice the task's own bytes, for
// tasks with about 1 KiB of JSON.
func TestMemoryPerTask(t *testing.T) {
	n := 20_000
	if testing.Short() {
		n = 5_000
	}
	perTask, payload := memoryPerTask(t, n)
	t.Logf("%d tasks: %.0f bytes/task for %.0f payload bytes/task (%.2fx)", n, perTask, payload, perTask/payload)
	if perTask > 2*payload {
		t.Fatalf("%.0f bytes/task exceeds twice the payload (%.0f)", perTask, payload)
	}
}

// memoryPerTask fills a store with n realistic finished tasks and returns
// the heap bytes it holds per task and the payload bytes per task (request,
// response and string fields).
func memoryPerTask(tb testing.TB, n int) (perTask, payload float64) {
	tb.Helper()
	prompt := strings.Repeat("a watercolour cat on a windowsill, ", 19) // payload ~1 KiB in all
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	s := memstore.New()
	total := 0
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("%08x-ef03-4de0-b598-e9a590793434", i)
		x := taskstore.Task{
			ID: id, TraceID: fmt.Sprintf("trace-%d", i), Type: "images_generations",
			Request: json.RawMessage(`{"model":"gpt-image-1","prompt":"` + prompt +
				`","callback_url":"https://example.com/cb"}`),
			Response: json.RawMessage(`{"success":true,"task_id":"` + id +
				`","created":1763142637,"data":[{"url":"https://cdn.example.com/images/` + id + `.png"}]}`),
			CreatedAt:     base.Add(time.Duration(i) * time.Millisecond),
			FinishedAt:    base.Add(time.Duration(i)*time.Millisecond + 29*time.Second),
			ApplicationID: fmt.Sprintf("app-%d", i%10), UserID: fmt.Sprintf("user-%d", i%1000),
			CredentialID: fmt.Sprintf("cred-%d", i%1000),
			Callback:     taskstore.Callback{URL: "https://example.com/cb", Attempts: 1, LastStatus: 200, DeliveredAt: base},
		}
		total += len(x.Request) + len(x.Response) + len(x.ID) + len(x.TraceID) + len(x.Type) +
			len(x.ApplicationID) + len(x.UserID) + len(x.CredentialID) + len(x.Callback.URL)
		if err := s.Create(ctx, x); err != nil {
			tb.Fatal(err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	used := float64(ms.HeapAlloc) - float64(before)
	runtime.KeepAlive(s)
	s.Close()
	return used / float64(n), float64(total) / float64(n)
}
