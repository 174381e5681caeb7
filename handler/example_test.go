package handler_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/tasksapi/tasks/handler"
	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/taskstore"
)

// ExampleNew mounts the Tasks API on an http.ServeMux, with a fixed token
// per tenant, and looks a task up as a client would.
func ExampleNew() {
	store := memstore.New()
	defer store.Close()

	// Callback mode would have stored this task.
	_ = store.Create(context.Background(), taskstore.Task{
		ID:            "7489df4c-ef03-4de0-b598-e9a590793434",
		Type:          "images_generations",
		Request:       json.RawMessage(`{"prompt":"A cat"}`),
		CreatedAt:     time.UnixMilli(1763142607967),
		ApplicationID: "app-1",
	})

	auth := handler.Tokens(map[string]taskstore.Principal{
		"sk-tenant-1": {ApplicationID: "app-1"},
		"sk-tenant-2": {ApplicationID: "app-2"},
	})
	mux := http.NewServeMux()
	// No method in the pattern: the handler answers other methods itself,
	// with the contract's 405 error body.
	mux.Handle("/openai/tasks", handler.New(store, auth,
		handler.WithTypes("images_generations", "images_edits")))

	srv := httptest.NewServer(mux)
	defer srv.Close()

	for _, token := range []string{"sk-tenant-1", "sk-tenant-2"} {
		req, _ := http.NewRequest("POST", srv.URL+"/openai/tasks",
			strings.NewReader(`{"action":"retrieve","id":"7489df4c-ef03-4de0-b598-e9a590793434"}`))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, string(body))
	}
	// Output:
	// 200 {"id":"7489df4c-ef03-4de0-b598-e9a590793434","type":"images_generations","status":"pending","request":{"prompt":"A cat"},"created_at":1763142607.967,"application_id":"app-1"}
	// 200 {}
}

// ExampleAuthenticate puts the caller's principal into the context of the
// image endpoints, where callback mode reads it.
func ExampleAuthenticate() {
	auth := handler.Tokens(map[string]taskstore.Principal{"sk-1": {ApplicationID: "app-1"}})
	images := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := taskstore.FromContext(r.Context())
		fmt.Fprintf(w, "hello %s", p.ApplicationID)
	})
	h := handler.Authenticate(auth, images)

	for _, header := range []string{"Bearer sk-1", "Bearer sk-2"} {
		r := httptest.NewRequest("POST", "/v1/images/generations", nil)
		r.Header.Set("Authorization", header)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		fmt.Println(rec.Code, strings.SplitN(rec.Body.String(), `,"trace_id"`, 2)[0])
	}
	// Output:
	// 200 hello app-1
	// 401 {"error":{"code":"invalid_token","message":"the token is not accepted"}
}
