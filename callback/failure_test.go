package callback_test

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback"
)

func TestUpstreamFailures(t *testing.T) {
	gate := make(chan struct{})
	t.Cleanup(func() { close(gate) }) // lets the handler that ignores its context end

	answer := func(status int, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(status)
			io.WriteString(w, body)
		}
	}
	fail := func(code, message string) string {
		return `"error":{"code":"` + code + `","message":"` + message + `"}}`
	}
	cases := []struct {
		name    string
		handler http.HandlerFunc
		want    string // the response after the task_id and trace_id members
	}{
		{"Status500OpenAIError", answer(500, `{"error":{"message":"Your prompt was rejected","type":"invalid_request_error","param":null,"code":"content_policy_violation"}}`),
			fail("content_policy_violation", "Your prompt was rejected")},
		{"Status500NullCode", answer(500, `{"error":{"message":"boom","type":"server_error","code":null}}`),
			fail("api_error", "boom")},
		{"Status400EmptyStrings", answer(400, `{"error":{"code":"","message":""}}`),
			fail("api_error", "upstream returned status 400")},
		{"Status502Text", answer(502, "bad gateway"),
			fail("api_error", "upstream returned status 502")},
		{"InvalidJSON", answer(200, `{"data":[`),
			fail("api_error", "upstream response is not a JSON object")},
		{"NotAnObject", answer(200, `[{"url":"x"}]`),
			fail("api_error", "upstream response is not a JSON object")},
		{"EmptyBody", func(w http.ResponseWriter, r *http.Request) {},
			fail("api_error", "upstream response is not a JSON object")},
		{"Panic", func(w http.ResponseWriter, r *http.Request) { panic("nil map somewhere") },
			fail("api_error", "upstream handler failed unexpectedly")},
		{"TimeoutHonouringContext", func(w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
			w.WriteHeader(500)
			io.WriteString(w, `{"error":{"code":"cancelled","message":"context canceled"}}`)
		}, fail("timeout", "the task did not finish within 100ms")},
		{"TimeoutIgnoringContext", func(w http.ResponseWriter, r *http.Request) {
			<-gate
			io.WriteString(w, `{"late":true}`)
		}, fail("timeout", "the task did not finish within 100ms")},
	}

	store := newMemStore(t)
	rc := newReceiver(t, nil)
	rec := newRecorder(t, store, callback.Options{TaskTimeout: 100 * time.Millisecond, Workers: 4})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, traceID := range []string{"tr-1", ""} {
				h := rec.Wrap("images_generations", tc.handler)
				body := `{"prompt":"p","callback_url":"` + rc.URL + `"`
				if traceID != "" {
					body += `,"trace_id":"` + traceID + `"`
				}
				id := acceptedID(t, post(h, "application/json", body+"}"), traceID)
				task := waitDelivery(t, store, id)
				want := `{"success":false,"task_id":"` + id + `",` + tc.want
				if traceID != "" {
					want = `{"success":false,"task_id":"` + id + `","trace_id":"` + traceID + `",` + tc.want
				}
				if string(task.Response) != want {
					t.Errorf("response\n got %s\nwant %s", task.Response, want)
				}
				var delivered []byte
				for _, d := range rc.deliveries() {
					if d.header.Get("webhook-id") == id {
						delivered = d.body
					}
				}
				if string(delivered) != want {
					t.Errorf("callback body %s, want %s", delivered, want)
				}
			}
		})
	}

	// The process keeps running: a task after all of that succeeds.
	id := acceptedID(t, post(rec.Wrap("images_generations", answer(200, `{"ok":1}`)), "application/json", `{"async":true}`), "")
	if task := waitFinished(t, store, id); string(task.Response) != `{"success":true,"task_id":"`+id+`","ok":1}` {
		t.Errorf("response after failures: %s", task.Response)
	}
}

func TestSuccessDropsReservedMembers(t *testing.T) {
	store := newMemStore(t)
	rec := newRecorder(t, store, callback.Options{})
	h := rec.Wrap("chat_completions", jsonHandler(nil, 201, `{ "z": 1, "success": false, "task_id": "forged", "trace_id": "forged", "a": {"b": [1, 2]}, "m": "\u00e9\n" }`))
	id := acceptedID(t, post(h, "application/json", `{"async":true,"trace_id":"real"}`), "real")
	want := `{"success":true,"task_id":"` + id + `","trace_id":"real","z":1,"a":{"b":[1,2]},"m":"\u00e9\n"}`
	if task := waitFinished(t, store, id); string(task.Response) != want {
		t.Errorf("response\n got %s\nwant %s", task.Response, want)
	}
}
