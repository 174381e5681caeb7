package webhook_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/tasksapi/tasks/internal/webhook"
)

func TestSignMatchesStandardWebhooks(t *testing.T) {
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	key, err := webhook.ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Unix(1614265330, 0)
	for _, tt := range []struct {
		id   string
		body []byte
	}{
		{"msg_p5jXN8AQM9LWM0D4loKWxJek", []byte(`{"test": 2432232314}`)},
		{"7489df4c-ef03-4de0-b598-e9a590793434", []byte(body)},
		{"an-id-longer-than-the-sixty-four-byte-stack-buffer-used-for-the-prefix-of-the-mac", nil},
		{"x", bytes.Repeat([]byte("é"), 5000)},
	} {
		want, err := wh.Sign(tt.id, ts, tt.body)
		if err != nil {
			t.Fatal(err)
		}
		if got := webhook.Sign(key, tt.id, ts.Unix(), tt.body); got != want {
			t.Errorf("Sign(%q) = %q, want %q (official library)", tt.id, got, want)
		}
	}
}

func TestParseSecret(t *testing.T) {
	key, err := webhook.ParseSecret("whsec_c2VjcmV0")
	if err != nil || string(key) != "secret" {
		t.Errorf("ParseSecret = %q, %v", key, err)
	}
	for _, s := range []string{"", "c2VjcmV0", "whsec_", "whsec_c2VjcmV0=", "whsec_c2Vjc*V0", "WHSEC_c2VjcmV0", "whsec c2VjcmV0"} {
		if key, err := webhook.ParseSecret(s); err == nil {
			t.Errorf("ParseSecret(%q) = %q, nil; want an error", s, key)
		}
	}
	if _, err := webhook.ParseSecret("whsec_c2Vj#SECRET#"); err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("ParseSecret error %v quotes the secret", err)
	}
}
