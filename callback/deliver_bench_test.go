package callback_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/taskstore"
)

// BenchmarkDeliverBacklog measures callback deliveries per second: a
// Recorder over memstore, sqlitestore or pgstore (with TASKS_PG_URL) starts with b.N finished tasks whose
// callbacks are due and delivers them to a loopback receiver with 16
// delivery workers (claim, POST, record the attempt); "plain" posts the
// same bodies with a plain http.Client from 16 goroutines (the ceiling).
func BenchmarkDeliverBacklog(b *testing.B) {
	const workers = 16
	var got atomic.Int64
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(receiver.Close)
	// A response and a request of the sizes real image calls have (about
	// 600 and 200 bytes, as in tasksbench): SQLite rewrites the whole row
	// on every claim and attempt, so the row's size matters (with a 170-byte
	// response and a 14-byte request the sqlitestore figure is about a
	// third better).
	body := json.RawMessage(`{"success":true,"task_id":"0193a4f2-7c1e-7d3a-9b2f-5e8c1a2b3c4d","trace_id":"trace-0000001234","created":1721626477,` +
		`"data":[{"url":"https://cdn.example.com/images/2025/01/0193a4f2-7c1e-7d3a-9b2f-5e8c1a2b3c4d.png","revised_prompt":"A watercolor painting of a cat ` +
		`sitting on a windowsill at dusk, rendered with fine detail, balanced composition, natural colors and gentle contrast, in a square frame"}],` +
		`"usage":{"input_tokens":45,"output_tokens":4160,"total_tokens":4205,"input_tokens_details":{"text_tokens":45,"image_tokens":0}},` +
		`"size":"1024x1024","quality":"high","output_format":"png","background":"opaque"}`)
	request := json.RawMessage(`{"model":"gpt-image-1","prompt":"A watercolor painting of a cat sitting on a windowsill at dusk","size":"1024x1024",` +
		`"quality":"high","n":1,"callback_url":"https://client.example.com/hooks/images/v1"}`)

	b.Run("plain", func(b *testing.B) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		defer client.CloseIdleConnections()
		var next atomic.Int64
		var wg sync.WaitGroup
		b.ReportAllocs()
		b.ResetTimer()
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(b.N) {
					resp, err := client.Post(receiver.URL, "application/json", bytesReader(body))
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}()
		}
		wg.Wait()
	})
	recorder := func(b *testing.B, store taskstore.Store) {
		now := time.Now()
		tasks := make([]taskstore.Task, b.N)
		for i := range tasks {
			tasks[i] = taskstore.Task{
				ID: fmt.Sprintf("task-%08d", i), Type: "images_generations", Request: request,
				Response: body, CreatedAt: now, FinishedAt: now,
				Callback: taskstore.Callback{URL: receiver.URL + "/cb", NextAttemptAt: now.Add(-time.Second)},
			}
		}
		if im, ok := store.(interface {
			Import(context.Context, []taskstore.Task) error
		}); ok {
			if err := im.Import(context.Background(), tasks); err != nil {
				b.Fatal(err)
			}
		} else {
			for _, t := range tasks {
				if err := store.Create(context.Background(), t); err != nil {
					b.Fatal(err)
				}
			}
		}
		start := got.Load()
		b.ReportAllocs()
		b.ResetTimer()
		// One receiver may take every slot: the comparison is with the
		// plain client's 16 POSTs in flight (the per-receiver cap is
		// measured by internal/reliability).
		rec, err := callback.New(store, callback.Options{AllowPrivateNetworks: true, DeliveryWorkers: workers,
			DeliveriesPerHost: workers, DeliveriesPerPrincipal: workers, Workers: 1, Logger: testLogger(b)})
		if err != nil {
			b.Fatal(err)
		}
		for got.Load()-start < int64(b.N) {
			time.Sleep(100 * time.Microsecond)
		}
		b.StopTimer()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		rec.Close(ctx)
	}
	b.Run("recorder-memstore", func(b *testing.B) {
		store := memstore.New()
		defer store.Close()
		recorder(b, store)
	})
	b.Run("recorder-sqlite", func(b *testing.B) {
		recorder(b, openSQLite(b, filepath.Join(b.TempDir(), "tasks.db")))
	})
	b.Run("recorder-pgstore", func(b *testing.B) {
		recorder(b, openPG(b))
	})
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
