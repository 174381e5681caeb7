package storecopy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/internal/pgtest"
	"github.com/tasksapi/tasks/internal/storecopy"
	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/pgstore"
	"github.com/tasksapi/tasks/sqlitestore"
	"github.com/tasksapi/tasks/taskstore"
)

var ctx = context.Background()

// kinds are the stores a copy runs between.
var kinds = []struct {
	name string
	open func(t *testing.T) taskstore.Store
}{
	{"memory", func(t *testing.T) taskstore.Store {
		s := memstore.New()
		t.Cleanup(func() { s.Close() })
		return s
	}},
	{"sqlite", func(t *testing.T) taskstore.Store {
		s, err := sqlitestore.Open(filepath.Join(t.TempDir(), "tasks.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}},
	{"postgres", func(t *testing.T) taskstore.Store {
		s, err := pgstore.Open(ctx, pgtest.FreshSchema(t, pgtest.URL(t)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}},
}

var base = time.Date(2025, 11, 14, 17, 50, 7, 967_000_000, time.UTC)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// recorders are the recorder names of the tasks fill makes: the default
// one and another, so that a copy must keep them.
var recorders = []string{"", "svc-b"}

// fill gives s tasks in every state a store can hold, through the Store
// API as a server makes them: unfinished (pending, running, leased),
// finished without a callback, with a callback delivered, pending at once,
// scheduled for a retry, given up, claimed by a deliverer (in flight until
// 2100, and claimed long ago), redelivered; JSON with whitespace, escapes
// and non-ASCII; several tasks in one millisecond. It returns their ids.
func fill(t *testing.T, s taskstore.Store, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("task-%03d-%c", i, "aéZ0"[i%4])
		created := base.Add(time.Duration(i/3) * time.Millisecond) // three a millisecond
		x := taskstore.Task{
			ID: id, Type: []string{"images_generations", "images_edits"}[i%2],
			Request:   json.RawMessage(fmt.Sprintf("{\"prompt\" : \"caf\\u00e9 猫 %d\",\n\t\"n\":1}", i)),
			CreatedAt: created, ApplicationID: fmt.Sprintf("app-%d", i%2), UserID: fmt.Sprintf("user-%d", i%3),
			CredentialID: "cred", Recorder: recorders[i%3%2],
		}
		if i%4 != 0 {
			x.TraceID = fmt.Sprintf("trace-%d", i%5)
		}
		if i%7 != 0 {
			x.Callback.URL = fmt.Sprintf("https://example.com/cb/%d", i)
		}
		must(t, s.Create(ctx, x))
		ids = append(ids, id)
		switch i % 10 {
		case 0: // pending, leased
			must(t, s.RenewLeases(ctx, []string{id}, time.Now().Add(time.Hour)))
		case 1: // running
			must(t, s.Start(ctx, id, created.Add(time.Millisecond)))
			must(t, s.RenewLeases(ctx, []string{id}, time.Now().Add(time.Hour)))
		default:
			must(t, s.Start(ctx, id, created.Add(time.Millisecond)))
			resp := fmt.Sprintf(`{"success":%v, "task_id":%q,"data":[{"url":"https://x/%d.png"}]}`, i%3 != 0, id, i)
			must(t, s.Finish(ctx, id, json.RawMessage(resp), created.Add(time.Second)))
		}
	}
	// The deliveries: claim every due one, then settle them variously.
	var due []taskstore.Task
	for _, name := range recorders {
		d, err := s.ClaimDeliveries(ctx, name, base.Add(time.Hour), time.Minute, 1000)
		must(t, err)
		due = append(due, d...)
	}
	for k, x := range due {
		at := base.Add(time.Hour)
		switch k % 6 {
		case 0:
			must(t, s.RecordAttempt(ctx, x.ID, taskstore.Attempt{At: at, Status: 204, Delivered: true}))
		case 1:
			must(t, s.RecordAttempt(ctx, x.ID, taskstore.Attempt{At: at, Status: 503, Error: "status 503", Next: at.Add(time.Hour)}))
		case 2:
			must(t, s.RecordAttempt(ctx, x.ID, taskstore.Attempt{At: at, Status: 410, Error: "status 410 (gone)"}))
		case 3:
			must(t, s.RecordAttempt(ctx, x.ID, taskstore.Attempt{At: at, Status: 204, Delivered: true}))
			_, err := s.Redeliver(ctx, []string{x.ID}, at.Add(time.Minute))
			must(t, err)
		case 4: // claimed long ago, never recorded (its deliverer died)
		case 5: // claimed again, in flight until 2100
			must(t, s.RecordAttempt(ctx, x.ID, taskstore.Attempt{At: at, Status: 0, Error: "timeout", Next: at}))
			again, err := s.ClaimDeliveries(ctx, x.Recorder, at, time.Until(time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)), 1000)
			must(t, err)
			if len(again) == 0 {
				t.Fatal("nothing claimed again")
			}
		}
	}
	return ids
}

func walkAll(t *testing.T, s taskstore.Store) []taskstore.Record {
	t.Helper()
	var out []taskstore.Record
	var after taskstore.Cursor
	for {
		page, err := s.Walk(ctx, after, 50)
		must(t, err)
		out = append(out, page...)
		if len(page) < 50 {
			return out
		}
		after = page[len(page)-1].Cursor()
	}
}

// TestRoundTrips copies between every pair of stores and compares every
// record field by field with what the source holds.
func TestRoundTrips(t *testing.T) {
	for _, from := range kinds {
		for _, to := range kinds {
			t.Run(from.name+"_to_"+to.name, func(t *testing.T) {
				src, dst := from.open(t), to.open(t)
				ids := fill(t, src, 60)
				before := walkAll(t, src)
				claims := 0
				for _, r := range before {
					if r.Claimed {
						claims++
					}
				}
				if claims == 0 {
					t.Fatal("the corpus holds no claimed delivery")
				}
				res, err := storecopy.Copy(ctx, src, dst, storecopy.Options{Batch: 7})
				must(t, err)
				if res.Read != len(ids) || res.Copied != len(ids) || res.Skipped != 0 || !res.OK() {
					t.Fatalf("Copy = %+v, want %d copied", res, len(ids))
				}
				after := walkAll(t, dst)
				if len(after) != len(before) {
					t.Fatalf("%d tasks copied, want %d", len(after), len(before))
				}
				for i, r := range before {
					want := storecopy.Expected(r)
					got := after[i]
					if d := storecopy.Diff(want, got.Task); d != "" {
						t.Errorf("%s differs in %s:\n got %+v\nwant %+v", r.ID, d, got.Task, want)
					}
					if got.Claimed {
						t.Errorf("%s is claimed in the destination", r.ID)
					}
					// Only the two documented changes.
					if d := storecopy.Diff(r.Task, got.Task); d != "" && d != "lease" && !(r.Claimed && d == "callback next attempt") {
						t.Errorf("%s: copy changed %s", r.ID, d)
					}
					if !r.Finished() && !got.LeaseUntil.IsZero() {
						t.Errorf("%s: unfinished copy keeps a lease", r.ID)
					}
					if r.Claimed && !got.Callback.NextAttemptAt.Equal(r.FinishedAt) {
						t.Errorf("%s: a claimed delivery is due at %v, want its finish %v", r.ID, got.Callback.NextAttemptAt, r.FinishedAt)
					}
				}
				v, err := storecopy.Verify(ctx, src, dst, storecopy.Options{Batch: 11})
				must(t, err)
				if !v.OK() || v.Other != 0 || v.Source.Tasks != len(ids) {
					t.Fatalf("Verify: %+v", v)
				}
				if v.Source.Checksum != v.Destination.Checksum || len(v.Source.Checksum) != 64 {
					t.Fatalf("checksums %s and %s", v.Source.Checksum, v.Destination.Checksum)
				}
				// The destination's counters agree with the walk.
				for _, st := range taskstore.Statuses {
					_, total, err := dst.Find(ctx, taskstore.Filter{Status: st})
					must(t, err)
					if total != v.Source.Status[st] {
						t.Errorf("destination counts %d %s tasks, the walk %d", total, st, v.Source.Status[st])
					}
				}
				for _, cb := range taskstore.CallbackStatuses {
					_, total, err := dst.Find(ctx, taskstore.Filter{CallbackStatus: cb})
					must(t, err)
					if total != v.Source.Callback[cb] {
						t.Errorf("destination counts %d %s callbacks, the walk %d", total, cb, v.Source.Callback[cb])
					}
				}

				// Again: everything is there, nothing is written twice.
				res, err = storecopy.Copy(ctx, src, dst, storecopy.Options{Batch: 13})
				must(t, err)
				if res.Copied != 0 || res.Skipped != len(ids) || !res.OK() {
					t.Fatalf("second Copy = %+v", res)
				}
			})
		}
	}
}

// An interrupted copy (here: cancelled after its second batch) resumes
// when run again and ends with an exact copy.
func TestResume(t *testing.T) {
	src, dst := kinds[1].open(t), kinds[1].open(t)
	ids := fill(t, src, 100)
	c, cancel := context.WithCancel(ctx)
	batches := 0
	res, err := storecopy.Copy(c, src, dst, storecopy.Options{Batch: 10, Progress: func(storecopy.Progress) {
		if batches++; batches == 2 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted Copy = %+v, %v; want context.Canceled", res, err)
	}
	if res.Copied < 20 || res.Copied >= len(ids) {
		t.Fatalf("interrupted Copy copied %d", res.Copied)
	}
	res2, err := storecopy.Copy(ctx, src, dst, storecopy.Options{Batch: 10})
	must(t, err)
	if res2.Skipped != res.Copied || res2.Copied != len(ids)-res.Copied || !res2.OK() {
		t.Fatalf("resumed Copy = %+v after %+v", res2, res)
	}
	v, err := storecopy.Verify(ctx, src, dst, storecopy.Options{})
	must(t, err)
	if !v.OK() {
		t.Fatalf("Verify after resuming: %+v", v)
	}
}

// A destination holding a task of the same id with another record is a
// conflict: listed, left alone, and Verify sees the difference; other
// tasks of the destination are counted apart.
func TestConflicts(t *testing.T) {
	src, dst := kinds[0].open(t), kinds[1].open(t)
	fill(t, src, 30)
	clash := taskstore.Task{ID: "task-004-a", Type: "images_generations", Request: json.RawMessage(`{"other":true}`), CreatedAt: base}
	mine := taskstore.Task{ID: "zzz-mine", Type: "images_generations", Request: json.RawMessage(`{}`), CreatedAt: base.Add(time.Hour)}
	must(t, dst.Create(ctx, clash))
	must(t, dst.Create(ctx, mine))
	res, err := storecopy.Copy(ctx, src, dst, storecopy.Options{Batch: 8})
	must(t, err)
	if res.OK() || res.Conflicts.N != 1 || res.Conflicts.Listed[0].ID != clash.ID || res.Copied != 29 {
		t.Fatalf("Copy = %+v, want one conflict on %s", res, clash.ID)
	}
	if r := res.Conflicts.Listed[0].Reason; !strings.Contains(r, "request") || !strings.Contains(r, "created_at") {
		t.Errorf("conflict reason %q does not name the fields", r)
	}
	if got, err := dst.Get(ctx, clash.ID); err != nil || string(got.Request) != `{"other":true}` {
		t.Fatalf("the conflicting task was changed: %+v, %v", got, err)
	}
	v, err := storecopy.Verify(ctx, src, dst, storecopy.Options{Batch: 8})
	must(t, err)
	// clash is created at base, before its source task: it is "other",
	// and the source task is missing at its place.
	if v.OK() || v.Missing.N != 1 || v.Other != 2 || v.Source.Same(v.Destination) {
		t.Fatalf("Verify = %+v", v)
	}
}

// A task the destination cannot hold (PostgreSQL text has no NUL) is
// listed as unstorable; the rest of its batch is copied.
func TestUnstorable(t *testing.T) {
	src, dst := kinds[1].open(t), kinds[2].open(t)
	fill(t, src, 20)
	bad := taskstore.Task{ID: "nul", Type: "images_generations", Request: json.RawMessage(`{}`), CreatedAt: base,
		UserID: "a\x00b"}
	must(t, src.Create(ctx, bad))
	res, err := storecopy.Copy(ctx, src, dst, storecopy.Options{Batch: 50})
	must(t, err)
	if res.OK() || res.Unstorable.N != 1 || res.Unstorable.Listed[0].ID != "nul" || res.Copied != 20 {
		t.Fatalf("Copy = %+v", res)
	}
	if !strings.Contains(res.Unstorable.Listed[0].Reason, "user_id") {
		t.Errorf("reason %q does not name the field", res.Unstorable.Listed[0].Reason)
	}
}

// Verify finds a source that changed after the copy.
func TestVerifySeesChanges(t *testing.T) {
	src, dst := kinds[0].open(t), kinds[0].open(t)
	fill(t, src, 30)
	_, err := storecopy.Copy(ctx, src, dst, storecopy.Options{})
	must(t, err)
	must(t, src.Finish(ctx, "task-000-a", json.RawMessage(`{"success":true}`), time.Now()))
	must(t, src.Create(ctx, taskstore.Task{ID: "new", Type: "t", Request: json.RawMessage(`{}`)}))
	v, err := storecopy.Verify(ctx, src, dst, storecopy.Options{Batch: 4})
	must(t, err)
	if v.OK() || v.Missing.N != 1 || v.Missing.Listed[0].ID != "new" || v.Different.N != 1 ||
		v.Different.Listed[0].ID != "task-000-a" || !strings.Contains(v.Different.Listed[0].Reason, "response") {
		t.Fatalf("Verify = %+v", v)
	}
	// task-000-a went from pending to succeeded, new is pending.
	if v.Source.Status[taskstore.StatusSucceeded] != v.Destination.Status[taskstore.StatusSucceeded]+1 {
		t.Errorf("succeeded counts: %v and %v", v.Source, v.Destination)
	}
}

// AppendRecord encodes every field: changing any one changes it.
func TestAppendRecord(t *testing.T) {
	x := taskstore.Task{ID: "a", Type: "t", Request: json.RawMessage(`{}`), Response: json.RawMessage(`{}`), CreatedAt: base}
	changes := []func(*taskstore.Task){
		func(t *taskstore.Task) { t.ID = "b" },
		func(t *taskstore.Task) { t.TraceID = "x" },
		func(t *taskstore.Task) { t.Type = "u" },
		func(t *taskstore.Task) { t.Request = json.RawMessage(`{ }`) },
		func(t *taskstore.Task) { t.Response = nil },
		func(t *taskstore.Task) { t.Response = json.RawMessage(``) },
		func(t *taskstore.Task) { t.CreatedAt = t.CreatedAt.Add(time.Millisecond) },
		func(t *taskstore.Task) { t.StartedAt = base },
		func(t *taskstore.Task) { t.FinishedAt = base },
		func(t *taskstore.Task) { t.ApplicationID = "x" },
		func(t *taskstore.Task) { t.UserID = "x" },
		func(t *taskstore.Task) { t.CredentialID = "x" },
		func(t *taskstore.Task) { t.Callback.URL = "x" },
		func(t *taskstore.Task) { t.Callback.Attempts = 1 },
		func(t *taskstore.Task) { t.Callback.NextAttemptAt = base },
		func(t *taskstore.Task) { t.Callback.DeliveredAt = base },
		func(t *taskstore.Task) { t.Callback.LastStatus = 200 },
		func(t *taskstore.Task) { t.Callback.LastError = "x" },
		func(t *taskstore.Task) { t.LeaseUntil = base },
		func(t *taskstore.Task) { t.Recorder = "other" },
		func(t *taskstore.Task) { t.ID, t.TraceID = "", "a" }, // lengths keep fields apart
	}
	orig := string(storecopy.AppendRecord(nil, x))
	for i, change := range changes {
		y := x.Clone()
		change(&y)
		if string(storecopy.AppendRecord(nil, y)) == orig {
			t.Errorf("change %d leaves the encoding as it was", i)
		}
		if storecopy.Diff(x, y) == "" {
			t.Errorf("change %d: Diff finds no difference", i)
		}
	}
	if storecopy.Diff(x, x.Clone()) != "" {
		t.Error("Diff of a task and its clone")
	}
}

// A dry run finds the conflicts and writes nothing.
func TestDryRun(t *testing.T) {
	src, dst := kinds[0].open(t), kinds[0].open(t)
	fill(t, src, 30)
	clash := taskstore.Task{ID: "task-004-a", Type: "images_generations", Request: json.RawMessage(`{"other":true}`), CreatedAt: base}
	must(t, dst.Create(ctx, clash))
	res, err := storecopy.Copy(ctx, src, dst, storecopy.Options{DryRun: true, Batch: 4})
	must(t, err)
	if res.Conflicts.N != 1 || res.Copied != 29 || res.Read != 30 {
		t.Fatalf("dry run = %+v", res)
	}
	if _, total, _ := dst.Find(ctx, taskstore.Filter{}); total != 1 {
		t.Fatalf("a dry run wrote: %d tasks in the destination", total)
	}
}

// Check agrees with Verify on a good copy at the cost of one walk, and
// falls back to Verify when the destination holds other tasks or the
// source changed.
func TestCheck(t *testing.T) {
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			src, dst := k.open(t), k.open(t)
			fill(t, src, 40)
			res, err := storecopy.Copy(ctx, src, dst, storecopy.Options{Batch: 9})
			must(t, err)
			v, full, err := storecopy.Check(ctx, src, dst, res, storecopy.Options{Batch: 9})
			must(t, err)
			if full || !v.OK() || v.Source.Tasks != 40 {
				t.Fatalf("Check of a good copy: full %v, %+v", full, v)
			}
			vv, err := storecopy.Verify(ctx, src, dst, storecopy.Options{})
			must(t, err)
			if vv.Source.Checksum != v.Source.Checksum || vv.Destination.Checksum != v.Destination.Checksum {
				t.Fatalf("Check and Verify disagree: %v / %v", v, vv)
			}
			// A resumed copy's summary covers the skipped tasks too.
			res2, err := storecopy.Copy(ctx, src, dst, storecopy.Options{Batch: 9})
			must(t, err)
			if res2.Source.Checksum != res.Source.Checksum {
				t.Fatal("a second Copy summarizes the source differently")
			}

			// The source changes: a task finishes (counts move).
			must(t, src.Finish(ctx, "task-000-a", json.RawMessage(`{"success":true}`), time.Now()))
			v, full, err = storecopy.Check(ctx, src, dst, res, storecopy.Options{})
			must(t, err)
			if !full || v.OK() || v.Different.N != 1 {
				t.Fatalf("Check after the source changed: full %v, %+v", full, v)
			}
		})
	}
	// The destination holds a task of its own: Verify tells it apart.
	src, dst := kinds[0].open(t), kinds[0].open(t)
	fill(t, src, 10)
	must(t, dst.Create(ctx, taskstore.Task{ID: "mine", Type: "t", Request: json.RawMessage(`{}`)}))
	res, err := storecopy.Copy(ctx, src, dst, storecopy.Options{})
	must(t, err)
	v, full, err := storecopy.Check(ctx, src, dst, res, storecopy.Options{})
	must(t, err)
	if !full || !v.OK() || v.Other != 1 {
		t.Fatalf("Check with another task in the destination: full %v, %+v", full, v)
	}
}
