package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasksapi/tasks/handler"
	"github.com/tasksapi/tasks/handler/console"
	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/taskstore"
)

const (
	opToken     = "op-token"
	tenantToken = "tenant-token"
)

var auth = handler.Tokens(map[string]taskstore.Principal{
	opToken:     {CredentialID: "ops"},
	tenantToken: {ApplicationID: "app-1", UserID: "alice"},
})

// now is the console's clock in these tests.
var now = time.Date(2026, 3, 1, 12, 30, 20, 0, time.UTC)

// fixture is a console over a memstore holding a few tasks.
type fixture struct {
	store taskstore.Store
	srv   *httptest.Server
	rec   *fakeRecorder
}

type fakeRecorder struct {
	mu        sync.Mutex
	redeliver [][]string
	recovered []time.Time
}

func (f *fakeRecorder) Redeliver(_ context.Context, ids ...string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.redeliver = append(f.redeliver, ids)
	return ids[:1], nil
}

func (f *fakeRecorder) Recover(_ context.Context, since time.Time) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recovered = append(f.recovered, since)
	return 7, nil
}

func newFixture(t *testing.T, opts ...console.Option) *fixture {
	t.Helper()
	store := memstore.New()
	t.Cleanup(func() { store.Close() })
	ctx := context.Background()
	mk := func(id, typ string, created time.Time, resp string, cbURL string) {
		x := taskstore.Task{ID: id, Type: typ, Request: json.RawMessage(`{"prompt":"p"}`), CreatedAt: created,
			ApplicationID: "app-1", UserID: "alice", TraceID: "tr-" + id}
		x.Callback.URL = cbURL
		if err := store.Create(ctx, x); err != nil {
			t.Fatal(err)
		}
		if resp != "" {
			if err := store.Start(ctx, id, created); err != nil {
				t.Fatal(err)
			}
			if err := store.Finish(ctx, id, json.RawMessage(resp), created.Add(2*time.Second)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Two succeeded and one failed in the current minute, one failed ten
	// minutes ago, one pending, one two hours ago (outside the chart).
	mk("t1", "images_generations", now.Add(-10*time.Second), `{"success":true}`, "https://cb.example/1")
	mk("t2", "images_edits", now.Add(-15*time.Second), `{"success":true}`, "")
	mk("t3", "images_generations", now.Add(-18*time.Second), `{"success":false}`, "https://cb.example/3")
	mk("t4", "images_generations", now.Add(-10*time.Minute), `{"success":false}`, "")
	mk("t5", "images_generations", now.Add(-5*time.Second), "", "https://cb.example/5")
	mk("t6", "images_generations", now.Add(-2*time.Hour), `{"success":true}`, "")
	f := &fixture{store: store, rec: &fakeRecorder{}}
	opts = append([]console.Option{console.WithClock(func() time.Time { return now }), console.WithRecorder(f.rec)}, opts...)
	f.srv = httptest.NewServer(http.StripPrefix("/console", console.New(store, auth, opts...)))
	t.Cleanup(f.srv.Close)
	return f
}

// do sends a request to the console and returns the status, the headers
// and the body.
func (f *fixture) do(t *testing.T, method, path, token, body string) (int, http.Header, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, f.srv.URL+"/console/"+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestPageAndHeaders(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct{ path, ctype, contains string }{
		{"", "text/html; charset=utf-8", `<input id="token" type="password"`},
		{"app.js", "text/javascript; charset=utf-8", "sessionStorage"},
		{"app.css", "text/css; charset=utf-8", "--brand"},
		{"favicon.svg", "image/svg+xml", "<svg"},
	} {
		status, h, body := f.do(t, "GET", c.path, "", "")
		if status != 200 || h.Get("Content-Type") != c.ctype || !strings.Contains(body, c.contains) {
			t.Errorf("GET %q: %d %q %.80q", c.path, status, h.Get("Content-Type"), body)
		}
		if !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'self'") || h.Get("X-Frame-Options") != "DENY" ||
			h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %q headers: %v", c.path, h)
		}
		for _, bad := range []string{"'unsafe-inline'", "'unsafe-eval'", "*"} {
			if strings.Contains(h.Get("Content-Security-Policy"), bad) {
				t.Errorf("CSP allows %s: %s", bad, h.Get("Content-Security-Policy"))
			}
		}
	}
	if status, _, _ := f.do(t, "GET", "nothing.js", "", ""); status != 404 {
		t.Errorf("unknown file: %d", status)
	}
	if status, h, _ := f.do(t, "POST", "", "", "{}"); status != 405 || h.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST page: %d %v", status, h)
	}
	// Nothing in the page comes from another origin, and nothing is inline.
	_, _, page := f.do(t, "GET", "", "", "")
	for _, bad := range []string{"http://", "https://", "<script>", "style=", "onclick", "onload"} {
		if strings.Contains(page, bad) {
			t.Errorf("index.html contains %q", bad)
		}
	}
	_, _, js := f.do(t, "GET", "app.js", "", "")
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "localStorage", "?token", "&token"} {
		if strings.Contains(js, bad) {
			t.Errorf("app.js uses %q", bad)
		}
	}
}

func TestAccess(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		token  string
		status int
		code   string
	}{
		{"", 400, "no_token"},
		{"wrong", 401, "invalid_token"},
		{tenantToken, 401, "invalid_token"},
		{opToken, 200, ""},
	} {
		for _, path := range []string{"api/summary", "api/tasks", "api/task?id=t1", "api/chart"} {
			status, h, body := f.do(t, "GET", path, c.token, "")
			if status != c.status || (c.code != "" && !strings.Contains(body, `"code":"`+c.code+`"`)) {
				t.Errorf("%s with %q: %d %s", path, c.token, status, body)
			}
			if h.Get("Cache-Control") != "no-store" {
				t.Errorf("%s: Cache-Control %q", path, h.Get("Cache-Control"))
			}
		}
		status, _, body := f.do(t, "POST", "api/redeliver", c.token, `{"ids":["t1"]}`)
		if status != c.status {
			t.Errorf("redeliver with %q: %d %s", c.token, status, body)
		}
	}
	// A custom rule: the tenant counts as an operator.
	f2 := newFixture(t, console.WithOperator(func(p taskstore.Principal) bool { return p.UserID == "alice" }))
	if status, _, _ := f2.do(t, "GET", "api/summary", tenantToken, ""); status != 200 {
		t.Errorf("custom operator rule: %d", status)
	}
	if status, _, _ := f2.do(t, "GET", "api/summary", opToken, ""); status != 401 {
		t.Errorf("custom operator rule refuses the empty principal: %d", status)
	}
	if f.rec.redeliver == nil || len(f.rec.redeliver) != 1 {
		t.Errorf("only the operator's redeliver reached the recorder: %v", f.rec.redeliver)
	}
}

