package webhook_test

import (
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/internal/webhook"
)

func TestDefaultSchedule(t *testing.T) {
	want := webhook.Schedule{0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour}
	if !slices.Equal(webhook.DefaultSchedule, want) {
		t.Errorf("DefaultSchedule = %v, want %v", webhook.DefaultSchedule, want)
	}
	if err := webhook.DefaultSchedule.Validate(); err != nil {
		t.Error(err)
	}
}

func TestParseSchedule(t *testing.T) {
	got, err := webhook.ParseSchedule("0s,5s,5m,30m,2h,5h,10h")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, webhook.DefaultSchedule) {
		t.Errorf("ParseSchedule = %v, want %v", got, webhook.DefaultSchedule)
	}
	again, err := webhook.ParseSchedule(got.String())
	if err != nil || !slices.Equal(again, got) {
		t.Errorf("round trip of %q = %v, %v", got.String(), again, err)
	}
	if got, err := webhook.ParseSchedule(" 0 , 1.5s,250ms "); err != nil || !slices.Equal(got, webhook.Schedule{0, 1500 * time.Millisecond, 250 * time.Millisecond}) {
		t.Errorf("ParseSchedule with spaces = %v, %v", got, err)
	}

	for _, tt := range []struct{ in, errPart string }{
		{"", "empty schedule"},
		{"   ", "empty schedule"},
		{",", "element 1 is empty"},
		{"5s,,5m", "element 2 is empty"},
		{"5s,", "element 2 is empty"},
		{"0s,-1s", "element 2 is negative"},
		{"5", "element 1"},
		{"soon", "element 1"},
		{"5s;5m", "element 1"},
	} {
		got, err := webhook.ParseSchedule(tt.in)
		if err == nil || !strings.Contains(err.Error(), tt.errPart) {
			t.Errorf("ParseSchedule(%q) = %v, %v; want an error containing %q", tt.in, got, err, tt.errPart)
		}
	}
	if err := (webhook.Schedule{}).Validate(); err == nil {
		t.Error("empty Schedule validates")
	}
}

func constRand(v float64) func() float64 { return func() float64 { return v } }

func TestNextJitterBounds(t *testing.T) {
	at := time.Date(2025, 7, 1, 12, 0, 0, 0, time.UTC)
	s := webhook.DefaultSchedule
	for attempts := 1; attempts < len(s); attempts++ {
		d := s[attempts]
		lo, hi := at.Add(d*8/10), at.Add(d*12/10)
		// The extremes of rnd map to the extremes of ±20%.
		if got, ok := s.Next(attempts, at, 0, constRand(0)); !ok || !got.Equal(lo) {
			t.Errorf("Next(%d, rnd=0) = %v, %v; want %v", attempts, got, ok, lo)
		}
		if got, ok := s.Next(attempts, at, 0, constRand(0.5)); !ok || !got.Equal(at.Add(d)) {
			t.Errorf("Next(%d, rnd=0.5) = %v, %v; want %v", attempts, got, ok, at.Add(d))
		}
		// The default random source stays in bounds and actually jitters.
		seen := map[time.Time]bool{}
		for range 200 {
			got, ok := s.Next(attempts, at, 0, nil)
			if !ok || got.Before(lo) || got.After(hi) {
				t.Fatalf("Next(%d) = %v, %v; want within [%v, %v]", attempts, got, ok, lo, hi)
			}
			seen[got] = true
		}
		if len(seen) < 10 {
			t.Errorf("Next(%d): only %d distinct times in 200 draws", attempts, len(seen))
		}
	}
	// A misbehaving rnd cannot push the delay outside ±20% or before at.
	d := s[1]
	for _, r := range []float64{-1, 2, math.NaN(), math.Inf(1), math.Inf(-1)} {
		got, ok := s.Next(1, at, 0, constRand(r))
		if !ok || got.Before(at.Add(d*8/10)) || got.After(at.Add(d*12/10)) {
			t.Errorf("Next(1, rnd=%v) = %v, %v", r, got, ok)
		}
	}
}

func TestNextExhausted(t *testing.T) {
	at := time.Now()
	s := webhook.Schedule{0, time.Second, time.Minute}
	if _, ok := s.Next(2, at, 0, nil); !ok {
		t.Error("Next(2) of 3 attempts: exhausted, want one more")
	}
	for _, attempts := range []int{3, 4, 100} {
		if got, ok := s.Next(attempts, at, time.Hour, nil); ok || !got.IsZero() {
			t.Errorf("Next(%d) of 3 attempts = %v, %v; want exhausted", attempts, got, ok)
		}
	}
	if got, ok := (webhook.Schedule{}).Next(0, at, 0, nil); ok {
		t.Errorf("empty schedule Next = %v, true", got)
	}
	// A negative count counts as no attempt yet: the first delay.
	if got, ok := s.Next(-3, at, 0, nil); !ok || !got.Equal(at) {
		t.Errorf("Next(-3) = %v, %v; want %v", got, ok, at)
	}
}

func TestNextRetryAfter(t *testing.T) {
	at := time.Date(2025, 7, 1, 12, 0, 0, 0, time.UTC)
	s := webhook.Schedule{0, 5 * time.Second, 5 * time.Minute, 0}
	tests := []struct {
		name       string
		attempts   int
		retryAfter time.Duration
		want       time.Duration
	}{
		{"RaisesShortDelay", 1, 2 * time.Minute, 2 * time.Minute},
		{"KeepsLongerDelay", 2, time.Minute, 270 * time.Second}, // rnd 0.25: 0.9 × 5m
		{"RaisesZeroDelay", 3, 30 * time.Second, 30 * time.Second},
		{"Capped", 1, 1000 * time.Hour, webhook.MaxRetryAfter},
		{"NegativeIgnored", 1, -time.Hour, 4500 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := s.Next(tt.attempts, at, tt.retryAfter, constRand(0.25))
			if !ok || got.Sub(at) != tt.want {
				t.Errorf("Next = at+%v, %v; want at+%v", got.Sub(at), ok, tt.want)
			}
		})
	}
	// Never below retryAfter whatever the jitter.
	for range 100 {
		got, _ := s.Next(1, at, 5*time.Second, nil)
		if got.Before(at.Add(5 * time.Second)) {
			t.Fatalf("Next = at+%v, below Retry-After 5s", got.Sub(at))
		}
	}
}

func TestNextHugeDelay(t *testing.T) {
	at := time.Date(2025, 7, 1, 12, 0, 0, 0, time.UTC)
	s := webhook.Schedule{0, time.Duration(math.MaxInt64)}
	got, ok := s.Next(1, at, 0, constRand(0.99))
	if !ok || !got.After(at.Add(100*365*24*time.Hour)) {
		t.Errorf("Next with a huge delay = %v, %v; want far in the future, not overflowed", got, ok)
	}
}
