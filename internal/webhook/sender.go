package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults for Options.
const (
	DefaultTimeout          = 15 * time.Second
	DefaultConnectTimeout   = 5 * time.Second
	DefaultFirstByteTimeout = 10 * time.Second
	DefaultMaxResponseBytes = 64 << 10
	DefaultUserAgent        = "tasks-callback/1"
)

// Header names of the Standard Webhooks specification, as written on the wire
// (HTTP header names are case-insensitive).
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// Canonical forms, to fill the header map without re-canonicalising.
var (
	canonID        = http.CanonicalHeaderKey(HeaderID)
	canonTimestamp = http.CanonicalHeaderKey(HeaderTimestamp)
	canonSignature = http.CanonicalHeaderKey(HeaderSignature)
)

// Options configure a Sender. The zero value is usable: unsigned deliveries,
// guard on, default timeout, answer cap and User-Agent.
type Options struct {
	// Secret signs deliveries: "whsec_" followed by the key in standard
	// base64, as the Standard Webhooks libraries expect. Empty: deliveries
	// are unsigned (webhook-id and webhook-timestamp are still sent).
	Secret string

	// AllowPrivateNetworks turns the SSRF guard off: loopback, private,
	// link-local and the other refused ranges may then be dialed. For tests
	// and in-house receivers. The scheme check, the refusal of non-standard
	// numeric host names and the no-redirect rule stay in force.
	AllowPrivateNetworks bool

	// Timeout bounds one attempt: connecting, sending and reading the answer.
	// Zero means DefaultTimeout (15s).
	Timeout time.Duration

	// ConnectTimeout bounds the connection of an attempt: resolving the
	// host and connecting to its addresses. FirstByteTimeout bounds the
	// wait for the answer's headers once the request is sent, so that a
	// receiver that accepts connections and never answers holds an attempt
	// for that long only. Both are cut short by Timeout and apply to the
	// Sender's own transport only (not to Options.Transport). Zero means
	// DefaultConnectTimeout (5s) and DefaultFirstByteTimeout (10s).
	ConnectTimeout   time.Duration
	FirstByteTimeout time.Duration

	// MaxResponseBytes is how much of the receiver's answer body is read
	// (and discarded) before the connection is closed or reused. Zero means
	// DefaultMaxResponseBytes (64 KiB).
	MaxResponseBytes int64

	// UserAgent is sent on every attempt. Empty means DefaultUserAgent.
	UserAgent string

	// Transport, when set, replaces the Sender's own transport.
	//
	// WARNING: a custom Transport BYPASSES THE CONNECT-TIME SSRF GUARD. It
	// dials however it likes, so nothing checks the resolved address and a
	// host name that resolves to a private address will be reached. Only
	// the URL checks (scheme, IP literals, "localhost", non-standard numeric
	// hosts) and the no-redirect rule still apply. Meant for tests and for
	// embedders who put their own egress control in the Transport; to
	// instrument deliveries, use WrapTransport instead.
	Transport http.RoundTripper

	// WrapTransport, when set, wraps the Sender's own transport: every
	// attempt goes through the RoundTripper it returns, which must send
	// the request on through the one it was given (as otelhttp.NewTransport
	// does). The connections are still made by the Sender's own dialer, so
	// the connect-time SSRF guard, ConnectTimeout and FirstByteTimeout keep
	// applying. It is called once, by NewSender, and must not return nil.
	// Ignored when Transport is set.
	WrapTransport func(http.RoundTripper) http.RoundTripper
}

// Sender POSTs callback bodies, one attempt per Send. It keeps a pool of
// connections (up to 64 idle per host) shared by all calls. Safe for
// concurrent use.
type Sender struct {
	key          []byte    // nil: unsigned
	macs         sync.Pool // of hash.Hash: HMAC-SHA256 keyed with key
	allowPrivate bool
	timeout      time.Duration
	connect      time.Duration
	firstByte    time.Duration
	maxResp      int64
	userAgent    []string
	client       *http.Client
	own          *http.Transport // the Sender's own transport; nil when Options.Transport is set
	dialer       *dialer         // nil when Options.Transport is set
}

