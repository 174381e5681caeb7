package webhook_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/tasksapi/tasks/internal/webhook"
)

// received is one request as a receiver saw it.
type received struct {
	Header http.Header
	Body   []byte
	Host   string
}

// receiver is a loopback httptest server that records requests and answers
// with handle (204 when nil).
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []received
}

func newReceiver(tb testing.TB, handle http.HandlerFunc) *receiver {
	tb.Helper()
	r := &receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.reqs = append(r.reqs, received{Header: req.Header.Clone(), Body: b, Host: req.Host})
		r.mu.Unlock()
		if handle != nil {
			handle(w, req)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	tb.Cleanup(r.Close)
	return r
}

func (r *receiver) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.reqs...)
}

func mustSender(tb testing.TB, o webhook.Options) *webhook.Sender {
	tb.Helper()
	s, err := webhook.NewSender(o)
	if err != nil {
		tb.Fatalf("NewSender: %v", err)
	}
	tb.Cleanup(s.CloseIdleConnections)
	return s
}

func newSecret(tb testing.TB) string {
	tb.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		tb.Fatal(err)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(key)
}

const body = `{"success":true,"task_id":"7489df4c-ef03-4de0-b598-e9a590793434","created":1721626477,"data":[{"url":"https://example.com/a.png"}]}`

func TestSendSignedVerifiesWithStandardWebhooks(t *testing.T) {
	secret := newSecret(t)
	rcv := newReceiver(t, nil)
	s := mustSender(t, webhook.Options{Secret: secret, AllowPrivateNetworks: true})

	res := s.Send(t.Context(), rcv.URL+"/cb", "task-1", []byte(body), time.Now())
	if !res.Delivered || res.Status != http.StatusNoContent || res.Err != "" {
		t.Fatalf("Send = %+v, want delivered 204", res)
	}
	reqs := rcv.requests()
	if len(reqs) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(reqs))
	}
	got := reqs[0]
	if string(got.Body) != body {
		t.Errorf("body = %q, want %q", got.Body, body)
	}

	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(got.Body, got.Header); err != nil {
		t.Errorf("official library rejects the signature: %v", err)
	}
	// The check can fail: a tampered body, another id or another secret.
	if err := wh.Verify(append(got.Body, ' '), got.Header); err == nil {
		t.Error("tampered body verified")
	}
	h := got.Header.Clone()
	h.Set("webhook-id", "task-2")
	if err := wh.Verify(got.Body, h); err == nil {
		t.Error("changed webhook-id verified")
	}
	other, _ := standardwebhooks.NewWebhook(newSecret(t))
	if err := other.Verify(got.Body, got.Header); err == nil {
		t.Error("signature verified with another secret")
	}
}

func TestSendHeaders(t *testing.T) {
	rcv := newReceiver(t, nil)
	s := mustSender(t, webhook.Options{AllowPrivateNetworks: true})

	t1 := time.Unix(1721626477, 900e6)
	t2 := t1.Add(5 * time.Minute)
	for _, now := range []time.Time{t1, t2} {
		if res := s.Send(t.Context(), rcv.URL, "7489df4c-ef03-4de0-b598-e9a590793434", []byte(body), now); !res.Delivered {
			t.Fatalf("Send = %+v", res)
		}
	}
	reqs := rcv.requests()
	if len(reqs) != 2 {
		t.Fatalf("got %d requests, want 2", len(reqs))
	}
	for i, r := range reqs {
		want := map[string]string{
			"Content-Type":      "application/json",
			"User-Agent":        "tasks-callback/1",
			"webhook-id":        "7489df4c-ef03-4de0-b598-e9a590793434",
			"webhook-timestamp": strconv.FormatInt([]time.Time{t1, t2}[i].Unix(), 10),
		}
		for k, v := range want {
			if got := r.Header.Get(k); got != v {
				t.Errorf("attempt %d: %s = %q, want %q", i+1, k, got, v)
			}
		}
		if sig, ok := r.Header["Webhook-Signature"]; ok {
			t.Errorf("attempt %d: unsigned sender sent webhook-signature %q", i+1, sig)
		}
		if r.Header.Get("Content-Length") != strconv.Itoa(len(body)) {
			t.Errorf("attempt %d: Content-Length = %q", i+1, r.Header.Get("Content-Length"))
		}
	}
}

