package memstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/taskstore"
)

func ExampleNew() {
	ctx := context.Background()
	s := memstore.New()
	defer s.Close()

	created := time.Date(2025, 11, 14, 17, 50, 7, 967_000_000, time.UTC)
	for i, user := range []string{"alice", "bob", "alice"} {
		_ = s.Create(ctx, taskstore.Task{
			ID: fmt.Sprintf("task-%d", i), Type: "images_generations", UserID: user,
			Request:   json.RawMessage(`{"prompt":"A cat"}`),
			CreatedAt: created.Add(time.Duration(i) * time.Second),
		})
	}
	_ = s.Finish(ctx, "task-2", json.RawMessage(`{"success":true}`), created.Add(time.Minute))

	page, total, _ := s.Find(ctx, taskstore.Filter{UserID: "alice", Limit: 12})
	fmt.Println("alice has", total, "tasks")
	for _, t := range page {
		b, _ := json.Marshal(t)
		fmt.Println(string(b))
	}
	_, pending, _ := s.Find(ctx, taskstore.Filter{UserID: "alice", Status: taskstore.StatusPending})
	fmt.Println("of which", pending, "pending")
	// Output:
	// alice has 2 tasks
	// {"id":"task-2","type":"images_generations","status":"succeeded","request":{"prompt":"A cat"},"response":{"success":true},"created_at":1763142609.967,"finished_at":1763142667.967,"duration":58,"elapsed":58,"user_id":"alice"}
	// {"id":"task-0","type":"images_generations","status":"pending","request":{"prompt":"A cat"},"created_at":1763142607.967,"user_id":"alice"}
	// of which 1 pending
}
