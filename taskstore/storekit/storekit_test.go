package storekit_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

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
		lo, hi, empty := storekit.CreatedRange(f)
		if lo != tc.wantMin || hi != tc.wantM || empty != tc.empty {
			t.Errorf("CreatedRange(%v, %v) = %d %d %v, want %d %d %v", tc.min, tc.max, lo, hi, empty, tc.wantMin, tc.wantM, tc.empty)
		}
	}
	lo, hi, empty := storekit.CreatedRange(taskstore.Filter{})
	if lo != -1<<63 || hi != 1<<63-1 || empty {
		t.Fatalf("unbounded = %d %d %v", lo, hi, empty)
	}
}

func TestNormalize(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 123_456_789, time.FixedZone("Z1", 7200))
	in := taskstore.Task{ID: "a", Type: "t", Request: json.RawMessage(`{}`), LeaseUntil: now}
	out, err := storekit.Normalize(in, now)
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
	_, err = storekit.Normalize(taskstore.Task{ID: "a", Request: json.RawMessage(`{}`)}, now)
	if !errors.Is(err, taskstore.ErrInvalid) || taskstore.Reason(err) != "type is required" {
		t.Fatalf("missing type: %v (reason %q)", err, taskstore.Reason(err))
	}
	if taskstore.Reason(errors.New("x")) != "" {
		t.Fatal("Reason of a non-invalid error must be empty")
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
		d, n := storekit.AttemptMillis(tc.a)
		if d != tc.delivered || n != tc.next {
			t.Errorf("%s: Millis() = %d, %d; want %d, %d", tc.name, d, n, tc.delivered, tc.next)
		}
	}
	before := time.Now().UnixMilli()
	if d, _ := storekit.AttemptMillis(taskstore.Attempt{Delivered: true}); d < before || d > time.Now().UnixMilli() {
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
		err := storekit.CheckClaim("", tc.now, tc.lease, tc.limit)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, taskstore.ErrInvalid)) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if err := storekit.CheckClaim("bad\n", now, time.Minute, 1); !errors.Is(err, taskstore.ErrInvalid) {
		t.Errorf("bad recorder name: %v", err)
	}
}