func TestSendUserAgentOption(t *testing.T) {
	rcv := newReceiver(t, nil)
	s := mustSender(t, webhook.Options{AllowPrivateNetworks: true, UserAgent: "acme-images/2"})
	s.Send(t.Context(), rcv.URL, "id", []byte(body), time.Time{})
	reqs := rcv.requests()
	if len(reqs) != 1 || reqs[0].Header.Get("User-Agent") != "acme-images/2" {
		t.Fatalf("requests = %+v", reqs)
	}
	// The zero time means now.
	ts, err := strconv.ParseInt(reqs[0].Header.Get("webhook-timestamp"), 10, 64)
	if err != nil || time.Since(time.Unix(ts, 0)).Abs() > time.Hour {
		t.Errorf("webhook-timestamp = %q for the zero now, want the current time", reqs[0].Header.Get("webhook-timestamp"))
	}
}

func TestSendStatuses(t *testing.T) {
	now := time.Unix(1721626477, 0)
	tests := []struct {
		name   string
		status int
		header map[string]string
		want   webhook.Result
	}{
		{name: "OK", status: 200, want: webhook.Result{Status: 200, Delivered: true}},
		{name: "Accepted", status: 202, want: webhook.Result{Status: 202, Delivered: true}},
		{name: "NoContent", status: 204, want: webhook.Result{Status: 204, Delivered: true}},
		{name: "OKIgnoresRetryAfter", status: 200, header: map[string]string{"Retry-After": "60"},
			want: webhook.Result{Status: 200, Delivered: true}},
		{name: "Gone", status: 410, want: webhook.Result{Status: 410, Gone: true, Err: "status 410 (gone)"}},
		{name: "ServerError", status: 500, want: webhook.Result{Status: 500, Err: "status 500"}},
		{name: "BadRequestIsRetried", status: 400, want: webhook.Result{Status: 400, Err: "status 400"}},
		{name: "NotFoundIsRetried", status: 404, want: webhook.Result{Status: 404, Err: "status 404"}},
		{name: "TooManyRequestsSeconds", status: 429, header: map[string]string{"Retry-After": "120"},
			want: webhook.Result{Status: 429, RetryAfter: 120 * time.Second, Err: "status 429"}},
		{name: "UnavailableDate", status: 503,
			header: map[string]string{"Retry-After": now.Add(90 * time.Second).UTC().Format(http.TimeFormat)},
			want:   webhook.Result{Status: 503, RetryAfter: 90 * time.Second, Err: "status 503"}},
		{name: "RetryAfterHuge", status: 503, header: map[string]string{"Retry-After": "99999999999999999999999"},
			want: webhook.Result{Status: 503, RetryAfter: webhook.MaxRetryAfter, Err: "status 503"}},
		{name: "RetryAfterPast", status: 503,
			header: map[string]string{"Retry-After": now.Add(-time.Hour).UTC().Format(http.TimeFormat)},
			want:   webhook.Result{Status: 503, Err: "status 503"}},
		{name: "RetryAfterGarbage", status: 429, header: map[string]string{"Retry-After": "soon"},
			want: webhook.Result{Status: 429, Err: "status 429"}},
		{name: "Found", status: 302, header: map[string]string{"Location": "/elsewhere"},
			want: webhook.Result{Status: 302, Err: "redirect not followed (302)"}},
		{name: "PermanentRedirect", status: 308, header: map[string]string{"Location": "/elsewhere"},
			want: webhook.Result{Status: 308, Err: "redirect not followed (308)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rcv := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, `{"ok":false}`)
			})
			s := mustSender(t, webhook.Options{AllowPrivateNetworks: true})
			if got := s.Send(t.Context(), rcv.URL, "id-1", []byte(body), now); got != tt.want {
				t.Errorf("Send = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"7", 7 * time.Second},
		{" 7 ", 7 * time.Second},
		{"-5", 0},
		{"1.5", 0},
		{"86400", webhook.MaxRetryAfter},
		{"86399", 86399 * time.Second},
		{"18446744073709551616", webhook.MaxRetryAfter},
		{now.Add(30 * time.Second).Format(http.TimeFormat), 30 * time.Second},
		{now.Add(48 * time.Hour).Format(http.TimeFormat), webhook.MaxRetryAfter},
		{now.Add(-time.Second).Format(http.TimeFormat), 0},
		{"Sunday, 06-Nov-94 08:49:37 GMT", 0}, // RFC 850 form, in the past
		{"tomorrow", 0},
	}
	for _, tt := range tests {
		if got := webhook.ParseRetryAfter(tt.in, now); got != tt.want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	var targetHits atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		targetHits.Add(1)
	}))
	t.Cleanup(target.Close)
	origin := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/private", http.StatusFound)
	})
	s := mustSender(t, webhook.Options{AllowPrivateNetworks: true}) // guard off: only the redirect rule can stop it

	res := s.Send(t.Context(), origin.URL, "id-1", []byte(body), time.Now())
	want := webhook.Result{Status: 302, Err: "redirect not followed (302)"}
	if res != want {
		t.Errorf("Send = %+v, want %+v", res, want)
	}
	if n := targetHits.Load(); n != 0 {
		t.Errorf("redirect target was hit %d times, want 0", n)
	}
	if n := len(origin.requests()); n != 1 {
		t.Errorf("origin got %d requests, want 1", n)
	}
}