// NewSender returns a Sender configured by o. It fails on a malformed
// secret (not "whsec_" followed by standard base64; the error does not quote
// it), a negative Timeout or MaxResponseBytes, or a UserAgent with control
// characters.
func NewSender(o Options) (*Sender, error) {
	s := &Sender{
		allowPrivate: o.AllowPrivateNetworks,
		timeout:      o.Timeout,
		connect:      o.ConnectTimeout,
		firstByte:    o.FirstByteTimeout,
		maxResp:      o.MaxResponseBytes,
	}
	if o.Secret != "" {
		key, err := ParseSecret(o.Secret)
		if err != nil {
			return nil, err
		}
		s.key = key
		s.macs.New = func() any { return hmac.New(sha256.New, key) }
	}
	switch {
	case s.timeout < 0:
		return nil, fmt.Errorf("webhook: negative Timeout %v", o.Timeout)
	case s.timeout == 0:
		s.timeout = DefaultTimeout
	}
	switch {
	case s.connect < 0 || s.firstByte < 0:
		return nil, fmt.Errorf("webhook: negative ConnectTimeout %v or FirstByteTimeout %v", o.ConnectTimeout, o.FirstByteTimeout)
	}
	if s.connect == 0 {
		s.connect = DefaultConnectTimeout
	}
	if s.firstByte == 0 {
		s.firstByte = DefaultFirstByteTimeout
	}
	switch {
	case s.maxResp < 0:
		return nil, fmt.Errorf("webhook: negative MaxResponseBytes %d", o.MaxResponseBytes)
	case s.maxResp == 0:
		s.maxResp = DefaultMaxResponseBytes
	}
	ua := o.UserAgent
	if ua == "" {
		ua = DefaultUserAgent
	}
	if !validHeaderValue(ua) {
		return nil, errors.New("webhook: UserAgent contains control characters")
	}
	s.userAgent = []string{ua}

	rt := o.Transport
	if rt == nil {
		s.dialer = newDialer(o.AllowPrivateNetworks)
		s.dialer.timeout = s.connect
		s.own = &http.Transport{
			Proxy:                  nil, // an environment proxy would dial for us, past the guard
			DialContext:            s.dialer.DialContext,
			ForceAttemptHTTP2:      true,
			MaxIdleConns:           256,
			MaxIdleConnsPerHost:    64,
			IdleConnTimeout:        90 * time.Second,
			TLSHandshakeTimeout:    10 * time.Second,
			ResponseHeaderTimeout:  s.firstByte,
			ExpectContinueTimeout:  time.Second,
			MaxResponseHeaderBytes: 64 << 10,
			DisableCompression:     true, // the answer is discarded; do not invite gzip
		}
		rt = s.own
		if o.WrapTransport != nil {
			if rt = o.WrapTransport(s.own); rt == nil {
				return nil, errors.New("webhook: WrapTransport returned nil")
			}
		}
	}
	s.client = &http.Client{
		Transport: rt,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // never follow: a redirect could point anywhere
		},
	}
	return s, nil
}

// SetLookup replaces how s's own transport resolves host names (default
// net.DefaultResolver.LookupNetIP); the guard checks whatever addresses f
// returns. A test seam, so that tests never query DNS: call it before the
// first Send. No-op with Options.Transport.
func SetLookup(s *Sender, f func(ctx context.Context, host string) ([]netip.Addr, error)) {
	if s.dialer != nil {
		s.dialer.lookup = f
	}
}

// CloseIdleConnections closes the idle connections of the Sender's
// transport (or of Options.Transport, or the RoundTripper WrapTransport
// returned, when it has such a method). The Sender stays usable.
func (s *Sender) CloseIdleConnections() {
	if s != nil && s.client != nil {
		s.client.CloseIdleConnections()
		if s.own != nil {
			s.own.CloseIdleConnections() // a wrapper may not pass the call on
		}
	}
}

// Result says what one attempt did.
type Result struct {
	// Status is the HTTP status of the answer, 0 when there was none.
	Status int
	// Delivered: the receiver answered 2xx.
	Delivered bool
	// Gone: the receiver answered 410 Gone; stop retrying.
	Gone bool
	// Permanent: retrying cannot help (the SSRF guard refused the address,
	// the URL is malformed or not http(s), the id is unusable).
	Permanent bool
	// RetryAfter is the receiver's Retry-After (seconds or HTTP date, taken
	// from any non-2xx answer), capped at MaxRetryAfter; 0 when absent,
	// malformed or in the past.
	RetryAfter time.Duration
	// Err describes a failed attempt for humans and logs: "status 500",
	// "status 410 (gone)", "redirect not followed (302)", "timeout after
	// 15s", "address 10.0.0.1 is not allowed (private network)", "dial tcp
	// 203.0.113.9:443: connect: connection refused". It never contains the
	// URL (which may carry credentials) or the secret. "" when Delivered.
	Err string
}

