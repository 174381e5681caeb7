package tasksdtest

import (
	"encoding/json"
	"net"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback/callbacktest"
)

// ReceiverConfig configures a Receiver. The zero value answers every
// callback 204 on a fresh loopback port and does not check signatures.
type ReceiverConfig struct {
	// Secret, a whsec_… Standard Webhooks secret, makes the receiver verify
	// every callback's signature: one that fails is a problem, answered 400.
	Secret string
	// Status decides the answer to a callback; nil answers 204.
	Status func(d callbacktest.Delivery) int
	// Listener is where to serve; nil listens on a fresh loopback port.
	Listener net.Listener
}

// Receiver is a loopback callback receiver for the tests of the tasksd
// binary: a callbacktest.Receiver (which checks every delivery against the
// callback contract and records it) with the summaries these tests read.
type Receiver struct {
	*callbacktest.Receiver
}

// NewReceiver starts a receiver; it is closed when the test ends.
func NewReceiver(tb testing.TB, c ReceiverConfig) *Receiver {
	tb.Helper()
	opts := []callbacktest.Option{callbacktest.WithSecret(c.Secret), callbacktest.WithRespond(c.Status)}
	if c.Listener != nil {
		opts = append(opts, callbacktest.WithListener(c.Listener))
	}
	return &Receiver{callbacktest.NewReceiver(tb, opts...)}
}

// Delivered returns the counts, per webhook-id, of callbacks answered 2xx.
func (rc *Receiver) Delivered() map[string]int {
	ok := map[string]int{}
	for _, d := range rc.Deliveries() {
		if d.Accepted() {
			ok[d.ID]++
		}
	}
	return ok
}

// Snapshot returns the counts of callbacks per webhook-id, the number of
// requests and the problems seen so far.
func (rc *Receiver) Snapshot() (hits map[string]int, requests int, problems []string) {
	all := rc.Deliveries()
	hits = map[string]int{}
	for _, d := range all {
		hits[d.ID]++
	}
	return hits, len(all), rc.Problems()
}

// Body returns the first body received for webhook-id id, nil if none.
func (rc *Receiver) Body(id string) []byte {
	if ds := rc.For(id); len(ds) > 0 {
		return ds[0].Body
	}
	return nil
}

// Wait waits up to 30 s for a callback of task id and returns the first
// body received decoded (accepted or not). It fails the test if the body
// is not a JSON object, if none arrives, or as soon as the receiver has
// seen a problem.
func (rc *Receiver) Wait(tb testing.TB, id string) map[string]any {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if problems := rc.Problems(); len(problems) > 0 {
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