func TestMethods(t *testing.T) {
	f := newFixture(t)
	if status, h, _ := f.do(t, "GET", "api/redeliver", opToken, ""); status != 405 || h.Get("Allow") != "POST" {
		t.Errorf("GET redeliver: %d %v", status, h)
	}
	if status, h, _ := f.do(t, "POST", "api/tasks", opToken, "{}"); status != 405 || h.Get("Allow") != "GET" {
		t.Errorf("POST tasks: %d %v", status, h)
	}
	if status, _, _ := f.do(t, "GET", "api/nothing", opToken, ""); status != 404 {
		t.Errorf("unknown endpoint: %d", status)
	}
	// An action needs a JSON body: a form post is refused.
	req, _ := http.NewRequest("POST", f.srv.URL+"/console/api/redeliver", strings.NewReader("ids=t1"))
	req.Header.Set("Authorization", "Bearer "+opToken)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 || len(f.rec.redeliver) != 0 {
		t.Errorf("form post: %d, recorder saw %v", resp.StatusCode, f.rec.redeliver)
	}
}

func TestSummary(t *testing.T) {
	f := newFixture(t)
	status, _, body := f.do(t, "GET", "api/summary", opToken, "")
	want := `{"tasks":{"pending":1,"running":0,"succeeded":3,"failed":2},"callbacks":{"waiting":1,"pending":2,"delivered":0,"failed":0},"total":6,"now":1772368220}`
	if status != 200 || body != want {
		t.Fatalf("summary: %d\n got %s\nwant %s", status, body, want)
	}
}

