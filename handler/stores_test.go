package handler_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// backend opens an empty store for a test; the store is closed at cleanup.
type backend struct {
	name string
	open func(tb testing.TB) taskstore.Store
}

// eachBackend runs fn as a subtest against every store backend.
func eachBackend(t *testing.T, fn func(t *testing.T, open func(tb testing.TB) taskstore.Store)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { fn(t, b.open) })
	}
}

func mustCreate(tb testing.TB, s taskstore.Store, tasks ...taskstore.Task) {
	tb.Helper()
	for _, task := range tasks {
		if err := s.Create(context.Background(), task); err != nil {
			tb.Fatalf("Create(%s): %v", task.ID, err)
		}
	}
}

// brokenStore fails every read and delete with err.
type brokenStore struct {
	taskstore.Store
	err error
}

func (s brokenStore) Get(context.Context, string) (taskstore.Task, error) {
	return taskstore.Task{}, s.err
}

func (s brokenStore) Find(context.Context, taskstore.Filter) ([]taskstore.Task, int, error) {
	return nil, 0, s.err
}
func (s brokenStore) Delete(context.Context, string) error { return s.err }

// newestFirst orders tasks as stores page them.
func newestFirst(a, b taskstore.Task) int {
	if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
		return c
	}
	return strings.Compare(b.ID, a.ID)
}

