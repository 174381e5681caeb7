package pgstore

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// BenchmarkServerCPU measures what each write of a task's life costs the
// server: the CPU time of the PostgreSQL backend process that runs it (read
// from /proc, so the server must run on this machine, as
// .ci/start-postgres.sh's does; skipped otherwise). Unlike the time a call
// takes, the backend's CPU time hardly moves with the load of other
// processes on a shared machine, so two schemas can be compared in one run
// each. The store has one connection, hence one backend; each
// sub-benchmark prepares b.N tasks in the state it needs outside the timer:
//
//	go test -run '^$' -bench ServerCPU -benchtime 5000x ./pgstore/
//
// Metric: srv-µs/op, the backend's user+system CPU per call (10 ms clock
// ticks, hence b.N of a few thousand). Autovacuum is off for the schema's
// tables, so that runs do not differ by whether it came by.
func BenchmarkServerCPU(b *testing.B) {
	s, _ := openInternal(b, WithMaxOpenConns(1), WithMaxIdleConns(1))
	ctx := context.Background()
	var pid int
	if err := s.db.QueryRowContext(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
		b.Fatal(err)
	}
	if _, err := backendCPU(pid); err != nil {
		b.Skipf("cannot read the server backend's CPU time (is the server on another machine?): %v", err)
	}
	// Without autovacuum, whether a run finds its pages vacuumed or prunes
	// them itself does not depend on when autovacuum happened to come by.
	for _, table := range []string{"tasks", "task_counts", "task_status_counts", "task_totals"} {
		if _, err := s.db.ExecContext(ctx, `ALTER TABLE `+table+` SET (autovacuum_enabled = off)`); err != nil {
			b.Fatal(err)
		}
	}
	resp := json.RawMessage(`{"success":true,"task_id":"8f2b0f64-2b0e-4b8c-9a43-6a1f0e7e4d11","created":1721626477,` +
		`"data":[{"url":"https://cdn.example.com/images/8f2b0f64.png","revised_prompt":"a cat on a windowsill"}]}`)
	round := 0
	now := time.Now()
	newTask := func(i int) taskstore.Task {
		return taskstore.Task{
			ID: fmt.Sprintf("c%d-%07d", round, i), Type: "images_generations", TraceID: "trace",
			Request:       []byte(`{"model":"gpt-image-1","prompt":"a cat","callback_url":"https://example.com/cb"}`),
			ApplicationID: "app", UserID: fmt.Sprint("user-", i%50), Callback: taskstore.Callback{URL: "https://example.com/cb"},
			LeaseUntil: now.Add(time.Minute),
		}
	}
	// prepare creates n tasks and runs step on each.
	prepare := func(b *testing.B, n int, step func(id string) error) []string {
		b.Helper()
		round++
		ids := make([]string, n)
		for i := range n {
			x := newTask(i)
			ids[i] = x.ID
			if err := s.Create(ctx, x); err != nil {
				b.Fatal(err)
			}
			if step != nil {
				if err := step(x.ID); err != nil {
					b.Fatal(err)
				}
			}
		}
		return ids
	}
	start := func(id string) error { return s.Start(ctx, id, now) }
	finish := func(id string) error {
		if err := start(id); err != nil {
			return err
		}
		return s.Finish(ctx, id, resp, now)
	}
	// measure runs op b.N times and reports the backend's CPU per call.
	measure := func(b *testing.B, op func(i int) error) {
		b.Helper()
		before, err := backendCPU(pid)
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := range b.N {
			if err := op(i); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		after, err := backendCPU(pid)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64((after-before).Microseconds())/float64(b.N), "srv-µs/op")
	}

	b.Run("create", func(b *testing.B) {
		round++
		measure(b, func(i int) error { return s.Create(ctx, newTask(i)) })
	})
	b.Run("start", func(b *testing.B) {
		ids := prepare(b, b.N, nil)
		measure(b, func(i int) error { return s.Start(ctx, ids[i], now) })
	})
	b.Run("renew", func(b *testing.B) { // one task per call, as a lone running task is renewed
		ids := prepare(b, b.N, start)
		until := now.Add(2 * time.Minute)
		measure(b, func(i int) error { return s.RenewLeases(ctx, ids[i:i+1], until) })
	})
	b.Run("finish", func(b *testing.B) {
		ids := prepare(b, b.N, start)
		measure(b, func(i int) error { return s.Finish(ctx, ids[i], resp, now) })
	})
	b.Run("claim", func(b *testing.B) {
		prepare(b, b.N, finish)
		measure(b, func(int) error {
			got, err := s.ClaimDeliveries(ctx, "", now, time.Hour, 1)
			if err == nil && len(got) != 1 {
				err = fmt.Errorf("claimed %d", len(got))
			}
			return err
		})
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
		measure(b, func(i int) error {
			return s.RecordAttempt(ctx, ids[i], taskstore.Attempt{At: now, Status: 204, Delivered: true})
		})
	})
}

// backendCPU returns the user and system CPU time of process pid, from
// /proc/<pid>/stat (clock ticks, assumed 100 per second as on Linux).
func backendCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: split after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("unexpected /proc/%d/stat", pid)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}
