package callback_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/taskstore"
)

// postAs sends a JSON body through h as principal p.
func postAs(h http.Handler, p taskstore.Principal, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/v1/images/generations", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req = req.WithContext(taskstore.NewContext(req.Context(), p))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

var (
	alice = taskstore.Principal{ApplicationID: "app", UserID: "alice"}
	bob   = taskstore.Principal{ApplicationID: "app", UserID: "bob"}
)

// A callback-mode request whose stored form would exceed MaxRequestBytes
// is refused with 400 naming the limit, before anything is stored; the
// same body without callback mode passes through untouched. A multipart
// file counts by its description, a form field escaped.
func TestMaxRequestBytes(t *testing.T) {
	store := newMemStore(t)
	var u upstream
	rec := newRecorder(t, store, callback.Options{MaxRequestBytes: 1000})
	h := rec.Wrap("images_generations", jsonHandler(&u, 200, `{"data":[]}`))

	big := strings.Repeat("x", 1000)
	errorBody(t, post(h, "application/json", `{"async":true,"prompt":"`+big+`"}`), http.StatusBadRequest, "bad_request",
		"in callback mode the request body must be at most 1000 bytes of compacted JSON")
	if w := post(h, "application/json", `{"prompt":"`+big+`"}`); w.Code != 200 || u.count() != 1 {
		t.Fatalf("the same body, synchronous: %d %s", w.Code, w.Body)
	}
	// Exactly at the limit (the compacted body), with white space around.
	prompt := strings.Repeat("y", 1000-len(`{"async":true,"prompt":""}`))
	acceptedID(t, post(h, "application/json", `{ "async" : true , "prompt" : "`+prompt+`" }`), "")

	form := func(field string, file []byte) (string, string) {
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		mw.WriteField("async", "true")
		mw.WriteField("prompt", field)
		fw, _ := mw.CreateFormFile("image", "a.png")
		fw.Write(file)
		mw.Close()
		return b.String(), mw.FormDataContentType()
	}
	// 200 control bytes are 1,200 bytes as a JSON string: refused.
	body, ct := form(strings.Repeat("\x01", 200), nil)
	errorBody(t, post(h, ct, body), http.StatusBadRequest, "bad_request",
		"in callback mode a form must be at most 1000 bytes as stored: its fields as JSON strings, each file as its name, type, size and hash")
	// A 100 kB file is stored as its description: accepted.
	body, ct = form("a cat", bytes.Repeat([]byte{0xff}, 100_000))
	acceptedID(t, post(h, ct, body), "")
	if n := countTasks(t, store); n != 2 {
		t.Fatalf("%d tasks stored, want 2", n)
	}

	_, err := rec.Submit(context.Background(), callback.Submission{Type: "t", Request: json.RawMessage(`{"p":"` + big + `"}`)},
		func(context.Context) (json.RawMessage, error) { return nil, nil })
	if !errors.Is(err, callback.ErrRequestTooLarge) || !strings.Contains(err.Error(), "1000 bytes") {
		t.Fatalf("Submit of a large request: %v, want ErrRequestTooLarge naming the limit", err)
	}
}

// One principal that fills its share of the queue gets 429 while another's
// tasks are still accepted; Submit says ErrQueueFull.
func TestQueuePerPrincipal(t *testing.T) {
	store := newMemStore(t)
	g := newGated(t)
	rec := newRecorder(t, store, callback.Options{Workers: 1, Queue: 10, QueuePerPrincipal: 2})
	h := rec.Wrap("images_generations", g)
	body := `{"prompt":"p","async":true}`

	acceptedID(t, postAs(h, alice, body), "") // runs
	eventually(t, "alice's first task runs", func() bool { return g.started.Load() == 1 })
	acceptedID(t, postAs(h, alice, body), "")
	acceptedID(t, postAs(h, alice, body), "")
	errorBody(t, postAs(h, alice, body), http.StatusTooManyRequests, "too_many_requests", "too many of your tasks are waiting; retry later")
	_, err := rec.Submit(context.Background(), callback.Submission{Type: "t", Request: json.RawMessage(`{}`), Principal: alice},
		func(context.Context) (json.RawMessage, error) { return nil, nil })
	if !errors.Is(err, callback.ErrQueueFull) {
		t.Fatalf("Submit for alice: %v, want ErrQueueFull", err)
	}
	acceptedID(t, postAs(h, bob, body), "")
	acceptedID(t, postAs(h, bob, body), "")
	if st := rec.Stats(); st.Queued != 4 || st.Running != 1 {
		t.Fatalf("stats %+v, want 4 queued, 1 running", st)
	}
	g.open()
}

// The workers take the principals with queued tasks in turn: bob's two
// tasks, queued after alice's five, run second and fourth, not last.
func TestFairQueue(t *testing.T) {
	store := newMemStore(t)
	var mu sync.Mutex
	var order []string
	gate := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(gate) }) })
	rec := newRecorder(t, store, callback.Options{Workers: 1})
	run := func(who string) func(context.Context) (json.RawMessage, error) {
		return func(context.Context) (json.RawMessage, error) {
			<-gate
			mu.Lock()
			order = append(order, who)
			mu.Unlock()
			return json.RawMessage(`{}`), nil
		}
	}
	submit := func(p taskstore.Principal, who string) string {
		id, err := rec.Submit(context.Background(), callback.Submission{Type: "t", Request: json.RawMessage(`{}`), Principal: p}, run(who))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	var last string
	for i := range 5 {
		last = submit(alice, fmt.Sprintf("a%d", i))
	}
	eventually(t, "one task running", func() bool { return rec.Stats().Running == 1 })
	submit(bob, "b0")
	last2 := submit(bob, "b1")
	once.Do(func() { close(gate) })
	waitFinished(t, store, last)
	waitFinished(t, store, last2)
	mu.Lock()
	defer mu.Unlock()
	want := "a0 a1 b0 a2 b1 a3 a4"
	if got := strings.Join(order, " "); got != want {
		t.Fatalf("tasks ran in the order %s, want %s", got, want)
	}
}