// Fixtures: two tenants' tasks sharing a trace id, the wire example of
// the Tasks API's retrieve example among them.
var (
	taskFinished = taskstore.Task{
		ID:            "7489df4c-ef03-4de0-b598-e9a590793434",
		TraceID:       "my-trace-001",
		Type:          "images_generations",
		Request:       json.RawMessage(`{"model":"gpt-image-1","prompt":"A cat","callback_url":"https://example.com/cb"}`),
		Response:      json.RawMessage(`{"success":true,"task_id":"7489df4c-ef03-4de0-b598-e9a590793434","trace_id":"my-trace-001","created":1763142637,"data":[{"url":"https://cdn.example.com/cat.png"}]}`),
		CreatedAt:     time.UnixMilli(1763142607967).UTC(),
		StartedAt:     time.UnixMilli(1763142607970).UTC(),
		FinishedAt:    time.UnixMilli(1763142637404).UTC(),
		ApplicationID: "app-1",
		UserID:        "user-1",
		CredentialID:  "cred-1",
		Callback: taskstore.Callback{URL: "https://example.com/cb", Attempts: 1, LastStatus: 204,
			DeliveredAt: time.UnixMilli(1763142637916).UTC()},
	}
	// The wire record of taskFinished, byte for byte.
	wireFinished = `{"id":"7489df4c-ef03-4de0-b598-e9a590793434","trace_id":"my-trace-001","type":"images_generations","status":"succeeded",` +
		`"request":{"model":"gpt-image-1","prompt":"A cat","callback_url":"https://example.com/cb"},` +
		`"response":{"success":true,"task_id":"7489df4c-ef03-4de0-b598-e9a590793434","trace_id":"my-trace-001","created":1763142637,"data":[{"url":"https://cdn.example.com/cat.png"}]},` +
		`"created_at":1763142607.967,"started_at":1763142607.97,"finished_at":1763142637.404,"duration":29.437,"elapsed":29.437,` +
		`"application_id":"app-1","user_id":"user-1","credential_id":"cred-1",` +
		`"callback":{"status":"delivered","attempts":1,"last_status":204,"delivered_at":1763142637.916}}`

	taskUnfinished = taskstore.Task{
		ID:            "0b6a3c1e-5d2f-4f7a-9c1b-2e8d4f6a7b90",
		Type:          "images_edits",
		Request:       json.RawMessage(`{"model":"gpt-image-1","prompt":"<b>&</b>","image":{"filename":"a.png","content_type":"image/png","size":3,"sha256":"abc"}}`),
		CreatedAt:     time.UnixMilli(1763142700500).UTC(),
		ApplicationID: "app-1",
		UserID:        "user-1",
	}
	wireUnfinished = `{"id":"0b6a3c1e-5d2f-4f7a-9c1b-2e8d4f6a7b90","type":"images_edits","status":"pending",` +
		`"request":{"model":"gpt-image-1","prompt":"<b>&</b>","image":{"filename":"a.png","content_type":"image/png","size":3,"sha256":"abc"}},` +
		`"created_at":1763142700.5,"application_id":"app-1","user_id":"user-1"}`

	// taskOther belongs to another tenant, shares taskFinished's trace id
	// and is newer. It failed, and so did its callback (410 Gone).
	taskOther = taskstore.Task{
		ID:            "f0000000-0000-4000-8000-000000000001",
		TraceID:       "my-trace-001",
		Type:          "images_generations",
		Request:       json.RawMessage(`{"prompt":"secret","callback_url":"https://two.example/cb"}`),
		Response:      json.RawMessage(`{"success":false,"task_id":"f0000000-0000-4000-8000-000000000001","trace_id":"my-trace-001","error":{"code":"timeout","message":"slow"}}`),
		CreatedAt:     time.UnixMilli(1763142800000).UTC(),
		StartedAt:     time.UnixMilli(1763142800001).UTC(),
		FinishedAt:    time.UnixMilli(1763142900000).UTC(),
		ApplicationID: "app-2",
		UserID:        "user-2",
		Callback:      taskstore.Callback{URL: "https://two.example/cb", Attempts: 1, LastStatus: 410, LastError: "status 410 (gone)"},
	}
	wireOther = `{"id":"f0000000-0000-4000-8000-000000000001","trace_id":"my-trace-001","type":"images_generations","status":"failed",` +
		`"request":{"prompt":"secret","callback_url":"https://two.example/cb"},` +
		`"response":{"success":false,"task_id":"f0000000-0000-4000-8000-000000000001","trace_id":"my-trace-001","error":{"code":"timeout","message":"slow"}},` +
		`"created_at":1763142800,"started_at":1763142800.001,"finished_at":1763142900,"duration":100,"elapsed":100,` +
		`"application_id":"app-2","user_id":"user-2",` +
		`"callback":{"status":"failed","attempts":1,"last_status":410,"last_error":"status 410 (gone)"}}`

	// taskFlux: same tenant as taskFinished, a type of another mount; it
	// is running, so its callback waits.
	taskFlux = taskstore.Task{
		ID:            "a1111111-1111-4111-8111-111111111111",
		TraceID:       "flux-trace",
		Type:          "flux_generations",
		Request:       json.RawMessage(`{"prompt":"a dog","callback_url":"https://example.com/flux"}`),
		CreatedAt:     time.UnixMilli(1763142650000).UTC(),
		StartedAt:     time.UnixMilli(1763142650250).UTC(),
		ApplicationID: "app-1",
		UserID:        "user-1",
		Callback:      taskstore.Callback{URL: "https://example.com/flux"},
	}
	wireFlux = `{"id":"a1111111-1111-4111-8111-111111111111","trace_id":"flux-trace","type":"flux_generations","status":"running",` +
		`"request":{"prompt":"a dog","callback_url":"https://example.com/flux"},"created_at":1763142650,"started_at":1763142650.25,` +
		`"application_id":"app-1","user_id":"user-1","callback":{"status":"waiting","attempts":0}}`
)

var fixtures = []taskstore.Task{taskFinished, taskUnfinished, taskOther, taskFlux}

// Principals and the tokens that authenticate them.
var (
	tenant1  = taskstore.Principal{ApplicationID: "app-1", UserID: "user-1", CredentialID: "cred-1"}
	tenant2  = taskstore.Principal{ApplicationID: "app-2", UserID: "user-2"}
	app1Only = taskstore.Principal{ApplicationID: "app-1"}
	tokens   = map[string]taskstore.Principal{
		"tok-operator": {},
		"tok-tenant1":  tenant1,
		"tok-tenant2":  tenant2,
		"tok-app1":     app1Only,
	}
)
