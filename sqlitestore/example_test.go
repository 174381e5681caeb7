package sqlitestore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/tasksapi/tasks/sqlitestore"
	"github.com/tasksapi/tasks/taskstore"
)

func ExampleOpen() {
	dir, err := os.MkdirTemp("", "sqlitestore-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	s, err := sqlitestore.Open(filepath.Join(dir, "tasks.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	ctx := context.Background()
	id := "7489df4c-ef03-4de0-b598-e9a590793434"
	err = s.Create(ctx, taskstore.Task{
		ID: id, TraceID: "my-trace-001", Type: "images_generations",
		Request:   json.RawMessage(`{"model":"gpt-image-1","prompt":"A cat"}`),
		CreatedAt: time.UnixMilli(1763142607967),
		UserID:    "user-1",
	})
	if err != nil {
		log.Fatal(err)
	}
	err = s.Finish(ctx, id, json.RawMessage(`{"success":true,"data":[{"url":"https://example.com/cat.png"}]}`),
		time.UnixMilli(1763142637404))
	if err != nil {
		log.Fatal(err)
	}

	page, total, err := s.Find(ctx, taskstore.Filter{UserID: "user-1", Status: taskstore.StatusSucceeded, Limit: 12})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("count:", total)
	record, _ := json.Marshal(page[0])
	fmt.Println(string(record))
	// Output:
	// count: 1
	// {"id":"7489df4c-ef03-4de0-b598-e9a590793434","trace_id":"my-trace-001","type":"images_generations","status":"succeeded","request":{"model":"gpt-image-1","prompt":"A cat"},"response":{"success":true,"data":[{"url":"https://example.com/cat.png"}]},"created_at":1763142607.967,"finished_at":1763142637.404,"duration":29.437,"elapsed":29.437,"user_id":"user-1"}
}
