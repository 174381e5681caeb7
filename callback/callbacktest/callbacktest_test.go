package callbacktest_test

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback/callbacktest"
	"github.com/tasksapi/tasks/internal/webhook"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// send posts a callback as a recorder would, with the given changes.
func send(t *testing.T, url, id string, body []byte, mutate func(h http.Header)) int {
	t.Helper()
	key, err := webhook.ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Now().Unix()
	req, _ := http.NewRequest("POST", url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", id)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", webhook.Sign(key, id, ts, body))
	if mutate != nil {
		mutate(req.Header)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestReceiverChecksTheContract(t *testing.T) {
	rcv := callbacktest.NewReceiver(t, callbacktest.WithSecret(secret))
	good := []byte(`{"success":true,"task_id":"t1"}`)
	if st := send(t, rcv.URL+"/a", "t1", good, nil); st != 204 {
		t.Fatalf("a good callback: %d", st)
	}
	if p := rcv.Problems(); len(p) != 0 {
		t.Fatalf("problems after a good callback: %v", p)
	}
	for _, c := range []struct {
		name, id string
		body     []byte
		mutate   func(h http.Header)
		status   int
		problem  string
	}{
		{"BadSignature", "t2", []byte(`{"task_id":"t2"}`), func(h http.Header) { h.Set("webhook-signature", "v1,AAAA") }, 400, "signature"},
		{"SecondSignatureGood", "t3", []byte(`{"task_id":"t3"}`), func(h http.Header) {
			h.Set("webhook-signature", "v1,AAAA "+h.Get("webhook-signature"))
		}, 204, ""},
		{"NoID", "", []byte(`{"task_id":""}`), nil, 204, "without webhook-id"},
		{"StaleTimestamp", "t4", []byte(`{"task_id":"t4"}`), func(h http.Header) { h.Set("webhook-timestamp", "1000") }, 400, "away"},
		{"OtherTask", "t5", []byte(`{"task_id":"t6"}`), nil, 204, "not a response of that task"},
		{"OtherBody", "t1", []byte(`{"success":false,"task_id":"t1"}`), nil, 204, "another body"},
		{"ContentType", "t7", []byte(`{"task_id":"t7"}`), func(h http.Header) { h.Set("Content-Type", "text/plain") }, 204, "Content-Type"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(rcv.Problems())
			if st := send(t, rcv.URL, c.id, c.body, c.mutate); st != c.status {
				t.Errorf("status %d, want %d", st, c.status)
			}
			p := rcv.Problems()
			switch {
			case c.problem == "" && len(p) != before:
				t.Errorf("problems %v", p[before:])
			case c.problem != "" && (len(p) == before || !strings.Contains(strings.Join(p[before:], "\n"), c.problem)):
				t.Errorf("problems %v, want one about %q", p[before:], c.problem)
			}
		})
	}
	if ds := rcv.For("t1"); len(ds) != 2 || ds[0].Attempt != 1 || ds[1].Attempt != 2 || ds[0].Path != "/a" || !ds[0].Accepted() {
		t.Fatalf("deliveries of t1: %+v", ds)
	}
}

func TestReceiverScriptsAnswers(t *testing.T) {
	rcv := callbacktest.NewReceiver(t, callbacktest.WithRespond(func(d callbacktest.Delivery) int {
		if d.Attempt < 3 {
			return 503
		}
		return 200
	}))
	body := []byte(`{"task_id":"x"}`)
	for i, want := range []int{503, 503, 200, 200} {
		if st := send(t, rcv.URL, "x", body, nil); st != want {
			t.Fatalf("delivery %d: %d, want %d", i+1, st, want)
		}
	}
	d := rcv.Wait(t, "x")
	if d.Attempt != 3 || d.Status != 200 {
		t.Fatalf("first accepted delivery: %+v", d)
	}
}

func TestStartRefusesAMalformedSecret(t *testing.T) {
	if _, err := callbacktest.Start(callbacktest.WithSecret("not-a-secret")); err == nil {
		t.Fatal("Start accepted a malformed secret")
	}
}
