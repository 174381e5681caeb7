package callback_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/memstore"
)

func ExampleRecorder_Wrap() {
	// A callback receiver (on loopback here, hence AllowPrivateNetworks).
	callbacks := make(chan string, 1)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		callbacks <- string(body)
	}))
	defer receiver.Close()

	store := memstore.New()
	defer store.Close()
	rec, err := callback.New(store, callback.Options{AllowPrivateNetworks: true})
	if err != nil {
		panic(err)
	}
	defer rec.Close(context.Background())

	// The image handler the server already has.
	images := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"created":1721626477,"data":[{"url":"https://example.com/cat.png"}]}`)
	})
	mux := http.NewServeMux()
	mux.Handle("POST /v1/images/generations", rec.Wrap("images_generations", images))

	// A callback-mode request is answered at once with the task id.
	req := httptest.NewRequest("POST", "/v1/images/generations", strings.NewReader(
		`{"prompt":"A cat","callback_url":"`+receiver.URL+`/cb","trace_id":"my-trace"}`))
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, req)
	var answer struct {
		TaskID  string `json:"task_id"`
		TraceID string `json:"trace_id"`
	}
	json.Unmarshal(w.Body.Bytes(), &answer)
	_, err = uuid.Parse(answer.TaskID)
	fmt.Println(w.Code, "task_id is a UUID:", err == nil, "trace_id:", answer.TraceID)

	// The handler runs in the background; its answer, with success,
	// task_id and trace_id added, is stored and POSTed to callback_url.
	fmt.Println(strings.ReplaceAll(<-callbacks, answer.TaskID, "<task id>"))
	// Output:
	// 200 task_id is a UUID: true trace_id: my-trace
	// {"success":true,"task_id":"<task id>","trace_id":"my-trace","created":1721626477,"data":[{"url":"https://example.com/cat.png"}]}
}

func ExampleRecorder_Submit() {
	store := memstore.New()
	defer store.Close()
	rec, err := callback.New(store, callback.Options{})
	if err != nil {
		panic(err)
	}
	defer rec.Close(context.Background())

	id, err := rec.Submit(context.Background(), callback.Submission{
		Type:    "images_generations",
		Request: json.RawMessage(`{"prompt":"A cat"}`),
	}, func(ctx context.Context) (json.RawMessage, error) {
		return json.RawMessage(`{"data":[{"url":"https://example.com/cat.png"}]}`), nil
	})
	if err != nil {
		panic(err)
	}
	for {
		task, _ := store.Get(context.Background(), id)
		if task.Finished() {
			fmt.Println(strings.ReplaceAll(string(task.Response), id, "<task id>"))
			break
		}
		time.Sleep(time.Millisecond)
	}
	// Output:
	// {"success":true,"task_id":"<task id>","data":[{"url":"https://example.com/cat.png"}]}
}

// Two services on one store, each with its own recorder name and secret:
// each recorder delivers only the callbacks of the tasks it created, signed
// with its own secret.
func ExampleOptions_name() {
	store := memstore.New()
	defer store.Close()
	images, err := callback.New(store, callback.Options{Name: "images", Secret: "whsec_aW1hZ2Vz"})
	if err != nil {
		panic(err)
	}
	defer images.Close(context.Background())
	edits, err := callback.New(store, callback.Options{Name: "edits", Secret: "whsec_ZWRpdHM="})
	if err != nil {
		panic(err)
	}
	defer edits.Close(context.Background())

	// A second "images" recorder with another secret, in the same process
	// on the same store, is refused: replicas share a name and settings.
	_, err = callback.New(store, callback.Options{Name: "images", Secret: "whsec_ZWRpdHM="})
	fmt.Println(errors.Is(err, callback.ErrNameInUse))

	id, err := edits.Submit(context.Background(), callback.Submission{Type: "images_edits", Request: json.RawMessage(`{}`)},
		func(context.Context) (json.RawMessage, error) { return json.RawMessage(`{"data":[]}`), nil })
	if err != nil {
		panic(err)
	}
	task, err := store.Get(context.Background(), id)
	if err != nil {
		panic(err)
	}
	fmt.Printf("task of recorder %q\n", task.Recorder)
	// Output:
	// true
	// task of recorder "edits"
}
