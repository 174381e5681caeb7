package main

import (
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback/callbacktest"
	"github.com/tasksapi/tasks/internal/pgtest"
	"github.com/tasksapi/tasks/internal/tasksdtest"
)

// The status and redelivery story of the README against the real binary,
// over each store: a receiver answering 410 Gone leaves the callback
// failed; after redeliver, with the receiver answering 204, it is
// delivered with the same webhook-id and body, on the second attempt.
func TestEndToEndRedeliver(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { redeliverStory(t, filepath.Join(t.TempDir(), "tasks.db")) })
	t.Run("memory", func(t *testing.T) { redeliverStory(t, ":memory:") })
	t.Run("postgres", func(t *testing.T) {
		tasksdtest.Binary(t) // skip in -short before asking for a database
		redeliverStory(t, pgtest.FreshSchema(t, pgtest.URL(t)))
	})
}

func redeliverStory(t *testing.T, db string) {
	var gone atomic.Bool
	gone.Store(true)
	rcv := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{Secret: secret, Status: func(callbacktest.Delivery) int {
		if gone.Load() {
			return http.StatusGone
		}
		return http.StatusNoContent
	}})
	d := start(t, []string{"TASKSD_CALLBACK_SECRET=" + secret},
		"-db", db, "-tokens", writeTokens(t), "-allow-private-callbacks", "-standin-delay", "300ms")

	status, ans, raw := d.post("/openai/images/generations", tokenA, map[string]any{
		"model": "gpt-image-1", "prompt": "A cat", "callback_url": rcv.URL + "/cb",
	})
	if status != 200 {
		t.Fatalf("submit: %d %s", status, raw)
	}
	id := ans["task_id"].(string)

	// While it runs, the record says so, and its callback waits.
	_, rec, raw := d.post("/openai/tasks", tokenA, map[string]any{"id": id})
	if st := rec["status"]; (st != "pending" && st != "running") || rec["response"] != nil {
		t.Fatalf("a running task reads %s", raw)
	}
	if cb, _ := rec["callback"].(map[string]any); cb["status"] != "waiting" || cb["attempts"] != float64(0) {
		t.Fatalf("callback of a running task: %s", raw)
	}

	// The receiver answers 410: the callback fails after one attempt.
	rec = waitCallback(t, d, tokenA, id, "failed")
	cb := rec["callback"].(map[string]any)
	if rec["status"] != "succeeded" || cb["attempts"] != float64(1) || cb["last_status"] != float64(410) ||
		cb["next_attempt_at"] != nil || cb["delivered_at"] != nil {
		t.Fatalf("after 410: %v", rec)
	}
	first := rcv.Body(id)

	// It is listed among the failed callbacks, for its tenant and the
	// operator, not for another tenant.
	for _, c := range []struct {
		token string
		count float64
	}{{tokenA, 1}, {tokenOp, 1}, {tokenB, 0}} {
		_, batch, raw := d.post("/openai/tasks", c.token, map[string]any{"action": "retrieve_batch", "callback_status": "failed"})
		if batch["count"] != c.count {
			t.Fatalf("failed callbacks for %s: %s", c.token, raw)
		}
	}
	_, batch, raw := d.post("/openai/tasks", tokenA, map[string]any{"action": "retrieve_batch", "status": "succeeded", "callback_status": "pending"})
	if batch["count"] != float64(0) {
		t.Fatalf("pending callbacks: %s", raw)
	}

	// Another tenant cannot redeliver it.
	_, ans, raw = d.post("/openai/tasks", tokenB, map[string]any{"action": "redeliver", "id": id})
	if ans["count"] != float64(0) {
		t.Fatalf("tenant B redelivered tenant A's callback: %s", raw)
	}

	// The receiver is fixed; redeliver.
	gone.Store(false)
	_, ans, raw = d.post("/openai/tasks", tokenA, map[string]any{"action": "redeliver", "ids": []string{id, "nope"}})
	if ans["count"] != float64(1) || ans["redelivered"].([]any)[0] != id {
		t.Fatalf("redeliver: %s", raw)
	}
	rec = waitCallback(t, d, tokenA, id, "delivered")
	cb = rec["callback"].(map[string]any)
	if cb["attempts"] != float64(2) || cb["last_status"] != float64(204) || cb["delivered_at"] == nil || cb["last_error"] != nil {
		t.Fatalf("after redelivery: %v", rec)
	}
	hits, _, problems := rcv.Snapshot()
	if hits[id] != 2 || len(problems) > 0 || string(rcv.Body(id)) != string(first) {
		t.Fatalf("receiver saw webhook-id %s %d times (problems %v)", id, hits[id], problems)
	}
	if got := rcv.Delivered()[id]; got != 1 {
		t.Fatalf("delivered %d times, want 1", got)
	}
}

// waitCallback polls retrieve until the task's callback has the status.
func waitCallback(t *testing.T, d *daemon, token, id, want string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	var raw []byte
	for time.Now().Before(deadline) {
		var rec map[string]any
		_, rec, raw = d.post("/openai/tasks", token, map[string]any{"id": id})
		if cb, ok := rec["callback"].(map[string]any); ok && cb["status"] == want {
			return rec
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("callback of %s never became %s: %s", id, want, raw)
	return nil
}
