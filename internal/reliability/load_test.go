package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tasksapi/tasks/internal/tasksdtest"
)

// TestLoad: 64 concurrent clients mix callback-mode and async submissions,
// retrieve, retrieve_batch and delete for a fixed number of requests against
// tasksd on SQLite. No answer is a 5xx (or a transport error); no task is
// lost (every task_id not deleted by a client stays retrievable, and a
// retrieve answers {} only for a deleted id); no id is deleted twice; the
// final count equals the tasks created minus those deleted.
func TestLoad(t *testing.T) {
	const clients = 64
	total := pick(3000, 30000)

	rcv := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{})
	db := filepath.Join(t.TempDir(), "tasks.db")
	d := tasksdtest.Start(t, nil, "-db", db, "-tokens", writeTokens(t), "-allow-private-callbacks",
		"-standin-delay", "0s", "-callback-schedule", "0s,100ms,200ms", "-callback-timeout", "2s", "-lease", "5s")
	tasksURL := d.URL() + "/openai/tasks"

	var (
		mu       sync.Mutex
		created  []string
		deleted  = map[string]bool{}
		emptyFor []string // ids a retrieve answered {} for
		failures []string
		counts   = map[string]int{}
		next     atomic.Int64
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
		mu.Unlock()
	}
	randomID := func(rng *rand.Rand) string {
		mu.Lock()
		defer mu.Unlock()
		if len(created) == 0 {
			return "00000000-0000-0000-0000-000000000000"
		}
		return created[rng.IntN(len(created))]
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 42))
			for {
				n := next.Add(1)
				if n > int64(total) {
					return
				}
				var op string
				var a answer
				var err error
				switch p := rng.IntN(100); {
				case p < 40:
					op = "submit"
					body := map[string]any{"prompt": fmt.Sprintf("load %d", n), "trace_id": fmt.Sprintf("load-%d", n%50)}
					if n%2 == 0 {
						body["callback_url"] = rcv.URL + "/cb"
					} else {
						body["async"] = true
					}
					a, err = postJSON(ctx, d.URL()+"/openai/images/generations", tokenA, body)
					if err == nil && a.status == 200 {
						id := a.str("task_id")
						if !uuidRE.MatchString(id) {
							fail("submit answered %s", a.raw)
							break
						}
						mu.Lock()
						created = append(created, id)
						mu.Unlock()
					}
				case p < 65:
					op = "retrieve"
					id := randomID(rng)
					a, err = postJSON(ctx, tasksURL, tokenA, map[string]any{"action": "retrieve", "id": id})
					if err == nil && a.status == 200 {
						switch {
						case string(a.raw) == "{}":
							mu.Lock()
							emptyFor = append(emptyFor, id)
							mu.Unlock()
						case a.str("id") != id:
							fail("retrieve %s answered %.200s", id, a.raw)
						}
					}
				case p < 85:
					op = "retrieve_batch"
					req := map[string]any{"action": "retrieve_batch", "limit": 1 + rng.IntN(20)}
					var ids []string
					if rng.IntN(2) == 0 {
						for range 1 + rng.IntN(10) {
							ids = append(ids, randomID(rng))
						}
						req["ids"] = ids
					} else {
						req["trace_ids"] = []string{fmt.Sprintf("load-%d", rng.IntN(50))}
						req["offset"] = rng.IntN(5)
					}
					a, err = postJSON(ctx, tasksURL, tokenA, req)
					if err == nil && a.status == 200 {
						var b batch
						if json.Unmarshal(a.raw, &b) != nil || b.Count == nil || b.Items == nil || len(b.Items) > req["limit"].(int) ||
							len(b.Items) > *b.Count || (ids != nil && *b.Count > len(ids)) {
							fail("retrieve_batch %v answered %.300s", req, a.raw)
						}
					}
				default:
					op = "delete"
					id := randomID(rng)
					a, err = postJSON(ctx, tasksURL, tokenA, map[string]any{"action": "delete", "id": id})
					if err == nil && a.status == 200 {
						var res struct {
							ID      string `json:"id"`
							Deleted *bool  `json:"deleted"`
						}
						if json.Unmarshal(a.raw, &res) != nil || res.ID != id || res.Deleted == nil {
							fail("delete %s answered %s", id, a.raw)
						} else if *res.Deleted {
							mu.Lock()
							if deleted[id] {
								failures = append(failures, "task "+id+" deleted twice")
							}
							deleted[id] = true
							mu.Unlock()
						}
					}
				}
				mu.Lock()
				switch {
				case err != nil:
					counts[op+" transport error"]++
					if len(failures) < 20 {
						failures = append(failures, fmt.Sprintf("%s: %v", op, err))
					}
				case a.status >= 500:
					counts[op+" 5xx"]++
					if len(failures) < 20 {
						failures = append(failures, fmt.Sprintf("%s: %d %.200s", op, a.status, a.raw))
					}
				case a.status == 429 && op == "submit":
					counts[op+" 429"]++
				case a.status != 200:
					counts[op+" other"]++
					if len(failures) < 20 {
						failures = append(failures, fmt.Sprintf("%s: %d %.200s", op, a.status, a.raw))
					}
				default:
					counts[op]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}

	// Zero lost tasks: every id not deleted is retrievable; {} was only
	// ever answered for an id that got deleted.
	var kept []string
	for _, id := range created {
		if !deleted[id] {
			kept = append(kept, id)
		}
	}
	got := fetchByIDs(t, d.URL(), kept)
	for _, id := range kept {
		if _, ok := got[id]; !ok {
			t.Errorf("task %s was created, never deleted, and is not retrievable", id)
		}
	}
	for _, id := range emptyFor {
		if !deleted[id] && id != "00000000-0000-0000-0000-000000000000" {
			t.Errorf("retrieve answered {} for task %s, which was never deleted", id)
		}
	}
	b, _ := retrieveBatch(t, d.URL(), tokenOp, map[string]any{"limit": 1})
	if *b.Count != len(created)-len(deleted) {
		t.Errorf("count %d, want %d created - %d deleted = %d", *b.Count, len(created), len(deleted), len(created)-len(deleted))
	}
	d.Stop()
	if res := integrityCheck(t, db); res != "ok" {
		t.Errorf("PRAGMA integrity_check: %s", res)
	}
	t.Logf("load: %d requests from %d clients: %v; %d tasks created, %d deleted, %d kept and retrievable; callbacks received: %d",
		total, clients, counts, len(created), len(deleted), len(kept), len(rcv.Delivered()))
}
