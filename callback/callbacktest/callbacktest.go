// Package callbacktest helps test code that uses callback mode: a Receiver
// is a callback endpoint on loopback that checks what the recorder sends
// (webhook-id and webhook-timestamp headers, the Standard Webhooks signature
// when it has the secret, a JSON body whose task_id is the webhook-id, the
// same body on every attempt), records every delivery, and answers with the
// status a test scripts, so that retries, 410 Gone and outages can be tested.
//
// A recorder only delivers to a loopback receiver when its options allow
// private networks:
//
//	rcv := callbacktest.NewReceiver(t, callbacktest.WithSecret(secret))
//	rec, _ := callback.New(store, callback.Options{Secret: secret, AllowPrivateNetworks: true})
//	// submit with "callback_url": rcv.URL, then:
//	d := rcv.Wait(t, taskID) // the first delivery of that task, answered 2xx
package callbacktest

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasksapi/tasks/internal/webhook"
)

// Option configures a Receiver. Without options a receiver answers every
// callback 204 and does not check signatures.
type Option func(*config)

type config struct {
	secret    string
	tolerance time.Duration
	respond   func(Delivery) int
	listener  net.Listener
}

// WithSecret makes the receiver verify every callback's
// webhook-signature with secret, a whsec_… Standard Webhooks secret (the
// recorder's): a callback whose signature does not verify is answered 400
// and is a problem.
func WithSecret(secret string) Option { return func(c *config) { c.secret = secret } }

// WithTolerance sets how far webhook-timestamp may be from the receiver's
// clock (the Standard Webhooks check against replays); default 5 minutes.
// A d of zero or less turns the check off.
func WithTolerance(d time.Duration) Option { return func(c *config) { c.tolerance = d } }

// WithRespond sets what chooses the HTTP status of the answer to a
// delivery (it sees the delivery with its Attempt number); without it, or
// with nil, every delivery is answered 204. Use it to script failures:
// return 503 for the first attempts, 410 to make the recorder give up.
func WithRespond(respond func(d Delivery) int) Option {
	return func(c *config) { c.respond = respond }
}

// WithListener makes the receiver serve on ln rather than on a fresh
// loopback port. (An outage test reserves an address, closes it, and
// serves on it later.)
func WithListener(ln net.Listener) Option { return func(c *config) { c.listener = ln } }

// Delivery is one request the receiver got.
type Delivery struct {
	// ID is the webhook-id header: the task id.
	ID string
	// Path is the request's URL path (a receiver may stand for several
	// callback URLs).
	Path string
	// Attempt counts the deliveries of this ID the receiver got, from 1.
	Attempt int
	// Timestamp is the webhook-timestamp header.
	Timestamp time.Time
	Header    http.Header
	Body      []byte
	// Status is what the receiver answered.
	Status int
	// Received is when it arrived.
	Received time.Time
}

// Accepted reports whether the receiver answered 2xx.
func (d Delivery) Accepted() bool { return d.Status >= 200 && d.Status <= 299 }

// Response decodes the body, the task's response object.
func (d Delivery) Response() (map[string]any, error) {
	var m map[string]any
	err := json.Unmarshal(d.Body, &m)
	return m, err
}

// Receiver is a callback endpoint on a fresh loopback port. It is safe for
// concurrent use.
type Receiver struct {
	// URL is the receiver's base URL: use it (or any path under it) as
	// callback_url.
	URL string

	srv       *httptest.Server
	key       []byte // nil: no signature check
	tolerance time.Duration
	respond   func(Delivery) int

	mu         sync.Mutex
	deliveries []Delivery
	problems   []string
	changed    chan struct{} // closed and replaced on every delivery
}

// NewReceiver starts a receiver on loopback, closed when the test ends. A
// malformed secret (WithSecret) fails the test.
func NewReceiver(tb testing.TB, opts ...Option) *Receiver {
	tb.Helper()
	rc, err := Start(opts...)
	if err != nil {
		tb.Fatalf("callbacktest: %v", err)
	}
	tb.Cleanup(rc.Close)
	return rc
}

// Start starts a receiver on loopback, for code that has no testing.TB;
// Close stops it. The error is a malformed secret's (WithSecret).
func Start(opts ...Option) (*Receiver, error) {
	o := config{tolerance: 5 * time.Minute}
	for _, opt := range opts {
		opt(&o)
	}
	rc := &Receiver{respond: o.respond, tolerance: o.tolerance, changed: make(chan struct{})}
	if o.secret != "" {
		key, err := webhook.ParseSecret(o.secret)
		if err != nil {
			return nil, err
		}
		rc.key = key
	}
	rc.srv = httptest.NewUnstartedServer(http.HandlerFunc(rc.serve))
	if o.listener != nil {
		rc.srv.Listener.Close()
		rc.srv.Listener = o.listener
	}
	rc.srv.Start()
	rc.URL = rc.srv.URL
	return rc, nil
}

// Close stops the receiver (a test may close it before it ends, to make an
// outage): later deliveries find no one listening. It may be called more
// than once.
func (rc *Receiver) Close() { rc.srv.Close() }

