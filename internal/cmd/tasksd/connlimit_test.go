package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serveLimited serves h behind a connLimit of max connections and returns
// its address and the limiter.
func serveLimited(t *testing.T, max int) (string, *connLimit) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := newConnLimit(ln, max, nil)
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ConnState:         lim.track,
		ReadHeaderTimeout: time.Minute,
	}
	go srv.Serve(lim)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), lim
}

// get sends one request on c and reads the answer's status line.
func get(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func dial(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// isClosed reports whether the server closed c within d.
func isClosed(c net.Conn, br *bufio.Reader, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	_, err := br.Peek(1)
	ne, ok := err.(net.Error)
	return err != nil && !(ok && ne.Timeout())
}

// waitOpen waits until the limiter counts open connections, idle of them idle.
func waitOpen(t *testing.T, lim *connLimit, open, idle int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if o, i := lim.openConns(); o == open && i == idle {
			return
		}
	}
	o, i := lim.openConns()
	t.Fatalf("open %d, idle %d; want %d, %d", o, i, open, idle)
}

// TestConnLimitEvictsIdle: at the cap, a newcomer is served and the
// connection idle longest is closed for it.
func TestConnLimitEvictsIdle(t *testing.T) {
	addr, lim := serveLimited(t, 2)
	c1, b1 := dial(t, addr)
	get(t, c1, b1)
	time.Sleep(20 * time.Millisecond) // c1 has been idle longer than c2
	c2, b2 := dial(t, addr)
	get(t, c2, b2)
	waitOpen(t, lim, 2, 2)

	c3, b3 := dial(t, addr)
	get(t, c3, b3) // served at once
	if !isClosed(c1, b1, 5*time.Second) {
		t.Error("the longest-idle connection was not closed for the newcomer")
	}
	if isClosed(c2, b2, 100*time.Millisecond) {
		t.Error("the more recently idle connection was closed too")
	}
	get(t, c2, b2) // still usable
	waitOpen(t, lim, 2, 2)
}

// TestConnLimitWaits: at the cap with no idle connection, a newcomer waits
// until a connection closes, then is served.
func TestConnLimitWaits(t *testing.T) {
	addr, lim := serveLimited(t, 2)
	c1, _ := dial(t, addr) // silent: connected, nothing sent
	c2, b2 := dial(t, addr)
	io.WriteString(c2, "GET / HTTP/1.1\r\nHost: x\r\n") // unfinished header: active, not idle
	waitOpen(t, lim, 2, 0)

	c3, b3 := dial(t, addr)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c3.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c3, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		if line, err := b3.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
			t.Errorf("the newcomer got %q, %v", line, err)
		}
	}()
	select {
	case <-done:
		t.Fatal("the newcomer was served beyond the cap")
	case <-time.After(200 * time.Millisecond):
	}
	c1.Close()
	<-done
	if isClosed(c2, b2, 100*time.Millisecond) {
		t.Error("a connection that was not idle was closed")
	}
}

// TestConnLimitClose: Close ends an Accept that waits for room.
func TestConnLimitClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := newConnLimit(ln, 1, nil)
	first, _ := dial(t, ln.Addr().String())
	c, err := lim.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first.Close()
	dial(t, ln.Addr().String())
	errc := make(chan error, 1)
	go func() {
		_, err := lim.Accept()
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	lim.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("Accept after Close returned a connection")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still waits after Close")
	}
}

func TestConnsForFiles(t *testing.T) {
	for _, tc := range []struct {
		nofile  uint64
		proxy   bool
		reserve int
		want    int
	}{
		{1024, false, 88, 936},
		{1024, true, 88, 468},
		{256, false, 88, 168},
		{64, false, 88, -24},
		{1 << 40, true, 88, 1 << 30},
	} {
		if got := connsForFiles(tc.nofile, tc.proxy, tc.reserve); got != tc.want {
			t.Errorf("connsForFiles(%d, %v, %d) = %d, want %d", tc.nofile, tc.proxy, tc.reserve, got, tc.want)
		}
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "65536": 65536, "64KiB": 64 << 10, "32MiB": 32 << 20, "1GiB": 1 << 30, "3KiB": 3072} {
		var b byteSize
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5MiB", "32MB", "KiB", "99999999999GiB", "1 KiB"} {
		var b byteSize
		if err := b.Set(in); err == nil {
			t.Errorf("Set(%q) = %d, want an error", in, b)
		}
	}
	for n, want := range map[int64]string{0: "0", 1000: "1000", 32 << 10: "32KiB", 256 << 20: "256MiB", 2 << 30: "2GiB", 1536: "1536"} {
		if b := byteSize(n); b.String() != want {
			t.Errorf("byteSize(%d).String() = %q, want %q", n, b.String(), want)
		}
	}
}