func TestSendTimeout(t *testing.T) {
	release := make(chan struct{})
	rcv := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) })
	s := mustSender(t, webhook.Options{AllowPrivateNetworks: true, Timeout: 50 * time.Millisecond})
	res := s.Send(t.Context(), rcv.URL, "id-1", []byte(body), time.Now())
	if res.Delivered || res.Permanent || res.Status != 0 || res.Err != "timeout after 50ms" {
		t.Errorf("Send = %+v, want a retryable timeout", res)
	}
}

// TestSendFirstByteTimeout: a receiver that takes the request and never
// answers holds an attempt for FirstByteTimeout, not for the whole Timeout.
func TestSendFirstByteTimeout(t *testing.T) {
	release := make(chan struct{})
	rcv := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) })
	s := mustSender(t, webhook.Options{AllowPrivateNetworks: true, Timeout: 10 * time.Second, FirstByteTimeout: 100 * time.Millisecond})
	start := time.Now()
	res := s.Send(t.Context(), rcv.URL, "id-1", []byte(body), time.Now())
	if res.Delivered || res.Permanent || res.Status != 0 || res.Err != "no answer within 100ms" {
		t.Errorf("Send = %+v, want a retryable first-byte timeout", res)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the attempt took %v, want about the 100ms first-byte timeout", took)
	}
}

