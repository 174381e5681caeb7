package webhook_test

import (
	"context"
	"errors"
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

	"github.com/tasksapi/tasks/internal/webhook"
)

// fakeDNS answers lookups from a fixed table and fails the test on any
// other name, so no test ever queries a real resolver.
func fakeDNS(t *testing.T, table map[string][]string) func(context.Context, string) ([]netip.Addr, error) {
	return func(_ context.Context, host string) ([]netip.Addr, error) {
		ips, ok := table[host]
		if !ok {
			t.Errorf("unexpected DNS lookup of %q", host)
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		out := make([]netip.Addr, len(ips))
		for i, ip := range ips {
			out[i] = netip.MustParseAddr(ip)
		}
		return out, nil
	}
}

// connectLog is a connect hook that records every address that got past the
// guard and lets only loopback ones connect: a broken guard can never send
// a packet to a non-loopback address from a test.
type connectLog struct {
	mu    sync.Mutex
	addrs []string
}

func (c *connectLog) hook(network, address string) error {
	c.mu.Lock()
	c.addrs = append(c.addrs, address)
	c.mu.Unlock()
	if ap, err := netip.ParseAddrPort(address); err != nil || !ap.Addr().Unmap().IsLoopback() {
		return errors.New("test: connect to non-loopback address blocked")
	}
	return nil
}

func (c *connectLog) list() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.addrs...)
}

// guardedSender returns a Sender with the guard on, fake DNS and a connect log.
func guardedSender(t *testing.T, dns map[string][]string) (*webhook.Sender, *connectLog) {
	t.Helper()
	s := mustSender(t, webhook.Options{})
	log := &connectLog{}
	webhook.SetLookup(s, fakeDNS(t, dns))
	webhook.SetConnectHook(s, log.hook)
	return s, log
}

func TestGuardMatrix(t *testing.T) {
	var hits atomic.Int32
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	t.Cleanup(live.Close)
	livePort := live.Listener.Addr().(*net.TCPAddr).Port

	s, log := guardedSender(t, map[string][]string{
		"rebind.test":  {"127.0.0.1"},
		"rebind6.test": {"::1"},
		"meta.test":    {"169.254.169.254"},
		"mixed.test":   {"10.0.0.1", "192.168.1.1", "::ffff:127.0.0.1", "fd00::1"},
		"nat64.test":   {"64:ff9b::a00:1"},
		"siit.test":    {"::ffff:0:7f00:1"},
		"siit2.test":   {"::ffff:0:a9fe:a9fe", "::ffff:0:a00:1"},
	})
	port := ":" + itoa(livePort)
	tests := []struct {
		url     string
		refused bool // false: invalid URL instead
	}{
		{"http://127.0.0.1" + port + "/", true}, // a live loopback server: reachable only if the guard were off
		{live.URL + "/cb", true},
		{"http://127.0.0.2/", true},
		{"http://localhost" + port + "/", true},
		{"http://LOCALHOST./", true},
		{"http://api.localhost/", true},
		{"http://[::1]" + port + "/", true},
		{"http://0.0.0.0" + port + "/", true},
		{"http://0.1.2.3/", true},
		{"http://[::]/", true},
		{"http://10.0.0.1/", true},
		{"http://172.16.0.1/", true},
		{"http://172.31.255.255/", true},
		{"http://192.168.0.1/", true},
		{"http://100.64.0.1/", true},
		{"http://169.254.169.254/latest/meta-data/", true},
		{"http://224.0.0.1/", true},
		{"http://255.255.255.255/", true},
		{"http://[fd00::1]/", true},
		{"http://[fe80::1%25eth0]/", true},
		{"http://[ff02::1]/", true},
		{"http://[::ffff:127.0.0.1]" + port + "/", true},
		{"http://[::ffff:7f00:1]/", true},
		{"http://[::ffff:10.0.0.1]/", true},
		{"http://[::127.0.0.1]/", true},
		{"http://[64:ff9b::7f00:1]/", true},
		{"http://[64:ff9b::a9fe:a9fe]/", true},
		{"http://[2002:7f00:1::1]/", true},
		// IPv4-translated (SIIT, ::ffff:0:0:0/96): judged by the IPv4
		// address they embed, in every spelling.
		{"http://[::ffff:0:127.0.0.1]" + port + "/", true},
		{"http://[::ffff:0:7f00:1]" + port + "/", true},
		{"http://[0:0:0:0:ffff:0:7f00:1]/", true},
		{"http://[0000:0000:0000:0000:FFFF:0000:7F00:0001]/", true},
		{"http://[::FFFF:0:127.0.0.1]/", true},
		{"http://[::ffff:0:127.1.2.3]/", true},
		{"http://[::ffff:0:0.0.0.0]/", true},
		{"http://[::ffff:0:0:0]/", true},
		{"http://[::ffff:0:10.0.0.1]/", true},
		{"http://[::ffff:0:172.16.0.1]/", true},
		{"http://[::ffff:0:192.168.0.1]/", true},
		{"http://[::ffff:0:100.64.0.1]/", true},
		{"http://[::ffff:0:169.254.169.254]/latest/meta-data/", true},
		{"http://[::ffff:0:a9fe:a9fe]/", true},
		{"http://[::ffff:0:224.0.0.1]/", true},
		{"http://[::ffff:0:255.255.255.255]/", true},
		{"http://[::ffff:0:127.0.0.1%25eth0]/", true},
		{"http://siit.test" + port + "/", true},
		{"http://siit2.test/", true},
		{"https://127.0.0.1./", true},
		{"http://rebind.test" + port + "/", true},
		{"http://rebind6.test/", true},
		{"http://meta.test/", true},
		{"http://mixed.test/", true},
		{"http://nat64.test/", true},
		{"http://2130706433" + port + "/", false},
		{"http://0x7f000001" + port + "/", false},
		{"http://0X7F000001/", false},
		{"http://0177.0.0.1/", false},
		{"http://127.1/", false},
		{"http://127.0.1/", false},
		{"http://0x7f.0.0.1/", false},
		{"http://017700000001/", false},
		{"http://foo.0x10/", false},
		// Fullwidth digits or ideographic full stops: the URL check maps the
		// host as the transport does (IDNA) and refuses what it will dial,
		// here 127.0.0.1.
		{"http://%EF%BC%91%EF%BC%92%EF%BC%97.0.0.1" + port + "/", true},
		{"http://%EF%BC%91%EF%BC%92%EF%BC%97.%EF%BC%90.%EF%BC%90.%EF%BC%91" + port + "/", true},
		{"http://127%E3%80%820%E3%80%820%E3%80%821" + port + "/", true},
		{"http://%EF%BC%92%EF%BC%91%EF%BC%93%EF%BC%90%EF%BC%97%EF%BC%90%EF%BC%96%EF%BC%94%EF%BC%93%EF%BC%93" + port + "/", false},
	}
	for _, tt := range tests {
		res := s.Send(t.Context(), tt.url, "id-1", []byte(body), time.Now())
		if res.Delivered || res.Status != 0 || !res.Permanent {
			t.Errorf("Send(%q) = %+v, want a permanent refusal", tt.url, res)
			continue
		}
		want := "invalid URL"
		if tt.refused {
			want = "not allowed"
		}
		if !strings.Contains(res.Err, want) {
			t.Errorf("Send(%q).Err = %q, want it to contain %q", tt.url, res.Err, want)
		}
	}
	if got := log.list(); len(got) != 0 {
		t.Errorf("the guard let connects through to %v", got)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the live loopback server was hit %d times", n)
	}
}

