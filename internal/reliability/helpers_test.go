package reliability

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/internal/tasksdtest"

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

func TestMain(m *testing.M) { tasksdtest.Main(m) }

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
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
