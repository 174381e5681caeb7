package callback_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/handler"
	"github.com/tasksapi/tasks/taskstore"
)

// reading is what a client concludes from one task record.
type reading struct {
	finished, success bool
}

func (r reading) String() string {
	switch {
	case !r.finished:
		return "unfinished"
	case r.success:
		return "succeeded"
	}
	return "failed"
}

// sdkRead emulates how the hosted service's official SDKs (Go, Python,
// TypeScript) decide from a polled record whether a task is done: first a
// status or state word anywhere in the record, then finished_at together
// with response.success, and, when the record has no response, any
// URL-shaped string anywhere in it (a key "url", or one ending in "_url" or
// "_urls", whose value starts with "http") taken for the artifact.
//
// "Anywhere" is walked two ways, as clients do: breadth first (the top
// level before what it holds) and depth first in document order.
func sdkRead(t *testing.T, record []byte, breadthFirst bool) reading {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(record))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("record is not JSON: %v: %s", err, record)
	}
	top, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("record is not an object: %s", record)
	}
	// Document order of keys: encoding/json maps lose it, so walk the text.
	type pair struct {
		key string
		val any
	}
	var walk func(raw json.RawMessage, depth int, out *[][]pair)
	walk = func(raw json.RawMessage, depth int, out *[][]pair) {
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		tok, err := d.Token()
		if err != nil {
			return
		}
		for len(*out) <= depth {
			*out = append(*out, nil)
		}
		switch tok {
		case json.Delim('{'):
			for d.More() {
				k, _ := d.Token()
				var sub json.RawMessage
				d.Decode(&sub)
				var val any
				json.Unmarshal(sub, &val)
				(*out)[depth] = append((*out)[depth], pair{k.(string), val})
				walk(sub, depth+1, out)
			}
		case json.Delim('['):
			for d.More() {
				var sub json.RawMessage
				d.Decode(&sub)
				walk(sub, depth+1, out)
			}
		}
	}
	var levels [][]pair
	walk(record, 0, &levels)
	var order []pair
	if breadthFirst {
		for _, l := range levels {
			order = append(order, l...)
		}
	} else {
		// Depth first in document order: re-walk recursively.
		var dfs func(raw json.RawMessage)
		dfs = func(raw json.RawMessage) {
			d := json.NewDecoder(bytes.NewReader(raw))
			tok, err := d.Token()
			if err != nil {
				return
			}
			switch tok {
			case json.Delim('{'):
				for d.More() {
					k, _ := d.Token()
					var sub json.RawMessage
					d.Decode(&sub)
					var val any
					json.Unmarshal(sub, &val)
					order = append(order, pair{k.(string), val})
					dfs(sub)
				}
			case json.Delim('['):
				for d.More() {
					var sub json.RawMessage
					d.Decode(&sub)
					dfs(sub)
				}
			}
		}
		dfs(record)
	}

	// 1. A status word.
	for _, p := range order {
		if p.key != "status" && p.key != "state" {
			continue
		}
		w, ok := p.val.(string)
		if !ok {
			continue
		}
		switch strings.ToLower(w) {
		case "pending", "queued", "running", "processing", "in_progress", "submitted", "starting", "waiting":
			return reading{}
		case "succeeded", "success", "completed", "complete", "done", "finished":
			return reading{finished: true, success: true}
		case "failed", "failure", "error", "cancelled", "canceled", "timeout", "expired":
			return reading{finished: true}
		}
	}
	// 2. finished_at with response.success.
	resp, hasResp := top["response"].(map[string]any)
	if _, ok := top["finished_at"]; ok {
		return reading{finished: true, success: hasResp && resp["success"] == true}
	}
	// 3. No response: a URL-shaped string anywhere is the artifact.
	if !hasResp {
		for _, p := range order {
			if p.key != "url" && !strings.HasSuffix(p.key, "_url") && !strings.HasSuffix(p.key, "_urls") {
				continue
			}
			switch v := p.val.(type) {
			case string:
				if strings.HasPrefix(v, "http") {
					return reading{finished: true, success: true}
				}
			case []any:
				for _, e := range v {
					if s, ok := e.(string); ok && strings.HasPrefix(s, "http") {
						return reading{finished: true, success: true}
					}
				}
			}
		}
	}
	return reading{}
}

