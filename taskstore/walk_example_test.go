package taskstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/taskstore"
)

// Walking a whole store: each call starts after the last record of the
// previous one; a short answer is the end.
func ExampleCursor() {
	ctx := context.Background()
	s := memstore.New()
	defer s.Close()
	at := time.Date(2025, 11, 14, 17, 50, 7, 0, time.UTC)
	for _, id := range []string{"c", "a", "b"} { // one millisecond: ordered by id
		s.Create(ctx, taskstore.Task{ID: id, Type: "images_generations", Request: json.RawMessage(`{}`), CreatedAt: at})
	}
	s.Create(ctx, taskstore.Task{ID: "first", Type: "images_generations", Request: json.RawMessage(`{}`), CreatedAt: at.Add(-time.Hour)})

	var after taskstore.Cursor // the zero Cursor: the start
	for {
		page, err := s.Walk(ctx, after, 2)
		if err != nil {
			fmt.Println(err)
			return
		}
		for _, r := range page {
			fmt.Println(r.ID, r.CreatedAt.Format(time.TimeOnly), r.Claimed)
		}
		if len(page) < 2 {
			break
		}
		after = page[len(page)-1].Cursor()
	}
	// Output:
	// first 16:50:07 false
	// a 17:50:07 false
	// b 17:50:07 false
	// c 17:50:07 false
}
