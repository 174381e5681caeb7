package pgstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasksapi/tasks/internal/logtest"
	"github.com/tasksapi/tasks/internal/pgtest"
	"github.com/tasksapi/tasks/pgstore"
	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storetest"
)

// proxied opens a store on a fresh schema through a proxy the test
// controls.
func proxied(t *testing.T, opts ...pgstore.Option) (*pgstore.Store, *pgtest.Proxy) {
	t.Helper()
	dbURL := pgtest.FreshSchema(t, pgtest.URL(t))
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	p := pgtest.NewProxy(t, u.Host)
	s, err := pgstore.Open(context.Background(), p.URL(dbURL), opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, p
}

// TestUnavailable runs storetest's outage suite with the proxy refusing
// connections and cutting the open ones.
func TestUnavailable(t *testing.T) {
	pgtest.URL(t)
	storetest.RunUnavailable(t, func(t *testing.T) storetest.Outage {
		s, p := proxied(t, pgstore.WithRetryGrace(100*time.Millisecond))
		return storetest.Outage{Store: s, Cut: p.Down, Restore: p.Up}
	})
}

// TestPingUnavailable: Ping answers at once, without retrying, and says
// whether the database answers.
func TestPingUnavailable(t *testing.T) {
	s, p := proxied(t, pgstore.WithRetryGrace(time.Minute))
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	p.Down()
	began := time.Now()
	if err := s.Ping(ctx); !errors.Is(err, taskstore.ErrUnavailable) || time.Since(began) > 5*time.Second {
		t.Fatalf("Ping while down: %v after %v, want ErrUnavailable at once", err, time.Since(began))
	}
	p.Up()
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping after Up: %v", err)
	}
	s.Close()
	if err := s.Ping(ctx); !errors.Is(err, taskstore.ErrClosed) {
		t.Fatalf("Ping after Close: %v", err)
	}
}

