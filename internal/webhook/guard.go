package webhook

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/net/idna"
)

// Sentinel errors. CheckURL and failed deliveries wrap them; test with
// errors.Is.
var (
	// ErrInvalidURL: the callback URL is not an absolute http or https URL
	// with a usable host and port.
	ErrInvalidURL = errors.New("webhook: invalid URL")
	// ErrNotAllowed: the destination address is refused by the SSRF guard
	// (loopback, private, link-local, multicast, unspecified or another
	// special-purpose address).
	ErrNotAllowed = errors.New("webhook: destination not allowed")
)

// invalidURLError wraps ErrInvalidURL with a human-readable reason.
type invalidURLError struct{ reason string }

func (e *invalidURLError) Error() string { return "invalid URL: " + e.reason }
func (e *invalidURLError) Unwrap() error { return ErrInvalidURL }

func invalidURL(format string, args ...any) error {
	return &invalidURLError{reason: fmt.Sprintf(format, args...)}
}

// notAllowedError wraps ErrNotAllowed. Its message names the address and
// the reason, e.g. "address 10.0.0.1 is not allowed (private network)", or
// with the host name when it was resolved:
// "address 127.0.0.1 of host rebind.test is not allowed (loopback)".
type notAllowedError struct {
	addr   netip.Addr
	host   string // the host name that resolved to addr, "" for a literal
	reason string
}

func (e *notAllowedError) Error() string {
	if !e.addr.IsValid() {
		return fmt.Sprintf("host %s is not allowed (%s)", e.host, e.reason)
	}
	if e.host != "" {
		return fmt.Sprintf("address %s of host %s is not allowed (%s)", e.addr, e.host, e.reason)
	}
	return fmt.Sprintf("address %s is not allowed (%s)", e.addr, e.reason)
}
func (e *notAllowedError) Unwrap() error { return ErrNotAllowed }

// CheckURL reports whether raw is a callback URL the Sender would attempt:
// an absolute http or https URL with a non-empty host and, if given, a port
// in 1..65535. The error wraps ErrInvalidURL.
//
// Host names made only of a number in a non-standard form (2130706433,
// 0x7f000001, 0177.0.0.1, 127.1: forms that some resolvers and browsers read
// as IPv4 addresses) are always refused as invalid: write the address as a
// dotted quad.
//
// Unless allowPrivate is set, a host that is an IP literal in a refused range
// (see the package documentation), "localhost" or a name under
// ".localhost" is refused with an error wrapping ErrNotAllowed. Other host
// names pass: they are resolved and checked when the Sender connects, so the
// check here is an early answer, not the guard itself.
//
// CheckURL neither resolves names nor touches the network.
func CheckURL(raw string, allowPrivate bool) error {
	_, err := parseURL(raw, allowPrivate)
	return err
}

// parseURL is CheckURL returning the parsed URL.
func parseURL(raw string, allowPrivate bool) (*url.URL, error) {
	if raw == "" {
		return nil, invalidURL("empty")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the whole URL, which may carry credentials:
		// keep only the reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, invalidURL("malformed: %v", err)
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
	case "":
		return nil, invalidURL("not absolute: want an http or https URL")
	default:
		return nil, invalidURL("scheme %q is not allowed: want http or https", u.Scheme)
	}
	if u.Opaque != "" || u.Host == "" {
		return nil, invalidURL("missing host")
	}
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return nil, invalidURL("port %q is out of range", p)
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return nil, invalidURL("empty port")
	}
	host := u.Hostname()
	if !isASCII(host) {
		// net/http maps a non-ASCII host to ASCII before it dials (IDNA,
		// UTS #46 lookup mapping): check what it will dial, so that
		// "１２７.０.０.１" or "ｌｏｃａｌｈｏｓｔ" is refused as 127.0.0.1 and
		// localhost are.
		mapped, err := idna.Lookup.ToASCII(host)
		if err != nil {
			return nil, invalidURL("host is not a valid internationalized domain name")
		}
		host = mapped
	}
	if _, err := checkHost(host, allowPrivate, refusedReason); err != nil {
		return nil, err
	}
	return u, nil
}

