package callback_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/internal/cputime"
	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/taskstore"
)

// benchParallelism × GOMAXPROCS clients submit at once.
const benchParallelism = 32

// BenchmarkSubmit measures callback-mode submissions per second: the time
// until {"task_id"} is answered, through a real loopback HTTP server, with
// benchParallelism×GOMAXPROCS concurrent clients.
//
//   - bare: a handler that reads the body and answers a constant
//     {"task_id":…} without storing anything (the ceiling);
//   - wrap-memstore, wrap-sqlite, wrap-pgstore: Recorder.Wrap over each
//     store (pgstore needs TASKS_PG_URL, see internal/pgtest). Every
//     request is parsed, stored and queued before the answer. The workers
//     are held back while the clock runs (the image handler waits for the
//     end of the round, the queue is sized for every request), so this is
//     the submission path alone; afterwards Close records the backlog as
//     interrupted.
//   - pipeline-sqlite: the same, but the workers run a trivial image handler
//     and deliver each callback to a loopback receiver at the same time, all
//     competing for the same CPUs and the single SQLite writer (each task
//     costs five writes: create, start, finish, claim, attempt).
//
// The ratio of wrap-sqlite to bare throughput is logged (-v) after both ran.
func BenchmarkSubmit(b *testing.B) {
	body := `{"model":"gpt-image-1","prompt":"A watercolor cat wearing a tiny hat, studio light","size":"1024x1024","n":1,` +
		`"callback_url":"%CB%","trace_id":"bench-trace"}`
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	}))
	b.Cleanup(receiver.Close)
	body = strings.Replace(body, "%CB%", receiver.URL+"/cb", 1)

	var nsBare, nsWrap float64
	b.Run("bare", func(b *testing.B) {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"task_id":"7489df4c-ef03-4de0-b598-e9a590793434","trace_id":"bench-trace"}`)
		})
		nsBare = benchServer(b, h, body)
	})
	wrap := func(b *testing.B, store taskstore.Store, holdWorkers bool) float64 {
		gate := make(chan struct{})
		rec, err := callback.New(store, callback.Options{
			Queue: b.N + 1, AllowPrivateNetworks: true, Logger: testLogger(b),
		})
		if err != nil {
			b.Fatal(err)
		}
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			if holdWorkers {
				cancel() // record the backlog as interrupted at once
			}
			rec.Close(ctx)
			close(gate)
			cancel()
		}()
		images := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if holdWorkers {
				select {
				case <-gate:
				case <-r.Context().Done():
				}
			}
			io.WriteString(w, `{"created":1721626477,"data":[{"url":"https://img.example/1.png"}]}`)
		})
		return benchServer(b, rec.Wrap("images_generations", images), body)
	}
	b.Run("wrap-memstore", func(b *testing.B) {
		store := memstore.New()
		defer store.Close()
		wrap(b, store, true)
	})
	b.Run("wrap-sqlite", func(b *testing.B) {
		store := openSQLite(b, filepath.Join(b.TempDir(), "tasks.db"))
		nsWrap = wrap(b, store, true)
	})
	b.Run("pipeline-sqlite", func(b *testing.B) {
		wrap(b, openSQLite(b, filepath.Join(b.TempDir(), "tasks.db")), false)
	})
	b.Run("wrap-pgstore", func(b *testing.B) {
		wrap(b, openPG(b), true)
	})
	if nsBare > 0 && nsWrap > 0 {
		b.Logf("wrap-sqlite throughput = %.2fx bare (bare %.0f ns/op, wrap-sqlite %.0f ns/op; target >= 0.5x)", nsBare/nsWrap, nsBare, nsWrap)
	}
}

// benchServer serves h on loopback and posts body to it from parallel
// clients; it returns the resulting ns/op.
func benchServer(b *testing.B, h http.Handler, body string) float64 {
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 0}}
	defer client.CloseIdleConnections()
	b.SetParallelism(benchParallelism)
	b.ReportAllocs()
	cpu0, cpuOK := cputime.Process()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/images/generations", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.StopTimer()
	if cpu1, ok := cputime.Process(); ok && cpuOK {
		// Client, server, recorder and store together: on a machine
		// with spare cores, wall time per request hides what each
		// request costs.
		b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
	}
	return float64(b.Elapsed().Nanoseconds()) / float64(b.N)
}
