package pgstore

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// deliveredTask stores a finished task whose callback was delivered.
func deliveredTask(t *testing.T, s *Store, id string, at time.Time) {
	t.Helper()
	ctx := context.Background()
	if err := s.Create(ctx, taskstore.Task{ID: id, Type: "t", Request: json.RawMessage(`{}`),
		Callback: taskstore.Callback{URL: "https://hooks.example.com/" + id}, CreatedAt: at}); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(ctx, id, json.RawMessage(`{"success":true}`), at); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordAttempt(ctx, id, taskstore.Attempt{At: at, Status: 204, Delivered: true}); err != nil {
		t.Fatal(err)
	}
}

// waitBlocked waits until a statement starting with prefix waits for a lock.
func waitBlocked(t *testing.T, s *Store, prefix string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var waiting int
		if err := s.db.QueryRow(`SELECT count(*) FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND starts_with(query, $1)`, prefix).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no statement %q ever waited for a lock", prefix)
		}
	}
}

// A Redeliver that meets a row another replica is claiming waits for that
// claim instead of skipping the row, then decides on the row as the claim
// left it, although the row it saw when it started was another: committed,
// the delivery is in flight and left alone (but listed); rolled back, the
// delivery is due as if the claim had never been tried; claimed and
// delivered in that transaction, it is made due again.
func TestRedeliverWaitsForClaim(t *testing.T) {
	for _, mode := range []string{"Committed", "RolledBack", "Delivered"} {
		t.Run(mode, func(t *testing.T) {
			a, url := openInternal(t)
			ctx := context.Background()
			base := time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)
			deliveredTask(t, a, "r", base)
			// Made due at base+1s by an operator.
			if got, err := a.Redeliver(ctx, []string{"r"}, base.Add(time.Second)); err != nil || !slices.Equal(got, []string{"r"}) {
				t.Fatalf("Redeliver = %v, %v", got, err)
			}
			// Replica b claims it, its transaction still open.
			claimAt, lease := base.Add(2*time.Second), time.Hour
			b, tx := holdLocks(t, ctx, url, `SELECT 1`)
			rows, err := tx.QueryContext(ctx, claimDeliveries, claimAt.UnixMilli(), claimAt.Add(lease).UnixMilli(), 10, "")
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for rows.Next() {
				n++
			}
			if rows.Close(); n != 1 {
				t.Fatalf("the open claim took %d deliveries", n)
			}
			if mode == "Delivered" {
				if _, err := tx.ExecContext(ctx, recordAttempt, "r", 204, "", claimAt.UnixMilli(), 0); err != nil {
					t.Fatal(err)
				}
			}
			at := base.Add(3 * time.Second)
			type answer struct {
				ids []string
				err error
			}
			res := make(chan answer, 1)
			go func() {
				ids, err := a.Redeliver(ctx, []string{"r"}, at)
				res <- answer{ids, err}
			}()
			waitBlocked(t, b, "WITH l AS MATERIALIZED (\n\tSELECT id FROM tasks WHERE id = ANY($1)")
			if mode == "RolledBack" {
				err = tx.Rollback()
			} else {
				err = tx.Commit()
			}
			if err != nil {
				t.Fatal(err)
			}
			got := <-res
			if got.err != nil || !slices.Equal(got.ids, []string{"r"}) {
				t.Fatalf("Redeliver after the claim = %v, %v; want [r]", got.ids, got.err)
			}
			x, err := a.Get(ctx, "r")
			if err != nil {
				t.Fatal(err)
			}
			again, err := a.ClaimDeliveries(ctx, "", at, time.Minute, 10)
			if err != nil {
				t.Fatal(err)
			}
			switch mode {
			case "Committed":
				// In flight: left to the claim, and not handed out again.
				if !x.Callback.NextAttemptAt.Equal(claimAt.Add(lease)) || len(again) != 0 {
					t.Fatalf("Redeliver moved a delivery in flight: next %v, claimed again %d", x.Callback.NextAttemptAt, len(again))
				}
			case "RolledBack":
				// Due since base+1s, which Redeliver keeps.
				if !x.Callback.NextAttemptAt.Equal(base.Add(time.Second)) || len(again) != 1 {
					t.Fatalf("after a rolled back claim: next %v, claimed %d; want due at %v and claimed once",
						x.Callback.NextAttemptAt, len(again), base.Add(time.Second))
				}
			case "Delivered":
				if x.CallbackStatus() != taskstore.CallbackPending || !x.Callback.NextAttemptAt.Equal(at) ||
					x.Callback.Attempts != 2 || len(again) != 1 {
					t.Fatalf("after a claim and a delivery: %q, next %v, attempts %d, claimed %d; want pending at %v, 2, once",
						x.CallbackStatus(), x.Callback.NextAttemptAt, x.Callback.Attempts, len(again), at)
				}
			}
		})
	}
}