func TestList(t *testing.T) {
	f := newFixture(t)
	ids := func(body string) []string {
		var page struct {
			Items []struct {
				ID string `json:"id"`
			} `json:"items"`
			Count int `json:"count"`
		}
		if err := json.Unmarshal([]byte(body), &page); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		var out []string
		for _, it := range page.Items {
			out = append(out, it.ID)
		}
		return append(out, fmt.Sprint(page.Count))
	}
	for _, c := range []struct {
		query string
		want  []string
	}{
		{"", []string{"t5", "t1", "t2", "t3", "t4", "t6", "6"}},
		{"limit=2", []string{"t5", "t1", "6"}},
		{"limit=2&offset=2", []string{"t2", "t3", "6"}},
		{"status=failed", []string{"t3", "t4", "2"}},
		{"callback_status=pending", []string{"t1", "t3", "2"}},
		{"status=succeeded&callback_status=pending", []string{"t1", "1"}},
		{"type=images_edits", []string{"t2", "1"}},
		{"trace_id=tr-t4", []string{"t4", "1"}},
		{"application_id=app-2", []string{"0"}},
		{"user_id=alice&limit=1", []string{"t5", "6"}},
		{fmt.Sprintf("from=%d&to=%d", now.Add(-20*time.Second).Unix(), now.Add(-10*time.Second).Unix()), []string{"t1", "t2", "t3", "3"}},
	} {
		status, _, body := f.do(t, "GET", "api/tasks?"+c.query, opToken, "")
		if got := ids(body); status != 200 || !slices.Equal(got, c.want) {
			t.Errorf("%q: %d %v, want %v", c.query, status, got, c.want)
		}
	}
	_, _, body := f.do(t, "GET", "api/tasks?trace_id=tr-t3", opToken, "")
	want := `{"items":[{"id":"t3","trace_id":"tr-t3","type":"images_generations","status":"failed","created_at":1772368202,"finished_at":1772368204,"duration":2,"application_id":"app-1","user_id":"alice","callback":{"status":"pending","attempts":0}}],"count":1,"offset":0,"limit":25,"now":1772368220}`
	if body != want {
		t.Errorf("item:\n got %s\nwant %s", body, want)
	}
	for _, q := range []string{"status=done", "callback_status=x", "limit=0", "limit=101", "offset=-1", "from=yesterday", "limit=1.5"} {
		status, _, body := f.do(t, "GET", "api/tasks?"+q, opToken, "")
		if status != 400 || !strings.Contains(body, `"code":"bad_request"`) {
			t.Errorf("%q: %d %s", q, status, body)
		}
	}
}

func TestDetail(t *testing.T) {
	f := newFixture(t)
	status, _, body := f.do(t, "GET", "api/task?id=t3", opToken, "")
	x, _ := f.store.Get(context.Background(), "t3")
	if status != 200 || body != string(x.AppendJSON(nil)) {
		t.Errorf("detail: %d %s", status, body)
	}
	if status, _, body := f.do(t, "GET", "api/task?id=nope", opToken, ""); status != 200 || body != "{}" {
		t.Errorf("missing: %d %s", status, body)
	}
	if status, _, _ := f.do(t, "GET", "api/task", opToken, ""); status != 400 {
		t.Errorf("no id: %d", status)
	}
}

func TestChart(t *testing.T) {
	f := newFixture(t)
	status, _, body := f.do(t, "GET", "api/chart", opToken, "")
	var c struct {
		Start     int64 `json:"start"`
		Step      int   `json:"step"`
		Succeeded []int `json:"succeeded"`
		Failed    []int `json:"failed"`
	}
	if err := json.Unmarshal([]byte(body), &c); status != 200 || err != nil {
		t.Fatalf("chart: %d %v %s", status, err, body)
	}
	wantStart := now.Truncate(time.Minute).Add(-59 * time.Minute).Unix()
	if c.Start != wantStart || c.Step != 60 || len(c.Succeeded) != 60 || len(c.Failed) != 60 {
		t.Fatalf("chart shape: %s", body)
	}
	// t1, t2 succeeded and t3 failed in the current minute; t4 failed ten
	// minutes before; t6 is out of the hour; t5 has not finished.
	if c.Succeeded[59] != 2 || c.Failed[59] != 1 || c.Failed[49] != 1 || sum(c.Succeeded) != 2 || sum(c.Failed) != 2 {
		t.Errorf("chart counts: %s", body)
	}
}

func sum(v []int) int {
	n := 0
	for _, x := range v {
		n += x
	}
	return n
}