func TestGuardRefusalError(t *testing.T) {
	s, _ := guardedSender(t, map[string][]string{"rebind.test": {"127.0.0.1"}})
	for _, tt := range []struct{ url, want string }{
		{"http://10.0.0.1/", "address 10.0.0.1 is not allowed (private network)"},
		{"http://169.254.169.254/", "address 169.254.169.254 is not allowed (link-local)"},
		{"http://rebind.test/", "address 127.0.0.1 of host rebind.test is not allowed (loopback)"},
		{"http://localhost/", "host localhost is not allowed (loopback name)"},
	} {
		if res := s.Send(t.Context(), tt.url, "id", []byte(body), time.Now()); res.Err != tt.want {
			t.Errorf("Send(%q).Err = %q, want %q", tt.url, res.Err, tt.want)
		}
	}
}

// TestGuardRebinding: a name that first resolves to a public address and
// then to a private one (or that answers both) never reaches the private one.
func TestGuardRebinding(t *testing.T) {
	s := mustSender(t, webhook.Options{})
	log := &connectLog{}
	webhook.SetConnectHook(s, log.hook)
	var n atomic.Int32
	webhook.SetLookup(s, func(_ context.Context, host string) ([]netip.Addr, error) {
		if n.Add(1)%2 == 1 {
			return []netip.Addr{netip.MustParseAddr("203.0.113.7")}, nil // documentation range: never really dialed (the hook blocks it)
		}
		return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.1.2.3")}, nil
	})
	for range 4 {
		res := s.Send(t.Context(), "http://rebind.test/", "id", []byte(body), time.Now())
		if res.Delivered {
			t.Fatalf("Send = %+v", res)
		}
	}
	for _, a := range log.list() {
		if a != "203.0.113.7:80" {
			t.Errorf("connect reached %s", a)
		}
	}
	if len(log.list()) == 0 {
		t.Error("the public answer was never dialed: the test proves nothing")
	}
}