// Bytes held for queued and running tasks are bounded, as a whole and per
// principal; a task larger than the budget runs alone rather than never.
func TestQueueBytes(t *testing.T) {
	store := newMemStore(t)
	g := newGated(t)
	rec := newRecorder(t, store, callback.Options{Workers: 1, QueueBytes: 1000, QueueBytesPerPrincipal: 600})
	h := rec.Wrap("images_generations", g)
	body := `{"async":true,"prompt":"` + strings.Repeat("x", 400-len(`{"prompt":""}`)) + `"}` // 400 bytes for the upstream

	acceptedID(t, postAs(h, alice, body), "")
	errorBody(t, postAs(h, alice, body), http.StatusTooManyRequests, "too_many_requests", "too many of your tasks are waiting; retry later")
	acceptedID(t, postAs(h, bob, body), "")
	carol := taskstore.Principal{UserID: "carol"}
	errorBody(t, postAs(h, carol, body), http.StatusTooManyRequests, "too_many_requests", "too many tasks are waiting; retry later")
	if st := rec.Stats(); st.HeldBytes != 800 {
		t.Fatalf("held %d bytes, want 800", st.HeldBytes)
	}
	g.open()
	eventually(t, "the bytes released", func() bool { return rec.Stats().HeldBytes == 0 })
	g2 := newGated(t)
	h2 := rec.Wrap("images_generations", g2)
	huge := `{"async":true,"prompt":"` + strings.Repeat("x", 2000) + `"}`
	acceptedID(t, postAs(h2, carol, huge), "") // alone: admitted
	errorBody(t, postAs(h2, alice, body), http.StatusTooManyRequests, "too_many_requests", "too many tasks are waiting; retry later")
	g2.open()
}

// hangingReceiver accepts callbacks and answers none until released (the
// test defers it, so that the recorder's Close does not wait for them).
func hangingReceiver(t *testing.T) (rc *receiver, hits *atomic.Int32, release func()) {
	var n atomic.Int32
	stop := make(chan struct{})
	var once sync.Once
	rc = newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		select {
		case <-stop:
		case <-r.Context().Done():
		}
	})
	release = func() { once.Do(func() { close(stop) }) }
	t.Cleanup(release)
	return rc, &n, release
}

