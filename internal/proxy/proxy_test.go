package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const testKey = "sk-test-SECRET-0123456789"

// received is what the fake upstream saw of one request.
type received struct {
	method, path, query string
	header              http.Header
	contentLength       int64
	body                []byte
}

// fakeUpstream records each request and answers with reply.
type fakeUpstream struct {
	*httptest.Server
	mu    sync.Mutex
	got   []received
	reply func(w http.ResponseWriter, r *http.Request)
}

func newUpstream(tb testing.TB, reply func(w http.ResponseWriter, r *http.Request)) *fakeUpstream {
	tb.Helper()
	u := &fakeUpstream{reply: reply}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		u.mu.Lock()
		u.got = append(u.got, received{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), r.ContentLength, body})
		u.mu.Unlock()
		u.reply(w, r)
	}))
	tb.Cleanup(u.Close)
	return u
}

func (u *fakeUpstream) last(tb testing.TB) received {
	tb.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.got) == 0 {
		tb.Fatal("the upstream received nothing")
	}
	return u.got[len(u.got)-1]
}

func jsonReply(status int, body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func mustNew(tb testing.TB, o Options) *Proxy {
	tb.Helper()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	p, err := New(o)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// serve runs h on a loopback server and posts body to it.
func serve(tb testing.TB, h http.Handler, header http.Header, body []byte) (*http.Response, []byte) {
	tb.Helper()
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/openai/images/generations?from=client", bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp, b
}

func TestForwardJSON(t *testing.T) {
	const answer = `{"created":1721626477,"data":[{"url":"https://example.com/a.png"}]}`
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("X-Request-Id", "req_123")
		w.Header().Set("Set-Cookie", "upstream=1")
		io.WriteString(w, answer)
	})
	p := mustNew(t, Options{Upstream: up.URL + "/v1/", Key: testKey})
	body := []byte(`{"model":"gpt-image-1","prompt":"A cat \u00e9","n":1}` + "\n")
	resp, got := serve(t, p.Handler("/images/generations"), http.Header{
		"Authorization": {"Bearer client-token"},
		"Content-Type":  {"application/json"},
		"Cookie":        {"session=client"},
		"X-Custom":      {"client"},
	}, body)

	r := up.last(t)
	if r.method != http.MethodPost || r.path != "/v1/images/generations" || r.query != "" {
		t.Errorf("upstream saw %s %s?%s", r.method, r.path, r.query)
	}
	if a := r.header.Values("Authorization"); len(a) != 1 || a[0] != "Bearer "+testKey {
		t.Errorf("upstream Authorization %q", a)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("upstream Content-Type %q", ct)
	}
	for _, h := range []string{"Cookie", "X-Custom"} {
		if v := r.header.Get(h); v != "" {
			t.Errorf("client header %s=%q forwarded", h, v)
		}
	}
	if !bytes.Equal(r.body, body) {
		t.Errorf("upstream body %q, want %q", r.body, body)
	}
	if r.contentLength != int64(len(body)) {
		t.Errorf("upstream Content-Length %d, want %d", r.contentLength, len(body))
	}

	if resp.StatusCode != http.StatusOK || string(got) != answer {
		t.Errorf("answer %d %s", resp.StatusCode, got)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("answer Content-Type %q", ct)
	}
	if id := resp.Header.Get("X-Request-Id"); id != "req_123" {
		t.Errorf("answer X-Request-Id %q", id)
	}
	if c := resp.Header.Get("Set-Cookie"); c != "" {
		t.Errorf("upstream Set-Cookie %q passed on", c)
	}
}

func TestForwardMultipart(t *testing.T) {
	up := newUpstream(t, jsonReply(http.StatusOK, `{"created":1,"data":[]}`))
	p := mustNew(t, Options{Upstream: up.URL + "/v1", Key: testKey})

	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("prompt", "add a hat")
	fw, _ := mw.CreateFormFile("image", "cat.png")
	img := make([]byte, 300_000)
	for i := range img {
		img[i] = byte(i * 7) // binary, with every byte value and CRLFs
	}
	fw.Write(img)
	mw.Close()
	ct := mw.FormDataContentType()

	resp, _ := serve(t, p.Handler("images/edits"), http.Header{"Content-Type": {ct}, "Authorization": {"Bearer client"}}, buf.Bytes())
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	r := up.last(t)
	if r.path != "/v1/images/edits" {
		t.Errorf("path %q", r.path)
	}
	if got := r.header.Get("Content-Type"); got != ct {
		t.Errorf("Content-Type %q, want %q", got, ct)
	}
	if !bytes.Equal(r.body, buf.Bytes()) {
		t.Errorf("multipart body differs: %d bytes, want %d", len(r.body), buf.Len())
	}
	if a := r.header.Get("Authorization"); a != "Bearer "+testKey {
		t.Errorf("Authorization %q", a)
	}
}