// TestGuardControlHook: the last line of defence, right before connect(2),
// refuses a private address even if it got past resolution.
func TestGuardControlHook(t *testing.T) {
	s := mustSender(t, webhook.Options{})
	for _, a := range []string{"127.0.0.1:80", "[::1]:443", "10.0.0.1:80", "[::ffff:192.168.0.1]:80", "169.254.169.254:80", "[::ffff:0:127.0.0.1]:80"} {
		err := webhook.Control(s, "tcp", a)
		if !errors.Is(err, webhook.ErrNotAllowed) {
			t.Errorf("Control(%s) = %v, want ErrNotAllowed", a, err)
		}
	}
	if err := webhook.Control(s, "tcp", "203.0.113.7:80"); err != nil {
		t.Errorf("Control(public) = %v", err)
	}
	off := mustSender(t, webhook.Options{AllowPrivateNetworks: true})
	if err := webhook.Control(off, "tcp", "127.0.0.1:80"); err != nil {
		t.Errorf("guard off: Control(loopback) = %v", err)
	}
}

// TestGuardOnDeliversWhenAllowed runs the whole guarded path (resolve, check,
// dial the checked IP, Control) against a loopback server that the test's
// check treats as public.
func TestGuardOnDeliversWhenAllowed(t *testing.T) {
	rcv := newReceiver(t, nil)
	port := rcv.Listener.Addr().(*net.TCPAddr).Port
	s, log := guardedSender(t, map[string][]string{"public.test": {"10.9.9.9", "127.0.0.1"}})
	webhook.SetCheck(s, func(a netip.Addr) string {
		if a == netip.MustParseAddr("127.0.0.1") {
			return "" // stands in for a public address
		}
		return webhook.RefusedReason(a)
	})
	u := "http://public.test:" + itoa(port) + "/cb"
	res := s.Send(t.Context(), u, "id-1", []byte(body), time.Now())
	if !res.Delivered {
		t.Fatalf("Send = %+v", res)
	}
	reqs := rcv.requests()
	if len(reqs) != 1 || reqs[0].Host != "public.test:"+itoa(port) {
		t.Errorf("requests = %+v, want one with Host public.test", reqs)
	}
	if got := log.list(); len(got) != 1 || got[0] != "127.0.0.1:"+itoa(port) {
		t.Errorf("connects = %v, want only the allowed address", got)
	}

	// A redirect from the "public" receiver to a private address is not followed.
	var targetHits atomic.Int32
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { targetHits.Add(1) }))
	t.Cleanup(target.Close)
	for _, loc := range []string{target.URL + "/", "http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/"} {
		redir := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, loc, http.StatusTemporaryRedirect)
		})
		rport := redir.Listener.Addr().(*net.TCPAddr).Port
		res := s.Send(t.Context(), "http://public.test:"+itoa(rport)+"/cb", "id-1", []byte(body), time.Now())
		if res.Delivered || res.Permanent || res.Status != 307 || res.Err != "redirect not followed (307)" {
			t.Errorf("redirect to %s: Send = %+v", loc, res)
		}
	}
	if n := targetHits.Load(); n != 0 {
		t.Errorf("redirect target hit %d times", n)
	}
	for _, a := range log.list() {
		if !strings.HasPrefix(a, "127.0.0.1:") {
			t.Errorf("connect reached %s", a)
		}
	}
}

func TestGuardOffDelivers(t *testing.T) {
	rcv := newReceiver(t, nil)
	s := mustSender(t, webhook.Options{AllowPrivateNetworks: true})
	webhook.SetLookup(s, fakeDNS(t, map[string][]string{"receiver.test": {"127.0.0.1"}}))
	port := itoa(rcv.Listener.Addr().(*net.TCPAddr).Port)
	for _, u := range []string{rcv.URL, "http://receiver.test:" + port + "/x", "http://127.0.0.1.:" + port + "/"} {
		if res := s.Send(t.Context(), u, "id", []byte(body), time.Now()); !res.Delivered {
			t.Errorf("Send(%q) = %+v", u, res)
		}
	}
	// Non-standard numeric hosts stay refused with the guard off.
	for _, u := range []string{"http://2130706433:" + port + "/", "http://0x7f000001:" + port + "/"} {
		if res := s.Send(t.Context(), u, "id", []byte(body), time.Now()); !res.Permanent {
			t.Errorf("Send(%q) = %+v, want permanent", u, res)
		}
	}
	if n := len(rcv.requests()); n != 3 {
		t.Errorf("receiver got %d requests, want 3", n)
	}
}