// scriptedUpstream is an image handler whose answers the test releases one
// prompt at a time: a prompt starting with "fail" answers 500.
type scriptedUpstream struct {
	mu      sync.Mutex
	release map[string]chan struct{}
	started map[string]chan struct{}
}

func (u *scriptedUpstream) chans(prompt string) (release, started chan struct{}) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.release[prompt] == nil {
		u.release[prompt], u.started[prompt] = make(chan struct{}), make(chan struct{})
	}
	return u.release[prompt], u.started[prompt]
}

func (u *scriptedUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	prompt := r.FormValue("prompt") // multipart
	if prompt == "" {
		var body struct {
			Prompt string `json:"prompt"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		prompt = body.Prompt
	}
	release, started := u.chans(prompt)
	close(started)
	<-release
	if strings.HasPrefix(prompt, "fail") {
		w.WriteHeader(500)
		io.WriteString(w, `{"error":{"code":"server_error","message":"the model is overloaded"}}`)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"created":1763142637,"data":[{"url":"https://cdn.example.com/images/`+prompt+`.png","revised_prompt":"`+prompt+`"}]}`)
}

// The record of every state a task goes through reads right to the SDKs'
// completion rule: JSON and multipart submissions, with and without a
// trace_id, in callback mode and async, through success and failure of the
// task and of its callback.
func TestSDKCompletionRule(t *testing.T) {
	store := newMemStore(t)
	up := &scriptedUpstream{release: map[string]chan struct{}{}, started: map[string]chan struct{}{}}
	// The receiver answers by the path: /ok 204, /retry 500 (retried an
	// hour later: the callback stays pending), /gone 410.
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			w.WriteHeader(204)
		case "/retry":
			w.WriteHeader(500)
		default:
			w.WriteHeader(410)
		}
	}))
	t.Cleanup(receiver.Close)
	rec := newRecorder(t, store, callback.Options{Workers: 1, Schedule: callback.Schedule{0, time.Hour}})
	mux := http.NewServeMux()
	mux.Handle("/images/generations", rec.Wrap("images_generations", up))
	mux.Handle("/images/edits", rec.Wrap("images_edits", up))
	tasksAPI := handler.New(store, handler.InsecureAnyoneIsOperator)

	submit := func(multi bool, fields map[string]string) string {
		t.Helper()
		var req *http.Request
		if multi {
			var b bytes.Buffer
			mw := multipart.NewWriter(&b)
			for k, v := range fields {
				mw.WriteField(k, v)
			}
			fw, _ := mw.CreateFormFile("image", "cat.png")
			fw.Write([]byte("\x89PNG fake"))
			mw.Close()
			req = httptest.NewRequest("POST", "/images/edits", &b)
			req.Header.Set("Content-Type", mw.FormDataContentType())
		} else {
			body := map[string]any{}
			for k, v := range fields {
				body[k] = v
			}
			if fields["async"] == "true" {
				body["async"] = true
			}
			b, _ := json.Marshal(body)
			req = httptest.NewRequest("POST", "/images/generations", bytes.NewReader(b))
			req.Header.Set("Content-Type", "application/json")
		}
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, req)
		var ans struct {
			TaskID string `json:"task_id"`
		}
		if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &ans) != nil || ans.TaskID == "" {
			t.Fatalf("submit %v: %d %s", fields, w.Code, w.Body)
		}
		return ans.TaskID
	}
	record := func(id string) []byte {
		t.Helper()
		w := httptest.NewRecorder()
		r := httptest.NewRequest("POST", "/tasks", strings.NewReader(`{"action":"retrieve","id":"`+id+`"}`))
		r.Header.Set("Authorization", "Bearer x")
		r.Header.Set("Content-Type", "application/json")
		tasksAPI.ServeHTTP(w, r)
		if w.Code != 200 || w.Body.String() == "{}" {
			t.Fatalf("retrieve %s: %d %s", id, w.Code, w.Body)
		}
		return w.Body.Bytes()
	}
	expect := func(id, state string, want reading, wantStatus taskstore.Status, wantCallback taskstore.CallbackStatus) {
		t.Helper()
		b := record(id)
		for _, bfs := range []bool{true, false} {
			if got := sdkRead(t, b, bfs); got != want {
				t.Errorf("%s (breadth first %v): the SDK rule reads %s, want %s:\n%s", state, bfs, got, want, b)
			}
		}
		var m struct {
			Status   taskstore.Status `json:"status"`
			Callback *struct {
				Status taskstore.CallbackStatus `json:"status"`
			} `json:"callback"`
		}
		json.Unmarshal(b, &m)
		gotCB := taskstore.CallbackNone
		if m.Callback != nil {
			gotCB = m.Callback.Status
		}
		if m.Status != wantStatus || gotCB != wantCallback {
			t.Errorf("%s: status %q callback %q, want %q %q:\n%s", state, m.Status, gotCB, wantStatus, wantCallback, b)
		}
	}

	n := 0
	for _, multi := range []bool{false, true} {
		for _, trace := range []string{"", "trace-7"} {
			for _, c := range []struct {
				name, prompt, callbackPath string // "" path: async, no callback
				final                      reading
				finalStatus                taskstore.Status
				finalCallback              taskstore.CallbackStatus
			}{
				{"Delivered", "ok", "/ok", reading{true, true}, taskstore.StatusSucceeded, taskstore.CallbackDelivered},
				{"CallbackRetrying", "ok", "/retry", reading{true, true}, taskstore.StatusSucceeded, taskstore.CallbackPending},
				{"CallbackGone", "ok", "/gone", reading{true, true}, taskstore.StatusSucceeded, taskstore.CallbackFailed},
				{"UpstreamFailed", "fail", "/ok", reading{true, false}, taskstore.StatusFailed, taskstore.CallbackDelivered},
				{"Async", "ok", "", reading{true, true}, taskstore.StatusSucceeded, taskstore.CallbackNone},
				{"AsyncFailed", "fail", "", reading{true, false}, taskstore.StatusFailed, taskstore.CallbackNone},
			} {
				if multi && c.callbackPath == "" {
					continue // async is a JSON field
				}
				n++
				state := fmt.Sprintf("multipart=%v trace=%q %s", multi, trace, c.name)
				fields := map[string]string{"model": "gpt-image-1"}
				if trace != "" {
					fields["trace_id"] = trace
				}
				waitCB := taskstore.CallbackNone
				if c.callbackPath != "" {
					fields["callback_url"] = receiver.URL + c.callbackPath
					waitCB = taskstore.CallbackWaiting
				} else {
					fields["async"] = "true"
				}
				// A blocker holds the only worker, so the task waits in
				// the queue: pending.
				blocker := fmt.Sprintf("block-%d", n)
				fields["prompt"] = blocker
				blockerID := submit(false, map[string]string{"prompt": blocker, "async": "true"})
				_, blockerStarted := up.chans(blocker)
				<-blockerStarted
				prompt := fmt.Sprintf("%s-%d", c.prompt, n)
				fields["prompt"] = prompt
				id := submit(multi, fields)
				expect(id, state+" (queued)", reading{}, taskstore.StatusPending, waitCB)

				release, started := up.chans(prompt)
				blockerRelease, _ := up.chans(blocker)
				close(blockerRelease)
				<-started
				expect(id, state+" (running)", reading{}, taskstore.StatusRunning, waitCB)
				// Without its status word the running record would read as
				// finished to these clients whenever it holds callback_url:
				// the bug this field fixes.
				if c.callbackPath != "" {
					b := record(id)
					stripped := bytes.Replace(b, []byte(`"status":"running",`), nil, 1)
					stripped = bytes.Replace(stripped, []byte(`"status":"waiting",`), nil, 1)
					if got := sdkRead(t, stripped, true); !got.finished {
						t.Errorf("%s: the emulated rule reads a running record without status as %s: %s", state, got, stripped)
					}
				}

				close(release)
				eventually(t, state+" settled", func() bool {
					x := getTask(t, store, id)
					st := x.CallbackStatus()
					return x.Finished() && st == c.finalCallback &&
						(st != taskstore.CallbackPending || x.Callback.Attempts > 0)
				})
				expect(id, state+" (finished)", c.final, c.finalStatus, c.finalCallback)
				waitFinished(t, store, blockerID)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rec.Close(ctx); err != nil {
		t.Fatal(err)
	}
}
