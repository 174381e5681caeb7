package reliability

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasksapi/tasks/internal/tasksdtest"
	"github.com/tasksapi/tasks/sqlitestore"
	"github.com/tasksapi/tasks/taskstore"
)

// loopbackNames returns host names that resolve only to loopback addresses
// on this machine: the machine's own name and the other names /etc/hosts
// maps to loopback (for example "vm" or a container's name).
func loopbackNames(t *testing.T) []string {
	t.Helper()
	seen := map[string]bool{}
	var names []string
	consider := func(name string) {
		name = strings.TrimSpace(name)
		if name == "" || seen[name] || strings.EqualFold(name, "localhost") || strings.HasSuffix(strings.ToLower(name), ".localhost") {
			return
		}
		seen[name] = true
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		addrs, err := net.DefaultResolver.LookupIPAddr(ctx, name)
		if err != nil || len(addrs) == 0 {
			return
		}
		for _, a := range addrs {
			if !a.IP.IsLoopback() {
				return
			}
		}
		names = append(names, name)
	}
	if h, err := os.Hostname(); err == nil {
		consider(h)
	}
	if f, err := os.Open("/etc/hosts"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(strings.SplitN(sc.Text(), "#", 2)[0])
			if len(fields) < 2 || !strings.HasPrefix(fields[0], "127.") && fields[0] != "::1" {
				continue
			}
			for _, n := range fields[1:] {
				consider(n)
			}
		}
	}
	return names
}

// ssrfTargets returns the callback URLs the SSRF test submits, each aimed
// at port (the loopback receiver's), and whether, with the guard off, the
// receiver can be reached through it. Only those are used in the control
// run with the guard off: the others are never dialled for real. named
// holds the URLs whose host is a name that must be resolved to be judged
// (the others are refused at submit with the guard on).
func ssrfTargets(t *testing.T, port string, ipv6 bool) (urls []string, reachable, named map[string]bool) {
	named = map[string]bool{}
	reachable = map[string]bool{}
	add := func(u string, reach bool) {
		urls = append(urls, u)
		reachable[u] = reach
	}
	add("http://127.0.0.1:"+port+"/cb", true)
	add("http://127.0.0.2:"+port+"/cb", false) // loopback, but nothing listens there
	add("http://localhost:"+port+"/cb", true)
	add("http://LOCALHOST.:"+port+"/cb", false) // the resolver may not know it
	add("http://cb.localhost:"+port+"/cb", false)
	add("http://[::1]:"+port+"/cb", ipv6)
	add("http://0.0.0.0:"+port+"/cb", true) // connect(0.0.0.0) reaches loopback on Linux
	add("http://[::ffff:127.0.0.1]:"+port+"/cb", true)
	add("http://[::]:"+port+"/cb", ipv6)
	// IPv4-translated (SIIT, ::ffff:0:0:0/96): no route to them here, so
	// they stay out of the control; the guard must refuse them before any
	// connect, as it does IPv4-mapped ones.
	add("http://[::ffff:0:127.0.0.1]:"+port+"/cb", false)
	add("http://[::ffff:0:7f00:1]:"+port+"/cb", false)
	add("http://[0:0:0:0:ffff:0:7f00:1]:"+port+"/cb", false)
	add("http://[::ffff:0:10.0.0.1]:"+port+"/cb", false)
	add("http://[::ffff:0:169.254.169.254]:"+port+"/latest/meta-data/", false)
	add("http://10.0.0.1:"+port+"/cb", false)
	add("http://172.16.0.1:"+port+"/cb", false)
	add("http://192.168.0.1:"+port+"/cb", false)
	add("http://169.254.169.254:"+port+"/latest/meta-data/", false)
	add("http://[fd00::1]:"+port+"/cb", false)
	add("http://[fe80::1]:"+port+"/cb", false)
	add("http://2130706433:"+port+"/cb", false) // numeric forms are refused whatever the guard
	add("http://0x7f000001:"+port+"/cb", false)
	add("http://0177.0.0.1:"+port+"/cb", false)
	add("http://127.1:"+port+"/cb", false)
	for _, name := range loopbackNames(t) {
		add("http://"+name+":"+port+"/cb", true)
		named["http://"+name+":"+port+"/cb"] = true
	}
	return urls, reachable, named
}

