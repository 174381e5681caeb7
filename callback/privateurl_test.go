package callback_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"github.com/tasksapi/tasks/callback"
)

// refusedCallbackURLs are callback URLs whose host the delivery guard
// refuses without resolving anything.
var refusedCallbackURLs = []string{
	"http://127.0.0.1/cb",
	"http://127.0.0.1./cb",
	"http://[::ffff:127.0.0.1]/",
	"http://[::ffff:0:127.0.0.1]/",
	"http://10.0.0.1/",
	"https://192.168.1.1:8443/cb",
	"http://169.254.169.254/latest/meta-data",
	"http://0.0.0.0/",
	"http://[::1]/",
	"http://[::]/",
	"http://[fe80::1%25eth0]/",
	"http://[64:ff9b::a00:1]/",
	"http://100.64.0.1/",
	"http://localhost:8080/cb",
	"http://api.localhost/cb",
	"http://LOCALHOST./cb",
	// Spellings net/http maps to the above before it dials (IDNA).
	"http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/",
	"http://169\u3002254\u3002169\u3002254/",
	"http://127.0.0.1\u00ad/",
	"http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/",
}

// TestPrivateCallbackURLAtSubmit: with the guard on, a callback_url whose
// host is an IP literal the guard refuses, or a localhost name, is answered
// 400 bad_request naming callback_url (JSON and multipart), Submit returns
// ErrBadCallbackURL, and nothing is stored nor run. Before, such a task
// was accepted and its callback given up on the first attempt.
func TestPrivateCallbackURLAtSubmit(t *testing.T) {
	store := newMemStore(t)
	rec := newRecorder(t, store, callback.Options{}, guardOn)
	var up upstream
	h := rec.Wrap("images_generations", jsonHandler(&up, 200, `{}`))
	ran := 0
	for _, u := range refusedCallbackURLs {
		t.Run(strings.NewReplacer("/", "_", ":", "_").Replace(u), func(t *testing.T) {
			q, _ := json.Marshal(u)
			w := post(h, "application/json", `{"prompt":"p","callback_url":`+string(q)+`}`)
			errorBody(t, w, http.StatusBadRequest, "bad_request", "")
			msg := w.Body.String()
			if !strings.Contains(msg, "callback_url must not point to a loopback, private or special-purpose address: ") ||
				!strings.Contains(msg, "is not allowed (") {
				t.Errorf("JSON: %s", msg)
			}

			var b bytes.Buffer
			mw := multipart.NewWriter(&b)
			mw.WriteField("prompt", "p")
			mw.WriteField("callback_url", u)
			mw.Close()
			w = post(h, mw.FormDataContentType(), b.String())
			errorBody(t, w, http.StatusBadRequest, "bad_request", "")
			if !strings.Contains(w.Body.String(), "callback_url must not point to") {
				t.Errorf("multipart: %s", w.Body)
			}

			_, err := rec.Submit(context.Background(), callback.Submission{Type: "images_generations", CallbackURL: u, Request: []byte(`{}`)},
				func(context.Context) (json.RawMessage, error) { ran++; return []byte(`{}`), nil })
			if !errors.Is(err, callback.ErrBadCallbackURL) || !strings.Contains(err.Error(), "is not allowed (") {
				t.Errorf("Submit: %v", err)
			}
		})
	}
	if n := countTasks(t, store); n != 0 {
		t.Errorf("%d tasks stored", n)
	}
	if up.count() != 0 || ran != 0 {
		t.Errorf("the upstream ran %d times, Submit's function %d times", up.count(), ran)
	}
}

// TestPrivateCallbackURLAllowed: with Options.AllowPrivateNetworks, the
// same URLs are accepted (and a loopback receiver gets its callback).
func TestPrivateCallbackURLAllowed(t *testing.T) {
	store := newMemStore(t)
	rc := newReceiver(t, nil)
	rec := newRecorder(t, store, callback.Options{}) // newRecorder allows private networks
	id := submitCallback(t, rec, rc.URL+"/cb")
	if task := waitDelivery(t, store, id); task.Callback.DeliveredAt.IsZero() {
		t.Errorf("not delivered: %+v", task.Callback)
	}
	id, err := rec.Submit(context.Background(), callback.Submission{Type: "images_generations", CallbackURL: rc.URL + "/cb", Request: []byte(`{}`)},
		func(context.Context) (json.RawMessage, error) { return []byte(`{}`), nil })
	if err != nil {
		t.Fatal(err)
	}
	waitDelivery(t, store, id)
}