// TestSendConnectTimeout: resolving and connecting are bounded by
// ConnectTimeout (here a resolver that never answers).
func TestSendConnectTimeout(t *testing.T) {
	s := mustSender(t, webhook.Options{AllowPrivateNetworks: true, Timeout: 10 * time.Second, ConnectTimeout: 100 * time.Millisecond})
	webhook.SetLookup(s, func(ctx context.Context, host string) ([]netip.Addr, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	start := time.Now()
	res := s.Send(t.Context(), "http://slow.example:8080/cb", "id-1", []byte(body), time.Now())
	if res.Delivered || res.Permanent || res.Status != 0 || res.Err != "no connection within 100ms" {
		t.Errorf("Send = %+v, want a retryable connect timeout", res)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the attempt took %v, want about the 100ms connect timeout", took)
	}
}

func TestSendAbortedByCaller(t *testing.T) {
	rcv := newReceiver(t, nil)
	s := mustSender(t, webhook.Options{AllowPrivateNetworks: true})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	res := s.Send(ctx, rcv.URL, "id-1", []byte(body), time.Now())
	if res.Delivered || res.Permanent || !strings.HasPrefix(res.Err, "aborted") {
		t.Errorf("Send = %+v, want aborted, retryable", res)
	}
}

// deadURL returns a loopback URL nobody listens on.
func deadURL(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func TestSendConnectionRefused(t *testing.T) {
	s := mustSender(t, webhook.Options{AllowPrivateNetworks: true})
	u := strings.Replace(deadURL(t), "http://", "http://alice:s3cret@", 1) + "/cb?token=t0ken"
	res := s.Send(t.Context(), u, "id-1", []byte(body), time.Now())
	if res.Delivered || res.Permanent || res.Status != 0 {
		t.Errorf("Send = %+v, want a retryable network failure", res)
	}
	if !strings.Contains(res.Err, "connection refused") {
		t.Errorf("Err = %q, want it to say connection refused", res.Err)
	}
	for _, secret := range []string{"s3cret", "t0ken", "alice"} {
		if strings.Contains(res.Err, secret) {
			t.Errorf("Err = %q leaks %q from the URL", res.Err, secret)
		}
	}
}

func TestSendPermanentInputs(t *testing.T) {
	s := mustSender(t, webhook.Options{})
	var connects atomic.Int32
	webhook.SetConnectHook(s, func(network, address string) error {
		connects.Add(1)
		return errors.New("test: connect blocked")
	})
	webhook.SetLookup(s, func(ctx context.Context, host string) ([]netip.Addr, error) {
		t.Errorf("unexpected lookup of %q", host)
		return nil, errors.New("test: no DNS")
	})
	tests := []struct{ url, id, errPart string }{
		{"", "id", "invalid URL: empty"},
		{"ftp://example.com/cb", "id", `scheme "ftp" is not allowed`},
		{"file:///etc/passwd", "id", `scheme "file" is not allowed`},
		{"gopher://example.com/", "id", "scheme"},
		{"/relative/cb", "id", "not absolute"},
		{"example.com/cb", "id", "not absolute"},
		{"http://", "id", "missing host"},
		{"http:example.com", "id", "missing host"},
		{"http://:8080/", "id", "missing host"},
		{"http://example.com:0/", "id", "out of range"},
		{"http://example.com:70000/", "id", "out of range"},
		{"http://example.com:/", "id", "empty port"},
		{"http://[::1/", "id", "malformed"},
		{"http://exa mple.com/", "id", "malformed"},
		{"https://example.com/cb", "", "empty webhook id"},
		{"https://example.com/cb", "a\r\nX-Injected: 1", "control characters"},
	}
	for _, tt := range tests {
		res := s.Send(t.Context(), tt.url, tt.id, []byte(body), time.Now())
		if !res.Permanent || res.Delivered || res.Status != 0 || !strings.Contains(res.Err, tt.errPart) {
			t.Errorf("Send(%q, %q) = %+v, want permanent with %q", tt.url, tt.id, res, tt.errPart)
		}
	}
	if n := connects.Load(); n != 0 {
		t.Errorf("%d connects attempted, want 0", n)
	}
}

func TestNewSenderErrors(t *testing.T) {
	tests := []struct {
		name string
		o    webhook.Options
	}{
		{"SecretWithoutPrefix", webhook.Options{Secret: "c2VjcmV0c2VjcmV0"}},
		{"SecretEmptyKey", webhook.Options{Secret: "whsec_"}},
		{"SecretNotBase64", webhook.Options{Secret: "whsec_not*base64!"}},
		{"SecretBadPadding", webhook.Options{Secret: "whsec_c2VjcmV0c2VjcmV"}},
		{"SecretURLAlphabet", webhook.Options{Secret: "whsec_-_-_"}},
		{"NegativeTimeout", webhook.Options{Timeout: -time.Second}},
		{"NegativeConnectTimeout", webhook.Options{ConnectTimeout: -time.Second}},
		{"NegativeFirstByteTimeout", webhook.Options{FirstByteTimeout: -time.Second}},
		{"NegativeMaxResponseBytes", webhook.Options{MaxResponseBytes: -1}},
		{"UserAgentNewline", webhook.Options{UserAgent: "a\nb"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := webhook.NewSender(tt.o)
			if err == nil {
				t.Fatalf("NewSender = %v, nil; want an error", s)
			}
			if key := strings.TrimPrefix(tt.o.Secret, "whsec_"); key != "" && strings.Contains(err.Error(), key) {
				t.Errorf("error %q quotes the secret", err)
			}
		})
	}
	if _, err := webhook.NewSender(webhook.Options{Secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}); err != nil {
		t.Errorf("valid secret refused: %v", err)
	}
}

// countingBody is an endless response body that counts what is read.
type countingBody struct {
	read   atomic.Int64
	closed atomic.Bool
}

func (b *countingBody) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	b.read.Add(int64(len(p)))
	return len(p), nil
}

func (b *countingBody) Close() error { b.closed.Store(true); return nil }

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestSendReadsAtMostMaxResponseBytesAndCloses(t *testing.T) {
	for _, status := range []int{200, 500} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			b := &countingBody{}
			s := mustSender(t, webhook.Options{
				MaxResponseBytes: 1000,
				Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
					return &http.Response{StatusCode: status, Header: http.Header{}, Body: b, Request: r}, nil
				}),
			})
			s.Send(t.Context(), "https://receiver.example/cb", "id", []byte(body), time.Now())
			if got := b.read.Load(); got != 1000 {
				t.Errorf("read %d bytes of the answer, want 1000", got)
			}
			if !b.closed.Load() {
				t.Error("answer body not closed")
			}
		})
	}
}

