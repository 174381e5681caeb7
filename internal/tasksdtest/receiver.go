package tasksdtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// ReceiverConfig configures a Receiver. The zero value answers every
// callback 204 on a fresh loopback port and does not check signatures.
type ReceiverConfig struct {
	// Secret, a whsec_… Standard Webhooks secret, makes the receiver verify
	// every callback's signature: one that fails is a problem, answered 400
	// and its body not kept.
	Secret string
	// Status decides the answer to a callback; nil answers 204.
	Status func(r *http.Request) int
	// Listener is where to serve; nil listens on a fresh loopback port.
	Listener net.Listener
}

// Receiver is a loopback callback receiver. It counts callbacks per
// webhook-id (and those it answered 2xx), keeps the first body of each, and
// records as problems what breaks the contract: a missing webhook-id or
// webhook-timestamp header, a bad signature (when it has the secret), a body
// whose task_id is not its webhook-id, a redelivery whose body differs from
// the first.
type Receiver struct {
	*httptest.Server
	status func(r *http.Request) int
	wh     *standardwebhooks.Webhook // nil: no signature check

	mu       sync.Mutex
	hits     map[string]int
	ok       map[string]int
	bodies   map[string][]byte
	requests int
	problems []string
}

// NewReceiver starts a receiver; it is closed when the test ends.
func NewReceiver(tb testing.TB, c ReceiverConfig) *Receiver {
	tb.Helper()
	rc := &Receiver{status: c.Status, hits: map[string]int{}, ok: map[string]int{}, bodies: map[string][]byte{}}
	if c.Secret != "" {
		wh, err := standardwebhooks.NewWebhook(c.Secret)
		if err != nil {
			tb.Fatalf("tasksdtest: callback secret: %v", err)
		}
		rc.wh = wh
	}
	rc.Server = httptest.NewUnstartedServer(http.HandlerFunc(rc.serve))
	if c.Listener != nil {
		rc.Server.Listener.Close()
		rc.Server.Listener = c.Listener
	}
	rc.Start()
	tb.Cleanup(rc.Close)
	return rc
}

func (rc *Receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	id := r.Header.Get("webhook-id")
	var b struct {
		TaskID string `json:"task_id"`
	}
	jerr := json.Unmarshal(body, &b)
	status := http.StatusNoContent
	if rc.status != nil {
		status = rc.status(r)
	}
	var sigErr error
	if rc.wh != nil {
		sigErr = rc.wh.Verify(body, r.Header)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.requests++
	rc.hits[id]++
	switch {
	case id == "" || r.Header.Get("webhook-timestamp") == "":
		rc.problems = append(rc.problems, fmt.Sprintf("request without webhook-id or webhook-timestamp: %q", body))
	case sigErr != nil:
		rc.problems = append(rc.problems, fmt.Sprintf("webhook-id %s: signature: %v", id, sigErr))
		w.WriteHeader(http.StatusBadRequest)
		return
	case jerr != nil || b.TaskID != id:
		rc.problems = append(rc.problems, fmt.Sprintf("webhook-id %s carries body %.200s", id, body))
	case rc.bodies[id] != nil && !bytes.Equal(rc.bodies[id], body):
		rc.problems = append(rc.problems, fmt.Sprintf("webhook-id %s: redelivery with another body: %.200s vs %.200s", id, rc.bodies[id], body))
	}
	if status >= 200 && status <= 299 {
		rc.ok[id]++
	}
	if rc.bodies[id] == nil {
		rc.bodies[id] = body
	}
	w.WriteHeader(status)
}

// Delivered returns a copy of the counts, per webhook-id, of callbacks
// answered 2xx.
func (rc *Receiver) Delivered() map[string]int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return maps.Clone(rc.ok)
}

// Snapshot returns a copy of the counts of callbacks per webhook-id, the
// number of requests and the problems seen so far.
func (rc *Receiver) Snapshot() (hits map[string]int, requests int, problems []string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return maps.Clone(rc.hits), rc.requests, append([]string(nil), rc.problems...)
}

// Body returns the first body received for webhook-id id, nil if none.
func (rc *Receiver) Body(id string) []byte {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.bodies[id]
}

// Wait waits up to 30 s for the callback of task id and returns its body
// decoded. It fails the test if the body is not a JSON object, if none
// arrives, or as soon as the receiver has seen a problem.
func (rc *Receiver) Wait(tb testing.TB, id string) map[string]any {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, _, problems := rc.Snapshot(); len(problems) > 0 {
			tb.Fatalf("callbacks break the contract: %v", problems)
		}
		if body := rc.Body(id); body != nil {
			var m map[string]any
			if err := json.Unmarshal(body, &m); err != nil {
				tb.Fatalf("callback body is not a JSON object: %s", body)
			}
			return m
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("no callback for task %s", id)
	return nil
}