// Send makes one delivery attempt: it POSTs body to url as
// application/json with the headers webhook-id: id (pass the same id on
// every attempt of one callback so the receiver can de-duplicate),
// webhook-timestamp: now in Unix seconds (the zero Time means time.Now()),
// webhook-signature when the Sender has a secret, and User-Agent.
//
// Redirects are never followed; a 3xx answer is a failed, retryable
// attempt. At most MaxResponseBytes of the answer are read, then the body
// is closed. The attempt is bounded by Options.Timeout and by ctx.
//
// Send returns no error value and never panics: every failure, including a
// panic in a custom Transport, is described in the Result.
func (s *Sender) Send(ctx context.Context, url, id string, body []byte, now time.Time) (res Result) {
	if s == nil || s.client == nil {
		return Result{Permanent: true, Err: "webhook: Sender not created with NewSender"}
	}
	defer func() {
		if r := recover(); r != nil {
			res = Result{Err: fmt.Sprintf("internal error: %v", r)}
		}
	}()
	if id == "" {
		return Result{Permanent: true, Err: "empty webhook id"}
	}
	if !validHeaderValue(id) {
		return Result{Permanent: true, Err: "webhook id contains control characters"}
	}
	u, err := parseURL(url, s.allowPrivate)
	if err != nil {
		return Result{Permanent: true, Err: err.Error()}
	}
	if now.IsZero() {
		now = time.Now()
	}
	if ctx == nil {
		ctx = context.Background()
	}
	actx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	// The URL is already parsed and checked: hand it over rather than have
	// NewRequestWithContext parse it again.
	req, err := http.NewRequestWithContext(actx, http.MethodPost, "", bytes.NewReader(body))
	if err != nil {
		return Result{Err: "internal error: " + err.Error()}
	}
	req.URL, req.Host = u, u.Host
	ts := now.Unix()
	h := make(http.Header, 6)
	h["Content-Type"] = []string{"application/json"}
	h["User-Agent"] = s.userAgent
	h[canonID] = []string{id}
	h[canonTimestamp] = []string{strconv.FormatInt(ts, 10)}
	if s.key != nil {
		m := s.macs.Get().(hash.Hash)
		h[canonSignature] = []string{signWith(m, id, ts, body)}
		m.Reset()
		s.macs.Put(m)
	}
	req.Header = h

	resp, err := s.client.Do(req)
	if err != nil {
		return s.failure(ctx, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, s.maxResp))
	_ = resp.Body.Close()

	res.Status = resp.StatusCode
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		res.Delivered = true
		return res
	case resp.StatusCode == http.StatusGone:
		res.Gone = true
		res.Err = "status 410 (gone)"
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		res.Err = fmt.Sprintf("redirect not followed (%d)", resp.StatusCode)
	default:
		res.Err = fmt.Sprintf("status %d", resp.StatusCode)
	}
	res.RetryAfter = ParseRetryAfter(resp.Header.Get("Retry-After"), now)
	return res
}

// failure turns a transport error into a Result. parent is the caller's
// context (not the per-attempt one).
func (s *Sender) failure(parent context.Context, err error) Result {
	var na *notAllowedError
	if errors.As(err, &na) {
		return Result{Permanent: true, Err: na.Error()}
	}
	var iu *invalidURLError
	if errors.As(err, &iu) {
		return Result{Permanent: true, Err: iu.Error()}
	}
	if perr := parent.Err(); perr != nil {
		return Result{Err: "aborted: " + perr.Error()}
	}
	var ce *connectTimeoutError
	if errors.As(err, &ce) {
		return Result{Err: fmt.Sprintf("no connection within %v", s.connect)}
	}
	if strings.Contains(err.Error(), "timeout awaiting response headers") { // net/http's ResponseHeaderTimeout
		return Result{Err: fmt.Sprintf("no answer within %v", s.firstByte)}
	}
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		return Result{Err: fmt.Sprintf("timeout after %v", s.timeout)}
	}
	return Result{Err: stripURL(err)}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// stripURL returns the message of err without the URL that *url.Error
// quotes (it may carry credentials or tokens).
func stripURL(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err.Error()
	}
	return err.Error()
}

// ParseRetryAfter reads a Retry-After header value: a number of seconds or
// an HTTP date (taken relative to now). It returns 0 for an empty,
// malformed, negative or past value, and caps the result at MaxRetryAfter.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if v[0] >= '0' && v[0] <= '9' {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return MaxRetryAfter
			}
			return 0
		}
		if n >= uint64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter
		}
		return time.Duration(n) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	d := t.Sub(now)
	if d <= 0 {
		return 0
	}
	return min(d, MaxRetryAfter)
}

// validHeaderValue reports whether v can be sent as a header value: no
// control characters other than horizontal tab.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