func TestUpstreamQueryKept(t *testing.T) {
	up := newUpstream(t, jsonReply(http.StatusOK, `{}`))
	p := mustNew(t, Options{Upstream: up.URL + "/openai/deployments/d1?api-version=2025-04-01", Key: testKey})
	serve(t, p.Handler("/images/generations"), nil, []byte(`{}`))
	r := up.last(t)
	if r.path != "/openai/deployments/d1/images/generations" || r.query != "api-version=2025-04-01" {
		t.Errorf("upstream saw %s?%s", r.path, r.query)
	}
}

func TestNoKey(t *testing.T) {
	up := newUpstream(t, jsonReply(http.StatusOK, `{}`))
	p := mustNew(t, Options{Upstream: up.URL})
	serve(t, p.Handler("/images/generations"), http.Header{"Authorization": {"Bearer client"}}, []byte(`{}`))
	if a, ok := up.last(t).header["Authorization"]; ok {
		t.Errorf("Authorization %q sent without a key", a)
	}
}

func TestEmptyBody(t *testing.T) {
	up := newUpstream(t, jsonReply(http.StatusOK, `{}`))
	p := mustNew(t, Options{Upstream: up.URL, Key: testKey})
	resp, _ := serve(t, p.Handler("/x"), nil, nil)
	if resp.StatusCode != http.StatusOK || len(up.last(t).body) != 0 {
		t.Errorf("status %d body %q", resp.StatusCode, up.last(t).body)
	}
}

func TestUpstreamErrorsPassThrough(t *testing.T) {
	for _, tc := range []struct {
		status           int
		contentType      string
		body, retryAfter string
	}{
		{400, "application/json", `{"error":{"message":"Invalid 'n'","type":"invalid_request_error","param":"n","code":null}}`, ""},
		{401, "application/json", `{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}`, ""},
		{429, "application/json", `{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`, "20"},
		{500, "application/json", `{"error":{"message":"The server had an error","type":"server_error"}}`, ""},
		{502, "text/html", `<html>bad gateway</html>`, ""},
		{503, "text/plain; charset=utf-8", "overloaded\n", "3"},
	} {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.contentType)
				if tc.retryAfter != "" {
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			})
			p := mustNew(t, Options{Upstream: up.URL, Key: testKey})
			resp, got := serve(t, p.Handler("/images/generations"), nil, []byte(`{"prompt":"a"}`))
			if resp.StatusCode != tc.status || string(got) != tc.body {
				t.Errorf("answer %d %q, want %d %q", resp.StatusCode, got, tc.status, tc.body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != tc.contentType {
				t.Errorf("Content-Type %q", ct)
			}
			if ra := resp.Header.Get("Retry-After"); ra != tc.retryAfter {
				t.Errorf("Retry-After %q", ra)
			}
		})
	}
}

// checkFailure asserts the proxy's own error answer, exactly.
func checkFailure(tb testing.TB, status int, header http.Header, body []byte, wantStatus int, want string) {
	tb.Helper()
	if status != wantStatus || strings.TrimSpace(string(body)) != want {
		tb.Errorf("answer %d %s, want %d %s", status, body, wantStatus, want)
	}
	if ct := header.Get("Content-Type"); ct != "application/json" {
		tb.Errorf("Content-Type %q", ct)
	}
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		tb.Errorf("body is not JSON: %v", err)
	}
}

const unreachable = `{"error":{"message":"upstream unreachable","type":"api_error","code":"upstream_unreachable"}}`