// A receiver that hangs holds DeliveriesPerHost slots at most: another
// receiver's callback, finished after 16 callbacks to the hanging one,
// goes out at once rather than after the hanging attempts time out.
func TestHangingReceiverHoldsItsShare(t *testing.T) {
	store := newMemStore(t)
	hung, hits, release := hangingReceiver(t)
	defer release()
	rc := newReceiver(t, nil)
	rec := newRecorder(t, store, callback.Options{DeliveryWorkers: 4, DeliveriesPerPrincipal: 4, // one principal here: the receiver's cap is the subject
		AttemptTimeout: 10 * time.Second, FirstByteTimeout: 10 * time.Second})
	for range 16 {
		submitCallback(t, rec, hung.URL+"/cb")
	}
	eventually(t, "the hanging receiver holding its share", func() bool { return hits.Load() == 2 })
	start := time.Now()
	id := submitCallback(t, rec, rc.URL+"/cb")
	task := waitDelivery(t, store, id)
	took := time.Since(start)
	t.Logf("a callback to a healthy receiver while 16 hang: delivered in %v; %d attempts in flight to the hanging one", took, hits.Load())
	if task.CallbackStatus() != taskstore.CallbackDelivered {
		t.Fatalf("callback %v", task.CallbackStatus())
	}
	if took > 5*time.Second { // the hanging attempts last 10 s
		t.Errorf("the healthy receiver's callback took %v: it waited for the hanging receiver", took)
	}
	if n := hits.Load(); n != 2 {
		t.Errorf("%d attempts reached the hanging receiver, want DeliveriesPerHost (2)", n)
	}
}

// A principal's callbacks hold DeliveriesPerPrincipal slots at most, even
// to many receivers: alice's three callbacks to three hanging receivers
// take one slot, and bob's callback goes out.
func TestDeliveriesPerPrincipal(t *testing.T) {
	store := newMemStore(t)
	rec := newRecorder(t, store, callback.Options{DeliveryWorkers: 4, DeliveriesPerPrincipal: 1, AttemptTimeout: 10 * time.Second})
	noop := func(context.Context) (json.RawMessage, error) { return json.RawMessage(`{}`), nil }
	var hits []*atomic.Int32
	for range 3 {
		hung, n, release := hangingReceiver(t)
		defer release()
		hits = append(hits, n)
		if _, err := rec.Submit(context.Background(), callback.Submission{Type: "t", Request: json.RawMessage(`{}`), Principal: alice,
			CallbackURL: hung.URL}, noop); err != nil {
			t.Fatal(err)
		}
	}
	rc := newReceiver(t, nil)
	id, err := rec.Submit(context.Background(), callback.Submission{Type: "t", Request: json.RawMessage(`{}`), Principal: bob,
		CallbackURL: rc.URL}, noop)
	if err != nil {
		t.Fatal(err)
	}
	if task := waitDelivery(t, store, id); task.CallbackStatus() != taskstore.CallbackDelivered {
		t.Fatalf("bob's callback %v", task.CallbackStatus())
	}
	time.Sleep(200 * time.Millisecond)
	total := 0
	for _, n := range hits {
		total += int(n.Load())
	}
	if total != 1 {
		t.Fatalf("%d of alice's callbacks in flight at once, want DeliveriesPerPrincipal (1)", total)
	}
}

