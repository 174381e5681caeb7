package reliability

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback/callbacktest"
	"github.com/tasksapi/tasks/internal/tasksdtest"
)

const (
	relSecret = "whsec_c2VjcmV0LXNpZ25pbmcta2V5LWZvci1yZWxpYWJpbGl0eQ=="
	relUpKey  = "sk-rel-upstream-key-5b8e1f"
)

// TestSecretsNeverLeak runs tasksd in proxy mode with a tokens file, an
// upstream key and a callback signing secret, drives it through failures
// (rejected tokens — including the key and the secret presented as tokens —,
// upstream errors and dropped connections, callback receivers that fail
// first, malformed input) and asserts that none of the configured tokens,
// the upstream key or the callback secret (nor its key without the prefix)
// appear in the process's output, in any answer (headers or body), in any
// callback, or upstream in place of the key.
func TestSecretsNeverLeak(t *testing.T) {
	secretKey := strings.TrimPrefix(relSecret, "whsec_")
	secrets := []string{tokenA, tokenB, tokenOp, relUpKey, relSecret, secretKey}

	var mu sync.Mutex
	var upstreamAuth []string
	var seen []string // everything the test received
	record := func(s string) {
		mu.Lock()
		seen = append(seen, s)
		mu.Unlock()
	}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		upstreamAuth = append(upstreamAuth, r.Header.Get("Authorization"))
		mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.Contains(string(body), "fail500"):
			w.WriteHeader(500)
			io.WriteString(w, `{"error":{"message":"the upstream exploded","type":"server_error"}}`)
		case strings.Contains(string(body), "fail400"):
			w.WriteHeader(400)
			io.WriteString(w, `{"error":{"message":"rejected","type":"invalid_request_error","code":"content_policy_violation"}}`)
		case strings.Contains(string(body), "drop"):
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			w.WriteHeader(502)
		case strings.Contains(string(body), "garbage"):
			io.WriteString(w, `<html>not json</html>`)
		default:
			io.WriteString(w, `{"created":1721626477,"data":[{"url":"https://upstream.example/img.png"}]}`)
		}
	}))
	t.Cleanup(up.Close)

	var cbMu sync.Mutex
	tried := map[string]int{}
	var sigs []string // every callback's headers
	rcv := tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{Status: func(d callbacktest.Delivery) int {
		cbMu.Lock()
		defer cbMu.Unlock()
		sigs = append(sigs, fmt.Sprint(d.Header))
		id := d.Header.Get("webhook-id")
		tried[id]++
		if tried[id] == 1 {
			return http.StatusInternalServerError // fail first: the retry is logged
		}
		return http.StatusNoContent
	}})

	d := tasksdtest.Start(t, []string{"TASKSD_UPSTREAM_KEY=" + relUpKey, "TASKSD_CALLBACK_SECRET=" + relSecret},
		"-db", filepath.Join(t.TempDir(), "tasks.db"), "-tokens", writeTokens(t), "-upstream", up.URL+"/v1",
		"-allow-private-callbacks", "-callback-schedule", "0s,50ms,50ms", "-callback-timeout", "2s", "-lease", "5s",
		// Every receiver failure is retried at once, not paused (the
		// pause is the outage-log test's subject).
		"-callback-host-failures", "1000")

	ctx := t.Context()
	do := func(method, path, auth, ctype string, body []byte) answer {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, d.URL()+path, strings.NewReader(string(body)))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		record(fmt.Sprint(resp.Header) + string(raw))
		a := answer{status: resp.StatusCode, raw: raw, header: resp.Header}
		json.Unmarshal(raw, &a.obj)
		return a
	}
	js := func(v any) []byte { b, _ := json.Marshal(v); return b }

	// Rejected credentials, on every kind of route.
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("user:"+tokenA))
	rejected := 0
	for _, auth := range []string{
		"Bearer " + relUpKey, "Bearer " + relSecret, "Bearer " + secretKey, "Bearer " + tokenA + "x", "Bearer " + tokenA[:len(tokenA)-1],
		"Bearer " + strings.ToUpper(tokenB), basic, tokenOp, "Bearer " + tokenOp + " " + tokenA, "Token " + tokenB,
	} {
		for _, path := range []string{tasksPath, genPath, editsPath, "/v1/chat/completions"} {
			a := do("POST", path, auth, "application/json", js(map[string]any{"prompt": "x", "action": "retrieve_batch"}))
			if a.status != 401 {
				t.Errorf("%s with a rejected token: %d %s", path, a.status, a.raw)
			}
			rejected++
		}
	}
	do("POST", tasksPath, "", "application/json", []byte(`{}`)) // no token
	do("GET", genPath, "Bearer "+tokenA, "", nil)               // wrong method
	do("GET", "/healthz", "", "", nil)

	// Upstream failures, synchronous and in callback mode, as each caller.
	var ids []string
	for _, tok := range []string{tokenA, tokenB, tokenOp} {
		for _, prompt := range []string{"ok", "fail500", "fail400", "drop", "garbage"} {
			do("POST", genPath, "Bearer "+tok, "application/json", js(map[string]any{"prompt": prompt}))
			a := do("POST", genPath, "Bearer "+tok, "application/json", js(map[string]any{"prompt": prompt, "callback_url": rcv.URL + "/cb"}))
			if a.status != 200 {
				t.Fatalf("callback-mode submit: %d %s", a.status, a.raw)
			}
			ids = append(ids, a.str("task_id"))
			body, ct := multipartBody("image", "prompt", prompt, "callback_url", rcv.URL+"/edit")
			a = do("POST", editsPath, "Bearer "+tok, ct, body)
			if a.status != 200 {
				t.Fatalf("multipart submit: %d %s", a.status, a.raw)
			}
			ids = append(ids, a.str("task_id"))
		}
	}
	// Malformed input.
	for _, body := range []string{`{`, `null`, `{"action":"nope"}`, `{"action":"retrieve_batch","limit":1e9}`, "\xff"} {
		do("POST", tasksPath, "Bearer "+tokenA, "application/json", []byte(body))
		do("POST", genPath, "Bearer "+tokenA, "application/json", []byte(body))
	}
	do("POST", genPath, "Bearer "+tokenA, "application/json", []byte(`{"prompt":"x","callback_url":"ftp://example.com/"}`))

	// Every callback arrives (after a failed first attempt), then every
	// record is read back.
	if !waitFor(30*time.Second, 50*time.Millisecond, func() bool {
		ok := rcv.Delivered()
		for _, id := range ids {
			if ok[id] == 0 {
				return false
			}
		}
		return true
	}) {
		t.Errorf("not every callback arrived")
	}
	for _, tok := range []string{tokenA, tokenB, tokenOp} {
		do("POST", tasksPath, "Bearer "+tok, "application/json", js(map[string]any{"action": "retrieve_batch", "limit": 100}))
		do("POST", tasksPath, "Bearer "+tok, "application/json", js(map[string]any{"action": "retrieve", "id": ids[0]}))
	}
	d.Stop()

	output := d.Logs() + d.Stdout()
	for _, id := range ids {
		record(string(rcv.Body(id)))
	}
	mu.Lock()
	seenAll := strings.Join(seen, "\n")
	auths := append([]string(nil), upstreamAuth...)
	mu.Unlock()
	cbMu.Lock()
	sigAll := strings.Join(sigs, "\n")
	cbMu.Unlock()
	if found := hasAny(output, secrets...); len(found) > 0 {
		t.Errorf("the process output contains %d configured secret(s)", len(found))
	}
	if found := hasAny(seenAll, secrets...); len(found) > 0 {
		t.Errorf("answers or callbacks contain %d configured secret(s)", len(found))
	}
	if found := hasAny(sigAll, secrets...); len(found) > 0 {
		t.Errorf("callback headers contain %d configured secret(s)", len(found))
	}
	if !strings.Contains(sigAll, "Webhook-Signature:[v1,") {
		t.Errorf("callbacks are not signed: the secret was not in use")
	}
	for _, a := range auths {
		if a != "Bearer "+relUpKey {
			t.Errorf("the upstream got Authorization %q, want the upstream key", strings.Repeat("*", len(a)))
		}
	}
	// The errors were exercised, and logged (failed deliveries in the
	// per-receiver summary, written at the latest when tasksd stops).
	for _, want := range []string{"WARN", "deliveries to a receiver", "upstream request failed"} {
		if !strings.Contains(output, want) {
			t.Errorf("the output lacks %q: the failure paths were not exercised", want)
		}
	}
	for _, want := range []string{"invalid_token", "no_token", "upstream_unreachable", "the upstream exploded", "bad_request"} {
		if !strings.Contains(seenAll, want) {
			t.Errorf("no answer carries %q: the failure paths were not exercised", want)
		}
	}
	t.Logf("secrets: %d rejected credentials, %d callback-mode tasks through upstream failures, %d upstream requests; "+
		"%d bytes of process output, %d answers and callbacks checked: no token, key or secret in any",
		rejected, len(ids), len(auths), len(output), len(seen))
}