// isASCII reports whether s is plain ASCII.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// checkHost validates a host (no brackets, no port). For an IP literal it
// returns the address; for a name it returns the zero Addr. Names that are
// non-standard numeric addresses are refused always. Unless allowPrivate,
// an IP literal for which check returns a reason, and "localhost" or a name
// under ".localhost", are refused with an error wrapping ErrNotAllowed.
func checkHost(host string, allowPrivate bool, check func(netip.Addr) string) (netip.Addr, error) {
	if host == "" {
		return netip.Addr{}, invalidURL("missing host")
	}
	if !maybeIP(host) {
		// The common case, a DNS name: skip netip.ParseAddr, which allocates
		// an error for every name.
	} else if a, err := netip.ParseAddr(host); err == nil {
		if !allowPrivate {
			if reason := check(a); reason != "" {
				return netip.Addr{}, &notAllowedError{addr: a.WithZone(""), reason: reason}
			}
		}
		return a, nil
	}
	if strings.IndexByte(host, ':') >= 0 {
		return netip.Addr{}, invalidURL("malformed IP address %q", host)
	}
	if strings.IndexByte(host, '%') >= 0 {
		return netip.Addr{}, invalidURL("host %q contains a percent sign", host)
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if name == "" {
		return netip.Addr{}, invalidURL("missing host")
	}
	// "127.0.0.1." is a dotted quad with the root dot: treat it as the address.
	if name != host && maybeIP(name) {
		if a, err := netip.ParseAddr(name); err == nil && a.Is4() {
			return checkHost(name, allowPrivate, check)
		}
	}
	if last := name[strings.LastIndexByte(name, '.')+1:]; isNumericLabel(last) {
		return netip.Addr{}, invalidURL("host %q is a numeric address in a non-standard form: write it as a dotted quad", host)
	}
	if !allowPrivate && (name == "localhost" || strings.HasSuffix(name, ".localhost")) {
		return netip.Addr{}, &notAllowedError{host: host, reason: "loopback name"}
	}
	return netip.Addr{}, nil
}

// maybeIP reports whether h could be an IP literal: only digits and dots,
// or a colon somewhere (IPv6).
func maybeIP(h string) bool {
	if strings.IndexByte(h, ':') >= 0 {
		return true
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; c != '.' && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// isNumericLabel reports whether a DNS label would be read as a number by
// the WHATWG URL IPv4 parser (and inet_aton): decimal digits, or 0x followed
// by hex digits. No real top-level domain looks like that.
func isNumericLabel(l string) bool {
	if l == "" {
		return false
	}
	if len(l) >= 2 && l[0] == '0' && (l[1] == 'x' || l[1] == 'X') {
		for i := 2; i < len(l); i++ {
			if !isHex(l[i]) {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(l); i++ {
		if l[i] < '0' || l[i] > '9' {
			return false
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// Special-purpose ranges refused by the guard beyond what netip's predicates
// cover.
var (
	cgnat       = netip.MustParsePrefix("100.64.0.0/10")  // shared address space (RFC 6598)
	ietfProto   = netip.MustParsePrefix("192.0.0.0/24")   // IETF protocol assignments (RFC 6890)
	benchmark   = netip.MustParsePrefix("198.18.0.0/15")  // benchmarking (RFC 2544)
	reserved4   = netip.MustParsePrefix("240.0.0.0/4")    // reserved, includes 255.255.255.255
	thisNet     = netip.MustParsePrefix("0.0.0.0/8")      // "this network", includes 0.0.0.0
	nat64       = netip.MustParsePrefix("64:ff9b::/96")   // NAT64 well-known prefix (RFC 6052)
	nat64Local  = netip.MustParsePrefix("64:ff9b:1::/48") // NAT64 local use (RFC 8215)
	v4compat    = netip.MustParsePrefix("::/96")          // deprecated IPv4-compatible, includes :: and ::1
	discard6    = netip.MustParsePrefix("100::/64")       // discard-only (RFC 6666)
	teredo      = netip.MustParsePrefix("2001::/32")      // Teredo: embeds the client's IPv4
	sixToFour   = netip.MustParsePrefix("2002::/16")      // 6to4: embeds an IPv4 address
	siteLocal6  = netip.MustParsePrefix("fec0::/10")      // deprecated site-local
	orchid      = netip.MustParsePrefix("2001:10::/28")   // ORCHID, not routable
	broadcastV4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})
)

// v4translated holds the IPv4-translated addresses of SIIT (RFC 2765),
// ::ffff:0:a.b.c.d. Not to be confused with the IPv4-mapped ::ffff:a.b.c.d
// (::ffff:0:0/96), which netip unmaps.
var v4translated = netip.MustParsePrefix("::ffff:0:0:0/96")

// refusedReason returns why the guard refuses a, or "" when a may be dialed.
// IPv4-mapped IPv6 addresses are unmapped first; IPv4-translated
// (::ffff:0:0:0/96), NAT64 (64:ff9b::/96) and 6to4 (2002::/16) addresses are
// judged by the IPv4 address they embed.
func refusedReason(a netip.Addr) string {
	a = a.WithZone("").Unmap()
	switch {
	case !a.IsValid():
		return "invalid address"
	case a.Is4():
		return refusedReason4(a)
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case v4compat.Contains(a):
		return "IPv4-compatible IPv6"
	case a.IsPrivate():
		return "private network"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a.IsMulticast():
		return "multicast"
	case siteLocal6.Contains(a):
		return "site-local"
	case discard6.Contains(a):
		return "discard-only"
	case nat64Local.Contains(a):
		return "local-use NAT64"
	case teredo.Contains(a):
		return "Teredo"
	case orchid.Contains(a):
		return "ORCHID"
	case v4translated.Contains(a):
		b := a.As16()
		if r := refusedReason4(netip.AddrFrom4([4]byte(b[12:16]))); r != "" {
			return "IPv4-translated of " + r
		}
	case nat64.Contains(a):
		b := a.As16()
		if r := refusedReason4(netip.AddrFrom4([4]byte(b[12:16]))); r != "" {
			return "NAT64 of " + r
		}
	case sixToFour.Contains(a):
		b := a.As16()
		if r := refusedReason4(netip.AddrFrom4([4]byte(b[2:6]))); r != "" {
			return "6to4 of " + r
		}
	}
	return ""
}

func refusedReason4(a netip.Addr) string {
	switch {
	case thisNet.Contains(a):
		if a.IsUnspecified() {
			return "unspecified"
		}
		return "this network"
	case a.IsLoopback():
		return "loopback"
	case a.IsPrivate():
		return "private network"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a.IsMulticast():
		return "multicast"
	case cgnat.Contains(a):
		return "shared address space"
	case a == broadcastV4:
		return "broadcast"
	case reserved4.Contains(a):
		return "reserved"
	case ietfProto.Contains(a):
		return "IETF protocol assignment"
	case benchmark.Contains(a):
		return "benchmarking"
	}
	return ""
}

// dialer resolves the host itself, checks every resolved address and dials
// only checked IP addresses, so what was checked is what is connected to and
// DNS rebinding cannot slip a private address in between. The net.Dialer's
// Control hook checks the address again right before connect(2).
type dialer struct {
	allowPrivate bool
	net          net.Dialer
	timeout      time.Duration // bounds a whole dial (resolution included); 0: none

	// Seams, replaced only by tests (export_test.go).
	lookup  func(ctx context.Context, host string) ([]netip.Addr, error)
	check   func(netip.Addr) string             // refusedReason
	connect func(network, address string) error // called in Control after the check; nil in production
}

func newDialer(allowPrivate bool) *dialer {
	d := &dialer{
		allowPrivate: allowPrivate,
		lookup: func(ctx context.Context, host string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		},
		check: refusedReason,
	}
	d.net = net.Dialer{KeepAlive: 30 * time.Second, Control: d.control}
	return d
}

// control runs after the socket is created and before it connects.
func (d *dialer) control(network, address string, _ syscall.RawConn) error {
	if !d.allowPrivate {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return invalidURL("unexpected dial address %q", address)
		}
		if reason := d.check(ap.Addr()); reason != "" {
			return &notAllowedError{addr: ap.Addr().WithZone(""), reason: reason}
		}
	}
	if d.connect != nil {
		return d.connect(network, address)
	}
	return nil
}

// DialContext is the http.Transport dial function. It gives up after the
// dialer's timeout with a *connectTimeoutError.
func (d *dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	if d.timeout <= 0 {
		return d.dial(ctx, network, address)
	}
	dctx, cancel := context.WithTimeoutCause(ctx, d.timeout, errConnectTimeout)
	defer cancel()
	c, err := d.dial(dctx, network, address)
	if err != nil && ctx.Err() == nil && context.Cause(dctx) == errConnectTimeout {
		return nil, &connectTimeoutError{err}
	}
	return c, err
}

// errConnectTimeout is the cause of a dial cut by the dialer's timeout.
var errConnectTimeout = errors.New("connect timeout")

// connectTimeoutError is a dial that the dialer's timeout cut.
type connectTimeoutError struct{ err error }

func (e *connectTimeoutError) Error() string   { return "connect timeout: " + e.err.Error() }
func (e *connectTimeoutError) Unwrap() error   { return e.err }
func (e *connectTimeoutError) Timeout() bool   { return true }
func (e *connectTimeoutError) Temporary() bool { return true }

func (d *dialer) dial(ctx context.Context, network, address string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, invalidURL("bad address %q", address)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return nil, invalidURL("port %q is out of range", portStr)
	}
	lit, err := checkHost(host, d.allowPrivate, d.check)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	if lit.IsValid() {
		addrs = []netip.Addr{lit}
	} else {
		addrs, err = d.lookup(ctx, host)
		if err != nil {
			return nil, err
		}
	}
	var allowed []netip.Addr
	var refused error
	for _, a := range addrs {
		a = a.Unmap()
		if network == "tcp4" && !a.Is4() || network == "tcp6" && !a.Is6() {
			continue
		}
		if !d.allowPrivate {
			if reason := d.check(a); reason != "" {
				if refused == nil {
					h := host
					if lit.IsValid() {
						h = ""
					}
					refused = &notAllowedError{addr: a.WithZone(""), host: h, reason: reason}
				}
				continue
			}
		}
		allowed = append(allowed, a)
	}
	if len(allowed) == 0 {
		if refused != nil {
			return nil, refused
		}
		return nil, &net.DNSError{Err: "no usable address", Name: host, IsNotFound: true}
	}
	// Dial the addresses in the resolver's order, giving each a fair share of
	// the remaining time (at least 2s), as net.Dialer does.
	var first error
	for i, a := range allowed {
		dctx := ctx
		cancel := context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok && len(allowed)-i > 1 {
			share := time.Until(dl) / time.Duration(len(allowed)-i)
			if share < 2*time.Second {
				share = 2 * time.Second
			}
			dctx, cancel = context.WithTimeout(ctx, share)
		}
		c, err := d.net.DialContext(dctx, network, netip.AddrPortFrom(a, uint16(port)).String())
		cancel()
		if err == nil {
			return c, nil
		}
		if first == nil {
			first = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, first
}