func TestSendLargeAnswer(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	rcv := newReceiver(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, big) })
	s := mustSender(t, webhook.Options{AllowPrivateNetworks: true, MaxResponseBytes: 1 << 10})
	for range 3 {
		if res := s.Send(t.Context(), rcv.URL, "id", []byte(body), time.Now()); !res.Delivered {
			t.Fatalf("Send = %+v", res)
		}
	}
}

func TestSendPanickingTransport(t *testing.T) {
	s := mustSender(t, webhook.Options{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
		panic("boom")
	})})
	res := s.Send(t.Context(), "https://receiver.example/cb", "id", []byte(body), time.Now())
	if res.Delivered || res.Err != "internal error: boom" {
		t.Errorf("Send = %+v", res)
	}
}

func TestSendCustomTransportKeepsURLChecks(t *testing.T) {
	var calls atomic.Int32
	s := mustSender(t, webhook.Options{Transport: roundTripFunc(func(*http.Request) (*http.Response, error) {
		calls.Add(1)
		return nil, errors.New("unreachable")
	})})
	for _, u := range []string{"http://127.0.0.1/", "http://[::1]/", "http://localhost/", "ftp://x/", "http://2130706433/"} {
		if res := s.Send(t.Context(), u, "id", []byte(body), time.Now()); !res.Permanent {
			t.Errorf("Send(%q) = %+v, want permanent", u, res)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("transport called %d times, want 0", n)
	}
}

func TestSendReusesConnections(t *testing.T) {
	var conns atomic.Int32
	rcv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	rcv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	rcv.Start()
	t.Cleanup(rcv.Close)
	s := mustSender(t, webhook.Options{AllowPrivateNetworks: true})
	for i := range 20 {
		if res := s.Send(t.Context(), rcv.URL, "id-"+strconv.Itoa(i), []byte(body), time.Now()); !res.Delivered {
			t.Fatalf("Send = %+v", res)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("20 sequential sends opened %d connections, want 1", n)
	}
}

func TestSendConcurrent(t *testing.T) {
	secret := newSecret(t)
	wh, _ := standardwebhooks.NewWebhook(secret)
	var bad atomic.Int32
	rcv := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {})
	s := mustSender(t, webhook.Options{AllowPrivateNetworks: true, Secret: secret})
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			if res := s.Send(t.Context(), rcv.URL, "id-"+strconv.Itoa(i), []byte(body), time.Now()); !res.Delivered {
				bad.Add(1)
			}
		})
	}
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Errorf("%d of 32 concurrent sends failed", n)
	}
	for _, r := range rcv.requests() {
		if err := wh.Verify(r.Body, r.Header); err != nil {
			t.Errorf("request %s: %v", r.Header.Get("webhook-id"), err)
		}
	}
}

