package sqlitestore_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/tasksapi/tasks/sqlitestore"
	"github.com/tasksapi/tasks/taskstore"
)

var (
	ctx  = context.Background()
	base = time.Date(2025, 11, 14, 17, 50, 7, 967_000_000, time.UTC)
)

// mustOpen opens a store on a new file in a temporary directory.
func mustOpen(tb testing.TB, opts ...sqlitestore.Option) (*sqlitestore.Store, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "tasks.db")
	s, err := sqlitestore.Open(path, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s, path
}

func newTask(id string, ms int) taskstore.Task {
	return taskstore.Task{
		ID: id, Type: "images_generations",
		Request:   json.RawMessage(`{"prompt":"` + id + `"}`),
		CreatedAt: base.Add(time.Duration(ms) * time.Millisecond),
	}
}

func TestOpenRefuses(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("not a database, just some bytes that are long enough to be a header..."), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"Empty", "", "empty database path"},
		{"Memory", ":memory:", "in-memory"},
		{"MemoryURI", "file::memory:?cache=shared", "in-memory"},
		{"QueryInPath", filepath.Join(dir, "a?b.db"), "must not contain '?'"},
		{"MissingDirectory", filepath.Join(dir, "missing", "tasks.db"), "does not exist"},
		{"ParentIsFile", filepath.Join(file, "tasks.db"), "not a directory"},
		{"PathIsDirectory", dir, "is a directory"},
		{"NotADatabase", file, "not a database"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := sqlitestore.Open(tc.path)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q) succeeded", tc.path)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open(%q) = %q, want it to contain %q", tc.path, err, tc.want)
			}
		})
	}
}

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	s, err := sqlitestore.Open(path, sqlitestore.WithSynchronousFull(), sqlitestore.WithReadConns(2))
	if err != nil {
		t.Fatal(err)
	}
	a, b := newTask("a", 1), newTask("b", 2)
	a.UserID, b.UserID = "u", "u"
	a.Callback.URL = "https://example.com/cb"
	for _, x := range []taskstore.Task{a, b} {
		if err := s.Create(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Finish(ctx, "a", json.RawMessage(`{"ok":true}`), base.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = sqlitestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Response) != `{"ok":true}` || got.CallbackStatus() != taskstore.CallbackPending {
		t.Fatalf("after reopen: response %s, delivery %v", got.Response, got.CallbackStatus())
	}
	page, total, err := s.Find(ctx, taskstore.Filter{UserID: "u", Limit: 10})
	if err != nil || total != 2 || len(page) != 2 || page[0].ID != "b" {
		t.Fatalf("after reopen: Find = %d items, total %d, err %v", len(page), total, err)
	}
	due, err := s.ClaimDeliveries(ctx, "", base.Add(time.Hour), time.Minute, 10)
	if err != nil || len(due) != 1 || due[0].ID != "a" {
		t.Fatalf("after reopen: ClaimDeliveries = %v, %v", due, err)
	}
}

// TestErrorsHideSQLAndPaths forces failures in a read and in a write and
// checks that the error callers see names neither SQL nor the file, while
// the logger gets the details.
func TestErrorsHideSQLAndPaths(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	s, path := mustOpen(t, sqlitestore.WithLogger(logger))
	if err := s.Create(ctx, newTask("x", 0)); err != nil {
		t.Fatal(err)
	}

	raw, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// A trigger whose failure message looks like SQL and a path, to prove
	// the message does not travel.
	secret := "SELECT * FROM tasks WHERE secret /srv/private/tasks.db"
	if _, err := raw.Exec(`CREATE TRIGGER boom BEFORE INSERT ON tasks BEGIN SELECT RAISE(ABORT, '` + secret + `'); END`); err != nil {
		t.Fatal(err)
	}
	writeErr := s.Create(ctx, newTask("y", 0))

	if _, err := raw.Exec(`ALTER TABLE tasks RENAME TO gone`); err != nil {
		t.Fatal(err)
	}
	_, readErr := s.Get(ctx, "x")

	for name, tc := range map[string]struct {
		err  error
		code string
		num  int
	}{
		"write": {writeErr, "SQLITE_CONSTRAINT_TRIGGER", sqlite3.SQLITE_CONSTRAINT_TRIGGER},
		"read":  {readErr, "SQLITE_ERROR", sqlite3.SQLITE_ERROR},
	} {
		err := tc.err
		if err == nil {
			t.Fatalf("%s: forced failure returned no error", name)
		}
		msg := err.Error()
		for _, leak := range []string{"SELECT", "FROM", "secret", "/srv", path, filepath.Dir(path), "no such table", "gone"} {
			if strings.Contains(msg, leak) {
				t.Errorf("%s error %q contains %q", name, msg, leak)
			}
		}
		var se *sqlitestore.Error
		if !errors.As(err, &se) || se.Code != tc.code {
			t.Errorf("%s error %q is not an *sqlitestore.Error with Code %s", name, msg, tc.code)
		}
		// Unwrap gives the driver's error, with its numeric code.
		var de *sqlite.Error
		if !errors.As(err, &de) || de.Code() != tc.num || !errors.Is(err, de) {
			t.Errorf("%s error %q does not unwrap to the driver's *sqlite.Error", name, msg)
		}
		if errors.Is(err, taskstore.ErrNotFound) || errors.Is(err, taskstore.ErrConflict) || errors.Is(err, taskstore.ErrInvalid) {
			t.Errorf("%s error %q passes for a domain error", name, msg)
		}
		t.Logf("%s error: %v", name, err)
	}
	if !strings.Contains(logs.String(), "secret") || !strings.Contains(logs.String(), "no such table") {
		t.Errorf("the logger did not get the details:\n%s", logs.String())
	}
}

// TestCountersMatchCount checks that totals answered from task_counts equal
// COUNT(*) over the tasks, for every combination of application, user and
// types, after creates, deletes and a prune. A window covering every task
// makes Find count the rows instead of reading the counters.
func TestCountersMatchCount(t *testing.T) {
	s, _ := mustOpen(t)
	apps := []string{"app-a", "app-b", ""}
	users := []string{"u1", "u2", "u3", ""}
	types := []string{"images_generations", "images_edits", "images_variations"}
	for i := range 300 {
		x := newTask(fmt.Sprintf("t%03d", i), i%40)
		x.ApplicationID, x.UserID, x.Type = apps[i%3], users[i/3%4], types[i/5%3]
		if err := s.Create(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	check := func(stage string) {
		t.Helper()
		everything := []taskstore.Filter{{}}
		for _, app := range append(apps[:2:2], "nope") {
			everything = append(everything, taskstore.Filter{ApplicationID: app})
		}
		var fs []taskstore.Filter
		for _, f := range everything {
			for _, u := range []string{"", "u1", "u3", "nope"} {
				for _, ts := range [][]string{nil, {"images_edits"}, {"images_edits", "images_variations"}, {"nope"}} {
					f.UserID, f.Types = u, ts
					fs = append(fs, f)
				}
			}
		}
		for _, f := range fs {
			_, counted, err := s.Find(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			w := f
			w.CreatedMin, w.CreatedMax = time.Unix(1, 0), time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
			_, scanned, err := s.Find(ctx, w)
			if err != nil {
				t.Fatal(err)
			}
			if counted != scanned {
				t.Errorf("%s: Find(%+v) total from counters %d, from COUNT(*) %d", stage, f, counted, scanned)
			}
		}
	}
	check("after create")
	for i := 0; i < 300; i += 7 {
		if err := s.Delete(ctx, fmt.Sprintf("t%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	check("after delete")
	if _, err := s.Prune(ctx, base.Add(10*time.Millisecond), 1000); err != nil {
		t.Fatal(err)
	}
	check("after prune")
	if _, total, _ := s.Find(ctx, taskstore.Filter{}); total == 0 {
		t.Fatal("nothing left to count")
	}
}

// TestConcurrentNoBusy runs 64 goroutines mixing writes and reads for a few
// seconds (one in -short mode); any error, SQLITE_BUSY included, fails.
func TestConcurrentNoBusy(t *testing.T) {
	s, _ := mustOpen(t)
	run := 3 * time.Second
	if testing.Short() {
		run = time.Second
	}
	deadline := time.Now().Add(run)
	var (
		wg    sync.WaitGroup
		ops   atomic.Int64
		first sync.Once
		fail  error
	)
	for g := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			user := fmt.Sprintf("u%d", g%8)
			for i := 0; time.Now().Before(deadline); i++ {
				id := fmt.Sprintf("g%02d-%06d", g, i)
				var err error
				switch i % 6 {
				case 0, 3:
					x := newTask(id, i)
					x.UserID = user
					x.Callback.URL = "http://r/"
					err = s.Create(ctx, x)
				case 1:
					_, err = s.Get(ctx, fmt.Sprintf("g%02d-%06d", g, i-1))
				case 2:
					_, _, err = s.Find(ctx, taskstore.Filter{UserID: user, Limit: 12})
				case 4:
					err = s.Finish(ctx, fmt.Sprintf("g%02d-%06d", g, i-1), json.RawMessage(`{"ok":1}`), base)
				case 5:
					if g%8 == 0 {
						_, err = s.ClaimDeliveries(ctx, "", base.Add(time.Hour), time.Minute, 5)
					} else {
						_, _, err = s.Find(ctx, taskstore.Filter{Types: []string{"images_generations"}, Offset: 5, Limit: 12})
					}
				}
				if err != nil {
					first.Do(func() { fail = fmt.Errorf("goroutine %d op %d: %w", g, i%6, err) })
					return
				}
				ops.Add(1)
			}
		}()
	}
	wg.Wait()
	if fail != nil {
		t.Fatal(fail)
	}
	t.Logf("%d operations in %v without error", ops.Load(), run)
}

// TestCloseWhileBusy closes the store while writers are running: each call
// either succeeds (and its task is then on disk) or returns ErrClosed.
func TestCloseWhileBusy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	s, err := sqlitestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		ok  []string
		bad []error
	)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				id := fmt.Sprintf("c%02d-%03d", g, i)
				err := s.Create(ctx, newTask(id, i))
				mu.Lock()
				switch {
				case err == nil:
					ok = append(ok, id)
				case !errors.Is(err, taskstore.ErrClosed):
					bad = append(bad, err)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for _, err := range bad {
		t.Errorf("write during Close: %v", err)
	}
	s, err = sqlitestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, total, err := s.Find(ctx, taskstore.Filter{})
	if err != nil || total != len(ok) {
		t.Fatalf("after reopen: %d tasks (err %v), %d creates reported success", total, err, len(ok))
	}
}

// TestExtremeLimits: the largest Limit and Offset values work in every
// query shape and allocate nothing in proportion to them.
func TestExtremeLimits(t *testing.T) {
	s, _ := mustOpen(t)
	for i, typ := range []string{"a", "b", "c"} {
		x := newTask(fmt.Sprint("t", i), i)
		x.Type = typ
		if err := s.Create(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	const maxInt = int(^uint(0) >> 1)
	for _, f := range []taskstore.Filter{
		{Limit: maxInt},
		{Limit: maxInt, Offset: maxInt},
		{Limit: maxInt, Offset: 1, Types: []string{"a", "b"}},
		{Limit: maxInt, Offset: maxInt, Types: []string{"a", "b"}},
	} {
		page, total, err := s.Find(ctx, f)
		if err != nil || total == 0 || (f.Offset == 0 && len(page) != total) {
			t.Errorf("Find(limit %d, offset %d, types %v) = %d items, total %d, err %v", f.Limit, f.Offset, f.Types, len(page), total, err)
		}
	}
	if _, err := s.ClaimDeliveries(ctx, "", base, time.Minute, maxInt); err != nil {
		t.Errorf("ClaimDeliveries(max limit): %v", err)
	}
	if _, err := s.Abandoned(ctx, "", base, maxInt); err != nil {
		t.Errorf("Abandoned(max limit): %v", err)
	}
	if _, err := s.Prune(ctx, base, maxInt); err != nil {
		t.Errorf("Prune(max limit): %v", err)
	}
}

// TestTwoStoresOneFile opens the file twice (as two processes would): writes
// from both land, and no due delivery is claimed by both.
func TestTwoStoresOneFile(t *testing.T) {
	a, path := mustOpen(t)
	b, err := sqlitestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const n = 200
	var wg sync.WaitGroup
	for i, s := range []*sqlitestore.Store{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range n {
				x := newTask(fmt.Sprintf("s%d-%03d", i, j), j)
				x.Callback.URL = "http://r/"
				if err := s.Create(ctx, x); err != nil {
					t.Error(err)
					return
				}
				if err := s.Finish(ctx, x.ID, json.RawMessage(`{}`), base); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if _, total, err := b.Find(ctx, taskstore.Filter{}); err != nil || total != 2*n {
		t.Fatalf("total = %d (err %v), want %d", total, err, 2*n)
	}
	claimed := make(map[string]int)
	var mu sync.Mutex
	for _, s := range []*sqlitestore.Store{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				got, err := s.ClaimDeliveries(ctx, "", base.Add(time.Second), time.Hour, 7)
				if err != nil {
					t.Error(err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, x := range got {
					claimed[x.ID]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(claimed) != 2*n {
		t.Fatalf("%d deliveries claimed, want %d", len(claimed), 2*n)
	}
	for id, c := range claimed {
		if c != 1 {
			t.Fatalf("%s claimed %d times", id, c)
		}
	}
}

// A database file removed or replaced while open must not take writes that
// would vanish at Close.
func TestFileGoneFailsWrites(t *testing.T) {
	for _, tc := range []struct {
		name    string
		breakIt func(t *testing.T, path string)
	}{
		{"Removed", func(t *testing.T, path string) {
			for _, suffix := range []string{"", "-wal", "-shm"} {
				os.Remove(path + suffix)
			}
		}},
		{"Replaced", func(t *testing.T, path string) {
			other := path + ".other"
			if err := os.WriteFile(other, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(other, path); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "tasks.db")
			s, err := sqlitestore.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			task := taskstore.Task{ID: "a", Type: "t", Request: json.RawMessage(`{}`)}
			if err := s.Create(ctx, task); err != nil {
				t.Fatal(err)
			}
			tc.breakIt(t, path)
			task.ID = "b"
			err = s.Create(ctx, task)
			if !errors.Is(err, sqlitestore.ErrFileGone) {
				t.Fatalf("Create after the file went: %v, want ErrFileGone", err)
			}
			if strings.Contains(err.Error(), path) {
				t.Fatalf("error names the path: %v", err)
			}
			if err := s.Finish(ctx, "a", json.RawMessage(`{}`), time.Time{}); !errors.Is(err, sqlitestore.ErrFileGone) {
				t.Fatalf("Finish after the file went: %v, want ErrFileGone", err)
			}
		})
	}
}
