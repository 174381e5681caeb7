// Package proxy forwards image requests to an OpenAI-compatible upstream
// API, such as https://api.openai.com/v1, with the operator's key.
//
// A Handler sends the incoming request's method, body (streamed as
// received; a multipart boundary is kept) and Content-Type to the upstream,
// with "Authorization: Bearer <Key>" in place of whatever Authorization the
// client sent (the client's token is for this server, not the upstream). No
// other request header and no query string of the incoming request is
// forwarded. The upstream's status, body and Content-Type come back as they
// are, as do its Retry-After and X-Request-Id headers; a 4xx or 5xx is passed
// through untouched (the callback recorder turns it into the contract's
// failure object).
//
// When the upstream cannot be reached the answer is HTTP 502 with an
// OpenAI-style body,
//
//	{"error":{"message":"upstream unreachable","type":"api_error","code":"upstream_unreachable"}}
//
// and 504 with code "upstream_timeout" when the request's context deadline or
// a client timeout passed. The key never appears in an answer or a log line,
// and neither does the upstream URL's query string (which may carry a key,
// as in ?api-key=…): logs name the upstream as scheme://host/path (LogURL).
package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Defaults applied by New.
const (
	// DefaultMaxResponseBytes caps an upstream answer when
	// Options.MaxResponseBytes is zero.
	DefaultMaxResponseBytes = 64 << 20

	// defaultResponseHeaderTimeout bounds the wait for an upstream's answer
	// in the default client; image generation can take minutes.
	defaultResponseHeaderTimeout = 10 * time.Minute
	// defaultClientTimeout bounds a whole exchange in the default client.
	// The incoming request's context usually ends it sooner.
	defaultClientTimeout = 15 * time.Minute
)

// Options configure a Proxy.
type Options struct {
	// Upstream is the base URL of the upstream API, e.g.
	// "https://api.openai.com/v1". It must be an absolute http or https URL
	// without user information or fragment; a query string (e.g. an
	// api-version, or a key) is sent with every request and never logged.
	Upstream string
	// Key is the bearer key sent upstream. It is never logged nor echoed.
	// When empty, no Authorization header is sent.
	Key string
	// Client sends the upstream requests. Default: a client with the
	// standard transport (proxy from the environment, dial and TLS
	// timeouts), a 10-minute wait for the answer's headers, a 15-minute
	// bound on the whole exchange, and redirects returned instead of
	// followed (a redirect must not carry the key elsewhere).
	Client *http.Client
	// MaxResponseBytes caps an upstream answer; a larger one is answered
	// with 502 and code "upstream_response_too_large". Default
	// DefaultMaxResponseBytes.
	MaxResponseBytes int64
	// Logger receives a warning for each upstream request that fails.
	// Default slog.Default().
	Logger *slog.Logger
}

// Proxy forwards requests to one upstream API. It is safe for concurrent
// use.
type Proxy struct {
	base   *url.URL
	query  string // base.RawQuery, never logged
	key    string
	client *http.Client
	max    int64
	log    *slog.Logger
}

// New returns a Proxy to o.Upstream, or an error when that is not an
// absolute http or https URL (the error never repeats the URL, which may
// hold secrets) or when the key cannot be sent in a header.
func New(o Options) (*Proxy, error) {
	base, err := parseUpstream(o.Upstream)
	if err != nil {
		return nil, err
	}
	for _, c := range []byte(o.Key) {
		if c < 0x20 || c == 0x7f {
			return nil, errors.New("proxy: the key holds a control character")
		}
	}
	p := &Proxy{base: base, query: base.RawQuery, key: o.Key, client: o.Client, max: o.MaxResponseBytes, log: o.Logger}
	if p.client == nil {
		p.client = defaultClient()
	}
	if p.max <= 0 {
		p.max = DefaultMaxResponseBytes
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	return p, nil
}

func parseUpstream(s string) (*url.URL, error) {
	if s == "" {
		return nil, errors.New("proxy: the upstream URL is empty")
	}
	u, err := url.Parse(s)
	if err != nil {
		// url.Parse's message quotes parts of the URL, which may be secret.
		return nil, errors.New("proxy: bad upstream URL: it cannot be parsed (check the host, port and escaping)")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, errors.New("proxy: bad upstream URL: the scheme must be http or https")
	case u.Opaque != "" || u.Host == "":
		return nil, errors.New("proxy: bad upstream URL: it must be absolute, like https://api.openai.com/v1")
	case u.User != nil:
		return nil, errors.New("proxy: bad upstream URL: it must not hold user information; pass the key as Key")
	case u.Fragment != "" || u.RawFragment != "":
		return nil, errors.New("proxy: bad upstream URL: it must not have a fragment")
	case u.Hostname() == "":
		return nil, errors.New("proxy: bad upstream URL: the host is empty")
	}
	return u, nil
}

// LogURL returns what may be logged of a URL: scheme://host/path, without
// user information, query string or fragment, any of which may hold a
// secret. It returns "(unparsable URL)" when raw cannot be parsed.
func LogURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}).String()
}

