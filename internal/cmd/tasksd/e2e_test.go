package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasksapi/tasks/internal/pgtest"
	"github.com/tasksapi/tasks/internal/tasksdtest"
)

// The end-to-end tests build the real binary and talk to it over loopback
// HTTP, walking the README's curl story.

const (
	tokenA   = "token-tenant-a"
	tokenB   = "token-tenant-b"
	tokenOp  = "token-operator"
	secret   = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	upKey    = "sk-upstream-secret-key-123"
	waitLong = 20 * time.Second
)

func TestMain(m *testing.M) { tasksdtest.Main(m) }

// daemon is one running tasksd process, with the test it serves.
type daemon struct {
	*tasksdtest.Daemon
	t *testing.T
}

// start runs tasksd with args and env (see tasksdtest.Start).
func start(t *testing.T, env []string, args ...string) *daemon {
	t.Helper()
	return &daemon{Daemon: tasksdtest.Start(t, env, args...), t: t}
}

// post sends a JSON body with a bearer token and decodes the JSON answer.
func (d *daemon) post(path, token string, body any) (int, map[string]any, []byte) {
	d.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", d.URL()+path, bytes.NewReader(b))
	req.Header.Set("authorization", "Bearer "+token)
	req.Header.Set("content-type", "application/json")
	req.Header.Set("accept", "application/json")
	return do(d.t, req)
}

func do(t *testing.T, req *http.Request) (int, map[string]any, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(raw, &m)
	return resp.StatusCode, m, raw
}

// newReceiver starts a callback receiver that verifies signatures with secret.
func newReceiver(t *testing.T) *tasksdtest.Receiver {
	t.Helper()
	return tasksdtest.NewReceiver(t, tasksdtest.ReceiverConfig{Secret: secret})
}

func writeTokens(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens.json")
	os.WriteFile(path, []byte(`{
		"`+tokenA+`": {"application_id": "app-a", "user_id": "user-a", "credential_id": "cred-a"},
		"`+tokenB+`": {"application_id": "app-b", "user_id": "user-b"},
		"`+tokenOp+`": {}
	}`), 0o600)
	return path
}

