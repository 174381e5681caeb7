package reliability

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/taskstore"
)

// A FaultStore wraps any taskstore.Store and fails the calls a schedule
// chooses: before they reach the store (nothing written) or after (written,
// but reported as failed, as when a commit's answer is lost).
func Example_faultStore() {
	ctx := context.Background()
	store := NewFaultStore(memstore.New())
	defer store.Close()
	store.Fail(OpCreate, func(n int) Fault {
		switch n {
		case 2:
			return FailBefore
		case 4:
			return FailAfter
		}
		return NoFault
	})
	for i := 1; i <= 4; i++ {
		id := fmt.Sprintf("task-%d", i)
		err := store.Create(ctx, taskstore.Task{ID: id, Type: "images_generations", Request: json.RawMessage(`{}`)})
		_, getErr := store.Get(ctx, id)
		fmt.Printf("%s: Create error %v; stored %v\n", id, err, getErr == nil)
	}
	fmt.Println(store.Injected()[OpCreate], "failures injected")
	// Output:
	// task-1: Create error <nil>; stored true
	// task-2: Create error reliability: injected store failure; stored false
	// task-3: Create error <nil>; stored true
	// task-4: Create error reliability: injected store failure; stored true
	// 2 failures injected
}