// listenBoth serves h on 127.0.0.1 and, when IPv6 is available, on [::1]
// at the same port; it returns the port and whether [::1] listens.
func listenBoth(t *testing.T, h http.Handler) (port string, ipv6 bool) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	port = strconv.Itoa(srv.Listener.Addr().(*net.TCPAddr).Port)
	if ln, err := net.Listen("tcp6", "[::1]:"+port); err == nil {
		s6 := &http.Server{Handler: h}
		go s6.Serve(ln)
		t.Cleanup(func() { s6.Close() })
		ipv6 = true
	}
	return port, ipv6
}

// TestSSRF: with the guard on (tasksd without -allow-private-callbacks),
// callbacks to loopback, private, link-local, unspecified, IPv4-mapped and
// IPv4-translated addresses, to localhost names and to numeric host forms
// are refused at submit (400, nothing stored); names resolving to loopback
// are accepted as tasks but never delivered. The loopback receiver behind
// them all gets zero requests and each accepted delivery is given up. A control run with the
// guard off shows that the receiver is reachable through the loopback ones,
// so the zero is the guard's doing. Redirects are never followed (checked
// with the guard off, a loopback redirector and a loopback target).
func TestSSRF(t *testing.T) {
	t.Run("GuardOn", func(t *testing.T) {
		hits, delivered, atSubmit, urls := runSSRF(t, false)
		if hits != 0 {
			t.Errorf("the receiver behind the refused addresses got %d requests", hits)
		}
		t.Logf("ssrf: %d callback URLs refused with the guard on (%d of them at submit), receiver hits %d, delivered %d: %s",
			len(urls), atSubmit, hits, delivered, strings.Join(urls, " "))
	})
	t.Run("GuardOffControl", func(t *testing.T) {
		hits, delivered, _, urls := runSSRF(t, true)
		t.Logf("ssrf control (guard off): %d URLs, receiver hits %d, %d delivered", len(urls), hits, delivered)
	})
	t.Run("RedirectNotFollowed", testRedirectNotFollowed)
}

