package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback/callbacktest"
	"github.com/tasksapi/tasks/internal/tasksdtest"
	"github.com/tasksapi/tasks/memstore"
)

// get sends a GET with an optional bearer token.
func getAs(t *testing.T, url, token string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// /metrics: operators only on the main listener, no token on
// -metrics-addr; the names and labels the README lists; never an id, user
// id, URL or token the test created.
func TestEndToEndMetrics(t *testing.T) {
	rcv := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{Secret: secret, Status: func(r callbacktest.Delivery) int {
		if strings.HasSuffix(r.Path, "/gone") {
			return http.StatusGone
		}
		return http.StatusNoContent
	}})
	d := start(t, []string{"TASKSD_CALLBACK_SECRET=" + secret},
		"-db", filepath.Join(t.TempDir(), "m.db"), "-tokens", writeTokens(t), "-allow-private-callbacks",
		"-standin-delay", "20ms", "-metrics-addr", "127.0.0.1:0")
	m := regexp.MustCompile(`msg=metrics addr=(\S+)`).FindStringSubmatch(d.Logs())
	if m == nil {
		t.Fatalf("no metrics address logged:\n%s", d.Logs())
	}
	metricsURL := "http://" + m[1] + "/metrics"

	var created []string
	for i, path := range []string{"/cb", "/gone", "/cb"} {
		_, ans, raw := d.post("/openai/images/generations", tokenA, map[string]any{
			"prompt": "metrics", "callback_url": rcv.URL + path, "trace_id": "metrics-trace-" + string(rune('a'+i)),
		})
		id, _ := ans["task_id"].(string)
		if id == "" {
			t.Fatalf("submit: %s", raw)
		}
		created = append(created, id)
	}
	waitCallback(t, d, tokenA, created[0], "delivered")
	waitCallback(t, d, tokenA, created[1], "failed")
	waitCallback(t, d, tokenA, created[2], "delivered")
	d.post("/openai/tasks", tokenA, map[string]any{"action": "retrieve_batch"})

	// Main listener: the operator only.
	for _, c := range []struct {
		token  string
		status int
	}{{"", 400}, {"nope", 401}, {tokenA, 401}, {tokenOp, 200}} {
		if status, _, body := getAs(t, d.URL()+"/metrics", c.token); status != c.status {
			t.Errorf("/metrics with %q: %d %.200s", c.token, status, body)
		}
	}
	// The latency is observed in the background: wait for it.
	var text string
	deadline := time.Now().Add(waitLong)
	for {
		var status int
		status, _, text = getAs(t, metricsURL, "")
		if status != 200 {
			t.Fatalf("-metrics-addr: %d", status)
		}
		if strings.Contains(text, "tasksd_callback_delivery_latency_seconds_count 2\n") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, line := range []string{
		`tasksd_tasks_created_total{type="images_generations"} 3`,
		`tasksd_tasks_finished_total{outcome="succeeded",type="images_generations"} 3`,
		`tasksd_task_duration_seconds_count{type="images_generations"} 3`,
		`tasksd_callback_attempts_total{outcome="delivered"} 2`,
		`tasksd_callback_attempts_total{outcome="given_up"} 1`,
		`tasksd_callback_attempts_total{outcome="retry"} 0`,
		`tasksd_callback_delivery_latency_seconds_count 2`,
		`tasksd_callbacks_pending 0`,
		`tasksd_oldest_pending_callback_age_seconds 0`,
		`tasksd_queue_length 0`,
		`tasksd_running_tasks 0`,
		`tasksd_http_requests_total{code="200",route="/openai/images/generations"} 3`,
		`tasksd_http_requests_total{code="401",route="/metrics"} 2`,
		`tasksd_http_requests_total{code="200",route="/openai/tasks"}`,
	} {
		if !strings.Contains(text, line) {
			t.Errorf("exposition lacks %q", line)
		}
	}
	for _, family := range []string{"tasksd_http_request_duration_seconds_bucket", "go_goroutines", "process_resident_memory_bytes"} {
		if !strings.Contains(text, family) {
			t.Errorf("exposition lacks %s", family)
		}
	}
	_, _, viaOp := getAs(t, d.URL()+"/metrics", tokenOp)
	for _, secretText := range append(created, "metrics-trace", "user-a", "app-a", "cred-a", rcv.URL, "127.0.0.1",
		tokenA, tokenB, tokenOp, secret, "/cb", "/gone") {
		if strings.Contains(text, secretText) || strings.Contains(viaOp, secretText) {
			t.Errorf("the exposition contains %q", secretText)
		}
	}
	d.Stop()
}

// Per-token rate limits: the flags for every token, a tokens-file entry's
// own rate and burst, 429 too_many_requests with Retry-After, nothing
// stored, and one token at its limit does not slow another.
func TestEndToEndRateLimits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json")
	os.WriteFile(path, []byte(`{
		"tok-slow": {"application_id": "app-s", "rate": 0.01, "burst": 2},
		"tok-flag": {"application_id": "app-f"},
		"tok-free": {"application_id": "app-x", "rate": 0},
		"tok-op": {}
	}`), 0o600)
	d := start(t, nil, "-db", ":memory:", "-tokens", path, "-standin-delay", "0s", "-rate", "0.01", "-burst", "3")
	batch := map[string]any{"action": "retrieve_batch"}
	// tok-slow: its own burst of 2, then 429.
	for i := range 2 {
		if status, _, raw := d.post("/openai/tasks", "tok-slow", batch); status != 200 {
			t.Fatalf("tok-slow request %d: %d %s", i, status, raw)
		}
	}
	req, _ := http.NewRequest("POST", d.URL()+"/openai/images/generations",
		strings.NewReader(`{"prompt":"x","async":true}`))
	req.Header.Set("Authorization", "Bearer tok-slow")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), `"code":"too_many_requests"`) ||
		!strings.Contains(string(body), `"trace_id"`) {
		t.Fatalf("over the limit: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	// Nothing was stored by the refused submission.
	_, got, raw := d.post("/openai/tasks", "tok-op", map[string]any{"action": "retrieve_batch", "application_id": "app-s"})
	if got["count"] != float64(0) {
		t.Fatalf("a refused request stored a task: %s", raw)
	}
	// tok-flag: the flags' burst of 3.
	for i := range 3 {
		if status, _, raw := d.post("/openai/tasks", "tok-flag", batch); status != 200 {
			t.Fatalf("tok-flag request %d: %d %s", i, status, raw)
		}
	}
	if status, _, _ := d.post("/openai/tasks", "tok-flag", batch); status != 429 {
		t.Fatalf("tok-flag over its burst: %d", status)
	}
	// The console API and /metrics count too.
	if status, h, _ := getAs(t, d.URL()+"/console/api/summary", "tok-flag"); status != 429 || h.Get("Retry-After") == "" {
		t.Fatalf("console over the limit: %d", status)
	}
	// tok-free (rate 0 in the file) is not limited, and neither is anyone
	// while the others are at their limits.
	for i := range 20 {
		if status, _, _ := d.post("/openai/tasks", "tok-free", batch); status != 200 {
			t.Fatalf("tok-free request %d: %d", i, status)
		}
	}
	// Public routes are never limited.
	for range 5 {
		if status, _, _ := getAs(t, d.URL()+"/healthz", "tok-slow"); status != 200 {
			t.Fatalf("healthz limited: %d", status)
		}
	}
	d.Stop()
}

// /readyz answers 503 from SIGTERM on (during -shutdown-delay, while the
// server still answers), and /healthz stays 200 meanwhile.
func TestEndToEndReadyzOnSIGTERM(t *testing.T) {
	d := start(t, nil, "-db", ":memory:", "-shutdown-delay", "3s")
	if status, _, body := getAs(t, d.URL()+"/readyz", ""); status != 200 || body != `{"status":"ready"}` {
		t.Fatalf("readyz: %d %s", status, body)
	}
	var wg sync.WaitGroup
	wg.Go(func() { d.Stop() })
	deadline := time.Now().Add(waitLong)
	for {
		status, _, body := getAs(t, d.URL()+"/readyz", "")
		if status == 503 {
			if body != `{"status":"shutting down"}` {
				t.Errorf("readyz while shutting down: %s", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("readyz never answered 503 after SIGTERM")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if status, _, _ := getAs(t, d.URL()+"/healthz", ""); status != 200 {
		t.Errorf("healthz while shutting down: %d", status)
	}
	wg.Wait()
}

// /readyz answers 503 when the store fails, and when draining.
func TestReadyzStoreClosed(t *testing.T) {
	store := memstore.New()
	op := newOps(config{}, store, slog.New(slog.DiscardHandler))
	defer op.metrics.Close()
	check := func(want int) {
		t.Helper()
		rr := httptest.NewRecorder()
		op.readyz(rr, httptest.NewRequest("GET", "/readyz", nil))
		if rr.Code != want {
			t.Fatalf("readyz: %d %s, want %d", rr.Code, rr.Body, want)
		}
	}
	check(200)
	store.Close()
	check(503)
	op2 := newOps(config{}, memstore.New(), slog.New(slog.DiscardHandler))
	defer op2.metrics.Close()
	op2.draining.Store(true)
	rr := httptest.NewRecorder()
	op2.readyz(rr, httptest.NewRequest("GET", "/readyz", nil))
	if rr.Code != 503 {
		t.Fatalf("draining: %d", rr.Code)
	}
}

func TestTokensFileRates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.json")
	os.WriteFile(path, []byte(`{"a": {"user_id": "u", "rate": 2.5, "burst": 4}, "b": {}}`), 0o600)
	m, err := loadTokens(path)
	if err != nil || *m["a"].Rate != 2.5 || *m["a"].Burst != 4 || m["a"].UserID != "u" || m["b"].Rate != nil {
		t.Fatalf("loadTokens = %+v, %v", m, err)
	}
	op := &ops{cfg: config{Rate: 1.2}}
	p := op.principals(m)
	if p["a"].UserID != "u" || len(p) != 2 {
		t.Fatalf("principals: %v", p)
	}
	for _, bad := range []string{`{"a": {"rate": -1}}`, `{"a": {"burst": -2}}`, `{"a": {"rate": "fast"}}`, `{"a": {"limit": 3}}`} {
		os.WriteFile(path, []byte(bad), 0o600)
		if _, err := loadTokens(path); err == nil {
			t.Errorf("loadTokens accepted %s", bad)
		}
	}
	for _, args := range [][]string{{"-rate", "-1"}, {"-burst", "-1"}, {"-shutdown-delay", "-1s"}, {"-rate", "NaN"}} {
		if _, err := parseConfig(args, func(string) string { return "" }, io.Discard); err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("%v: %v", args, err)
		}
	}
}