func waitFinished(t *testing.T, d *daemon, token, id string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for time.Now().Before(deadline) {
		status, rec, raw := d.post("/openai/tasks", token, map[string]any{"action": "retrieve", "id": id})
		if status != 200 {
			t.Fatalf("retrieve: %d %s", status, raw)
		}
		if _, ok := rec["finished_at"]; ok {
			return rec
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("task %s did not finish", id)
	return nil
}

func TestEndToEndReadmeStory(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { readmeStory(t, filepath.Join(t.TempDir(), "tasks.db")) })
	t.Run("postgres", func(t *testing.T) {
		tasksdtest.Binary(t) // skip in -short before asking for a database
		readmeStory(t, pgtest.FreshSchema(t, pgtest.URL(t)))
	})
}

// readmeStory walks the README's curl story against tasksd on the given -db.
func readmeStory(t *testing.T, db string) {
	rcv := newReceiver(t)
	args := []string{"-db", db, "-tokens", writeTokens(t), "-allow-private-callbacks", "-standin-delay", "50ms"}
	env := []string{"TASKSD_CALLBACK_SECRET=" + secret}
	d := start(t, env, args...)

	// Health.
	resp, err := http.Get(d.URL() + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()

	// 1. Submit in callback mode: task_id at once, trace_id echoed.
	status, ans, raw := d.post("/openai/images/generations", tokenA, map[string]any{
		"model": "gpt-image-1", "prompt": "A cat", "callback_url": rcv.URL + "/cb", "trace_id": "my-trace-001",
	})
	if status != 200 || len(ans) != 2 || ans["trace_id"] != "my-trace-001" {
		t.Fatalf("submit: %d %s", status, raw)
	}
	id, _ := ans["task_id"].(string)
	if len(id) != 36 {
		t.Fatalf("task_id %q is not a UUID", id)
	}

	// 2. The callback arrives, signed, carrying the stored response.
	cb := rcv.Wait(t, id)
	if cb["success"] != true || cb["task_id"] != id || cb["trace_id"] != "my-trace-001" || cb["data"] == nil {
		t.Fatalf("callback body: %v", cb)
	}

	// 3. retrieve by id and by trace_id.
	rec := waitFinished(t, d, tokenA, id)
	for _, k := range []string{"id", "trace_id", "type", "request", "response", "created_at", "started_at",
		"finished_at", "duration", "elapsed", "application_id", "user_id", "credential_id"} {
		if _, ok := rec[k]; !ok {
			t.Errorf("record lacks %q: %v", k, rec)
		}
	}
	if rec["type"] != "images_generations" || rec["application_id"] != "app-a" ||
		rec["request"].(map[string]any)["callback_url"] != rcv.URL+"/cb" {
		t.Fatalf("record: %v", rec)
	}
	if cbJSON, _ := json.Marshal(cb); !bytes.Equal(cbJSON, mustJSON(t, rec["response"])) {
		t.Fatalf("callback body %s != stored response %s", cbJSON, mustJSON(t, rec["response"]))
	}
	_, byTrace, _ := d.post("/openai/tasks", tokenA, map[string]any{"action": "retrieve", "trace_id": "my-trace-001"})
	if byTrace["id"] != id {
		t.Fatalf("retrieve by trace_id: %v", byTrace)
	}
	// The image URL in the response is served.
	url := rec["response"].(map[string]any)["data"].([]any)[0].(map[string]any)["url"].(string)
	img, err := http.Get(url)
	if err != nil || img.StatusCode != 200 || img.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("image %s: %v %v", url, img, err)
	}
	img.Body.Close()

	// Another tenant sees nothing.
	_, other, rawOther := d.post("/openai/tasks", tokenB, map[string]any{"action": "retrieve", "id": id})
	if len(other) != 0 || string(rawOther) != "{}" {
		t.Fatalf("tenant B sees tenant A's task: %s", rawOther)
	}

	// 4. retrieve_batch.
	_, batch, raw := d.post("/openai/tasks", tokenA, map[string]any{"action": "retrieve_batch", "user_id": "user-a", "limit": 5})
	if batch["count"] != float64(1) || len(batch["items"].([]any)) != 1 {
		t.Fatalf("retrieve_batch: %s", raw)
	}

	// 5. A synchronous request answers the image directly and stores nothing.
	status, syncAns, raw := d.post("/openai/images/generations", tokenA, map[string]any{"prompt": "A dog", "response_format": "b64_json"})
	if status != 200 || syncAns["data"] == nil || syncAns["task_id"] != nil {
		t.Fatalf("synchronous: %d %.200s", status, raw)
	}
	_, batch, _ = d.post("/openai/tasks", tokenOp, map[string]any{"action": "retrieve_batch"})
	if batch["count"] != float64(1) {
		t.Fatalf("synchronous request stored a task: count %v", batch["count"])
	}

	// Multipart edit in callback mode.
	var mp bytes.Buffer
	w := multipart.NewWriter(&mp)
	w.WriteField("prompt", "add a hat")
	w.WriteField("callback_url", rcv.URL+"/edit")
	fw, _ := w.CreateFormFile("image", "cat.png")
	fw.Write(pngBytes(t, d))
	w.Close()
	req, _ := http.NewRequest("POST", d.URL()+"/v1/images/edits", &mp)
	req.Header.Set("authorization", "Bearer "+tokenA)
	req.Header.Set("content-type", w.FormDataContentType())
	status, ans, raw = do(t, req)
	if status != 200 {
		t.Fatalf("multipart submit: %d %s", status, raw)
	}
	editID := ans["task_id"].(string)
	if cb := rcv.Wait(t, editID); cb["success"] != true {
		t.Fatalf("edit callback: %v", cb)
	}
	editRec := waitFinished(t, d, tokenA, editID)
	if editRec["type"] != "images_edits" || editRec["request"].(map[string]any)["image"] == nil {
		t.Fatalf("edit record: %v", editRec)
	}

	// Errors in the contract's shape.
	status, e, _ := d.post("/openai/tasks", "wrong", map[string]any{"action": "retrieve", "id": id})
	if status != 401 || e["error"].(map[string]any)["code"] != "invalid_token" {
		t.Fatalf("bad token: %d %v", status, e)
	}
	status, e, _ = d.post("/openai/images/generations", tokenA, map[string]any{"prompt": "x", "callback_url": "ftp://x"})
	if status != 400 || e["error"].(map[string]any)["code"] != "bad_request" {
		t.Fatalf("bad callback_url: %d %v", status, e)
	}

	// 6. A graceful restart keeps every task.
	d.Stop()
	d2 := start(t, env, args...)
	_, batch, raw = d2.post("/openai/tasks", tokenOp, map[string]any{"action": "retrieve_batch"})
	if batch["count"] != float64(2) {
		t.Fatalf("after restart: %s", raw)
	}
	if _, got, _ := d2.post("/openai/tasks", tokenA, map[string]any{"id": id}); got["id"] != id || got["finished_at"] == nil {
		t.Fatalf("after restart retrieve: %v", got)
	}

	// No configured secret ever appears in the output.
	d2.Stop()
	for _, s := range []string{tokenA, tokenB, tokenOp, secret} {
		if strings.Contains(d.Logs()+d2.Logs()+d.Stdout()+d2.Stdout(), s) {
			t.Errorf("secret %q appears in the output", s)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pngBytes fetches a stand-in image synchronously to use as an edit input.
func pngBytes(t *testing.T, d *daemon) []byte {
	_, ans, _ := d.post("/openai/images/generations", tokenOp, map[string]any{"prompt": "input", "size": "256x256"})
	url := ans["data"].([]any)[0].(map[string]any)["url"].(string)
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return b
}

func TestEndToEndGeneratedToken(t *testing.T) {
	d := start(t, nil, "-db", ":memory:", "-standin-delay", "0s")
	// The token is printed once with a ready-to-paste curl command.
	deadline := time.Now().Add(waitLong)
	var tok string
	for tok == "" && time.Now().Before(deadline) {
		if m := regexp.MustCompile(`Bearer (tsk_[0-9a-f]+)`).FindStringSubmatch(d.Stdout()); m != nil {
			tok = m[1]
		}
		time.Sleep(10 * time.Millisecond)
	}
	if tok == "" {
		t.Fatalf("no token printed: %q", d.Stdout())
	}
	status, batch, raw := d.post("/openai/tasks", tok, map[string]any{"action": "retrieve_batch"})
	if status != 200 || batch["count"] != float64(0) {
		t.Fatalf("generated token: %d %s", status, raw)
	}
	if strings.Contains(d.Logs(), tok) {
		t.Fatal("the generated token appears in the logs")
	}
	d.Stop()
}

func TestEndToEndProxy(t *testing.T) {
	var mu sync.Mutex
	var gotAuth []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		gotAuth = append(gotAuth, r.Header.Get("Authorization"))
		mu.Unlock()
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		w.Header().Set("Content-Type", "application/json")
		if body["prompt"] == "fail" {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":{"message":"Your request was rejected","type":"invalid_request_error","code":"content_policy_violation"}}`)
			return
		}
		if _, ok := body["callback_url"]; ok {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":{"message":"unknown field callback_url","code":"unknown_field"}}`)
			return
		}
		io.WriteString(w, `{"created":1721626477,"data":[{"url":"https://upstream.example/img.png"}]}`)
	}))
	defer up.Close()
	rcv := newReceiver(t)
	d := start(t, []string{"TASKSD_UPSTREAM_KEY=" + upKey, "TASKSD_CALLBACK_SECRET=" + secret},
		"-db", filepath.Join(t.TempDir(), "p.db"), "-tokens", writeTokens(t), "-upstream", up.URL+"/v1", "-allow-private-callbacks")

	_, ok, _ := d.post("/openai/images/generations", tokenA, map[string]any{"prompt": "x", "callback_url": rcv.URL})
	okID := ok["task_id"].(string)
	if cb := rcv.Wait(t, okID); cb["success"] != true || cb["created"] != float64(1721626477) {
		t.Fatalf("proxy success callback: %v", cb)
	}
	_, bad, _ := d.post("/openai/images/generations", tokenA, map[string]any{"prompt": "fail", "callback_url": rcv.URL})
	badID := bad["task_id"].(string)
	cb := rcv.Wait(t, badID)
	errObj, _ := cb["error"].(map[string]any)
	if cb["success"] != false || errObj["code"] != "content_policy_violation" || errObj["message"] != "Your request was rejected" {
		t.Fatalf("proxy failure callback: %v", cb)
	}
	// Synchronous errors come straight back.
	status, _, raw := d.post("/openai/images/generations", tokenA, map[string]any{"prompt": "fail"})
	if status != 400 || !strings.Contains(string(raw), "content_policy_violation") {
		t.Fatalf("sync upstream error: %d %s", status, raw)
	}
	mu.Lock()
	for _, a := range gotAuth {
		if a != "Bearer "+upKey {
			t.Errorf("upstream saw Authorization %q", a)
		}
	}
	mu.Unlock()
	d.Stop()
	if strings.Contains(d.Logs()+d.Stdout(), upKey) {
		t.Fatal("the upstream key appears in the output")
	}
}

func TestConfigFromEnvironment(t *testing.T) {
	c, err := parseConfig([]string{"-workers", "3"}, func(k string) string {
		return map[string]string{"TASKSD_WORKERS": "9", "TASKSD_QUEUE": "7", "TASKSD_CALLBACK_SCHEDULE": "0s,1s",
			"TASKSD_ALLOW_PRIVATE_CALLBACKS": "true", "TASKSD_TASK_TIMEOUT": "1m"}[k]
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Workers != 3 || c.Queue != 7 || len(c.CallbackSchedule) != 2 || !c.AllowPrivateCallbacks || c.TaskTimeout != time.Minute {
		t.Fatalf("config: %+v", c)
	}
	_, err = parseConfig(nil, func(k string) string {
		if k == "TASKSD_WORKERS" {
			return "many-secret"
		}
		return ""
	}, io.Discard)
	if err == nil || strings.Contains(err.Error(), "many-secret") || !strings.Contains(err.Error(), "TASKSD_WORKERS") {
		t.Fatalf("bad env value error: %v", err)
	}
}

func TestConfigRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-workers", "0"}, "-workers"},
		{[]string{"-queue", "0"}, "-queue"},
		{[]string{"-task-timeout", "0s"}, "-task-timeout"},
		{[]string{"-retention", "-1s"}, "-retention"},
		{[]string{"-standin-delay", "-1s"}, "-standin-delay"},
		{[]string{"-callback-timeout", "0s"}, "-callback-timeout"},
		{[]string{"-lease", "10s", "-callback-timeout", "15s"}, "-lease"},
		{[]string{"-upstream-key", "k"}, "-upstream-key"},
		{[]string{"-max-conns", "0"}, "-max-conns"},
		{[]string{"-idle-timeout", "0s"}, "-idle-timeout"},
		{[]string{"-read-header-timeout", "0s"}, "-read-header-timeout"},
		{[]string{"-max-header-bytes", "1KiB"}, "-max-header-bytes"},
		{[]string{"-max-header-bytes", "2MiB"}, "-max-header-bytes"},
		{[]string{"-max-header-bytes", "lots"}, "-max-header-bytes"},
	} {
		_, err := parseConfig(tc.args, func(string) string { return "" }, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
}

// The startup log names the database without its password.
func TestRedactHidesPasswords(t *testing.T) {
	for _, dsn := range []string{
		"postgres://tasks:s3cret@db:5432/tasks?sslmode=require",
		"postgres://tasks@db/tasks?password=s3cret&sslmode=disable",
		"postgresql://tasks:s3cret@db/tasks?password=s3cret",
	} {
		got := redact(dsn)
		if strings.Contains(got, "s3cret") || !strings.Contains(got, "db") {
			t.Errorf("redact(%q) = %q", dsn, got)
		}
	}
}

// A tokens file must be exactly one JSON object: anything after it is an
// error, not silently ignored.
func TestTokensFileTrailingData(t *testing.T) {
	for _, content := range []string{
		`{"tok-a": {"user_id": "a"}} {"tok-b": {"user_id": "b"}}`,
		`{"tok-a": {"user_id": "a"}} garbage`,
	} {
		path := filepath.Join(t.TempDir(), "t.json")
		os.WriteFile(path, []byte(content), 0o600)
		if _, err := loadTokens(path); err == nil {
			t.Errorf("loadTokens accepted %q", content)
		}
	}
	path := filepath.Join(t.TempDir(), "t.json")
	os.WriteFile(path, []byte("{\"tok-a\": {\"user_id\": \"a\"}}\n"), 0o600)
	if m, err := loadTokens(path); err != nil || m["tok-a"].UserID != "a" {
		t.Errorf("loadTokens of one object and a newline = %v, %v", m, err)
	}
}

func TestTokensFileErrorsDoNotLeak(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.json")
	os.WriteFile(path, []byte(`{"sekrit-token": {"application_id": 5}}`), 0o600)
	_, err := loadTokens(path)
	if err == nil || strings.Contains(err.Error(), "sekrit") {
		t.Fatalf("loadTokens error: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := run(ctx, []string{"-tokens", path, "-db", ":memory:"}, func(string) string { return "" }, io.Discard, io.Discard); err == nil {
		t.Fatal("run with a bad tokens file must fail")
	}
}
