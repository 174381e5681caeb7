package taskstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

var created = time.Date(2025, 11, 14, 17, 50, 7, 967_000_000, time.UTC)

func finishedTask() taskstore.Task {
	return taskstore.Task{
		ID: "7489df4c-ef03-4de0-b598-e9a590793434", TraceID: "my-trace-001", Type: "images_generations",
		Request:       json.RawMessage(`{"model":"gpt-image-1","prompt":"A cat","callback_url":"https://example.com/cb"}`),
		Response:      json.RawMessage(`{"success":true,"task_id":"7489df4c-ef03-4de0-b598-e9a590793434","trace_id":"my-trace-001","created":1763142637,"data":[{"url":"https://x/y.png"}]}`),
		CreatedAt:     created,
		StartedAt:     created.Add(3 * time.Millisecond),
		FinishedAt:    created.Add(29437 * time.Millisecond),
		ApplicationID: "app", UserID: "user", CredentialID: "cred",
		Callback:   taskstore.Callback{URL: "https://example.com/cb", Attempts: 3, LastStatus: 500, LastError: "boom"},
		LeaseUntil: created.Add(time.Hour),
	}
}

func TestWireRecordGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		task taskstore.Task
		want string
	}{
		{"Finished", finishedTask(),
			`{"id":"7489df4c-ef03-4de0-b598-e9a590793434","trace_id":"my-trace-001","type":"images_generations","status":"succeeded",` +
				`"request":{"model":"gpt-image-1","prompt":"A cat","callback_url":"https://example.com/cb"},` +
				`"response":{"success":true,"task_id":"7489df4c-ef03-4de0-b598-e9a590793434","trace_id":"my-trace-001","created":1763142637,"data":[{"url":"https://x/y.png"}]},` +
				`"created_at":1763142607.967,"started_at":1763142607.97,"finished_at":1763142637.404,` +
				`"duration":29.437,"elapsed":29.437,"application_id":"app","user_id":"user","credential_id":"cred",` +
				`"callback":{"status":"failed","attempts":3,"last_status":500,"last_error":"boom"}}`},
		{"Unfinished", taskstore.Task{ID: "a", Type: "images_edits", Request: json.RawMessage(`{}`), CreatedAt: time.Unix(1700000000, 0)},
			`{"id":"a","type":"images_edits","status":"pending","request":{},"created_at":1700000000}`},
		{"Started", taskstore.Task{ID: "a", Type: "t", Request: json.RawMessage(`[1]`), CreatedAt: time.UnixMilli(1700000000100), StartedAt: time.UnixMilli(1700000000120)},
			`{"id":"a","type":"t","status":"running","request":[1],"created_at":1700000000.1,"started_at":1700000000.12}`},
		{"WholeSecondDuration", taskstore.Task{ID: "a", Type: "t", Request: json.RawMessage(`{}`), Response: json.RawMessage(`{}`),
			CreatedAt: time.UnixMilli(1000), FinishedAt: time.UnixMilli(3000)},
			`{"id":"a","type":"t","status":"failed","request":{},"response":{},"created_at":1,"finished_at":3,"duration":2,"elapsed":2}`},
		{"Escapes", taskstore.Task{ID: "<a>&\"\\\n\u2028\xff", Type: "t", UserID: "ü", Request: json.RawMessage(`{}`), CreatedAt: time.UnixMilli(1)},
			`{"id":"\u003ca\u003e\u0026\"\\\n\u2028\ufffd","type":"t","status":"pending","request":{},"created_at":0.001,"user_id":"ü"}`},
		{"NilRequest", taskstore.Task{ID: "a", Type: "t", CreatedAt: time.UnixMilli(1)},
			`{"id":"a","type":"t","status":"pending","request":null,"created_at":0.001}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := json.Marshal(tc.task)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
			if app := tc.task.AppendJSON([]byte("x")); string(app) != "x"+tc.want {
				t.Fatalf("AppendJSON does not append: %s", app)
			}
		})
	}
}

// callbackStates are a task with a callback in each state of its life, and
// the bytes its record ends with.
func callbackStates() []struct {
	name string
	task taskstore.Task
	tail string
} {
	const cb = "https://example.com/cb"
	req := json.RawMessage(`{"prompt":"A cat","callback_url":"https://example.com/cb"}`)
	ok := json.RawMessage(`{"success":true,"task_id":"a","created":1,"data":[{"url":"https://x/y.png"}]}`)
	bad := json.RawMessage(`{"success":false,"task_id":"a","error":{"code":"timeout","message":"the task did not finish within 10m0s"}}`)
	at := time.UnixMilli(1_700_000_000_000)
	mk := func(resp json.RawMessage, started, finished bool, c taskstore.Callback) taskstore.Task {
		c.URL = cb
		x := taskstore.Task{ID: "a", Type: "images_generations", Request: req, CreatedAt: at, Callback: c}
		if started {
			x.StartedAt = at.Add(time.Millisecond)
		}
		if finished {
			x.FinishedAt, x.Response = at.Add(2*time.Second), resp
		}
		return x
	}
	return []struct {
		name string
		task taskstore.Task
		tail string
	}{
		{"PendingWaiting", mk(nil, false, false, taskstore.Callback{}),
			`"status":"pending","request":{"prompt":"A cat","callback_url":"https://example.com/cb"},"created_at":1700000000,` +
				`"callback":{"status":"waiting","attempts":0}}`},
		{"RunningWaiting", mk(nil, true, false, taskstore.Callback{}),
			`"status":"running","request":{"prompt":"A cat","callback_url":"https://example.com/cb"},"created_at":1700000000,"started_at":1700000000.001,` +
				`"callback":{"status":"waiting","attempts":0}}`},
		{"SucceededPendingFirst", mk(ok, true, true, taskstore.Callback{NextAttemptAt: at.Add(2 * time.Second)}),
			`"callback":{"status":"pending","attempts":0,"next_attempt_at":1700000002}}`},
		{"SucceededPendingRetry", mk(ok, true, true, taskstore.Callback{Attempts: 1, LastStatus: 0, LastError: "connection refused", NextAttemptAt: at.Add(7500 * time.Millisecond)}),
			`"callback":{"status":"pending","attempts":1,"last_status":0,"last_error":"connection refused","next_attempt_at":1700000007.5}}`},
		{"SucceededDelivered", mk(ok, true, true, taskstore.Callback{Attempts: 2, LastStatus: 204, DeliveredAt: at.Add(3 * time.Second)}),
			`"callback":{"status":"delivered","attempts":2,"last_status":204,"delivered_at":1700000003}}`},
		{"FailedFailed", mk(bad, true, true, taskstore.Callback{Attempts: 1, LastStatus: 410, LastError: "receiver answered 410 Gone"}),
			`"callback":{"status":"failed","attempts":1,"last_status":410,"last_error":"receiver answered 410 Gone"}}`},
		{"FailedUnstarted", mk(bad, false, true, taskstore.Callback{NextAttemptAt: at.Add(2 * time.Second)}),
			`"callback":{"status":"pending","attempts":0,"next_attempt_at":1700000002}}`},
	}
}

// Every state of a task with a callback has its bytes pinned, and the
// callback member never names a URL.
func TestWireRecordCallbackGolden(t *testing.T) {
	for _, tc := range callbackStates() {
		t.Run(tc.name, func(t *testing.T) {
			got := string(tc.task.AppendJSON(nil))
			if !strings.HasSuffix(got, tc.tail) {
				t.Fatalf("got  %s\nwant a record ending in %s", got, tc.tail)
			}
			var m struct {
				Status   string                     `json:"status"`
				Callback map[string]json.RawMessage `json:"callback"`
			}
			if err := json.Unmarshal([]byte(got), &m); err != nil {
				t.Fatal(err)
			}
			if m.Status != string(tc.task.Status()) {
				t.Fatalf("status %q, want %q", m.Status, tc.task.Status())
			}
			for k, v := range m.Callback {
				if k == "url" || strings.HasSuffix(k, "_url") || strings.HasSuffix(k, "_urls") || strings.Contains(string(v), "example.com") {
					t.Fatalf("callback member %q: %s", k, v)
				}
			}
		})
	}
}

func TestWireRecordWithoutCallback(t *testing.T) {
	x := finishedTask()
	x.Callback = taskstore.Callback{Attempts: 3, LastStatus: 500, LastError: "boom"} // no URL: no callback
	b, _ := json.Marshal(x)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["callback"]; ok || len(m) != 14 {
		t.Fatalf("record of a task without callback: %s", b)
	}
	for _, leak := range []string{"attempt", "lease", "boom", "last_status"} {
		if strings.Contains(string(b), leak) {
			t.Fatalf("wire record leaks %q: %s", leak, b)
		}
	}
}

func TestUnmarshalRoundTrip(t *testing.T) {
	tasks := []taskstore.Task{finishedTask()}
	for _, tc := range callbackStates() {
		tasks = append(tasks, tc.task)
	}
	for _, in := range tasks {
		b, _ := json.Marshal(in)
		var out taskstore.Task
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		again, _ := json.Marshal(out)
		if string(again) != string(b) {
			t.Fatalf("round trip changed the record:\n%s\n%s", b, again)
		}
		if !out.CreatedAt.Equal(in.CreatedAt) || !out.FinishedAt.Equal(in.FinishedAt) || string(out.Response) != string(in.Response) ||
			out.Status() != in.Status() || out.CallbackStatus() != in.CallbackStatus() || out.Callback.Attempts != in.Callback.Attempts {
			t.Fatalf("decoded %+v", out)
		}
		if out.Callback.URL != taskstore.HiddenCallbackURL {
			t.Fatalf("decoded callback URL %q", out.Callback.URL)
		}
	}
	var empty taskstore.Task
	if err := json.Unmarshal([]byte(`{}`), &empty); err != nil || empty.ID != "" || !empty.CreatedAt.IsZero() || empty.Callback.URL != "" {
		t.Fatalf("decoding {}: %+v %v", empty, err)
	}
}

func TestPrincipalScope(t *testing.T) {
	op := taskstore.Principal{}
	if !op.IsOperator() || !op.CanSee(taskstore.Task{ApplicationID: "x", UserID: "y"}) {
		t.Fatal("operator must see everything")
	}
	p := taskstore.Principal{ApplicationID: "a", UserID: "u", CredentialID: "c"}
	if p.IsOperator() {
		t.Fatal("tenant is not an operator")
	}
	for _, tc := range []struct {
		task taskstore.Task
		want bool
	}{
		{taskstore.Task{ApplicationID: "a", UserID: "u"}, true},
		{taskstore.Task{ApplicationID: "a", UserID: "v"}, false},
		{taskstore.Task{ApplicationID: "b", UserID: "u"}, false},
		{taskstore.Task{}, false},
	} {
		if got := p.CanSee(tc.task); got != tc.want {
			t.Errorf("CanSee(%+v) = %v", tc.task, got)
		}
	}
	f, ok := p.Scope(taskstore.Filter{Limit: 5})
	if !ok || f.ApplicationID != "a" || f.UserID != "u" || f.Limit != 5 {
		t.Fatalf("Scope(empty) = %+v %v", f, ok)
	}
	if _, ok := p.Scope(taskstore.Filter{UserID: "other"}); ok {
		t.Fatal("Scope must refuse another user")
	}
	if _, ok := p.Scope(taskstore.Filter{ApplicationID: "other"}); ok {
		t.Fatal("Scope must refuse another application")
	}
	if f, ok := (taskstore.Principal{ApplicationID: "a"}).Scope(taskstore.Filter{UserID: "anyone"}); !ok || f.UserID != "anyone" || f.ApplicationID != "a" {
		t.Fatalf("app-only principal narrowing by user: %+v %v", f, ok)
	}
}

func TestCallbackStatus(t *testing.T) {
	at := time.Unix(100, 0)
	for _, tc := range []struct {
		task taskstore.Task
		want taskstore.CallbackStatus
	}{
		{taskstore.Task{}, taskstore.CallbackNone},
		{taskstore.Task{Callback: taskstore.Callback{URL: "u"}}, taskstore.CallbackWaiting},
		{taskstore.Task{FinishedAt: at, Callback: taskstore.Callback{URL: "u", NextAttemptAt: at}}, taskstore.CallbackPending},
		{taskstore.Task{FinishedAt: at, Callback: taskstore.Callback{URL: "u", DeliveredAt: at}}, taskstore.CallbackDelivered},
		{taskstore.Task{FinishedAt: at, Callback: taskstore.Callback{URL: "u", Attempts: 7}}, taskstore.CallbackFailed},
		{taskstore.Task{FinishedAt: at, Callback: taskstore.Callback{Attempts: 7}}, taskstore.CallbackNone},
	} {
		if got := tc.task.CallbackStatus(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.task.Callback, got, tc.want)
		}
		if tc.want.Valid() == (tc.want == taskstore.CallbackNone) {
			t.Errorf("%q.Valid() = %v", tc.want, tc.want.Valid())
		}
	}
	if taskstore.CallbackStatus("gave_up").Valid() || taskstore.CallbackStatus("Failed").Valid() {
		t.Error("unknown callback statuses are valid")
	}
}

func TestStatus(t *testing.T) {
	at := time.Unix(100, 0)
	for _, tc := range []struct {
		task taskstore.Task
		want taskstore.Status
	}{
		{taskstore.Task{}, taskstore.StatusPending},
		{taskstore.Task{StartedAt: at}, taskstore.StatusRunning},
		{taskstore.Task{StartedAt: at, FinishedAt: at, Response: json.RawMessage(`{"success":true}`)}, taskstore.StatusSucceeded},
		{taskstore.Task{FinishedAt: at, Response: json.RawMessage(`{"success":true}`)}, taskstore.StatusSucceeded},
		{taskstore.Task{StartedAt: at, FinishedAt: at, Response: json.RawMessage(`{"success":false}`)}, taskstore.StatusFailed},
		{taskstore.Task{FinishedAt: at, Response: json.RawMessage(`{}`)}, taskstore.StatusFailed},
	} {
		if got := tc.task.Status(); got != tc.want || !got.Valid() {
			t.Errorf("%+v: %q, want %q", tc.task, got, tc.want)
		}
	}
	if taskstore.Status("done").Valid() || taskstore.Status("").Valid() {
		t.Error("unknown statuses are valid")
	}
}

func TestSucceeded(t *testing.T) {
	for _, tc := range []struct {
		resp string
		want bool
	}{
		{`{"success":true}`, true},
		{`{"success":true,"task_id":"a","data":[{"url":"u"}]}`, true},
		{` { "a" : {"success":false} , "success" : true } `, true},
		{`{"data":{"success":true},"success":true}`, true},
		{`{"\u0073uccess":true}`, true},
		{`{"success":false,"success":true}`, true}, // the last one counts
		{`{"success":true,"success":false}`, false},
		{`{"success":false}`, false},
		{`{"success":"true"}`, false},
		{`{"success":1}`, false},
		{`{"success":null}`, false},
		{`{"data":{"success":true}}`, false},
		{`{"x":"\"success\":true"}`, false},
		{`[{"success":true}]`, false},
		{`{}`, false},
		{`true`, false},
		{``, false},
		{`{"success":tru`, false},
	} {
		if got := taskstore.Succeeded(json.RawMessage(tc.resp)); got != tc.want {
			t.Errorf("Succeeded(%s) = %v, want %v", tc.resp, got, tc.want)
		}
		// encoding/json reads valid responses the same way.
		var m struct {
			Success *bool `json:"success"`
		}
		if json.Valid([]byte(tc.resp)) && strings.HasPrefix(strings.TrimSpace(tc.resp), "{") && !strings.Contains(tc.resp, "u0073") {
			if json.Unmarshal([]byte(tc.resp), &m) == nil && (m.Success != nil && *m.Success) != tc.want {
				t.Errorf("encoding/json disagrees on %s", tc.resp)
			}
		}
	}
}

func TestFilterValidateStatuses(t *testing.T) {
	for _, f := range []taskstore.Filter{
		{Status: "done"}, {Status: "Pending"}, {CallbackStatus: "gave_up"}, {CallbackStatus: "none"},
	} {
		err := f.Validate()
		if !errors.Is(err, taskstore.ErrInvalid) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalid", f, err)
		}
	}
	for _, st := range taskstore.Statuses {
		for _, cs := range taskstore.CallbackStatuses {
			if err := (taskstore.Filter{Status: st, CallbackStatus: cs}).Validate(); err != nil {
				t.Errorf("Validate(%q, %q) = %v", st, cs, err)
			}
		}
	}
}

// Reason reads the message of an error that wraps ErrInvalid itself,
// however deeply it is wrapped, and nothing else.
func TestReason(t *testing.T) {
	invalid := storekit.Invalidf("limit must be positive")
	for _, tc := range []struct {
		err  error
		want string
	}{
		{invalid, "limit must be positive"},
		{fmt.Errorf("%w: type is required", taskstore.ErrInvalid), "type is required"},
		{fmt.Errorf("sqlitestore: import: %w", invalid), "limit must be positive"},
		{fmt.Errorf("%w (%w)", context.Canceled, invalid), "limit must be positive"},
		{errors.Join(errors.New("other"), invalid), "limit must be positive"},
		{taskstore.ErrInvalid, ""},
		{fmt.Errorf("import: %w", taskstore.ErrInvalid), ""},
		{fmt.Errorf("%w: gone", taskstore.ErrNotFound), ""},
		{errors.New("taskstore: invalid input: forged"), ""},
		{nil, ""},
	} {
		if got := taskstore.Reason(tc.err); got != tc.want {
			t.Errorf("Reason(%v) = %q, want %q", tc.err, got, tc.want)
		}
		if tc.want != "" && !errors.Is(tc.err, taskstore.ErrInvalid) {
			t.Errorf("%v does not wrap ErrInvalid", tc.err)
		}
	}
}

func TestCheckRecorder(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"", true},
		{"images", true},
		{"svc A/v2 ~!", true},
		{strings.Repeat("x", taskstore.MaxRecorderLength), true},
		{strings.Repeat("x", taskstore.MaxRecorderLength+1), false},
		{"tab\there", false},
		{"new\nline", false},
		{"del\x7f", false},
		{"é", false},
	} {
		err := taskstore.CheckRecorder(tc.name)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, taskstore.ErrInvalid)) {
			t.Errorf("CheckRecorder(%q) = %v", tc.name, err)
		}
	}
	if err := taskstore.CheckRecorder("a\x01"); err == nil || !strings.Contains(err.Error(), "printable ASCII") {
		t.Errorf("error does not say what is allowed: %v", err)
	}
	if err := taskstore.CheckRecorder(strings.Repeat("x", 65)); err == nil || !strings.Contains(err.Error(), "at most 64") {
		t.Errorf("error does not say the length: %v", err)
	}
	task := taskstore.Task{ID: "a", Type: "t", Request: []byte("{}"), Recorder: "bad\n"}
	if _, err := storekit.Normalize(task, time.Now()); !errors.Is(err, taskstore.ErrInvalid) {
		t.Errorf("Normalize with a bad recorder name: %v", err)
	}
	task.Recorder = "images"
	if got, err := storekit.Normalize(task, time.Now()); err != nil || got.Recorder != "images" {
		t.Errorf("Normalize kept recorder %q, %v", got.Recorder, err)
	}
	if b, _ := task.MarshalJSON(); strings.Contains(string(b), "images") {
		t.Errorf("the recorder name is in the wire JSON: %s", b)
	}
}
