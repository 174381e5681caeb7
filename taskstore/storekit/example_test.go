package storekit_test

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// A store's Create normalizes the task before keeping it, and refuses an
// invalid one with an error that names the field.
func ExampleNormalize() {
	now := time.Date(2025, 11, 14, 17, 50, 7, 967_654_321, time.FixedZone("CET", 3600))
	t, err := storekit.Normalize(taskstore.Task{
		ID: "t1", Type: "images_generations", Request: json.RawMessage(`{"prompt":"a cat"}`),
	}, now)
	fmt.Println(t.CreatedAt, err)

	_, err = storekit.Normalize(taskstore.Task{ID: "t2", Request: json.RawMessage(`{}`)}, now)
	fmt.Printf("%v | %q\n", err, taskstore.Reason(err))
	// Output:
	// 2025-11-14 16:50:07.967 +0000 UTC <nil>
	// taskstore: invalid input: type is required | "type is required"
}

// A store keeps times as whole Unix milliseconds, 0 for "not set", and
// reads a zero time argument of Start, Finish or RecordAttempt as now.
func Example_millis() {
	at := time.Date(2025, 11, 14, 17, 50, 7, 967_654_321, time.UTC)
	ms := storekit.ToMillis(at)
	fmt.Println(ms, storekit.FromMillis(ms))
	fmt.Println(storekit.ToMillis(time.Time{}), storekit.FromMillis(0).IsZero())
	// A stored time is strictly before at exactly when it is before
	// CeilMillis(at).
	fmt.Println(storekit.CeilMillis(at))

	delivered, next := storekit.AttemptMillis(taskstore.Attempt{At: at, Status: 503, Next: at.Add(time.Minute)})
	fmt.Println(delivered, next)
	// Output:
	// 1763142607967 2025-11-14 17:50:07.967 +0000 UTC
	// 0 true
	// 1763142607968
	// 0 1763142667967
}

// A store without an ordered index answers Walk by keeping the tasks that
// come after the cursor, in the order CursorBefore defines.
func ExampleCursorBefore() {
	at := time.UnixMilli(1_763_142_607_967)
	tasks := []taskstore.Task{{ID: "b", CreatedAt: at}, {ID: "a", CreatedAt: at}, {ID: "c", CreatedAt: at.Add(-time.Second)}}
	after := taskstore.Cursor{CreatedAt: at, ID: "a"}
	for _, t := range tasks {
		fmt.Println(t.ID, storekit.CursorBefore(after, t))
	}
	var start taskstore.Cursor
	fmt.Println(storekit.CursorKey(start))
	// Output:
	// b true
	// a false
	// c false
	// -9223372036854775808
}