// runSSRF submits every target to a tasksd with the guard on or off, waits
// until each delivery settles, and checks the outcome of each in the store.
func runSSRF(t *testing.T, allowPrivate bool) (hits, delivered, atSubmit int, urls []string) {
	var count countingHandler
	port, ipv6 := listenBoth(t, &count)
	urls, reachable, named := ssrfTargets(t, port, ipv6)
	if allowPrivate {
		// The control dials for real: loopback targets only.
		urls = slices.DeleteFunc(urls, func(u string) bool { return !reachable[u] })
	}
	db := filepath.Join(t.TempDir(), "tasks.db")
	args := []string{"-db", db, "-tokens", writeTokens(t), "-standin-delay", "0s",
		"-callback-schedule", "0s,100ms", "-callback-timeout", "1s", "-lease", "3s"}
	if allowPrivate {
		args = append(args, "-allow-private-callbacks")
	}
	d := tasksdtest.Start(t, nil, args...)
	ids := map[string]string{}
	for _, u := range urls {
		a := mustPost(t, d.URL()+genPath, tokenA, map[string]any{"prompt": "ssrf", "callback_url": u})
		switch {
		case a.status == 200 && (allowPrivate || named[u]):
			ids[u] = a.str("task_id")
		case a.status == 400 && checkErrorBody(a.raw, "bad_request") == "" && !allowPrivate && !named[u]:
			// Refused at once: nothing stored, nothing sent.
			atSubmit++
			t.Logf("%-45s refused at submit: %s", u, a.raw)
		default:
			t.Errorf("submit %s: %d %s", u, a.status, a.raw)
		}
	}

	// Read the outbox from the file while tasksd runs (several processes
	// may open it) until every delivery is settled.
	st, err := sqlitestore.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	settled := func() bool {
		for _, id := range ids {
			task, err := st.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if s := task.CallbackStatus(); s != taskstore.CallbackDelivered && s != taskstore.CallbackFailed {
				return false
			}
		}
		return true
	}
	if !waitFor(20*time.Second, 50*time.Millisecond, settled) {
		t.Errorf("deliveries did not settle")
	}
	st.Close()
	d.Stop()

	st, err = sqlitestore.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, u := range urls {
		id, ok := ids[u]
		if !ok {
			continue
		}
		task, err := st.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		cb := task.Callback
		if task.CallbackStatus() == taskstore.CallbackDelivered {
			delivered++
		}
		switch {
		case !allowPrivate && (task.CallbackStatus() != taskstore.CallbackFailed || cb.Attempts != 1 || cb.LastStatus != 0):
			t.Errorf("guard on, %s: delivery %s after %d attempts, last status %d, error %q; want given up after 1 refused attempt",
				u, task.CallbackStatus(), cb.Attempts, cb.LastStatus, cb.LastError)
		case !allowPrivate:
			t.Logf("%-45s given up: %s", u, cb.LastError)
		case reachable[u] && task.CallbackStatus() != taskstore.CallbackDelivered:
			t.Errorf("guard off, %s: not delivered (%s, %q): the control cannot show the receiver is reachable this way",
				u, task.CallbackStatus(), cb.LastError)
		}
	}
	return int(count.n.Load()), delivered, atSubmit, urls
}

// testRedirectNotFollowed: a receiver that redirects to another loopback
// receiver; with the guard off only the no-redirect rule can stop the
// second hop. (A public first hop redirecting to a private address cannot
// be built without a network; internal/webhook's TestGuardOnDeliversWhenAllowed
// and TestRedirectNotFollowed cover it with a fake resolver.)
func testRedirectNotFollowed(t *testing.T) {
	var target countingHandler
	tsrv := httptest.NewServer(&target)
	t.Cleanup(tsrv.Close)
	var redirects countingHandler
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redirects.n.Add(1)
		http.Redirect(w, r, tsrv.URL+"/private", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(redirector.Close)

	db := filepath.Join(t.TempDir(), "tasks.db")
	d := tasksdtest.Start(t, nil, "-db", db, "-tokens", writeTokens(t), "-allow-private-callbacks", "-standin-delay", "0s",
		"-callback-schedule", "0s,100ms,100ms", "-callback-timeout", "1s", "-lease", "3s")
	a := mustPost(t, d.URL()+genPath, tokenA, map[string]any{"prompt": "redirect", "callback_url": redirector.URL + "/cb"})
	if a.status != 200 {
		t.Fatalf("submit: %d %s", a.status, a.raw)
	}
	id := a.str("task_id")
	// Three attempts, each redirected, none followed.
	if !waitFor(20*time.Second, 20*time.Millisecond, func() bool { return redirects.n.Load() >= 3 }) {
		t.Fatal("the redirector did not see three attempts")
	}
	d.Stop()
	st, err := sqlitestore.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	task, err := st.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if n := target.n.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests", n)
	}
	if task.CallbackStatus() != taskstore.CallbackFailed || task.Callback.Attempts != 3 || task.Callback.LastStatus != http.StatusTemporaryRedirect {
		t.Errorf("redirected delivery: %s after %d attempts, last status %d (%q)",
			task.CallbackStatus(), task.Callback.Attempts, task.Callback.LastStatus, task.Callback.LastError)
	}
}

// countingHandler counts the requests it gets and answers 204.
type countingHandler struct{ n atomic.Int64 }

func (c *countingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.n.Add(1)
	io.Copy(io.Discard, r.Body)
	w.WriteHeader(http.StatusNoContent)
}
