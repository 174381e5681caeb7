package taskstore_test

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// A Task encodes as the Tasks API wire record; the callback delivery state
// stays off the wire.
func ExampleTask_MarshalJSON() {
	t := taskstore.Task{
		ID:         "7489df4c-ef03-4de0-b598-e9a590793434",
		Type:       "images_generations",
		Request:    json.RawMessage(`{"prompt":"A cat","callback_url":"https://example.com/cb"}`),
		Response:   json.RawMessage(`{"success":true,"task_id":"7489df4c-ef03-4de0-b598-e9a590793434","data":[]}`),
		CreatedAt:  time.UnixMilli(1763142607967),
		FinishedAt: time.UnixMilli(1763142637404),
		UserID:     "user-1",
		Callback:   taskstore.Callback{URL: "https://example.com/cb", Attempts: 1, LastStatus: 204, DeliveredAt: time.UnixMilli(1763142637512)},
	}
	b, _ := json.Marshal(t)
	fmt.Println(string(b))
	// Output:
	// {"id":"7489df4c-ef03-4de0-b598-e9a590793434","type":"images_generations","status":"succeeded","request":{"prompt":"A cat","callback_url":"https://example.com/cb"},"response":{"success":true,"task_id":"7489df4c-ef03-4de0-b598-e9a590793434","data":[]},"created_at":1763142607.967,"finished_at":1763142637.404,"duration":29.437,"elapsed":29.437,"user_id":"user-1","callback":{"status":"delivered","attempts":1,"last_status":204,"delivered_at":1763142637.512}}
}

// A principal narrows any filter to what it may see.
func ExamplePrincipal_Scope() {
	tenant := taskstore.Principal{ApplicationID: "app-1"}
	f, ok := tenant.Scope(taskstore.Filter{UserID: "u-7", Limit: 12})
	fmt.Println(f.ApplicationID, f.UserID, ok)
	_, ok = tenant.Scope(taskstore.Filter{ApplicationID: "app-2"})
	fmt.Println(ok)
	// Output:
	// app-1 u-7 true
	// false
}
