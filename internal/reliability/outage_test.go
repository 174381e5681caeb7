package reliability

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback/callbacktest"
	"github.com/tasksapi/tasks/internal/tasksdtest"
	"github.com/tasksapi/tasks/sqlitestore"
	"github.com/tasksapi/tasks/taskstore"
)

// outageRetry is the delay between delivery attempts in the outage test.
const outageRetry = 200 * time.Millisecond

// TestReceiverOutage: receivers that are down for several retry periods —
// one answering 503, one not listening at all — then come back: every
// callback is delivered and every attempt is recorded on the task
// (Callback.Attempts equals the attempts the receiver saw). A receiver
// answering 410 Gone is tried exactly once and the delivery given up.
func TestReceiverOutage(t *testing.T) {
	outage := pick(6*outageRetry, 30*outageRetry) // several retry periods
	perReceiver := pick(15, 100)
	// Enough attempts to outlast the outage even with -20% jitter.
	attempts := int(outage/(outageRetry*8/10)) + 6
	schedule := "0s" + strings.Repeat(","+outageRetry.String(), attempts-1)

	var down atomic.Bool
	down.Store(true)
	r503 := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{Status: func(r callbacktest.Delivery) int {
		if down.Load() {
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	}})
	gone := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{Status: func(callbacktest.Delivery) int { return http.StatusGone }})
	// The closed receiver: its address is reserved, nothing listens there
	// until the outage ends (connection refused).
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()

	db := filepath.Join(t.TempDir(), "tasks.db")
	d := tasksdtest.Start(t, nil, "-db", db, "-tokens", writeTokens(t), "-allow-private-callbacks",
		"-standin-delay", "10ms", "-callback-schedule", schedule, "-callback-timeout", "1s", "-lease", "3s",
		// Retried on the schedule throughout, not paused: the pause of a
		// failing receiver is TestOutageLogs's subject.
		"-callback-host-failures", "1000000")

	submit := func(url string) string {
		a := mustPost(t, d.URL()+"/openai/images/generations", tokenA, map[string]any{"prompt": "outage", "callback_url": url})
		if a.status != 200 || a.str("task_id") == "" {
			t.Fatalf("submit: %d %s", a.status, a.raw)
		}
		return a.str("task_id")
	}
	began := time.Now()
	var ids503, idsClosed, idsGone []string
	for range perReceiver {
		ids503 = append(ids503, submit(r503.URL+"/cb"))
		idsClosed = append(idsClosed, submit("http://"+closedAddr+"/cb"))
	}
	for range 3 {
		idsGone = append(idsGone, submit(gone.URL+"/gone"))
	}

	time.Sleep(outage - time.Since(began))
	down.Store(false)
	ln, err = net.Listen("tcp", closedAddr)
	if err != nil {
		t.Skipf("cannot listen again on %s to end the outage: %v", closedAddr, err)
	}
	rClosed := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{Listener: ln})
	outageEnded := time.Now()

	allDelivered := func() bool {
		ok503, okClosed := r503.Delivered(), rClosed.Delivered()
		for i := range ids503 {
			if ok503[ids503[i]] == 0 || okClosed[idsClosed[i]] == 0 {
				return false
			}
		}
		return true
	}
	if !waitFor(time.Duration(attempts)*outageRetry+20*time.Second, 50*time.Millisecond, allDelivered) {
		t.Errorf("not every callback was delivered after the outage")
	}
	recovery := time.Since(outageEnded)
	d.Stop()

	st, err := sqlitestore.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	get := func(id string) taskstore.Task {
		task, err := st.Get(ctx, id)
		if err != nil {
			t.Fatalf("task %s: %v", id, err)
		}
		return task
	}

	hits503, _, problems := r503.Snapshot()
	hitsClosed, _, problemsClosed := rClosed.Snapshot()
	hitsGone, _, problemsGone := gone.Snapshot()
	for _, p := range append(append(problems, problemsClosed...), problemsGone...) {
		t.Errorf("receiver: %s", p)
	}
	maxAttempts, total := 0, 0
	for _, id := range ids503 {
		task := get(id)
		cb := task.Callback
		total += cb.Attempts
		maxAttempts = max(maxAttempts, cb.Attempts)
		switch {
		case task.CallbackStatus() != taskstore.CallbackDelivered || cb.LastStatus != http.StatusNoContent:
			t.Errorf("503 receiver, task %s: state %s, last status %d", id, task.CallbackStatus(), cb.LastStatus)
		case cb.Attempts != hits503[id]:
			t.Errorf("503 receiver, task %s: %d attempts recorded, the receiver saw %d", id, cb.Attempts, hits503[id])
		}
	}
	for _, id := range idsClosed {
		task := get(id)
		cb := task.Callback
		total += cb.Attempts
		if task.CallbackStatus() != taskstore.CallbackDelivered || hitsClosed[id] != 1 || cb.LastError != "" {
			t.Errorf("closed receiver, task %s: state %s, %d attempts recorded, receiver saw %d, last error %q",
				id, task.CallbackStatus(), cb.Attempts, hitsClosed[id], cb.LastError)
		}
	}
	// The outage must have spanned several retry periods for the test to
	// mean anything.
	if maxAttempts < 4 || total < 2*(len(ids503)+len(idsClosed)) {
		t.Errorf("%d attempts in all, at most %d for one task: the outage did not span several retry periods", total, maxAttempts)
	}
	for _, id := range idsGone {
		task := get(id)
		cb := task.Callback
		if task.CallbackStatus() != taskstore.CallbackFailed || cb.Attempts != 1 || cb.LastStatus != http.StatusGone || hitsGone[id] != 1 {
			t.Errorf("410 receiver, task %s: state %s, %d attempts recorded, last status %d, receiver saw %d; want gave_up after exactly 1",
				id, task.CallbackStatus(), cb.Attempts, cb.LastStatus, hitsGone[id])
		}
	}
	t.Logf("outage: %v down (retry every %v, %d attempts allowed); %d callbacks delivered (%d via 503, %d via refused connections) "+
		"in %d recorded attempts (at most %d for one task), all delivered %v after recovery; %d answered 410, tried once each",
		outage, outageRetry, attempts, len(ids503)+len(idsClosed), len(ids503), len(idsClosed), total, maxAttempts,
		recovery.Round(time.Millisecond), len(idsGone))
}
