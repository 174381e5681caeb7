package reliability

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" driver for PRAGMA integrity_check
)

// The profiles. The short one is what CI runs with `go test -race ./...`;
// TASKS_RELIABILITY=long runs more tasks, more kills and longer outages.
var longProfile = os.Getenv("TASKS_RELIABILITY") == "long"

// pick returns short in the short profile and long in the long one.
func pick[T any](short, long T) T {
	if longProfile {
		return long
	}
	return short
}

// Tokens of the tokens file every subprocess test uses.
const (
	tokenA  = "rel-token-tenant-a-6f1c"
	tokenB  = "rel-token-tenant-b-93d0"
	tokenOp = "rel-token-operator-27ae"
)

const waitStart = 30 * time.Second

var (
	buildOnce sync.Once
	buildDir  string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// tasksdBinary builds internal/cmd/tasksd once per test process and returns
// its path. Subprocess tests are skipped under -short.
func tasksdBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the tasksd binary as a subprocess; skipped in -short")
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "reliability-tasksd")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "tasksd")
		// -race on the test binary does not reach the subprocess: it is
		// built plain, as an operator would run it.
		cmd := exec.Command("go", "build", "-o", binPath, "github.com/tasksapi/tasks/internal/cmd/tasksd")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build tasksd: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// syncBuffer is a bytes.Buffer safe for concurrent writers and readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// daemon is one running tasksd process.
type daemon struct {
	t    *testing.T
	cmd  *exec.Cmd
	url  string
	out  *syncBuffer // standard output and standard error, interleaved
	done chan error
}

var listenRE = regexp.MustCompile(`msg=listening addr=(\S+)`)

// startTasksd runs tasksd with args (plus -addr 127.0.0.1:0) and extra
// environment variables, and waits until it logs the address it listens on.
// The process is killed at the end of the test if it still runs.
func startTasksd(t *testing.T, env []string, args ...string) *daemon {
	t.Helper()
	cmd := exec.Command(tasksdBinary(t), append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	d := &daemon{t: t, cmd: cmd, out: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout = d.out
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			line := sc.Text()
			d.out.Write([]byte(line + "\n"))
			if m := listenRE.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	go func() {
		err := cmd.Wait()
		pw.Close()
		<-scanned
		d.done <- err
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("tasksd output (last 8 KiB):\n%s", tail(d.out.String(), 8<<10))
		}
	})
	select {
	case a := <-addr:
		d.url = "http://" + a
	case err := <-d.done:
		d.done <- err
		t.Fatalf("tasksd exited early: %v\n%s", err, d.out.String())
	case <-time.After(waitStart):
		t.Fatalf("tasksd did not start:\n%s", d.out.String())
	}
	return d
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// kill ends the process with SIGKILL (kill -9) and waits for it.
func (d *daemon) kill() {
	d.t.Helper()
	if err := d.cmd.Process.Kill(); err != nil {
		d.t.Fatalf("kill: %v", err)
	}
	select {
	case <-d.done:
	case <-time.After(waitStart):
		d.t.Fatal("tasksd did not die on SIGKILL")
	}
}

// stop sends SIGTERM and waits for a clean exit.
func (d *daemon) stop() {
	d.t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		if err != nil {
			d.t.Fatalf("tasksd exit: %v\n%s", err, tail(d.out.String(), 8<<10))
		}
	case <-time.After(60 * time.Second):
		d.t.Fatal("tasksd did not stop on SIGTERM")
	}
}