// TestUpstreamQueryNeverLogged: an upstream URL may carry a key in its
// query string (?key=…, as some gateways want). tasksd logs the upstream as
// scheme://host/path only: at start, and in every failed upstream call,
// whether the upstream drops the connection or is not listening at all. A
// URL with user information is refused at start without being repeated.
func TestUpstreamQueryNeverLogged(t *testing.T) {
	const secret = "SECRET-upstream-query-7d1c"
	drop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if c, _, err := w.(http.Hijacker).Hijack(); err == nil {
			c.Close()
		}
	}))
	t.Cleanup(drop.Close)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close() // nothing listens on its port any more

	var output strings.Builder
	failures := 0
	for _, upstream := range []string{
		drop.URL + "/v1?key=" + secret,
		dead.URL + "/v1?api-version=2025-04-01&api-key=" + secret,
	} {
		d := tasksdtest.Start(t, nil, "-db", ":memory:", "-tokens", writeTokens(t), "-upstream", upstream,
			"-allow-private-callbacks", "-callback-schedule", "0s")
		var ids []string
		for _, path := range []string{genPath, chatPath, "/v1/images/generations"} {
			body := map[string]any{"prompt": "x", "model": "m", "messages": []map[string]string{{"role": "user", "content": "x"}}}
			if a := mustPost(t, d.URL()+path, tokenA, body); a.status != http.StatusBadGateway {
				t.Errorf("sync %s: %d %s", path, a.status, a.raw)
			}
			failures++
			body["async"] = true
			a := mustPost(t, d.URL()+path, tokenA, body)
			if a.status != 200 {
				t.Fatalf("async %s: %d %s", path, a.status, a.raw)
			}
			ids = append(ids, a.str("task_id"))
		}
		mp, ct := multipartBody("image", "prompt", "x", "async", "true")
		a, err := send(t.Context(), http.MethodPost, d.URL()+editsPath, tokenA, ct, mp)
		if err != nil || a.status != 200 {
			t.Fatalf("async edits: %v %d %s", err, a.status, a.raw)
		}
		ids = append(ids, a.str("task_id"))
		finished := func() bool {
			got := fetchByIDs(t, d.URL(), ids)
			return len(got) == len(ids) && allFinished(got)
		}
		if !waitFor(20*time.Second, 20*time.Millisecond, finished) {
			t.Errorf("the async tasks did not finish")
		}
		failures += len(ids)
		d.Stop()
		if want := "proxy to " + strings.SplitN(upstream, "?", 2)[0]; !strings.Contains(d.Logs(), want) {
			t.Errorf("the start-up log does not say %q", want)
		}
		output.WriteString(d.Logs() + d.Stdout())
	}

	// User information is refused, and not repeated.
	cmd := exec.Command(tasksdtest.Binary(t), "-addr", "127.0.0.1:0", "-db", ":memory:",
		"-upstream", "http://user:"+secret+"@127.0.0.1:9/v1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Errorf("tasksd started with user information in -upstream")
	}
	output.Write(out)

	all := output.String()
	if strings.Contains(all, secret) {
		for _, line := range strings.Split(all, "\n") {
			if strings.Contains(line, secret) {
				t.Errorf("the output carries the upstream URL's secret: %.300s", line)
			}
		}
	}
	if n := strings.Count(all, "upstream request failed"); n < failures {
		t.Errorf("%d upstream failures logged, want at least %d: the failure paths were not exercised", n, failures)
	}
	t.Logf("upstream query: %d failed upstream calls through two upstreams with ?…key=%s, one URL with user information; %d bytes of output, secret found %d times",
		failures, secret, len(all), strings.Count(all, secret))
}

// allFinished reports whether every task has finished.
func allFinished(tasks map[string]wireTask) bool {
	for _, tk := range tasks {
		if tk.FinishedAt == "" {
			return false
		}
	}
	return true
}