// TestOutageWithinGrace: calls made while the database is unreachable for
// a second wait for it and succeed, writes included; the store logs the
// outage once and its end once.
func TestOutageWithinGrace(t *testing.T) {
	var logs logtest.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, p := proxied(t, pgstore.WithRetryGrace(20*time.Second), pgstore.WithLogger(log))
	ctx := context.Background()
	const n = 8
	for i := range n {
		x := taskstore.Task{ID: fmt.Sprint("t", i), Type: "t", Request: json.RawMessage(`{}`), Callback: taskstore.Callback{URL: "http://r/"}}
		if err := s.Create(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	p.Down()
	time.AfterFunc(time.Second, p.Up)
	at := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, 2*n)
	for i := range n {
		id := fmt.Sprint("t", i)
		wg.Go(func() {
			if errs[i] = s.Start(ctx, id, at); errs[i] == nil {
				errs[i] = s.Finish(ctx, id, json.RawMessage(`{"success":true}`), at)
			}
		})
		wg.Go(func() {
			errs[n+i] = s.Create(ctx, taskstore.Task{ID: fmt.Sprint("new", i), Type: "t", Request: json.RawMessage(`{}`)})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("calls during a 1 s outage: %v", err)
	}
	for i := range n {
		if got, err := s.Get(ctx, fmt.Sprint("t", i)); err != nil || !got.Finished() || got.CallbackStatus() != taskstore.CallbackPending {
			t.Fatalf("t%d after the outage: %+v, %v", i, got, err)
		}
	}
	out := logs.String()
	if c := strings.Count(out, "database unavailable"); c != 1 {
		t.Errorf("the outage was logged %d times, want once:\n%s", c, out)
	}
	if c := strings.Count(out, "database available again"); c != 1 {
		t.Errorf("its end was logged %d times, want once:\n%s", c, out)
	}
}

// TestLostAnswers cuts the connection in the middle of each write the
// recorder must not lose, before the statement reaches the server and after
// the server ran it: either way the call succeeds, and the write is applied
// once.
func TestLostAnswers(t *testing.T) {
	s, p := proxied(t, pgstore.WithRetryGrace(20*time.Second))
	ctx := context.Background()
	at := time.Now().Truncate(time.Millisecond)
	for _, after := range []bool{false, true} {
		name := map[bool]string{false: "BeforeServer", true: "AfterServer"}[after]
		t.Run(name, func(t *testing.T) {
			id := "lost-" + name
			cut := func(match string) <-chan struct{} {
				done := make(chan struct{})
				p.Cut(&pgtest.Cut{Match: []byte(match), AfterSend: after, Done: done})
				return done
			}
			wasCut := func(what string, done <-chan struct{}) {
				t.Helper()
				select {
				case <-done:
				default:
					t.Fatalf("%s: the proxy never saw the statement to cut", what)
				}
			}

			done := cut(id)
			x := taskstore.Task{ID: id, Type: "t", Request: json.RawMessage(`{"prompt":"` + id + `"}`),
				CreatedAt: at, Callback: taskstore.Callback{URL: "http://r/"}}
			if err := s.Create(ctx, x); err != nil {
				t.Fatalf("Create: %v", err)
			}
			wasCut("Create", done)

			done = cut(id)
			if err := s.Start(ctx, id, at); err != nil {
				t.Fatalf("Start: %v", err)
			}
			wasCut("Start", done)

			resp := `{"success":true,"answer":"` + id + `-response"}`
			done = cut(id + "-response")
			if err := s.Finish(ctx, id, json.RawMessage(resp), at); err != nil {
				t.Fatalf("Finish: %v", err)
			}
			wasCut("Finish", done)

			claimed, err := s.ClaimDeliveries(ctx, "", at.Add(time.Second), time.Minute, 10)
			if err != nil || len(claimed) != 1 {
				t.Fatalf("claim: %v, %v", claimed, err)
			}
			// A failed attempt, then (claimed again) a delivered one.
			done = cut(id)
			fail := taskstore.Attempt{At: at, Status: 503, Error: "status 503", Next: at.Add(time.Second)}
			if err := s.RecordAttempt(ctx, id, fail); err != nil {
				t.Fatalf("RecordAttempt (failed): %v", err)
			}
			wasCut("RecordAttempt (failed)", done)
			if claimed, err = s.ClaimDeliveries(ctx, "", at.Add(2*time.Second), time.Minute, 10); err != nil || len(claimed) != 1 {
				t.Fatalf("second claim: %v, %v", claimed, err)
			}
			done = cut(id)
			if err := s.RecordAttempt(ctx, id, taskstore.Attempt{At: at.Add(2 * time.Second), Status: 204, Delivered: true}); err != nil {
				t.Fatalf("RecordAttempt (delivered): %v", err)
			}
			wasCut("RecordAttempt (delivered)", done)

			got, err := s.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if !got.CreatedAt.Equal(at) || !got.StartedAt.Equal(at) || !got.FinishedAt.Equal(at) || string(got.Response) != resp ||
				got.Callback.Attempts != 2 || got.CallbackStatus() != taskstore.CallbackDelivered || got.Callback.LastStatus != 204 {
				t.Fatalf("after the cuts: %+v", got)
			}
		})
	}
	// A delete whose answer is lost is not repeated (a repeat would say
	// "not found" for the task it deleted): it reports the outage.
	x := taskstore.Task{ID: "to-be-deleted", Type: "t", Request: json.RawMessage(`{}`)}
	if err := s.Create(ctx, x); err != nil {
		t.Fatal(err)
	}
	p.Cut(&pgtest.Cut{Match: []byte(x.ID), AfterSend: true})
	if err := s.Delete(ctx, x.ID); !errors.Is(err, taskstore.ErrUnavailable) {
		t.Fatalf("Delete whose answer was lost: %v, want ErrUnavailable", err)
	}
	if _, err := s.Get(ctx, x.ID); !errors.Is(err, taskstore.ErrNotFound) {
		t.Fatalf("the delete was not applied; Get: %v", err)
	}
}

// TestStartupWait: Open waits for a database that is not reachable yet,
// logging each wait, and fails at once without the option or when waiting
// cannot help.
func TestStartupWait(t *testing.T) {
	dbURL := pgtest.FreshSchema(t, pgtest.URL(t))
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	p := pgtest.NewProxy(t, u.Host)
	p.Down()
	ctx := context.Background()

	began := time.Now()
	_, err = pgstore.Open(ctx, p.URL(dbURL))
	if !errors.Is(err, taskstore.ErrUnavailable) || time.Since(began) > 5*time.Second {
		t.Fatalf("Open without a wait: %v after %v, want ErrUnavailable at once", err, time.Since(began))
	}
	if !strings.Contains(err.Error(), "connect") {
		t.Fatalf("Open's error %q does not say it could not connect", err)
	}

	var logs logtest.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	time.AfterFunc(1500*time.Millisecond, p.Up)
	s, err := pgstore.Open(ctx, p.URL(dbURL), pgstore.WithStartupWait(30*time.Second), pgstore.WithLogger(log))
	if err != nil {
		t.Fatalf("Open with a wait: %v\n%s", err, logs.String())
	}
	s.Close()
	if c := strings.Count(logs.String(), "waiting for the database"); c < 2 {
		t.Fatalf("%d waits logged, want one per try:\n%s", c, logs.String())
	}

	p.Down()
	began = time.Now()
	_, err = pgstore.Open(ctx, p.URL(dbURL), pgstore.WithStartupWait(700*time.Millisecond))
	if !errors.Is(err, taskstore.ErrUnavailable) || !strings.Contains(err.Error(), "waited 700ms") ||
		time.Since(began) < 700*time.Millisecond || time.Since(began) > 5*time.Second {
		t.Fatalf("Open with a short wait: %v after %v", err, time.Since(began))
	}
	p.Up()

	// A missing database is not waited for.
	u.Path = "/no_such_database_for_pgstore"
	began = time.Now()
	_, err = pgstore.Open(ctx, u.String(), pgstore.WithStartupWait(time.Minute))
	if err == nil || errors.Is(err, taskstore.ErrUnavailable) || time.Since(began) > 5*time.Second {
		t.Fatalf("Open of a missing database: %v after %v, want a failure at once", err, time.Since(began))
	}
}
