package storecopy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tasksapi/tasks/internal/storecopy"
	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/taskstore"
)

// Copy, then Verify: the destination holds every task, and the two sides'
// counts and checksums agree.
func Example() {
	ctx := context.Background()
	src, dst := memstore.New(), memstore.New()
	defer src.Close()
	defer dst.Close()
	at := time.Date(2025, 11, 14, 17, 50, 7, 0, time.UTC)
	src.Create(ctx, taskstore.Task{ID: "a", Type: "images_generations", Request: json.RawMessage(`{"prompt":"A cat"}`),
		CreatedAt: at, Callback: taskstore.Callback{URL: "https://example.com/cb"}})
	src.Finish(ctx, "a", json.RawMessage(`{"success":true}`), at.Add(time.Second))
	src.Create(ctx, taskstore.Task{ID: "b", Type: "images_generations", Request: json.RawMessage(`{"prompt":"A dog"}`),
		CreatedAt: at, LeaseUntil: at.Add(time.Minute)})

	res, err := storecopy.Copy(ctx, src, dst, storecopy.Options{})
	fmt.Println(res.Copied, res.Skipped, res.OK(), err)
	v, err := storecopy.Verify(ctx, src, dst, storecopy.Options{})
	fmt.Println(v.OK(), v.Source.Status[taskstore.StatusPending], v.Source.Callback[taskstore.CallbackPending], err)
	b, _ := dst.Get(ctx, "b")
	fmt.Println("lease of the unfinished copy:", b.LeaseUntil.IsZero())
	res, _ = storecopy.Copy(ctx, src, dst, storecopy.Options{}) // again: nothing to do
	fmt.Println(res.Copied, res.Skipped)
	// Output:
	// 2 0 true <nil>
	// true 1 1 <nil>
	// lease of the unfinished copy: true
	// 0 2
}