// logErr returns the text of err for a log line: the upstream URL an
// *url.Error names is cut to LogURL's form, and the base URL's query string
// is taken out of whatever else the text holds.
func (p *Proxy) logErr(err error) string {
	if ue, ok := err.(*url.Error); ok {
		c := *ue
		c.URL = LogURL(ue.URL)
		err = &c
	}
	s := err.Error()
	if p.query != "" {
		s = strings.ReplaceAll(s, "?"+p.query, "")
	}
	return s
}

func defaultClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = defaultResponseHeaderTimeout
	return &http.Client{
		Transport: t,
		Timeout:   defaultClientTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Handler forwards requests to path under the upstream's base URL:
// with Upstream "https://api.openai.com/v1", Handler("/images/generations")
// posts to "https://api.openai.com/v1/images/generations".
func (p *Proxy) Handler(path string) http.Handler {
	target := p.base.JoinPath(path).String()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.forward(w, r, target, path)
	})
}

// Upstream response headers copied to the client besides Content-Type.
var copiedHeaders = []string{"Content-Type", "Retry-After", "X-Request-Id"}

func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, target, path string) {
	ctx := r.Context()
	var body io.Reader = http.NoBody
	var tb *trackedBody
	if r.Body != nil && r.Body != http.NoBody {
		tb = &trackedBody{r: r.Body}
		body = tb
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, target, body)
	if err != nil { // only an invalid method can get here
		writeError(w, http.StatusBadRequest, "invalid_request_error", "bad_request", "invalid request method")
		return
	}
	if tb != nil {
		// The length the body was received with; unknown (sent chunked)
		// when it was chunked, or when a middleware replaced the body and
		// left the length at zero.
		req.ContentLength = r.ContentLength
		if req.ContentLength == 0 {
			req.ContentLength = -1
		}
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if p.key != "" {
		req.Header.Set("Authorization", "Bearer "+p.key)
	}

	resp, err := p.client.Do(req)
	if err != nil {
		if berr := tb.err(); berr != nil {
			p.bodyError(w, berr)
			return
		}
		p.failed(ctx, w, r, path, "upstream request failed", err)
		return
	}
	defer resp.Body.Close()
	var data []byte
	if resp.ContentLength <= p.max { // an answer declared too large is not read at all
		data, err = io.ReadAll(io.LimitReader(resp.Body, p.max+1))
		if err != nil {
			p.failed(ctx, w, r, path, "reading the upstream answer failed", err)
			return
		}
	}
	if resp.ContentLength > p.max || int64(len(data)) > p.max {
		p.log.WarnContext(ctx, "upstream answer too large", "method", r.Method, "path", path,
			"host", p.base.Host, "status", resp.StatusCode, "limit", p.max)
		writeError(w, http.StatusBadGateway, "api_error", "upstream_response_too_large", "upstream response too large")
		return
	}
	h := w.Header()
	for _, k := range copiedHeaders {
		if v := resp.Header.Get(k); v != "" {
			h.Set(k, v)
		}
	}
	if h.Get("Content-Type") == "" {
		h["Content-Type"] = nil // as the upstream sent it: no sniffing
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(data)
}

// failed answers an exchange that did not complete: 504 for a timeout, 502
// otherwise.
func (p *Proxy) failed(ctx context.Context, w http.ResponseWriter, r *http.Request, path, msg string, err error) {
	// err names the upstream URL, whose query string may hold a secret:
	// logErr cuts it (New refuses user information; the key is only in a
	// header).
	p.log.WarnContext(ctx, msg, "method", r.Method, "path", path, "host", p.base.Host, "err", p.logErr(err))
	if isTimeout(ctx, err) {
		writeError(w, http.StatusGatewayTimeout, "api_error", "upstream_timeout", "upstream timed out")
		return
	}
	writeError(w, http.StatusBadGateway, "api_error", "upstream_unreachable", "upstream unreachable")
}

func isTimeout(ctx context.Context, err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return true
	}
	ne, ok := errors.AsType[net.Error](err)
	return ok && ne.Timeout()
}

// bodyError answers a failure to read the incoming request's body.
func (p *Proxy) bodyError(w http.ResponseWriter, err error) {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		writeError(w, http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large", "request body too large")
		return
	}
	writeError(w, http.StatusBadRequest, "invalid_request_error", "bad_request", "request body could not be read")
}

// trackedBody remembers the error of reading the incoming body, to tell it
// from an upstream failure. The transport reads it on its own goroutine.
type trackedBody struct {
	r io.Reader

	mu      sync.Mutex
	readErr error
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		b.mu.Lock()
		b.readErr = err
		b.mu.Unlock()
	}
	return n, err
}

func (b *trackedBody) err() error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.readErr
}

type errorBody struct {
	Error struct {
		Message string `json:"message"`
		Type    string `json:"type"`
		Code    string `json:"code"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, typ, code, message string) {
	var b errorBody
	b.Error.Message, b.Error.Type, b.Error.Code = message, typ, code
	var buf bytes.Buffer
	json.NewEncoder(&buf).Encode(b)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}
