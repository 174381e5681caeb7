package taskstore_test

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tasksapi/tasks/taskstore"
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
			`{"id":"7489df4c-ef03-4de0-b598-e9a590793434","trace_id":"my-trace-001","type":"images_generations",` +
				`"request":{"model":"gpt-image-1","prompt":"A cat","callback_url":"https://example.com/cb"},` +
				`"response":{"success":true,"task_id":"7489df4c-ef03-4de0-b598-e9a590793434","trace_id":"my-trace-001","created":1763142637,"data":[{"url":"https://x/y.png"}]},` +
				`"created_at":1763142607.967,"started_at":1763142607.97,"finished_at":1763142637.404,` +
				`"duration":29.437,"elapsed":29.437,"application_id":"app","user_id":"user","credential_id":"cred"}`},
		{"Unfinished", taskstore.Task{ID: "a", Type: "images_edits", Request: json.RawMessage(`{}`), CreatedAt: time.Unix(1700000000, 0)},
			`{"id":"a","type":"images_edits","request":{},"created_at":1700000000}`},
		{"Started", taskstore.Task{ID: "a", Type: "t", Request: json.RawMessage(`[1]`), CreatedAt: time.UnixMilli(1700000000100), StartedAt: time.UnixMilli(1700000000120)},
			`{"id":"a","type":"t","request":[1],"created_at":1700000000.1,"started_at":1700000000.12}`},
		{"WholeSecondDuration", taskstore.Task{ID: "a", Type: "t", Request: json.RawMessage(`{}`), Response: json.RawMessage(`{}`),
			CreatedAt: time.UnixMilli(1000), FinishedAt: time.UnixMilli(3000)},
			`{"id":"a","type":"t","request":{},"response":{},"created_at":1,"finished_at":3,"duration":2,"elapsed":2}`},
		{"Escapes", taskstore.Task{ID: "<a>&\"\\\n\u2028\xff", Type: "t", UserID: "ü", Request: json.RawMessage(`{}`), CreatedAt: time.UnixMilli(1)},
			`{"id":"\u003ca\u003e\u0026\"\\\n\u2028\ufffd","type":"t","request":{},"created_at":0.001,"user_id":"ü"}`},
		{"NilRequest", taskstore.Task{ID: "a", Type: "t", CreatedAt: time.UnixMilli(1)},
			`{"id":"a","type":"t","request":null,"created_at":0.001}`},
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