func TestNilSender(t *testing.T) {
	var s *webhook.Sender
	if res := s.Send(t.Context(), "https://example.com", "id", nil, time.Now()); !res.Permanent || res.Err == "" {
		t.Errorf("nil Sender Send = %+v", res)
	}
	s.CloseIdleConnections() // no panic
}

// HTTP_PROXY and friends are ignored: the sender's transport has no proxy,
// so every connection goes through the guarded dialer. (Go reads the proxy
// variables once per process, so setting them here would prove nothing;
// the transport itself is checked.)
func TestSenderIgnoresEnvironmentProxies(t *testing.T) {
	s, err := webhook.NewSender(webhook.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if webhook.UsesProxy(s) {
		t.Fatal("the sender's transport uses a proxy")
	}
}

// TestSendWrapTransportKeepsGuard: a WrapTransport sees every attempt, and
// the connections are still the Sender's own: a name that resolves to a
// private address is refused at connect time, a public one goes through.
func TestSendWrapTransportKeepsGuard(t *testing.T) {
	rcv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(rcv.Close)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(rcv.URL, "http://"))
	var seen atomic.Int32
	wrapped := 0
	s := mustSender(t, webhook.Options{
		WrapTransport: func(next http.RoundTripper) http.RoundTripper {
			wrapped++
			return roundTripFunc(func(r *http.Request) (*http.Response, error) {
				seen.Add(1)
				return next.RoundTrip(r)
			})
		},
	})
	webhook.SetLookup(s, func(_ context.Context, host string) ([]netip.Addr, error) {
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	})
	// The loopback receiver stands in for a public one for the second name.
	webhook.SetCheck(s, func(a netip.Addr) string {
		if a.IsLoopback() && seen.Load() == 1 {
			return "loopback"
		}
		return ""
	})
	res := s.Send(t.Context(), "http://internal.test:"+port+"/cb", "id", []byte(body), time.Now())
	if !res.Permanent || !strings.Contains(res.Err, "not allowed") {
		t.Errorf("Send to a name resolving to loopback = %+v, want refused by the guard", res)
	}
	res = s.Send(t.Context(), "http://public.test:"+port+"/cb", "id", []byte(body), time.Now())
	if !res.Delivered {
		t.Errorf("Send through the wrapper = %+v, want delivered", res)
	}
	if n := seen.Load(); n != 2 || wrapped != 1 {
		t.Errorf("wrapper saw %d attempts and was built %d times, want 2 and 1", n, wrapped)
	}
	s.CloseIdleConnections()

	if _, err := webhook.NewSender(webhook.Options{WrapTransport: func(http.RoundTripper) http.RoundTripper { return nil }}); err == nil {
		t.Error("NewSender accepted a WrapTransport returning nil")
	}
}
