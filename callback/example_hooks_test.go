package callback_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/memstore"
)

// countingTransport stands for a tracing transport such as
// otelhttp.NewTransport(next): it sees every delivery attempt, then hands
// it to the recorder's own transport, whose dialer keeps the SSRF guard.
type countingTransport struct {
	next  http.RoundTripper
	count atomic.Int32
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.count.Add(1)
	return t.next.RoundTrip(r)
}

type tenantKey struct{}

// Hooks get the context of what they report on, and WrapTransport wraps
// the delivery transport: together, what tracing needs.
func ExampleHooks() {
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	defer receiver.Close()

	var (
		mu        sync.Mutex
		events    = map[string]string{}
		transport *countingTransport
		delivered = make(chan struct{})
	)
	note := func(hook, format string, args ...any) {
		mu.Lock()
		events[hook] = fmt.Sprintf(format, args...)
		mu.Unlock()
	}
	store := memstore.New()
	defer store.Close()
	rec, err := callback.New(store, callback.Options{
		AllowPrivateNetworks: true, // the receiver is on loopback
		Hooks: callback.Hooks{
			TaskCreated: func(ctx context.Context, ev callback.TaskEvent) {
				note("TaskCreated", "%s, trace_id %s, tenant %v", ev.Type, ev.TraceID, ctx.Value(tenantKey{}))
			},
			TaskStarted: func(ctx context.Context, ev callback.TaskEvent) {
				_, deadline := ctx.Deadline() // the run context: Options.TaskTimeout
				note("TaskStarted", "run context with a deadline: %v, tenant %v", deadline, ctx.Value(tenantKey{}))
			},
			TaskFinished: func(ctx context.Context, ev callback.TaskEvent) {
				note("TaskFinished", "success %v", ev.Success)
			},
			DeliveryAttempted: func(ctx context.Context, ev callback.DeliveryEvent) {
				id, _ := callback.TaskID(ctx)
				note("DeliveryAttempted", "attempt %d, status %d, delivered %v, trace_id %s, context of task %v",
					ev.Attempt, ev.Status, ev.Delivered, ev.TraceID, id == ev.TaskID)
				close(delivered)
			},
		},
		WrapTransport: func(next http.RoundTripper) http.RoundTripper {
			transport = &countingTransport{next: next}
			return transport
		},
	})
	if err != nil {
		panic(err)
	}
	defer rec.Close(context.Background())

	ctx := context.WithValue(context.Background(), tenantKey{}, "acme")
	_, err = rec.Submit(ctx, callback.Submission{
		Type: "images_generations", TraceID: "trace-42", CallbackURL: receiver.URL + "/cb",
		Request: json.RawMessage(`{"prompt":"A cat"}`),
	}, func(ctx context.Context) (json.RawMessage, error) {
		return json.RawMessage(`{"data":[]}`), nil
	})
	if err != nil {
		panic(err)
	}
	<-delivered

	mu.Lock()
	defer mu.Unlock()
	for _, hook := range []string{"TaskCreated", "TaskStarted", "TaskFinished", "DeliveryAttempted"} {
		fmt.Printf("%s: %s\n", hook, events[hook])
	}
	fmt.Println("requests through the wrapped transport:", transport.count.Load())
	// Output:
	// TaskCreated: images_generations, trace_id trace-42, tenant acme
	// TaskStarted: run context with a deadline: true, tenant acme
	// TaskFinished: success true
	// DeliveryAttempted: attempt 1, status 204, delivered true, trace_id trace-42, context of task true
	// requests through the wrapped transport: 1
}