// ClaimDeliveries passes over a row that a Redeliver holds (it does not
// wait for it) and finds it due at its next call.
func TestClaimSkipsRowBeingRedelivered(t *testing.T) {
	a, url := openInternal(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)
	for _, id := range []string{"held", "free"} {
		deliveredTask(t, a, id, base)
	}
	if got, err := a.Redeliver(ctx, []string{"held", "free"}, base); err != nil || len(got) != 2 {
		t.Fatalf("Redeliver = %v, %v", got, err)
	}
	// The row lock a Redeliver takes, held open.
	_, tx := holdLocks(t, ctx, url, `SELECT id FROM tasks WHERE id = 'held' FOR UPDATE`)
	got, err := a.ClaimDeliveries(ctx, "", base, time.Minute, 10)
	if err != nil || len(got) != 1 || got[0].ID != "free" {
		t.Fatalf("ClaimDeliveries with held locked = %d tasks, %v; want free alone", len(got), err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	got, err = a.ClaimDeliveries(ctx, "", base, time.Minute, 10)
	if err != nil || len(got) != 1 || got[0].ID != "held" {
		t.Fatalf("ClaimDeliveries after the lock = %d tasks, %v; want held", len(got), err)
	}
}

// Two replicas (two stores, two pools) race Redeliver against
// ClaimDeliveries over many deliveries at once, round after round: every
// redelivered callback is claimed exactly once per round.
func TestRedeliverClaimReplicas(t *testing.T) {
	a, url := openInternal(t)
	b, err := Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	base := time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)
	const n = 40
	var all []string
	for i := range n {
		id := fmt.Sprintf("r-%02d", i)
		deliveredTask(t, a, id, base)
		all = append(all, id)
	}
	now := base.Add(time.Second)
	for round := range 8 {
		var (
			mu     sync.Mutex
			counts = map[string]int{}
			wg     sync.WaitGroup
			errs   = make(chan error, 16)
		)
		for g := range 8 {
			s := []*Store{a, b}[g%2]
			wg.Go(func() {
				for range 3 {
					if g%4 < 2 {
						list := slices.Clone(all)
						if g%4 == 1 {
							slices.Reverse(list)
						}
						if _, err := s.Redeliver(ctx, list, now); err != nil {
							errs <- err
							return
						}
						continue
					}
					got, err := s.ClaimDeliveries(ctx, "", now, time.Hour, 7)
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					for _, x := range got {
						counts[x.ID]++
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
		for {
			got, err := b.ClaimDeliveries(ctx, "", now, time.Hour, 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) == 0 {
				break
			}
			for _, x := range got {
				counts[x.ID]++
			}
		}
		for _, id := range all {
			if counts[id] != 1 {
				t.Fatalf("round %d: %s claimed %d times, want once", round, id, counts[id])
			}
			// The claims end: delivered again, ready for the next round.
			if err := a.RecordAttempt(ctx, id, taskstore.Attempt{At: now, Status: 204, Delivered: true}); err != nil {
				t.Fatal(err)
			}
		}
		now = now.Add(time.Second)
	}
}