// writeTokens writes the tokens file: two tenants and an operator.
func writeTokens(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens.json")
	err := os.WriteFile(path, []byte(`{
		"`+tokenA+`": {"application_id": "app-a", "user_id": "user-a", "credential_id": "cred-a"},
		"`+tokenB+`": {"application_id": "app-b", "user_id": "user-b", "credential_id": "cred-b"},
		"`+tokenOp+`": {}
	}`), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// httpClient is shared by the tests: keep-alive connections to loopback.
var httpClient = &http.Client{
	Timeout: 30 * time.Second,
	Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 128,
		IdleConnTimeout:     30 * time.Second,
	},
}

// answer is an HTTP answer: status, raw body and the body decoded as a JSON
// object (nil when it is not one).
type answer struct {
	status int
	raw    []byte
	obj    map[string]json.RawMessage
	header http.Header
}

// str returns the string member k of the answer's object, "" if absent.
func (a answer) str(k string) string {
	var s string
	json.Unmarshal(a.obj[k], &s)
	return s
}

// send makes one request. contentType "" sends none; token "" sends no
// Authorization header.
func send(ctx context.Context, method, url, token, contentType string, body []byte) (answer, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return answer{}, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	a := answer{status: resp.StatusCode, raw: raw, header: resp.Header}
	json.Unmarshal(raw, &a.obj)
	return a, nil
}

// postJSON posts v (marshalled, or sent as is when it is []byte or string)
// as application/json.
func postJSON(ctx context.Context, url, token string, v any) (answer, error) {
	var body []byte
	switch b := v.(type) {
	case []byte:
		body = b
	case string:
		body = []byte(b)
	default:
		var err error
		if body, err = json.Marshal(v); err != nil {
			return answer{}, err
		}
	}
	return send(ctx, http.MethodPost, url, token, "application/json", body)
}

// mustPost is postJSON that fails the test on a transport error.
func mustPost(t *testing.T, url, token string, v any) answer {
	t.Helper()
	a, err := postJSON(context.Background(), url, token, v)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return a
}

// wireTask is the part of a Tasks API record the tests look at.
type wireTask struct {
	ID            string          `json:"id"`
	TraceID       string          `json:"trace_id"`
	Type          string          `json:"type"`
	Request       json.RawMessage `json:"request"`
	Response      json.RawMessage `json:"response"`
	CreatedAt     json.Number     `json:"created_at"`
	FinishedAt    json.Number     `json:"finished_at"`
	ApplicationID string          `json:"application_id"`
	UserID        string          `json:"user_id"`
}

// batch is a retrieve_batch answer.
type batch struct {
	Items []wireTask `json:"items"`
	Count *int       `json:"count"`
}

// retrieveBatch posts a retrieve_batch request and decodes the answer; it
// fails the test unless the answer is 200 with items and count.
func retrieveBatch(t *testing.T, url, token string, req map[string]any) (batch, []byte) {
	t.Helper()
	req["action"] = "retrieve_batch"
	a := mustPost(t, url+"/openai/tasks", token, req)
	var b batch
	if a.status != http.StatusOK || json.Unmarshal(a.raw, &b) != nil || b.Count == nil || b.Items == nil {
		t.Fatalf("retrieve_batch %v: %d %.300s", req, a.status, a.raw)
	}
	return b, a.raw
}

// fetchAll returns every task the operator sees, newest first.
func fetchAll(t *testing.T, url string) []wireTask {
	t.Helper()
	var all []wireTask
	for {
		b, _ := retrieveBatch(t, url, tokenOp, map[string]any{"limit": 100, "offset": len(all)})
		all = append(all, b.Items...)
		if len(b.Items) == 0 || len(all) >= *b.Count {
			return all
		}
	}
}

// fetchByIDs returns the tasks with the given ids that the operator sees.
func fetchByIDs(t *testing.T, url string, ids []string) map[string]wireTask {
	t.Helper()
	got := make(map[string]wireTask, len(ids))
	for len(ids) > 0 {
		n := min(len(ids), 100)
		b, _ := retrieveBatch(t, url, tokenOp, map[string]any{"ids": ids[:n], "limit": 100})
		for _, it := range b.Items {
			got[it.ID] = it
		}
		ids = ids[n:]
	}
	return got
}

// outcome summarises a stored response: "success", or the failure code.
func outcome(resp json.RawMessage) string {
	var r struct {
		Success *bool `json:"success"`
		Error   struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if len(resp) == 0 || json.Unmarshal(resp, &r) != nil || r.Success == nil {
		return "unfinished"
	}
	if *r.Success {
		return "success"
	}
	return "failure:" + r.Error.Code
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// checkErrorBody reports what is wrong with a contract error body:
// exactly {"error":{"code":…,"message":…},"trace_id":"<uuid>"}, with the
// given code ("" accepts any non-empty code).
func checkErrorBody(raw []byte, code string) string {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return "not a JSON object: " + err.Error()
	}
	if len(top) != 2 || top["error"] == nil || top["trace_id"] == nil {
		return "members are not exactly error and trace_id"
	}
	var e map[string]json.RawMessage
	if err := json.Unmarshal(top["error"], &e); err != nil || len(e) != 2 {
		return "error is not an object of exactly code and message"
	}
	var c, m, tr string
	if json.Unmarshal(e["code"], &c) != nil || json.Unmarshal(e["message"], &m) != nil || c == "" || m == "" {
		return "error.code or error.message is not a non-empty string"
	}
	if code != "" && c != code {
		return fmt.Sprintf("error.code %q, want %q", c, code)
	}
	if json.Unmarshal(top["trace_id"], &tr) != nil || !uuidRE.MatchString(tr) {
		return "trace_id is not a UUID"
	}
	return ""
}

// receiver is a loopback callback receiver. It counts requests per
// webhook-id (and those it answered 2xx), keeps the first body of each, and
// records what breaks the contract: a body whose task_id is not its
// webhook-id, a duplicate whose body differs from the first, a missing
// header.
type receiver struct {
	*httptest.Server
	// status decides the answer to a request; nil answers 204.
	status func(r *http.Request) int

	mu       sync.Mutex
	hits     map[string]int
	ok       map[string]int
	bodies   map[string][]byte
	requests int
	problems []string
}

// newReceiver starts a receiver on a fresh loopback port.
func newReceiver(t *testing.T, status func(r *http.Request) int) *receiver {
	t.Helper()
	return newReceiverOn(t, nil, status)
}

// newReceiverOn starts a receiver on ln (nil: a fresh loopback port).
func newReceiverOn(t *testing.T, ln net.Listener, status func(r *http.Request) int) *receiver {
	t.Helper()
	rc := &receiver{status: status, hits: map[string]int{}, ok: map[string]int{}, bodies: map[string][]byte{}}
	rc.Server = httptest.NewUnstartedServer(http.HandlerFunc(rc.serve))
	if ln != nil {
		rc.Server.Listener.Close()
		rc.Server.Listener = ln
	}
	rc.Start()
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	id := r.Header.Get("webhook-id")
	var b struct {
		TaskID string `json:"task_id"`
	}
	jerr := json.Unmarshal(body, &b)
	status := http.StatusNoContent
	if rc.status != nil {
		status = rc.status(r)
	}
	rc.mu.Lock()
	rc.requests++
	switch {
	case id == "" || r.Header.Get("webhook-timestamp") == "":
		rc.problems = append(rc.problems, fmt.Sprintf("request without webhook-id or webhook-timestamp: %q", body))
	case jerr != nil || b.TaskID != id:
		rc.problems = append(rc.problems, fmt.Sprintf("webhook-id %s carries body %.200s", id, body))
	case rc.bodies[id] != nil && !bytes.Equal(rc.bodies[id], body):
		rc.problems = append(rc.problems, fmt.Sprintf("webhook-id %s: duplicate with another body: %.200s vs %.200s", id, rc.bodies[id], body))
	}
	rc.hits[id]++
	if status >= 200 && status <= 299 {
		rc.ok[id]++
	}
	if rc.bodies[id] == nil {
		rc.bodies[id] = body
	}
	rc.mu.Unlock()
	w.WriteHeader(status)
}

// delivered returns a copy of the counts of requests answered 2xx.
func (rc *receiver) delivered() map[string]int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := make(map[string]int, len(rc.ok))
	for k, v := range rc.ok {
		out[k] = v
	}
	return out
}

// snapshot returns a copy of the hit counts and the problems seen.
func (rc *receiver) snapshot() (hits map[string]int, requests int, problems []string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	hits = make(map[string]int, len(rc.hits))
	for k, v := range rc.hits {
		hits[k] = v
	}
	return hits, rc.requests, append([]string(nil), rc.problems...)
}

func (rc *receiver) body(id string) []byte {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.bodies[id]
}

// integrityCheck opens the SQLite file read-only with the driver itself (no
// store code involved) and returns the result of PRAGMA integrity_check.
func integrityCheck(t *testing.T, path string) string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatalf("integrity check: open: %v", err)
	}
	defer db.Close()
	var res string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil {
		t.Fatalf("integrity check: %v", err)
	}
	return res
}

// waitFor polls cond every interval until it returns true or the timeout
// passes; it reports whether cond became true.
func waitFor(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}

// keys returns the keys of m.
func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// hasAny reports which of the secrets occur in s.
func hasAny(s string, secrets ...string) []string {
	var found []string
	for _, x := range secrets {
		if x != "" && strings.Contains(s, x) {
			found = append(found, x)
		}
	}
	return found
}
