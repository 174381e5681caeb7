package metrics_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/internal/metrics"
	"github.com/tasksapi/tasks/memstore"
)

// Example wires the metrics the way tasksd does: the hooks go into the
// recorder's options, the recorder's Stats feed the queue gauges, routes
// are wrapped by the middleware, and the registry is served at /metrics.
func Example() {
	store := memstore.New()
	defer store.Close()
	m := metrics.New(metrics.Options{Store: store})
	defer m.Close()

	rec, err := callback.New(store, callback.Options{Hooks: m.Hooks()})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rec.Close(context.Background())
	m.WatchRecorder(rec.Stats)

	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.Handle("POST /images", m.Middleware("/images", rec.Wrap("images_generations",
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `{"data":[]}`) }))))

	rr := httptest.NewRecorder()
	mux.ServeHTTP(rr, httptest.NewRequest("GET", "/metrics", nil))
	for _, line := range strings.Split(rr.Body.String(), "\n") {
		if strings.HasPrefix(line, "tasksd_queue_length") || strings.HasPrefix(line, "tasksd_callbacks_pending") {
			fmt.Println(line)
		}
	}
	// Output:
	// tasksd_callbacks_pending 0
	// tasksd_queue_length 0
}
