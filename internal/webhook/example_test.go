package webhook_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/tasksapi/tasks/internal/webhook"
)

// Sign a callback the way a Sender does; the value goes in the
// webhook-signature header. (Test vector of the Standard Webhooks spec.)
func ExampleSign() {
	key, err := webhook.ParseSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		panic(err)
	}
	fmt.Println(webhook.Sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`)))
	// Output:
	// v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=
}

// One delivery attempt to a receiver on loopback (hence
// AllowPrivateNetworks), and what to do with the Result.
func ExampleSender() {
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("receiver got webhook-id", r.Header.Get("webhook-id"))
		w.WriteHeader(http.StatusNoContent)
	}))
	defer receiver.Close()

	s, err := webhook.NewSender(webhook.Options{
		Secret:               "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		AllowPrivateNetworks: true,
	})
	if err != nil {
		panic(err)
	}
	defer s.CloseIdleConnections()

	res := s.Send(context.Background(), receiver.URL+"/cb", "7489df4c-ef03-4de0-b598-e9a590793434",
		[]byte(`{"success":true,"task_id":"7489df4c-ef03-4de0-b598-e9a590793434"}`), time.Now())
	switch {
	case res.Delivered:
		fmt.Println("delivered, status", res.Status)
	case res.Gone || res.Permanent:
		fmt.Println("giving up:", res.Err)
	default:
		fmt.Println("will retry:", res.Err)
	}
	// Output:
	// receiver got webhook-id 7489df4c-ef03-4de0-b598-e9a590793434
	// delivered, status 204
}

// Plan retries: after each failed attempt ask Next when the next one is due.
func ExampleSchedule_Next() {
	schedule, err := webhook.ParseSchedule("0s,5s,5m,30m")
	if err != nil {
		panic(err)
	}
	noJitter := func() float64 { return 0.5 } // the middle of ±20%
	at := time.Date(2025, 7, 1, 12, 0, 0, 0, time.UTC)
	for attempts := 1; ; attempts++ {
		retryAfter := time.Duration(0)
		if attempts == 2 {
			retryAfter = 10 * time.Minute // the receiver answered 429 with Retry-After: 600
		}
		next, ok := schedule.Next(attempts, at, retryAfter, noJitter)
		if !ok {
			fmt.Printf("attempt %d failed at %s: giving up\n", attempts, at.Format(time.TimeOnly))
			return
		}
		fmt.Printf("attempt %d failed at %s: next at %s\n", attempts, at.Format(time.TimeOnly), next.Format(time.TimeOnly))
		at = next
	}
	// Output:
	// attempt 1 failed at 12:00:00: next at 12:00:05
	// attempt 2 failed at 12:00:05: next at 12:10:05
	// attempt 3 failed at 12:10:05: next at 12:40:05
	// attempt 4 failed at 12:40:05: giving up
}

// Validate a callback_url when a request arrives, before storing anything.
func ExampleCheckURL() {
	for _, u := range []string{
		"https://example.com/callbacks",
		"ftp://example.com/callbacks",
		"http://169.254.169.254/latest/meta-data/",
		"http://2130706433/",
	} {
		fmt.Println(webhook.CheckURL(u, false))
	}
	// Output:
	// <nil>
	// invalid URL: scheme "ftp" is not allowed: want http or https
	// address 169.254.169.254 is not allowed (link-local)
	// invalid URL: host "2130706433" is a numeric address in a non-standard form: write it as a dotted quad
}
