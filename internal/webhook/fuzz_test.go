package webhook_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/internal/webhook"
)

// forbidden is an oracle independent of the guard's code: the ranges the
// guard must refuse whatever else it does, judged with net.IP's predicates.
func forbidden(a netip.Addr) bool {
	a = a.WithZone("").Unmap()
	if !a.IsValid() {
		return true
	}
	ip := net.IP(a.AsSlice())
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return true
	}
	if a.Is4() {
		b := a.As4()
		return b[0] == 0 || // 0.0.0.0/8
			b[0] == 100 && b[1]&0xc0 == 64 || // 100.64.0.0/10
			b == [4]byte{255, 255, 255, 255}
	}
	b := a.As16()
	if [12]byte(b[:12]) == [12]byte{0, 0x64, 0xff, 0x9b} || // 64:ff9b::/96 embeds an IPv4 address,
		[12]byte(b[:12]) == [12]byte{8: 0xff, 9: 0xff} { // and so does ::ffff:0:0:0/96 (IPv4-translated)
		return forbidden(netip.AddrFrom4([4]byte(b[12:])))
	}
	return false
}

// numericForm reports a host that some resolvers read as an IPv4 number.
func numericForm(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	if _, err := netip.ParseAddr(h); err == nil {
		return false
	}
	last := h[strings.LastIndexByte(h, '.')+1:]
	if strings.HasPrefix(last, "0x") {
		return strings.Trim(last[2:], "0123456789abcdef") == ""
	}
	return last != "" && strings.Trim(last, "0123456789") == ""
}

// FuzzCheckURL: CheckURL never panics, never accepts a forbidden IP literal,
// "localhost" or a non-standard numeric host; and a Sender whose resolver
// answers only forbidden addresses never gets a forbidden address to
// connect(2), whatever the URL.
func FuzzCheckURL(f *testing.F) {
	for _, s := range []string{
		"https://example.com/cb", "http://127.0.0.1/", "http://[::ffff:127.0.0.1]/", "http://2130706433/",
		"http://0x7f000001/", "http://[fe80::1%25eth0]/", "http://localhost./", "http://%EF%BC%91%EF%BC%92%EF%BC%97.%EF%BC%90.%EF%BC%90.%EF%BC%91/",
		"http://[64:ff9b::a00:1]/", "http://[::ffff:0:127.0.0.1]/", "http://203.0.113.9:8080/", "ftp://x/", "http://:80/",
	} {
		f.Add(s)
	}
	s := mustSender(f, webhook.Options{Timeout: 2 * time.Second})
	log := &connectLog{}
	webhook.SetConnectHook(s, log.hook)
	answer := []netip.Addr{
		netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("::1"),
		netip.MustParseAddr("fd00::1"), netip.MustParseAddr("169.254.169.254"), netip.MustParseAddr("::ffff:192.168.0.1"),
		netip.MustParseAddr("64:ff9b::a00:1"), netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("::ffff:0:a9fe:a9fe"),
	}
	webhook.SetLookup(s, func(context.Context, string) ([]netip.Addr, error) { return answer, nil })

	f.Fuzz(func(t *testing.T, raw string) {
		err := webhook.CheckURL(raw, false)
		if err != nil {
			if !errors.Is(err, webhook.ErrInvalidURL) && !errors.Is(err, webhook.ErrNotAllowed) {
				t.Fatalf("CheckURL(%q) = %v: neither ErrInvalidURL nor ErrNotAllowed", raw, err)
			}
		} else {
			u, perr := url.Parse(raw)
			if perr != nil {
				t.Fatalf("CheckURL(%q) accepted an unparsable URL: %v", raw, perr)
			}
			host := u.Hostname()
			if a, aerr := netip.ParseAddr(strings.TrimSuffix(host, ".")); aerr == nil && forbidden(a) {
				t.Fatalf("CheckURL(%q) accepted forbidden address %s", raw, a)
			}
			if h := strings.ToLower(strings.TrimSuffix(host, ".")); h == "localhost" || strings.HasSuffix(h, ".localhost") {
				t.Fatalf("CheckURL(%q) accepted localhost", raw)
			}
			if numericForm(host) {
				t.Fatalf("CheckURL(%q) accepted numeric host %q", raw, host)
			}
			if s := strings.ToLower(u.Scheme); s != "http" && s != "https" {
				t.Fatalf("CheckURL(%q) accepted scheme %q", raw, u.Scheme)
			}
		}
		if err := webhook.CheckURL(raw, true); err != nil && !errors.Is(err, webhook.ErrInvalidURL) {
			t.Fatalf("CheckURL(%q, allowPrivate) = %v, want nil or ErrInvalidURL", raw, err)
		}

		n := len(log.list())
		res := s.Send(t.Context(), raw, "id", nil, time.Time{})
		for _, a := range log.list()[n:] {
			ap, perr := netip.ParseAddrPort(a)
			if perr != nil || forbidden(ap.Addr()) {
				t.Fatalf("Send(%q) connected to %s (result %+v)", raw, a, res)
			}
		}
		if res.Delivered {
			t.Fatalf("Send(%q) delivered: %+v", raw, res)
		}
	})
}

// FuzzRefusedReason: any 4- or 16-byte address the guard allows is outside
// the forbidden ranges.
func FuzzRefusedReason(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe", "::ffff:0:127.0.0.1", "8.8.8.8", "fe80::1", "2606:4700::1111"} {
		f.Add(netip.MustParseAddr(s).AsSlice())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, ok := netip.AddrFromSlice(b)
		if !ok {
			return
		}
		if webhook.RefusedReason(a) == "" && forbidden(a) {
			t.Fatalf("RefusedReason(%s) allows a forbidden address", a)
		}
	})
}
