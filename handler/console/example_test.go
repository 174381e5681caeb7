package console_test

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"

	"github.com/tasksapi/tasks/handler"
	"github.com/tasksapi/tasks/handler/console"
	"github.com/tasksapi/tasks/memstore"
	"github.com/tasksapi/tasks/taskstore"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// ExampleNew mounts the console at /console/ next to the Tasks API. Pass
// console.WithRecorder(rec) with the callback.Recorder that delivers the
// store's callbacks, so that Redeliver sends at once.
func ExampleNew() {
	store := memstore.New()
	defer store.Close()
	auth := handler.Tokens(map[string]taskstore.Principal{
		"op-secret":     {},                       // an operator: sees and acts on every task
		"tenant-secret": {ApplicationID: "app-1"}, // a tenant: refused by the console
	})

	mux := http.NewServeMux()
	mux.Handle("/console/", console.New(store, auth))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for _, token := range []string{"op-secret", "tenant-secret"} {
		req, _ := http.NewRequest("GET", srv.URL+"/console/api/summary", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, len(body) > 0)
	}
	// Output:
	// 200 true
	// 401 true
}