func TestUnreachable(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	addr := dead.URL
	dead.Close()

	var logs bytes.Buffer
	p := mustNew(t, Options{Upstream: addr + "/v1", Key: testKey, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	resp, body := serve(t, p.Handler("/images/generations"), http.Header{"Content-Type": {"application/json"}}, []byte(`{"prompt":"a"}`))
	checkFailure(t, resp.StatusCode, resp.Header, body, http.StatusBadGateway, unreachable)

	var everything bytes.Buffer
	resp.Header.Write(&everything)
	everything.Write(body)
	if strings.Contains(everything.String(), testKey) {
		t.Errorf("the key appears in the answer: %s", everything.String())
	}
	if !strings.Contains(logs.String(), "upstream request failed") {
		t.Errorf("nothing logged: %q", logs.String())
	}
	if strings.Contains(logs.String(), testKey) {
		t.Errorf("the key appears in the log: %s", logs.String())
	}
}

func TestContext(t *testing.T) {
	arrived := make(chan struct{}, 1)
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case arrived <- struct{}{}:
		default:
		}
		<-r.Context().Done() // answers only when the proxy gives up
	})
	p := mustNew(t, Options{Upstream: up.URL, Key: testKey})
	h := p.Handler("/images/generations")
	call := func(ctx context.Context) *httptest.ResponseRecorder {
		req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/", strings.NewReader(`{"prompt":"a"}`))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}

	t.Run("Canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan *httptest.ResponseRecorder)
		go func() { done <- call(ctx) }()
		<-arrived
		cancel()
		rec := <-done
		checkFailure(t, rec.Code, rec.Header(), rec.Body.Bytes(), http.StatusBadGateway, unreachable)
	})
	t.Run("Deadline", func(t *testing.T) {
		ctx, cancel := context.WithDeadline(t.Context(), time.Now().Add(-time.Second))
		defer cancel()
		rec := call(ctx)
		checkFailure(t, rec.Code, rec.Header(), rec.Body.Bytes(), http.StatusGatewayTimeout,
			`{"error":{"message":"upstream timed out","type":"api_error","code":"upstream_timeout"}}`)
	})
	t.Run("ClientTimeout", func(t *testing.T) {
		p := mustNew(t, Options{Upstream: up.URL, Key: testKey, Client: &http.Client{Timeout: time.Millisecond}})
		req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{}`))
		rec := httptest.NewRecorder()
		p.Handler("/x").ServeHTTP(rec, req)
		checkFailure(t, rec.Code, rec.Header(), rec.Body.Bytes(), http.StatusGatewayTimeout,
			`{"error":{"message":"upstream timed out","type":"api_error","code":"upstream_timeout"}}`)
	})
}

func TestMaxResponseBytes(t *testing.T) {
	up := newUpstream(t, jsonReply(http.StatusOK, `{"data":[]}`)) // 11 bytes
	for _, tc := range []struct {
		max    int64
		status int
	}{{11, http.StatusOK}, {10, http.StatusBadGateway}} {
		p := mustNew(t, Options{Upstream: up.URL, Key: testKey, MaxResponseBytes: tc.max})
		resp, body := serve(t, p.Handler("/x"), nil, []byte(`{}`))
		if resp.StatusCode != tc.status {
			t.Errorf("max %d: status %d %s", tc.max, resp.StatusCode, body)
		}
		if tc.status == http.StatusBadGateway {
			checkFailure(t, resp.StatusCode, resp.Header, body, http.StatusBadGateway,
				`{"error":{"message":"upstream response too large","type":"api_error","code":"upstream_response_too_large"}}`)
		}
	}
}

// An answer without a Content-Length (chunked) is measured while it is
// read; one that declares too large a length is refused without reading it.
func TestMaxResponseBytesChunked(t *testing.T) {
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"data":[`)
		w.(http.Flusher).Flush() // no Content-Length from here on
		io.WriteString(w, `1,2,3]}`)
	})
	for _, tc := range []struct {
		max    int64
		status int
	}{{16, http.StatusOK}, {15, http.StatusBadGateway}} {
		p := mustNew(t, Options{Upstream: up.URL, Key: testKey, MaxResponseBytes: tc.max})
		resp, body := serve(t, p.Handler("/x"), nil, []byte(`{}`))
		if resp.StatusCode != tc.status {
			t.Errorf("max %d: status %d %s", tc.max, resp.StatusCode, body)
		}
	}
}

func TestRedirectNotFollowed(t *testing.T) {
	elsewhere := newUpstream(t, jsonReply(http.StatusOK, `{}`))
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+"/steal", http.StatusTemporaryRedirect)
	})
	p := mustNew(t, Options{Upstream: up.URL, Key: testKey})
	resp, _ := serve(t, p.Handler("/x"), nil, []byte(`{}`))
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Errorf("status %d", resp.StatusCode)
	}
	elsewhere.mu.Lock()
	n := len(elsewhere.got)
	elsewhere.mu.Unlock()
	if n != 0 {
		t.Error("the redirect was followed")
	}
}