// A receiver that keeps failing is paused: its callbacks are handed back
// to the store without counting attempts, one probe at a time tries it,
// and once it answers every callback is delivered. The attempts recorded
// are exactly the requests it received, far fewer than without the pause.
func TestFailingReceiverPaused(t *testing.T) {
	store := newMemStore(t)
	var down atomic.Bool
	down.Store(true)
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})
	var logs bytes.Buffer
	var logMu sync.Mutex
	rec := newRecorder(t, store, callback.Options{
		HostFailures: 3, HostPause: 100 * time.Millisecond, MaxHostPause: 400 * time.Millisecond,
		LogInterval: 200 * time.Millisecond, DeliveryWorkers: 4,
		Schedule: callback.Schedule{0, 10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond},
		Logger:   slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	const n = 40
	var ids []string
	for range n {
		ids = append(ids, submitCallback(t, rec, rc.URL+"/cb"))
	}
	eventually(t, "the receiver paused", func() bool { return rec.Stats().PausedHosts == 1 && rec.Stats().Deferred > 0 })
	time.Sleep(time.Second) // the outage goes on: probes only
	during := rc.count()
	down.Store(false)
	attempts := 0
	for _, id := range ids {
		task := waitDelivery(t, store, id)
		if task.CallbackStatus() != taskstore.CallbackDelivered {
			t.Errorf("%s: %v after %d attempts", id, task.CallbackStatus(), task.Callback.Attempts)
		}
		attempts += task.Callback.Attempts
	}
	st := rec.Stats()
	t.Logf("%d callbacks, receiver down 1 s+: %d requests during the outage, %d attempts recorded in all, %d deferrals; stats %+v",
		n, during, attempts, st.Deferred, st)
	if attempts != rc.count() {
		t.Errorf("%d attempts recorded, the receiver got %d requests", attempts, rc.count())
	}
	// Without the pause: 5 attempts each within 40 ms, then given up.
	if during > 20 {
		t.Errorf("%d requests reached the receiver while it was down, want a handful (3 failures, then probes)", during)
	}
	logMu.Lock()
	out := logs.String()
	logMu.Unlock()
	if !strings.Contains(out, "receiver paused after failing") || !strings.Contains(out, "receiver answers again") {
		t.Errorf("the pause and the resumption are not logged:\n%s", out)
	}
	if strings.Contains(out, "will retry") {
		t.Errorf("a retry logged above Debug:\n%s", out)
	}
}

// lockedWriter serialises writes to a buffer shared with the test.
type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// Failed deliveries are summed up per receiver and interval, not logged
// one line each: 200 callbacks to a dead address and 200 answered 500 give
// a few lines, with the counts.
func TestDeliveryLogsSummed(t *testing.T) {
	store := newMemStore(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String() + "/cb"
	l.Close()
	failing := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	var logs bytes.Buffer
	var logMu sync.Mutex
	rec := newRecorder(t, store, callback.Options{
		HostFailures: 1000, // no pause: every attempt is made and fails
		LogInterval:  100 * time.Millisecond, Queue: 1000, QueuePerPrincipal: 1000,
		Schedule: callback.Schedule{0, time.Millisecond},
		Logger:   slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	var ids []string
	for i := range 400 {
		url := dead
		if i%2 == 1 {
			url = failing.URL + "/cb"
		}
		ids = append(ids, submitCallback(t, rec, url))
	}
	for _, id := range ids {
		if task := waitDelivery(t, store, id); task.CallbackStatus() != taskstore.CallbackFailed {
			t.Fatalf("%s: %v", id, task.CallbackStatus())
		}
	}
	time.Sleep(250 * time.Millisecond) // the last summary
	logMu.Lock()
	out := logs.String()
	logMu.Unlock()
	lines := strings.Count(out, "\n")
	summaries := strings.Count(out, "deliveries to a receiver")
	givenUp := 0
	for _, line := range strings.Split(out, "\n") {
		var n int
		if i := strings.Index(line, "given_up="); i >= 0 {
			fmt.Sscanf(line[i+len("given_up="):], "%d", &n)
			givenUp += n
		}
	}
	t.Logf("800 failed attempts to two receivers: %d log lines, %d summaries counting %d callbacks given up", lines, summaries, givenUp)
	if lines > 60 {
		t.Errorf("%d log lines for 800 failed attempts, want a few summaries:\n%s", lines, tail(out, 2000))
	}
	if givenUp != 400 {
		t.Errorf("the summaries count %d callbacks given up, want 400:\n%s", givenUp, out)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
