package callbacktest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/callback/callbacktest"
	"github.com/tasksapi/tasks/memstore"
)

// Receive a task's callback, verified and recorded, after the receiver
// failed the first attempt: a unit test of an image service without any
// receiver code of its own.
func Example() {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	rcv, err := callbacktest.Start(
		callbacktest.WithSecret(secret),
		callbacktest.WithRespond(func(d callbacktest.Delivery) int {
			if d.Attempt == 1 {
				return 503 // the first attempt fails: the recorder retries
			}
			return 204
		}),
	)
	if err != nil {
		panic(err)
	}
	defer rcv.Close()

	store := memstore.New()
	defer store.Close()
	rec, err := callback.New(store, callback.Options{
		Secret:               secret,
		AllowPrivateNetworks: true, // the receiver is on loopback
		Schedule:             callback.Schedule{0, 10 * time.Millisecond},
	})
	if err != nil {
		panic(err)
	}
	defer rec.Close(context.Background())

	ctx := context.Background()
	id, err := rec.Submit(ctx, callback.Submission{
		Type: "images_generations", Request: json.RawMessage(`{"prompt":"A cat"}`), CallbackURL: rcv.URL + "/hooks",
	}, func(context.Context) (json.RawMessage, error) {
		return json.RawMessage(`{"data":[{"url":"https://cdn.example.com/cat.png"}]}`), nil
	})
	if err != nil {
		panic(err)
	}
	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d, err := rcv.Next(wait, id)
	if err != nil {
		panic(err)
	}
	resp, _ := d.Response()
	fmt.Println(d.Attempt, d.Status, d.Path, resp["success"], len(rcv.For(id)), rcv.Problems())
	// Output: 2 204 /hooks true 2 []
}