func TestCheckURL(t *testing.T) {
	tests := []struct {
		url          string
		allowPrivate bool
		want         error // nil, ErrInvalidURL or ErrNotAllowed
	}{
		{"https://example.com/cb", false, nil},
		{"HTTPS://Example.COM/cb?x=1#f", false, nil},
		{"http://user:pw@example.com:8080/cb", false, nil},
		{"http://203.0.113.9/", false, nil},
		{"http://8.8.8.8/", false, nil},
		{"http://[2606:4700::1111]/", false, nil},
		{"http://[64:ff9b::808:808]/", false, nil},
		{"http://xn--bcher-kva.example/", false, nil},
		{"http://1.example/", false, nil},
		{"http://example.123abc/", false, nil},
		{"http://rebind.test/", false, nil}, // names are checked at connect time
		{"http://127.0.0.1:8080/", true, nil},
		{"http://localhost/", true, nil},
		{"http://[fd00::1]/", true, nil},
		{"http://127.0.0.1/", false, webhook.ErrNotAllowed},
		{"http://localhost/", false, webhook.ErrNotAllowed},
		{"http://[::ffff:127.0.0.1]/", false, webhook.ErrNotAllowed},
		{"http://[::ffff:0:127.0.0.1]/", false, webhook.ErrNotAllowed},
		{"http://[::ffff:0:10.0.0.1]/", false, webhook.ErrNotAllowed},
		{"http://[::ffff:0:8.8.8.8]/", false, nil},
		{"http://[::ffff:0:127.0.0.1]/", true, nil},
		{"http://169.254.169.254/", false, webhook.ErrNotAllowed},
		{"http://2130706433/", true, webhook.ErrInvalidURL},
		{"http://0x7f000001/", false, webhook.ErrInvalidURL},
		{"ftp://example.com/", true, webhook.ErrInvalidURL},
		{"javascript:alert(1)", false, webhook.ErrInvalidURL},
		{"//example.com/cb", false, webhook.ErrInvalidURL},
		{"", false, webhook.ErrInvalidURL},
		{"http://example.com:0/", false, webhook.ErrInvalidURL},
		{"http://[fe80::1%25]/", true, webhook.ErrInvalidURL},
	}
	for _, tt := range tests {
		err := webhook.CheckURL(tt.url, tt.allowPrivate)
		switch {
		case tt.want == nil && err != nil:
			t.Errorf("CheckURL(%q, %v) = %v, want nil", tt.url, tt.allowPrivate, err)
		case tt.want != nil && !errors.Is(err, tt.want):
			t.Errorf("CheckURL(%q, %v) = %v, want %v", tt.url, tt.allowPrivate, err, tt.want)
		}
	}
}

func TestCheckURLErrorHidesCredentials(t *testing.T) {
	err := webhook.CheckURL("http://alice:s3cret@exa mple.com/?token=t0ken", false)
	if err == nil {
		t.Fatal("CheckURL accepted a malformed URL")
	}
	if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "t0ken") {
		t.Errorf("error %q leaks the URL's credentials", err)
	}
}

func TestRefusedReason(t *testing.T) {
	refused := []string{
		"0.0.0.0", "0.255.255.255", "10.0.0.1", "100.64.0.1", "100.127.255.255", "127.0.0.1", "127.255.255.254",
		"169.254.169.254", "172.16.0.1", "172.31.0.1", "192.0.0.8", "192.168.0.1", "198.18.0.1", "198.19.255.255",
		"224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
		"::", "::1", "::127.0.0.1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
		"fc00::1", "fd12:3456::1", "fe80::1", "fe80::1%eth0", "febf::1", "fec0::1", "ff02::1", "ff0e::1",
		"64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::1", "100::1",
		"2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001:10::1", "2002:7f00:1::1", "2002:a00:1::",
		"::ffff:0:127.0.0.1", "::ffff:0:0.0.0.0", "::ffff:0:10.0.0.1", "::ffff:0:169.254.169.254", "::ffff:0:192.168.1.1",
		"::ffff:0:100.64.0.1", "::ffff:0:240.0.0.1",
	}
	allowed := []string{
		"1.1.1.1", "8.8.8.8", "100.63.255.255", "100.128.0.0", "172.15.255.255", "172.32.0.0", "192.0.2.1",
		"192.169.0.1", "198.17.255.255", "198.20.0.0", "203.0.113.9", "223.255.255.255",
		"2606:4700::1111", "2001:4860:4860::8888", "2001:db8::1", "64:ff9b::808:808", "2002:808:808::1", "::ffff:8.8.8.8",
		"::ffff:0:8.8.8.8", "::ffff:0:203.0.113.9",
	}
	for _, s := range refused {
		if r := webhook.RefusedReason(netip.MustParseAddr(s)); r == "" {
			t.Errorf("RefusedReason(%s) = \"\", want a refusal", s)
		}
	}
	for _, s := range allowed {
		if r := webhook.RefusedReason(netip.MustParseAddr(s)); r != "" {
			t.Errorf("RefusedReason(%s) = %q, want allowed", s, r)
		}
	}
	if r := webhook.RefusedReason(netip.Addr{}); r == "" {
		t.Error("the zero Addr is allowed")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