func TestRequestBodyError(t *testing.T) {
	up := newUpstream(t, jsonReply(http.StatusOK, `{}`))
	p := mustNew(t, Options{Upstream: up.URL, Key: testKey})
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/", nil)
	req.Body = http.MaxBytesReader(rec, io.NopCloser(strings.NewReader(strings.Repeat("x", 100))), 10)
	req.ContentLength = -1
	p.Handler("/x").ServeHTTP(rec, req)
	checkFailure(t, rec.Code, rec.Header(), rec.Body.Bytes(), http.StatusRequestEntityTooLarge,
		`{"error":{"message":"request body too large","type":"invalid_request_error","code":"request_too_large"}}`)
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct{ name, upstream, key string }{
		{"Empty", "", ""},
		{"NoScheme", "api.openai.com/v1", ""},
		{"Relative", "/v1", ""},
		{"FTP", "ftp://example.com/v1", ""},
		{"Opaque", "https:api.openai.com", ""},
		{"NoHost", "https:///v1", ""},
		{"PortOnly", "http://:8080/v1", ""},
		{"UserInfo", "https://user:hunter2@api.example.com/v1", ""},
		{"Fragment", "https://api.example.com/v1#frag", ""},
		{"Unparsable", "http://[::1/hunter2", ""},
		{"BadPort", "http://example.com:hunter2/", ""},
		{"KeyNewline", "https://api.example.com/v1", "sk-abc\r\nX-Evil: 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(Options{Upstream: tc.upstream, Key: tc.key})
			if err == nil || p != nil {
				t.Fatalf("New(%q) = %v, %v; want an error", tc.upstream, p, err)
			}
			if !strings.HasPrefix(err.Error(), "proxy: ") {
				t.Errorf("error %q", err)
			}
			if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "sk-abc") {
				t.Errorf("error %q repeats a secret", err)
			}
		})
	}
	for _, ok := range []string{"https://api.openai.com/v1", "http://127.0.0.1:9000", "http://[::1]:9000/v1/", "https://x.example.com/openai/deployments/d?api-version=1"} {
		if _, err := New(Options{Upstream: ok, Key: testKey}); err != nil {
			t.Errorf("New(%q): %v", ok, err)
		}
	}
}

func BenchmarkForward(b *testing.B) {
	up := newUpstream(b, jsonReply(http.StatusOK, `{"created":1,"data":[{"url":"https://example.com/a.png"}]}`))
	p := mustNew(b, Options{Upstream: up.URL + "/v1", Key: testKey})
	srv := httptest.NewServer(p.Handler("/images/generations"))
	b.Cleanup(srv.Close)
	body := []byte(`{"prompt":"a cat","n":1}`)
	for b.Loop() {
		resp, err := http.Post(srv.URL, "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatal(resp.StatusCode)
		}
	}
}

func TestBodyWithoutLength(t *testing.T) {
	// A middleware that replaced the body but not the length: the body is
	// still forwarded, with its length unknown.
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = nil // none, not even a sniffed one
		io.WriteString(w, "plain")
	})
	p := mustNew(t, Options{Upstream: up.URL, Key: testKey})
	for _, cl := range []int64{0, -1} {
		req := httptest.NewRequest(http.MethodPost, "/", nil)
		req.Body = io.NopCloser(strings.NewReader(`{"prompt":"replaced"}`))
		req.ContentLength = cl
		rec := httptest.NewRecorder()
		p.Handler("/x").ServeHTTP(rec, req)
		if got := string(up.last(t).body); got != `{"prompt":"replaced"}` {
			t.Errorf("ContentLength %d: upstream body %q", cl, got)
		}
		if rec.Code != http.StatusOK || rec.Body.String() != "plain" {
			t.Errorf("answer %d %q", rec.Code, rec.Body)
		}
		if ct, ok := rec.Header()["Content-Type"]; ok && len(ct) > 0 {
			t.Errorf("Content-Type %q invented", ct)
		}
	}
}

// TestQueryNeverLogged: the upstream URL's query string may hold a key; a
// failed request logs the upstream as scheme://host/path only.
func TestQueryNeverLogged(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	addr := dead.URL
	dead.Close()
	drop := newUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
			c.Close()
		}
	})
	for _, base := range []string{addr + "/v1?key=SECRET-q1", drop.URL + "/v1?api-key=SECRET-q2&api-version=1", addr + "/v1/?key=SECRET-q3#"} {
		var logs bytes.Buffer
		p, err := New(Options{Upstream: base, Key: testKey, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		resp, body := serve(t, p.Handler("/images/generations"), http.Header{"Content-Type": {"application/json"}}, []byte(`{"prompt":"a"}`))
		checkFailure(t, resp.StatusCode, resp.Header, body, http.StatusBadGateway, unreachable)
		if !strings.Contains(logs.String(), "upstream request failed") || !strings.Contains(logs.String(), "/v1/images/generations") {
			t.Errorf("%s: the failure is not logged with the upstream path: %q", base, logs.String())
		}
		if strings.Contains(logs.String(), "SECRET") || strings.Contains(string(body), "SECRET") {
			t.Errorf("%s: the query string is logged or answered: %q %s", base, logs.String(), body)
		}
	}
}

func TestLogURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://api.openai.com/v1":                     "https://api.openai.com/v1",
		"https://user:pw@api.example.com/v1?key=s#frag": "https://api.example.com/v1",
		"http://127.0.0.1:9000/v1/images/edits?a=b":     "http://127.0.0.1:9000/v1/images/edits",
		"http://[::1]:9000/openai/deployments/d%2Fe?k=": "http://[::1]:9000/openai/deployments/d%2Fe",
		"http://[::1/hunter2":                           "(unparsable URL)",
	} {
		if got := LogURL(in); got != want {
			t.Errorf("LogURL(%q) = %q, want %q", in, got, want)
		}
	}
}
