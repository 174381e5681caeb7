package pgstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/tasksapi/tasks/pgstore"
	"github.com/tasksapi/tasks/taskstore"
)

// ExampleOpen opens the store at the URL in TASKS_PG_URL (run
// .ci/start-postgres.sh for a local test server), records a task and its
// response, and lists the tasks of its user. It has no checked output, so
// go test compiles it but does not run it (TestConformance exercises the
// same calls against a server).
func ExampleOpen() {
	url := os.Getenv("TASKS_PG_URL") // e.g. postgres://postgres@127.0.0.1:5432/tasks?sslmode=disable
	if url == "" {
		return
	}
	ctx := context.Background()
	store, err := pgstore.Open(ctx, url, pgstore.WithMaxOpenConns(20),
		pgstore.WithStartupWait(time.Minute),   // a replica may start before its database
		pgstore.WithRetryGrace(10*time.Second)) // calls ride out a restart of up to 10 s
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	id := fmt.Sprintf("example-%d", time.Now().UnixNano())
	err = store.Create(ctx, taskstore.Task{
		ID: id, Type: "images_generations", UserID: "example-user",
		Request: json.RawMessage(`{"model":"gpt-image-1","prompt":"A cat"}`),
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Finish(ctx, id, json.RawMessage(`{"success":true,"data":[]}`), time.Now()); err != nil {
		log.Fatal(err)
	}
	page, total, err := store.Find(ctx, taskstore.Filter{UserID: "example-user", Limit: 12})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(page) > 0, total > 0, page[0].Finished())
	// Delete what the example created.
	if err := store.Delete(ctx, id); err != nil {
		log.Fatal(err)
	}
}