func (rc *Receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	d := Delivery{ID: r.Header.Get("webhook-id"), Path: r.URL.Path, Header: r.Header.Clone(), Body: body, Received: time.Now()}
	var problems []string
	ts, err := strconv.ParseInt(r.Header.Get("webhook-timestamp"), 10, 64)
	switch {
	case d.ID == "":
		problems = append(problems, "a delivery without webhook-id")
	case err != nil:
		problems = append(problems, fmt.Sprintf("webhook-id %s: webhook-timestamp %q is not Unix seconds", d.ID, r.Header.Get("webhook-timestamp")))
	default:
		d.Timestamp = time.Unix(ts, 0)
		if rc.tolerance > 0 && (d.Received.Sub(d.Timestamp) > rc.tolerance || d.Timestamp.Sub(d.Received) > rc.tolerance) {
			problems = append(problems, fmt.Sprintf("webhook-id %s: webhook-timestamp %d is more than %v away", d.ID, ts, rc.tolerance))
		}
	}
	badSignature := false
	if rc.key != nil && d.ID != "" && err == nil && !rc.signed(d.ID, ts, body, r.Header.Get("webhook-signature")) {
		badSignature = true
		problems = append(problems, fmt.Sprintf("webhook-id %s: the signature does not verify", d.ID))
	}
	var b struct {
		TaskID string `json:"task_id"`
	}
	if json.Unmarshal(body, &b) != nil || b.TaskID != d.ID {
		problems = append(problems, fmt.Sprintf("webhook-id %s: the body is not a response of that task: %.200s", d.ID, body))
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		problems = append(problems, fmt.Sprintf("webhook-id %s: Content-Type %q", d.ID, ct))
	}

	// The delivery takes its place (and its attempt number) under the
	// lock; its status is filled in once Respond has chosen it.
	rc.mu.Lock()
	for _, prev := range rc.deliveries {
		if prev.ID != d.ID {
			continue
		}
		if d.Attempt == 0 && d.ID != "" && !bytes.Equal(prev.Body, body) {
			problems = append(problems, fmt.Sprintf("webhook-id %s: another body than the first delivery's", d.ID))
		}
		d.Attempt++
	}
	d.Attempt++
	slot := len(rc.deliveries)
	rc.deliveries = append(rc.deliveries, d)
	rc.problems = append(rc.problems, problems...)
	rc.mu.Unlock()

	d.Status = http.StatusNoContent
	switch {
	case badSignature:
		d.Status = http.StatusBadRequest
	case rc.respond != nil:
		d.Status = rc.respond(d)
	}

	rc.mu.Lock()
	rc.deliveries[slot].Status = d.Status
	close(rc.changed)
	rc.changed = make(chan struct{})
	rc.mu.Unlock()
	w.WriteHeader(d.Status)
}

// signed reports whether one of the space-separated signatures in header
// is the Standard Webhooks signature of the delivery.
func (rc *Receiver) signed(id string, ts int64, body []byte, header string) bool {
	want := []byte(webhook.Sign(rc.key, id, ts, body))
	ok := false
	for _, sig := range strings.Fields(header) {
		if subtle.ConstantTimeCompare([]byte(sig), want) == 1 {
			ok = true
		}
	}
	return ok
}

// Deliveries returns every delivery received so far, in arrival order.
func (rc *Receiver) Deliveries() []Delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.deliveries)
}

// For returns the deliveries of one task (webhook-id), in arrival order.
func (rc *Receiver) For(id string) []Delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []Delivery
	for _, d := range rc.deliveries {
		if d.ID == id {
			out = append(out, d)
		}
	}
	return out
}

// Problems returns what broke the callback contract so far: missing
// headers, a signature that does not verify, a stale timestamp, a body that
// is not the task's response, a redelivery with another body.
func (rc *Receiver) Problems() []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.problems)
}

// Next waits until the receiver has accepted (answered 2xx) a delivery of
// task id, and returns the first such delivery. It returns ctx's error when
// ctx ends first.
func (rc *Receiver) Next(ctx context.Context, id string) (Delivery, error) {
	for {
		rc.mu.Lock()
		changed := rc.changed
		for _, d := range rc.deliveries {
			if d.ID == id && d.Accepted() {
				rc.mu.Unlock()
				return d, nil
			}
		}
		rc.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return Delivery{}, ctx.Err()
		}
	}
}

// Wait is Next for tests: it waits at most 30 seconds and fails the test
// when nothing was accepted by then, or when the receiver has seen a
// problem.
func (rc *Receiver) Wait(tb testing.TB, id string) Delivery {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := rc.Next(ctx, id)
	if p := rc.Problems(); len(p) > 0 {
		tb.Fatalf("callbacktest: callbacks break the contract: %v", p)
	}
	if err != nil {
		tb.Fatalf("callbacktest: no callback of task %s accepted within 30 s (%d deliveries of it)", id, len(rc.For(id)))
	}
	return d
}
