package pgstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tasksapi/tasks/internal/pgtest"
	"github.com/tasksapi/tasks/taskstore"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func randomInt() int { return rand.IntN(1 << 30) }

// TestClaimTwoStores runs two stores (two Opens, as two replicas would) over
// one schema, each with several goroutines claiming due deliveries at once:
// no delivery is handed out twice within its claim, and none is missed.
func TestClaimTwoStores(t *testing.T) {
	a, url := openInternal(t)
	b, err := Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	const n = 600
	now := time.Now()
	for i := range n {
		id := fmt.Sprintf("cb-%04d", i)
		x := taskstore.Task{ID: id, Type: "t", Request: []byte(`{}`), Callback: taskstore.Callback{URL: "http://r/"}}
		if err := a.Create(ctx, x); err != nil {
			t.Fatal(err)
		}
		if err := a.Finish(ctx, id, json.RawMessage(`{}`), now.Add(-time.Duration(i)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	var (
		mu      sync.Mutex
		claimed = map[string]int{}
		wg      sync.WaitGroup
		errs    = make(chan error, 8)
	)
	for w := range 8 {
		s := a
		if w%2 == 1 {
			s = b
		}
		wg.Go(func() {
			for {
				got, err := s.ClaimDeliveries(ctx, "", now, time.Hour, 1+w)
				if err != nil {
					errs <- err
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
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(claimed) != n {
		t.Fatalf("%d distinct deliveries claimed, want %d", len(claimed), n)
	}
	for id, c := range claimed {
		if c != 1 {
			t.Fatalf("delivery %s claimed %d times within one lease", id, c)
		}
	}
	// Once the claims expire, they are all due again.
	got, err := b.ClaimDeliveries(ctx, "", now.Add(time.Hour), time.Minute, 2*n)
	if err != nil || len(got) != n {
		t.Fatalf("after expiry: %d claimed, %v; want %d", len(got), err, n)
	}
	if !slices.IsSortedFunc(got, func(x, y taskstore.Task) int { return x.Callback.NextAttemptAt.Compare(y.Callback.NextAttemptAt) }) {
		t.Fatal("claims are not returned in due order")
	}
}

// TestCountsMatch creates, deletes and prunes tasks through two stores (so
// through many server processes, hence several count stripes) and checks
// that the totals summed from task_counts equal count(*) over the tasks, for
// every filter of application, user and types.
func TestCountsMatch(t *testing.T) {
	a, url := openInternal(t)
	b, err := Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	apps := []string{"", "app-a", "app-b"}
	users := []string{"", "u1", "u2", "u3"}
	types := []string{"images_generations", "images_edits"}
	var wg sync.WaitGroup
	for w := range 8 {
		s := []*Store{a, b}[w%2]
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for i := range 60 {
				x := taskstore.Task{
					ID: fmt.Sprintf("w%d-%03d", w, i), Type: types[rng.IntN(len(types))], Request: []byte(`{}`),
					ApplicationID: apps[rng.IntN(len(apps))], UserID: users[rng.IntN(len(users))],
					CreatedAt: explainBase.Add(time.Duration(rng.IntN(1000)) * time.Millisecond),
				}
				if err := s.Create(ctx, x); err != nil {
					t.Error(err)
					return
				}
				if i%7 == 0 {
					if err := s.Delete(ctx, x.ID); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if _, err := b.Prune(ctx, explainBase.Add(100*time.Millisecond), 1000); err != nil {
		t.Fatal(err)
	}
	var stripes int
	if err := a.db.Get(&stripes, `SELECT count(DISTINCT stripe) FROM task_counts`); err != nil {
		t.Fatal(err)
	}
	t.Logf("counts kept in %d stripes", stripes)
	for _, app := range append(apps, "none") {
		for _, user := range append(users, "none") {
			for _, ty := range [][]string{nil, {types[0]}, types, {"other"}} {
				f := taskstore.Filter{Types: ty}
				if app != "none" {
					f.ApplicationID = app
				}
				if user != "none" {
					f.UserID = user
				}
				q, ok := buildFind(f)
				if !ok || !q.fromCounts {
					t.Fatalf("%+v: not counted from task_counts", f)
				}
				_, total, err := a.Find(ctx, f)
				if err != nil {
					t.Fatal(err)
				}
				var want int
				if err := a.db.Get(&want, `SELECT count(*) FROM tasks WHERE ($1 = '' OR application_id = $1) AND ($2 = '' OR user_id = $2)
					AND (coalesce(cardinality($3::text[]), 0) = 0 OR type = ANY($3))`, f.ApplicationID, f.UserID, ty); err != nil {
					t.Fatal(err)
				}
				if total != want {
					t.Fatalf("Find(%+v) total = %d, count(*) = %d", f, total, want)
				}
			}
		}
	}
}

// TestUnstorableStrings: values PostgreSQL text cannot hold are refused on
// Create and match nothing elsewhere, instead of failing with a database
// error.
func TestUnstorableStrings(t *testing.T) {
	s, _ := openInternal(t)
	ctx := context.Background()
	ok := taskstore.Task{ID: "ok", Type: "t", Request: []byte(`{"a":"\u0000 \ud800"}`)}
	if err := s.Create(ctx, ok); err != nil {
		t.Fatalf("JSON with escaped NUL and a lone surrogate: %v", err)
	}
	if got, err := s.Get(ctx, "ok"); err != nil || string(got.Request) != string(ok.Request) {
		t.Fatalf("Get = %s, %v", got.Request, err)
	}
	for _, tc := range []struct {
		name string
		edit func(*taskstore.Task)
	}{
		{"NULInID", func(x *taskstore.Task) { x.ID = "a\x00b" }},
		{"NULInUser", func(x *taskstore.Task) { x.UserID = "u\x00" }},
		{"BadUTF8URL", func(x *taskstore.Task) { x.Callback.URL = "http://\xff/" }},
		{"BadUTF8Request", func(x *taskstore.Task) { x.Request = []byte("{\"a\":\"\xff\"}") }},
	} {
		x := taskstore.Task{ID: "bad", Type: "t", Request: []byte(`{}`)}
		tc.edit(&x)
		if err := s.Create(ctx, x); !errors.Is(err, taskstore.ErrInvalid) {
			t.Errorf("%s: Create = %v, want ErrInvalid", tc.name, err)
		}
	}
	if _, err := s.Get(ctx, "a\x00b"); !errors.Is(err, taskstore.ErrNotFound) {
		t.Errorf("Get(NUL id) = %v, want ErrNotFound", err)
	}
	if _, total, err := s.Find(ctx, taskstore.Filter{IDs: []string{"ok", "x\x00"}, UserID: "", Limit: 5}); err != nil || total != 1 {
		t.Errorf("Find with a NUL id among others: total %d, %v; want 1", total, err)
	}
	if _, total, err := s.Find(ctx, taskstore.Filter{UserID: "\xff", Limit: 5}); err != nil || total != 0 {
		t.Errorf("Find by an invalid UTF-8 user: total %d, %v; want 0", total, err)
	}
	cb := taskstore.Task{ID: "cb", Type: "t", Request: []byte(`{}`), Callback: taskstore.Callback{URL: "http://r/"}}
	if err := s.Create(ctx, cb); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(ctx, "cb", []byte(`{}`), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordAttempt(ctx, "cb", taskstore.Attempt{At: time.Now(), Error: "bad \xff\x00x", Next: time.Now()}); err != nil {
		t.Fatalf("RecordAttempt with an unstorable error text: %v", err)
	}
	if got, _ := s.Get(ctx, "cb"); got.Callback.LastError != "bad \uFFFDx" {
		t.Errorf("stored LastError = %q, want %q", got.Callback.LastError, "bad \uFFFDx")
	}
	if err := s.Delete(ctx, "a\x00b"); !errors.Is(err, taskstore.ErrNotFound) {
		t.Errorf("Delete(NUL id) = %v, want ErrNotFound", err)
	}
}

// TestCreateBatched creates tasks from many goroutines at once, so that
// creates share INSERT statements, with ids repeated inside and across
// batches: each id is stored once, by exactly one caller, and every other
// caller gets ErrConflict.
func TestCreateBatched(t *testing.T) {
	s, _ := openInternal(t)
	ctx := context.Background()
	if err := s.Create(ctx, taskstore.Task{ID: "dup-0", Type: "t", Request: []byte(`{"first":true}`)}); err != nil {
		t.Fatal(err)
	}
	const callers, ids = 64, 8
	var ok, conflict atomic.Int32
	var wg sync.WaitGroup
	for round := range 5 {
		for i := range callers {
			wg.Go(func() {
				x := taskstore.Task{
					ID: fmt.Sprintf("dup-%d", (round*callers+i)%ids), Type: "t", UserID: fmt.Sprint("u", i%3),
					Request: []byte(fmt.Sprintf(`{"caller":%d}`, i)),
				}
				switch err := s.Create(ctx, x); {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, taskstore.ErrConflict):
					conflict.Add(1)
				default:
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if ok.Load() != ids-1 || conflict.Load() != 5*callers-(ids-1) {
		t.Fatalf("%d creates succeeded and %d conflicted, want %d and %d", ok.Load(), conflict.Load(), ids-1, 5*callers-(ids-1))
	}
	if got, err := s.Get(ctx, "dup-0"); err != nil || string(got.Request) != `{"first":true}` {
		t.Fatalf("the existing task was overwritten: %s, %v", got.Request, err)
	}
	if _, total, err := s.Find(ctx, taskstore.Filter{}); err != nil || total != ids {
		t.Fatalf("total = %d, %v; want %d", total, err, ids)
	}
}

// Close waits for the calls in flight: a Create whose INSERT is held up
// (another transaction locks the table) keeps Close from returning, and is
// then stored and answered nil, not cancelled under the caller's feet.
func TestCloseWaitsForCalls(t *testing.T) {
	s, url := openInternal(t)
	ctx := context.Background()
	locker, tx := holdLocks(t, ctx, url, `LOCK TABLE tasks IN EXCLUSIVE MODE`)
	created := make(chan error, 1)
	go func() {
		created <- s.Create(ctx, taskstore.Task{ID: "held", Type: "t", Request: json.RawMessage(`{}`)})
	}()
	// Wait until the INSERT is blocked on the lock.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var waiting int
		if err := locker.db.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO tasks%'`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the INSERT never blocked on the lock")
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while a Create was in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := tx.Rollback(); err != nil { // release the lock
		t.Fatal(err)
	}
	if err := <-created; err != nil {
		t.Errorf("Create: %v, want nil", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := locker.Get(ctx, "held"); err != nil {
		t.Errorf("the task is not stored: %v", err)
	}
}

// Prune skips rows another transaction holds locked instead of waiting for
// them: with one old task locked (as a Finish in flight or another replica's
// Prune would), Prune deletes the others at once and leaves that one for the
// next call.
func TestPruneSkipsLockedRows(t *testing.T) {
	s, url := openInternal(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	old := time.Now().Add(-time.Hour)
	for i := range 3 {
		x := taskstore.Task{ID: fmt.Sprint("old-", i), Type: "t", Request: json.RawMessage(`{}`), CreatedAt: old.Add(time.Duration(i) * time.Second)}
		if err := s.Create(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	_, tx := holdLocks(t, ctx, url, `SELECT id FROM tasks WHERE id = 'old-0' FOR UPDATE`)
	// Were Prune to wait for the lock, it would hold until ctx ends (this
	// goroutine holds the lock) and fail with the context's error.
	n, err := s.Prune(ctx, time.Now(), 10)
	if err != nil || n != 2 {
		t.Fatalf("Prune with old-0 locked = %d, %v; want 2, nil", n, err)
	}
	if _, err := s.Get(ctx, "old-0"); err != nil {
		t.Fatalf("the locked task: %v, want it kept", err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Prune(ctx, time.Now(), 10); err != nil || n != 1 {
		t.Fatalf("Prune after the lock ended = %d, %v; want 1, nil", n, err)
	}
}

// holdLocks opens a second store on url (as another replica would be) and
// runs stmt in a transaction on it, which holds the locks stmt takes until
// the test rolls it back or ends.
func holdLocks(t *testing.T, ctx context.Context, url, stmt string) (*Store, *sql.Tx) {
	t.Helper()
	locker, err := Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { locker.Close() })
	tx, err := locker.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback() })
	if _, err := tx.ExecContext(ctx, stmt); err != nil {
		t.Fatal(err)
	}
	return locker, tx
}

// Ordering and index lookups compare strings byte for byte whatever the
// server's locale: every text column is declared COLLATE "C". (The test
// server runs with a C locale, so a test of the order alone could not tell.)
func TestTextColumnsCollateC(t *testing.T) {
	s, _ := openInternal(t)
	rows, err := s.db.QueryContext(context.Background(), `SELECT table_name, column_name, coalesce(collation_name, '')
		FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name IN ('tasks', 'task_counts', 'task_status_counts', 'task_totals') AND data_type = 'text'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var table, column, collation string
		if err := rows.Scan(&table, &column, &collation); err != nil {
			t.Fatal(err)
		}
		n++
		if collation != "C" {
			t.Errorf("%s.%s has collation %q, want C", table, column, collation)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 18 {
		t.Errorf("found %d text columns, want those of tasks and the counters", n)
	}
}

// A Find with a creation window is planned for its actual values each time
// (pgx's QueryExecModeExec), so that a narrow window is not served by a
// generic plan made for a wide one; other filters use prepared statements.
func TestWindowedFindPlannedEachTime(t *testing.T) {
	windowed, ok := buildFind(taskstore.Filter{UserID: "u", CreatedMin: time.UnixMilli(1), Limit: 12})
	if !ok {
		t.Fatal("no statement for a windowed filter")
	}
	for name, args := range map[string][]any{"count": windowed.countArgs(), "page": windowed.pageArgs(taskstore.Filter{Limit: 12})} {
		if len(args) == 0 || args[0] != pgx.QueryExecModeExec {
			t.Errorf("windowed %s args %v do not start with QueryExecModeExec", name, args)
		}
	}
	plain, _ := buildFind(taskstore.Filter{UserID: "u", Limit: 12})
	if args := plain.pageArgs(taskstore.Filter{Limit: 12}); len(args) > 0 && args[0] == pgx.QueryExecModeExec {
		t.Errorf("unwindowed page args %v ask for planning each time", args)
	}
}

// TestYoungTableAnalyzed: a store opened on a new (empty) tasks table
// analyses it once it has stored a thousand tasks, without waiting for
// autovacuum, so that the planner knows the types and statuses are not
// selective; an analysed table is left to autovacuum.
func TestYoungTableAnalyzed(t *testing.T) {
	s, url := openInternal(t)
	ctx := context.Background()
	pgtest.Exec(t, url, `ALTER TABLE tasks SET (autovacuum_enabled = off)`)
	reltuples := func() float64 {
		db, err := sql.Open("pgx", url)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var n float64
		if err := db.QueryRow(`SELECT reltuples FROM pg_class WHERE oid = 'tasks'::regclass`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < 1200; i += 8 {
				if err := s.Create(ctx, taskstore.Task{ID: fmt.Sprintf("y%05d", i), Type: "t", Request: json.RawMessage(`{}`)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for reltuples() < 1000 {
		if time.Now().After(deadline) {
			t.Fatalf("after 1,200 creates, reltuples = %v: the new table was not analysed", reltuples())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