func TestActions(t *testing.T) {
	f := newFixture(t)
	status, _, body := f.do(t, "POST", "api/redeliver", opToken, `{"ids":["t1","t3"]}`)
	if status != 200 || body != `{"redelivered":["t1"],"count":1}` || !slices.Equal(f.rec.redeliver[0], []string{"t1", "t3"}) {
		t.Errorf("redeliver: %d %s %v", status, body, f.rec.redeliver)
	}
	status, _, body = f.do(t, "POST", "api/recover", opToken, `{"since":1772360000.5}`)
	if status != 200 || body != `{"count":7}` || !f.rec.recovered[0].Equal(time.UnixMilli(1772360000500)) {
		t.Errorf("recover: %d %s %v", status, body, f.rec.recovered)
	}
	for _, c := range []struct{ path, body string }{
		{"api/redeliver", `{"ids":[]}`},
		{"api/redeliver", `{"ids":"t1"}`},
		{"api/redeliver", `{"ids":["t1"],"extra":1}`},
		{"api/redeliver", `{"ids":["t1"]} {}`},
		{"api/redeliver", `{"ids":[` + strings.Repeat(`"x",`, 100) + `"x"]}`},
		{"api/recover", `{}`},
		{"api/recover", `{"since":"yesterday"}`},
		{"api/recover", `{"since":-1}`},
	} {
		status, _, body := f.do(t, "POST", c.path, opToken, c.body)
		if status != 400 || !strings.Contains(body, `"code":"bad_request"`) {
			t.Errorf("%s %s: %d %s", c.path, c.body, status, body)
		}
	}
	if len(f.rec.redeliver) != 1 || len(f.rec.recovered) != 1 {
		t.Errorf("bad requests reached the recorder: %v %v", f.rec.redeliver, f.rec.recovered)
	}
}

// Without a recorder, the actions go to the store.
func TestActionsWithoutRecorder(t *testing.T) {
	store := memstore.New()
	defer store.Close()
	ctx := context.Background()
	x := taskstore.Task{ID: "a", Type: "t", Request: json.RawMessage(`{}`)}
	x.Callback.URL = "https://cb.example/a"
	store.Create(ctx, x)
	store.Finish(ctx, "a", json.RawMessage(`{"success":true}`), time.Time{})
	claimed, _ := store.ClaimDeliveries(ctx, "", time.Now(), time.Minute, 1)
	if len(claimed) != 1 {
		t.Fatal("no claim")
	}
	store.RecordAttempt(ctx, "a", taskstore.Attempt{Status: 410, Error: "gone"}) // given up
	srv := httptest.NewServer(console.New(store, auth))
	defer srv.Close()
	post := func(path, body string) string {
		req, _ := http.NewRequest("POST", srv.URL+"/"+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+opToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := post("api/recover", `{"since":0}`); got != `{"count":1}` {
		t.Errorf("recover: %s", got)
	}
	if y, _ := store.Get(ctx, "a"); y.CallbackStatus() != taskstore.CallbackPending {
		t.Errorf("after recover: %s", y.CallbackStatus())
	}
	if got := post("api/redeliver", `{"ids":["a","b"]}`); got != `{"redelivered":["a"],"count":1}` {
		t.Errorf("redeliver: %s", got)
	}
}

// A store failure is a 500 with the contract's body that leaks nothing.
func TestStoreFailure(t *testing.T) {
	f := newFixture(t, console.WithLogger(discardLogger()))
	f.store.Close()
	for _, path := range []string{"api/summary", "api/tasks", "api/task?id=t1", "api/chart"} {
		status, _, body := f.do(t, "GET", path, opToken, "")
		if status != 500 || !strings.Contains(body, `"code":"api_error"`) || strings.Contains(body, "closed") {
			t.Errorf("%s on a closed store: %d %s", path, status, body)
		}
	}
}

// The console answers the same at any mount point, StripPrefix or not.
func TestMountPoints(t *testing.T) {
	store := memstore.New()
	defer store.Close()
	mux := http.NewServeMux()
	mux.Handle("/ops/console/", console.New(store, auth))
	mux.Handle("/api/console/", console.New(store, auth)) // a prefix holding "api"
	mux.Handle("/", http.StripPrefix("/x", console.New(store, auth)))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for _, base := range []string{"/ops/console/", "/api/console/", "/x/"} {
		for _, c := range []struct{ path, want string }{{"", "<!doctype html>"}, {"app.js", "'use strict'"}, {"api/summary", `{"tasks":`}} {
			req, _ := http.NewRequest("GET", srv.URL+base+c.path, nil)
			req.Header.Set("Authorization", "Bearer "+opToken)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(b), c.want) {
				t.Errorf("%s%s: %d %.60s", base, c.path, resp.StatusCode, b)
			}
		}
	}
}
