package tasks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/handler"
	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/taskstore"
)

// Mount callback mode around an existing image handler and the Tasks API
// beside it, then walk one task from submission to retrieval.
func Example() {
	// The image handler you already have.
	images := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"created":1721626477,"data":[{"url":"https://example.com/cat.png"}]}`)
	})

	store := memstore.New() // or sqlitestore.Open("tasks.db"), pgstore.Open(ctx, url)
	defer store.Close()
	auth := handler.Tokens(map[string]taskstore.Principal{"tok-alice": {ApplicationID: "app-1", UserID: "alice"}})
	rec, err := callback.New(store, callback.Options{})
	if err != nil {
		panic(err)
	}
	defer rec.Close(context.Background())

	mux := http.NewServeMux()
	mux.Handle("POST /openai/images/generations", handler.Authenticate(auth, rec.Wrap("images_generations", images)))
	mux.Handle("/openai/tasks", handler.New(store, auth))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	post := func(path, body string) map[string]any {
		req, _ := http.NewRequest("POST", srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer tok-alice")
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return m
	}

	// "async": true makes a task without a callback; a callback_url would
	// also have the response POSTed to it.
	id := post("/openai/images/generations", `{"prompt":"A cat","async":true}`)["task_id"].(string)
	for {
		task := post("/openai/tasks", `{"action":"retrieve","id":"`+id+`"}`)
		if task["finished_at"] != nil {
			resp := task["response"].(map[string]any)
			fmt.Println(task["type"], task["user_id"], resp["success"], resp["task_id"] == id)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	batch := post("/openai/tasks", `{"action":"retrieve_batch","user_id":"alice"}`)
	fmt.Println("count:", batch["count"])
	// Output:
	// images_generations alice true true
	// count: 1
}