func TestWireRecordIsDeliveryFree(t *testing.T) {
	b, _ := json.Marshal(finishedTask())
	for _, leak := range []string{"attempt", "lease", "boom", "last_status"} {
		if strings.Contains(string(b), leak) {
			t.Fatalf("wire record leaks %q: %s", leak, b)
		}
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if len(m) != 13 {
		t.Fatalf("wire record has %d fields, want 13: %v", len(m), m)
	}
}

func TestUnmarshalRoundTrip(t *testing.T) {
	in := finishedTask()
	b, _ := json.Marshal(in)
	var out taskstore.Task
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	in.Callback, in.LeaseUntil = taskstore.Callback{}, time.Time{}
	again, _ := json.Marshal(out)
	if string(again) != string(b) {
		t.Fatalf("round trip changed the record:\n%s\n%s", b, again)
	}
	if !out.CreatedAt.Equal(in.CreatedAt) || !out.FinishedAt.Equal(in.FinishedAt) || string(out.Response) != string(in.Response) {
		t.Fatalf("decoded %+v", out)
	}
	var empty taskstore.Task
	if err := json.Unmarshal([]byte(`{}`), &empty); err != nil || empty.ID != "" || !empty.CreatedAt.IsZero() {
		t.Fatalf("decoding {}: %+v %v", empty, err)
	}
}

// AppendString must escape exactly as encoding/json does.
func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	alphabet := []string{"a", "\"", "\\", "<", ">", "&", "\n", "\r", "\t", "\b", "\f", "\x00", "\x1f", "\x7f",
		"é", "猫", "\u2028", "\u2029", "\xff", "\xe2\x82", "🙂", " "}
	cases := []string{"", "plain", strings.Repeat("x", 100)}
	for i := 0; i < 2000; i++ {
		var sb strings.Builder
		for j := rng.IntN(12); j >= 0; j-- {
			sb.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		cases = append(cases, sb.String())
	}
	for _, s := range cases {
		want, _ := json.Marshal(s)
		if got := taskstore.AppendString(nil, s); string(got) != string(want) {
			t.Fatalf("AppendString(%q) = %s, want %s", s, got, want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	f.Add("a<b>&\u2028\xff\x01")
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := taskstore.AppendString(nil, s); string(got) != string(want) {
			t.Fatalf("AppendString(%q) = %s, want %s", s, got, want)
		}
	})
}

// AppendMillis must write the digits encoding/json writes for the float.
func TestAppendMillisMatchesFloat(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	values := []int64{0, 1, 10, 100, 999, 1000, 1001, 1500, 1763142607967, 1763142607970, 1763142607900, 1763142608000, -1, -1500, -1000}
	for i := 0; i < 5000; i++ {
		values = append(values, rng.Int64N(4_000_000_000_000))
	}
	for _, ms := range values {
		want, _ := json.Marshal(float64(ms) / 1000)
		if got := taskstore.AppendMillis(nil, ms); string(got) != string(want) {
			t.Fatalf("AppendMillis(%d) = %s, want %s", ms, got, want)
		}
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

func TestCreatedRange(t *testing.T) {
	ms := func(v int64, extraNs int64) time.Time { return time.Unix(0, v*1e6+extraNs) }
	for _, tc := range []struct {
		min, max       time.Time
		wantMin, wantM int64
		empty          bool
	}{
		{ms(5, 0), ms(9, 0), 5, 9, false},
		{ms(5, 1), ms(9, 999_999), 6, 9, false},
		{ms(5, 1), ms(5, 999_999), 6, 5, true},
		{ms(-5, -1), ms(-3, -1), -5, -4, false},
	} {
		f := taskstore.Filter{CreatedMin: tc.min, CreatedMax: tc.max}
		lo, hi, empty := f.CreatedRange()
		if lo != tc.wantMin || hi != tc.wantM || empty != tc.empty {
			t.Errorf("CreatedRange(%v, %v) = %d %d %v, want %d %d %v", tc.min, tc.max, lo, hi, empty, tc.wantMin, tc.wantM, tc.empty)
		}
	}
	lo, hi, empty := taskstore.Filter{}.CreatedRange()
	if lo != -1<<63 || hi != 1<<63-1 || empty {
		t.Fatalf("unbounded = %d %d %v", lo, hi, empty)
	}
}

func TestNormalize(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 123_456_789, time.FixedZone("Z1", 7200))
	in := taskstore.Task{ID: "a", Type: "t", Request: json.RawMessage(`{}`), LeaseUntil: now}
	out, err := taskstore.Normalize(in, now)
	if err != nil {
		t.Fatal(err)
	}
	if !out.CreatedAt.Equal(now.Truncate(time.Millisecond)) || out.CreatedAt.Location() != time.UTC || out.CreatedAt.Nanosecond() != 123_000_000 {
		t.Fatalf("CreatedAt = %v", out.CreatedAt)
	}
	in.Request[0] = '['
	if string(out.Request) != `{}` {
		t.Fatal("Normalize must copy the request")
	}
	_, err = taskstore.Normalize(taskstore.Task{ID: "a", Request: json.RawMessage(`{}`)}, now)
	if !errors.Is(err, taskstore.ErrInvalid) || taskstore.Reason(err) != "type is required" {
		t.Fatalf("missing type: %v (reason %q)", err, taskstore.Reason(err))
	}
	if taskstore.Reason(errors.New("x")) != "" {
		t.Fatal("Reason of a non-invalid error must be empty")
	}
}

func TestDeliveryState(t *testing.T) {
	at := time.Unix(100, 0)
	for _, tc := range []struct {
		task taskstore.Task
		want taskstore.DeliveryState
	}{
		{taskstore.Task{}, taskstore.NoCallback},
		{taskstore.Task{Callback: taskstore.Callback{URL: "u"}}, taskstore.Waiting},
		{taskstore.Task{FinishedAt: at, Callback: taskstore.Callback{URL: "u", NextAttemptAt: at}}, taskstore.Pending},
		{taskstore.Task{FinishedAt: at, Callback: taskstore.Callback{URL: "u", DeliveredAt: at}}, taskstore.Delivered},
		{taskstore.Task{FinishedAt: at, Callback: taskstore.Callback{URL: "u", Attempts: 7}}, taskstore.GaveUp},
	} {
		if got := tc.task.DeliveryState(); got != tc.want {
			t.Errorf("%+v: %v, want %v", tc.task.Callback, got, tc.want)
		}
		if !utf8.ValidString(tc.want.String()) || tc.want.String() == "unknown" {
			t.Errorf("String() = %q", tc.want.String())
		}
	}
}

func TestAttemptMillis(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_123)
	next := time.UnixMilli(1_700_000_005_000)
	for _, tc := range []struct {
		name            string
		a               taskstore.Attempt
		delivered, next int64
	}{
		{"delivered", taskstore.Attempt{At: at, Delivered: true, Next: next}, at.UnixMilli(), 0},
		{"rescheduled", taskstore.Attempt{At: at, Next: next}, 0, next.UnixMilli()},
		{"given up", taskstore.Attempt{At: at}, 0, 0},
	} {
		d, n := tc.a.Millis()
		if d != tc.delivered || n != tc.next {
			t.Errorf("%s: Millis() = %d, %d; want %d, %d", tc.name, d, n, tc.delivered, tc.next)
		}
	}
	before := time.Now().UnixMilli()
	if d, _ := (taskstore.Attempt{Delivered: true}).Millis(); d < before || d > time.Now().UnixMilli() {
		t.Errorf("delivered with a zero At: %d, want now", d)
	}
}

func TestCheckClaim(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name  string
		now   time.Time
		lease time.Duration
		limit int
		ok    bool
	}{
		{"valid", now, time.Minute, 1, true},
		{"zero lease", now, 0, 1, true},
		{"zero now", time.Time{}, time.Minute, 1, false},
		{"negative lease", now, -time.Second, 1, false},
		{"limit 0", now, time.Minute, 0, false},
	} {
		err := taskstore.CheckClaim(tc.now, tc.lease, tc.limit)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, taskstore.ErrInvalid)) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
