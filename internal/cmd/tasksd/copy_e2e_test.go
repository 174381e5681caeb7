package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasksapi/tasks/internal/pgtest"
	"github.com/tasksapi/tasks/internal/storecopy"
	"github.com/tasksapi/tasks/internal/tasksdtest"
	"github.com/tasksapi/tasks/pgstore"
	"github.com/tasksapi/tasks/sqlitestore"
	"github.com/tasksapi/tasks/taskstore"
)

// tasksdCmd runs the tasksd binary with args to its end and returns its
// output and exit code.
func tasksdCmd(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(tasksdtest.Binary(t), args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("tasksd %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// storeKind opens the stores of one kind for the copy tests: a fresh
// location, and the store at a location.
type storeKind struct {
	name  string
	fresh func(t *testing.T) string
	open  func(t *testing.T, db string) taskstore.Store
}

var sqliteKind = storeKind{"sqlite",
	func(t *testing.T) string { return filepath.Join(t.TempDir(), "tasks.db") },
	func(t *testing.T, db string) taskstore.Store {
		s, err := sqlitestore.Open(db)
		if err != nil {
			t.Fatal(err)
		}
		return s
	},
}

var pgKind = storeKind{"postgres",
	func(t *testing.T) string {
		tasksdtest.Binary(t) // skip in -short before asking for a database
		return pgtest.FreshSchema(t, pgtest.URL(t))
	},
	func(t *testing.T, db string) taskstore.Store {
		s, err := pgstore.Open(context.Background(), db)
		if err != nil {
			t.Fatal(err)
		}
		return s
	},
}

// copyCorpus stores, through the Store API, what a tasksd that crashed
// leaves: finished tasks whose callbacks were delivered, given up, due,
// scheduled for a retry an hour ahead, or claimed by the attempt under way
// at the crash; tasks still queued or running, whose leases have expired;
// tasks without a callback. The callbacks go to url. It returns the ids
// the destination's tasksd must call back: the due, claimed and
// unfinished ones.
func copyCorpus(t *testing.T, s taskstore.Store, url string, n int) (callback []string) {
	t.Helper()
	ctx := context.Background()
	now := time.Now().Add(-time.Minute)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var claimIDs []string
	for i := range n {
		id := fmt.Sprintf("019ad000-0000-7000-8000-%012d", i)
		x := taskstore.Task{
			ID: id, Type: "images_generations", TraceID: fmt.Sprintf("trace-%d", i%3),
			Request:   json.RawMessage(fmt.Sprintf("{\"model\":\"gpt-image-1\", \"prompt\":\"caf\\u00e9 %d\"}", i)),
			CreatedAt: now.Add(time.Duration(i) * time.Millisecond), ApplicationID: "app-a", UserID: "user-a",
			CredentialID: "cred-a", Callback: taskstore.Callback{URL: url + "/cb"},
		}
		resp := json.RawMessage(fmt.Sprintf(`{"success":true,"task_id":%q,"data":[{"url":"https://x/%d.png"}]}`, id, i))
		switch i % 8 {
		case 0: // delivered
			x.Response, x.StartedAt, x.FinishedAt = resp, x.CreatedAt, x.CreatedAt.Add(time.Second)
			x.Callback.Attempts, x.Callback.LastStatus, x.Callback.DeliveredAt = 1, 204, x.FinishedAt
		case 1: // given up
			x.Response, x.StartedAt, x.FinishedAt = resp, x.CreatedAt, x.CreatedAt.Add(time.Second)
			x.Callback.Attempts, x.Callback.LastStatus, x.Callback.LastError = 1, 410, "status 410 (gone)"
		case 2: // due
			x.Response, x.StartedAt, x.FinishedAt = resp, x.CreatedAt, x.CreatedAt.Add(time.Second)
			x.Callback.NextAttemptAt = x.FinishedAt
			callback = append(callback, id)
		case 3: // a retry in an hour
			x.Response, x.StartedAt, x.FinishedAt = resp, x.CreatedAt, x.CreatedAt.Add(time.Second)
			x.Callback.Attempts, x.Callback.LastStatus, x.Callback.LastError = 1, 503, "status 503"
			x.Callback.NextAttemptAt = time.Now().Add(time.Hour)
		case 4: // claimed: made due far ahead, then claimed below
			x.Response, x.StartedAt, x.FinishedAt = resp, x.CreatedAt, x.CreatedAt.Add(time.Second)
			x.Callback.NextAttemptAt = x.FinishedAt
			claimIDs = append(claimIDs, id)
			callback = append(callback, id)
		case 5: // queued, lease expired
			x.LeaseUntil = now
			callback = append(callback, id)
		case 6: // running, lease expired
			x.StartedAt, x.LeaseUntil = x.CreatedAt, now
			callback = append(callback, id)
		case 7: // no callback
			x.Callback = taskstore.Callback{}
			x.Response, x.StartedAt, x.FinishedAt = resp, x.CreatedAt, x.CreatedAt.Add(time.Second)
		}
		must(s.Create(ctx, x))
	}
	// Claim every due delivery (cases 2 and 4), as a deliverer would,
	// until tomorrow; then end the claims of case 2 with an attempt that
	// leaves them due.
	claimed, err := s.ClaimDeliveries(ctx, "", time.Now(), 24*time.Hour, 10*n)
	must(err)
	var unclaim []string
	for _, x := range claimed {
		if !contains(claimIDs, x.ID) {
			unclaim = append(unclaim, x.ID)
		}
	}
	for _, id := range unclaim {
		must(s.RecordAttempt(ctx, id, taskstore.Attempt{At: now, Error: "timeout", Next: now}))
	}
	return callback
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// walkRecords reads every record of the store at db.
func walkRecords(t *testing.T, k storeKind, db string) []taskstore.Record {
	t.Helper()
	s := k.open(t, db)
	defer s.Close()
	var out []taskstore.Record
	var after taskstore.Cursor
	for {
		page, err := s.Walk(context.Background(), after, 100)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page...)
		if len(page) < 100 {
			return out
		}
		after = page[len(page)-1].Cursor()
	}
}

// TestCopyEndToEnd copies with the real binary between SQLite and
// PostgreSQL in each direction, compares every record field by field,
// then starts tasksd on the destination and sees it deliver the pending
// and claimed callbacks and finish the unfinished tasks as interrupted
// and call them back.
func TestCopyEndToEnd(t *testing.T) {
	for _, pair := range []struct{ from, to storeKind }{
		{sqliteKind, sqliteKind}, {sqliteKind, pgKind}, {pgKind, sqliteKind}, {pgKind, pgKind},
	} {
		t.Run(pair.from.name+"_to_"+pair.to.name, func(t *testing.T) {
			rcv := newReceiver(t)
			from, to := pair.from.fresh(t), pair.to.fresh(t)
			src := pair.from.open(t, from)
			want := copyCorpus(t, src, rcv.URL, 80)
			must(t, src.Close())
			before := walkRecords(t, pair.from, from)

			stdout, stderr, code := tasksdCmd(t, "copy", "-from", from, "-to", to, "-batch", "7")
			if code != 0 || !strings.Contains(stdout, "copied 80 tasks, skipped 0") || !strings.Contains(stdout, "verified") {
				t.Fatalf("copy exited %d:\n%s\n%s", code, stdout, stderr)
			}
			after := walkRecords(t, pair.to, to)
			if len(after) != len(before) {
				t.Fatalf("%d records in the destination, want %d", len(after), len(before))
			}
			claims := 0
			for i, r := range before {
				if r.Claimed {
					claims++
				}
				if d := storecopy.Diff(storecopy.Expected(r), after[i].Task); d != "" || after[i].Claimed {
					t.Errorf("%s: the copy differs in %q (claimed %v)", r.ID, d, after[i].Claimed)
				}
			}
			if claims != 10 {
				t.Fatalf("%d claimed deliveries in the source, want 10", claims)
			}

			// Again: nothing to do.
			stdout, stderr, code = tasksdCmd(t, "copy", "-from", from, "-to", to)
			if code != 0 || !strings.Contains(stdout, "copied 0 tasks, skipped 80") {
				t.Fatalf("second copy exited %d:\n%s\n%s", code, stdout, stderr)
			}

			// The destination's tasksd takes over.
			d := start(t, []string{"TASKSD_CALLBACK_SECRET=" + secret}, "-db", to, "-tokens", writeTokens(t),
				"-allow-private-callbacks", "-standin-delay", "10ms", "-lease", "20s")
			for _, id := range want {
				body := rcv.Wait(t, id)
				if body["task_id"] != id {
					t.Fatalf("callback of %s: %v", id, body)
				}
			}
			for _, r := range before {
				rec := waitFinished(t, d, tokenA, r.ID)
				if !r.Finished() {
					errObj, _ := rec["response"].(map[string]any)["error"].(map[string]any)
					if errObj["code"] != "interrupted" {
						t.Errorf("unfinished %s finished as %v", r.ID, rec["response"])
					}
				}
			}
			d.Stop()
			hits, _, problems := rcv.Snapshot()
			if len(problems) > 0 {
				t.Fatalf("callbacks break the contract: %v", problems)
			}
			for _, r := range before {
				called := contains(want, r.ID)
				if got := hits[r.ID]; (got > 0) != called {
					t.Errorf("%s (%s, callback %s) called back %d times", r.ID, r.Status(), r.CallbackStatus(), got)
				}
			}
		})
	}
}

// A copy killed with SIGKILL in the middle, or stopped with Ctrl-C
// (SIGINT), run again, ends with an exact copy.
func TestCopyKilled(t *testing.T) {
	tasksdtest.Binary(t)
	from := sqliteKind.fresh(t)
	src := sqliteKind.open(t, from).(*sqlitestore.Store)
	const n = 40_000
	batch := make([]taskstore.Task, 0, 1000)
	for i := range n {
		batch = append(batch, taskstore.Task{ID: fmt.Sprintf("k-%06d", i), Type: "images_generations",
			Request: json.RawMessage(`{"prompt":"a cat"}`), Response: json.RawMessage(`{"success":true}`),
			CreatedAt: time.UnixMilli(1_763_000_000_000 + int64(i)), FinishedAt: time.UnixMilli(1_763_000_001_000 + int64(i))})
		if len(batch) == cap(batch) {
			must(t, src.Import(context.Background(), batch))
			batch = batch[:0]
		}
	}
	must(t, src.Close())

	for _, sig := range []os.Signal{os.Kill, os.Interrupt} {
		t.Run(sig.String(), func(t *testing.T) {
			to := sqliteKind.fresh(t)
			cmd := exec.Command(tasksdtest.Binary(t), "copy", "-from", from, "-to", to, "-batch", "200")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			must(t, cmd.Start())
			signalled := false
			for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				if copied := countTasks(t, to); copied >= 2000 {
					must(t, cmd.Process.Signal(sig))
					signalled = true
					break
				}
			}
			err := cmd.Wait()
			if !signalled {
				t.Fatalf("the copy did not get far enough to be stopped:\n%s", out.String())
			}
			if sig == os.Interrupt {
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() != 1 ||
					!strings.Contains(out.String(), "tasksd: copy: interrupted during the copy after copying") {
					t.Fatalf("after Ctrl-C: %v\n%s", err, out.String())
				}
			}
			partial := countTasks(t, to)
			if partial <= 0 || partial >= n {
				t.Fatalf("%d tasks copied before the signal; want some, not all", partial)
			}
			stdout, stderr, code := tasksdCmd(t, "copy", "-from", from, "-to", to)
			if code != 0 || !strings.Contains(stdout, "verified") ||
				!strings.Contains(stdout, fmt.Sprintf("copied %d tasks, skipped %d", n-partial, partial)) {
				t.Fatalf("the copy after the signal (%d copied before) exited %d:\n%s\n%s", partial, code, stdout, stderr)
			}
			if countTasks(t, to) != n {
				t.Fatal("the destination does not hold every task")
			}
		})
	}
}

// countTasks counts the tasks of the SQLite database at path, 0 when it
// does not exist yet.
func countTasks(t *testing.T, path string) int {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		return 0
	}
	db, err := sql.Open("sqlite", sqliteDSN(path)+"&_pragma=query_only(1)")
	must(t, err)
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM tasks`).Scan(&n); err != nil {
		return 0 // not created yet
	}
	return n
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// fileState is what a bad copy must leave alone: the destination's files
// and their bytes.
func fileState(t *testing.T, path string) string {
	t.Helper()
	var b strings.Builder
	for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
		data, err := os.ReadFile(path + suffix)
		if err == nil {
			fmt.Fprintf(&b, "%s %x\n", suffix, sha256.Sum256(data))
		}
	}
	return b.String()
}

// Bad input: each gets one clear line and leaves the destination as it was.
func TestCopyBadInput(t *testing.T) {
	tasksdtest.Binary(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src.db")
	s := sqliteKind.open(t, src)
	copyCorpus(t, s, "http://127.0.0.1:9", 16)
	must(t, s.Close())
	conflicting := filepath.Join(dir, "conflicting.db")
	s = sqliteKind.open(t, conflicting)
	must(t, s.Create(context.Background(), taskstore.Task{ID: "019ad000-0000-7000-8000-000000000003", Type: "x",
		Request: json.RawMessage(`{"mine":1}`)}))
	must(t, s.Close())
	notDB := filepath.Join(dir, "notes.txt")
	must(t, os.WriteFile(notDB, []byte("these are not the tasks you are looking for\n"), 0o644))
	fresh := filepath.Join(dir, "fresh.db")

	for _, tc := range []struct {
		name, from, to, want string
	}{
		{"same", src, src, "name the same database"},
		{"same by another path", src, filepath.Join(dir, ".", "x", "..", "src.db"), "name the same database"},
		{"missing source", filepath.Join(dir, "nope.db"), fresh, "no such file"},
		{"memory source", ":memory:", fresh, ":memory: is refused"},
		{"memory destination", src, ":memory:", ":memory: is refused"},
		{"source not a database", notDB, fresh, "not a database"},
		{"destination not a database", src, notDB, "not a database"},
		{"unreachable postgres", src, "postgres://tasks:secret@127.0.0.1:1/tasks?connect_timeout=5", "connect"},
		{"conflicting destination", src, conflicting, "differ from the source's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			was := fileState(t, tc.to)
			_, stderr, code := tasksdCmd(t, "copy", "-from", tc.from, "-to", tc.to)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			last := lines[len(lines)-1]
			if code == 0 || !strings.HasPrefix(last, "tasksd: copy: ") || !strings.Contains(last, tc.want) {
				t.Fatalf("exit %d, stderr:\n%s\nwant a last line with %q", code, stderr, tc.want)
			}
			if strings.Contains(stderr, "secret") {
				t.Fatalf("the error shows the password: %s", stderr)
			}
			if tc.name != "conflicting destination" && len(lines) != 1 {
				t.Fatalf("%d lines on stderr, want one:\n%s", len(lines), stderr)
			}
			if tc.to != ":memory:" && !strings.HasPrefix(tc.to, "postgres") && fileState(t, tc.to) != was {
				t.Fatalf("the destination %s changed", tc.to)
			}
			if _, err := os.Stat(fresh); err == nil {
				t.Fatalf("a bad copy created %s", fresh)
			}
		})
	}
	// The conflict is listed by id before the error.
	_, stderr, _ := tasksdCmd(t, "copy", "-from", src, "-to", conflicting)
	if !strings.Contains(stderr, "conflict: 019ad000-0000-7000-8000-000000000003: the destination holds a different task: ") ||
		!strings.Contains(stderr, "request") {
		t.Fatalf("the conflict is not listed:\n%s", stderr)
	}
}

// A source a running tasksd writes to is refused unless -live: a SQLite
// file it holds open, a database where it holds leases.
func TestCopyRefusesLiveSource(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		from, to := sqliteKind.fresh(t), sqliteKind.fresh(t)
		d := start(t, nil, "-db", from, "-tokens", writeTokens(t))
		_, stderr, code := tasksdCmd(t, "copy", "-from", from, "-to", to)
		if code == 0 || !strings.Contains(stderr, "open in another process") || !strings.Contains(stderr, "-live") {
			t.Fatalf("copy from a served file exited %d: %s", code, stderr)
		}
		if _, err := os.Stat(to); err == nil {
			t.Fatal("the refused copy created its destination")
		}
		stdout, stderr, code := tasksdCmd(t, "copy", "-live", "-from", from, "-to", to)
		if code != 0 || !strings.Contains(stdout, "verified") {
			t.Fatalf("copy -live exited %d: %s %s", code, stdout, stderr)
		}
		d.Stop()
		// Stopped: the copy goes ahead (nothing to do).
		if stdout, stderr, code := tasksdCmd(t, "copy", "-from", from, "-to", to); code != 0 {
			t.Fatalf("copy from a stopped tasksd's file exited %d: %s %s", code, stdout, stderr)
		}
	})
	t.Run("postgres", func(t *testing.T) {
		from, to := pgKind.fresh(t), sqliteKind.fresh(t)
		s := pgKind.open(t, from)
		x := taskstore.Task{ID: "held", Type: "images_generations", Request: json.RawMessage(`{}`), LeaseUntil: time.Now().Add(time.Minute)}
		must(t, s.Create(context.Background(), x))
		must(t, s.Close())
		_, stderr, code := tasksdCmd(t, "copy", "-from", from, "-to", to)
		if code == 0 || !strings.Contains(stderr, "1 unfinished tasks hold leases") {
			t.Fatalf("copy from a leased database exited %d: %s", code, stderr)
		}
		stdout, stderr, code := tasksdCmd(t, "copy", "-live", "-from", from, "-to", to)
		if code != 0 || !strings.Contains(stdout, "copied 1 tasks") {
			t.Fatalf("copy -live exited %d: %s %s", code, stdout, stderr)
		}
	})
}

// A backup taken while 8 clients keep submitting holds every task
// acknowledged before it started, passes integrity_check and opens as a
// store.
func TestBackupUnderLoad(t *testing.T) {
	rcv := newReceiver(t)
	db := sqliteKind.fresh(t)
	d := start(t, []string{"TASKSD_CALLBACK_SECRET=" + secret}, "-db", db, "-tokens", writeTokens(t),
		"-allow-private-callbacks", "-standin-delay", "5ms")
	var (
		mu    sync.Mutex
		acked []string
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				status, ans, raw := d.post("/openai/images/generations", tokenA, map[string]any{
					"model": "gpt-image-1", "prompt": "A cat", "callback_url": rcv.URL + "/cb"})
				if status == 429 { // the queue is full: the load is at its peak
					time.Sleep(5 * time.Millisecond)
					continue
				}
				if status != 200 {
					t.Errorf("submit: %d %s", status, raw)
					return
				}
				mu.Lock()
				acked = append(acked, ans["task_id"].(string))
				mu.Unlock()
			}
		})
	}
	time.Sleep(time.Second)
	mu.Lock()
	before := append([]string(nil), acked...)
	mu.Unlock()
	backup := filepath.Join(t.TempDir(), "backup.db")
	stdout, stderr, code := tasksdCmd(t, "backup", "-db", db, "-to", backup)
	close(stop)
	wg.Wait()
	if code != 0 || !strings.Contains(stdout, "integrity_check ok") {
		t.Fatalf("backup exited %d: %s %s", code, stdout, stderr)
	}
	mu.Lock()
	total := len(acked)
	mu.Unlock()
	if len(before) < 10 {
		t.Fatalf("only %d tasks acknowledged before the backup", len(before))
	}
	must(t, integrityCheck(context.Background(), backup))
	s := sqliteKind.open(t, backup)
	defer s.Close()
	for _, id := range before {
		if _, err := s.Get(context.Background(), id); err != nil {
			t.Fatalf("task %s, acknowledged before the backup, is not in it: %v", id, err)
		}
	}
	t.Logf("%d tasks acknowledged before the backup, %d in all", len(before), total)
	d.Stop()

	// Refusals: PostgreSQL, an existing target, a missing source.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-db", "postgres://u:secret@127.0.0.1:1/tasks", "-to", filepath.Join(t.TempDir(), "x")}, "pg_dump"},
		{[]string{"-db", db, "-to", backup}, "exists already"},
		{[]string{"-db", filepath.Join(t.TempDir(), "none.db"), "-to", filepath.Join(t.TempDir(), "y")}, "no such file"},
	} {
		_, stderr, code := tasksdCmd(t, append([]string{"backup"}, tc.args...)...)
		if code == 0 || !strings.Contains(stderr, tc.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("backup %v exited %d: %s", tc.args, code, stderr)
		}
	}
}
