package pgstore

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// BenchmarkWrites measures, one call at a time, the writes of a task's life
// that the status columns, indexes and counters add work to: Create, Start,
// Finish, ClaimDeliveries (one delivery per claim) and RecordAttempt. Each
// sub-benchmark prepares b.N tasks in the state it needs outside the timer.
// Run with a fixed count so that every sub-benchmark works on a table of
// the same size, e.g.
//
//	go test -run '^$' -bench Writes -benchtime 3000x -count 6 ./pgstore/
func BenchmarkWrites(b *testing.B) {
	s, _ := openInternal(b)
	ctx := context.Background()
	resp := json.RawMessage(`{"success":true,"task_id":"8f2b0f64-2b0e-4b8c-9a43-6a1f0e7e4d11","created":1721626477,` +
		`"data":[{"url":"https://cdn.example.com/images/8f2b0f64.png","revised_prompt":"a cat on a windowsill"}]}`)
	round := 0
	newTask := func(i int) taskstore.Task {
		return taskstore.Task{
			ID: fmt.Sprintf("w%d-%07d", round, i), Type: "images_generations", TraceID: "trace",
			Request:       []byte(`{"model":"gpt-image-1","prompt":"a cat","callback_url":"https://example.com/cb"}`),
			ApplicationID: "app", UserID: fmt.Sprint("user-", i%50), Callback: taskstore.Callback{URL: "https://example.com/cb"},
			LeaseUntil: time.Now().Add(time.Minute),
		}
	}
	// prepare creates n tasks and runs step on each, 16 at a time.
	prepare := func(b *testing.B, n int, step func(id string) error) []string {
		b.Helper()
		round++
		ids := make([]string, n)
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for w := range 16 {
			wg.Go(func() {
				for i := w; i < n; i += 16 {
					x := newTask(i)
					ids[i] = x.ID
					if err := s.Create(ctx, x); err != nil {
						errs <- err
						return
					}
					if step != nil {
						if err := step(x.ID); err != nil {
							errs <- err
							return
						}
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		return ids
	}
	now := time.Now()
	start := func(id string) error { return s.Start(ctx, id, now) }
	finish := func(id string) error {
		if err := start(id); err != nil {
			return err
		}
		return s.Finish(ctx, id, resp, now)
	}

	b.Run("create", func(b *testing.B) {
		round++
		reportCPU(b)
		for i := 0; b.Loop(); i++ {
			if err := s.Create(ctx, newTask(i)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("start", func(b *testing.B) {
		ids := prepare(b, b.N, nil)
		reportCPU(b)
		b.ResetTimer()
		for i := range b.N {
			if err := s.Start(ctx, ids[i], now); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("finish", func(b *testing.B) {
		ids := prepare(b, b.N, start)
		reportCPU(b)
		b.ResetTimer()
		for i := range b.N {
			if err := s.Finish(ctx, ids[i], resp, now); err != nil {
				b.Fatal(err)
			}
		}
	})
	// Claims take the earliest due first: every prepared delivery is due
	// at now, and earlier rounds' are claimed or delivered already.
	b.Run("claim", func(b *testing.B) {
		prepare(b, b.N, finish)
		reportCPU(b)
		b.ResetTimer()
		for range b.N {
			got, err := s.ClaimDeliveries(ctx, "", now, time.Hour, 1)
			if err != nil || len(got) != 1 {
				b.Fatal(len(got), err)
			}
		}
	})
	b.Run("record", func(b *testing.B) {
		ids := prepare(b, b.N, finish)
		for claimed := 0; claimed < b.N; {
			got, err := s.ClaimDeliveries(ctx, "", now, time.Hour, 1000)
			if err != nil || len(got) == 0 {
				b.Fatal(len(got), err)
			}
			claimed += len(got)
		}
		reportCPU(b)
		b.ResetTimer()
		for i := range b.N {
			if err := s.RecordAttempt(ctx, ids[i], taskstore.Attempt{At: now, Status: 204, Delivered: true}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
