package apierr_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/tasksapi/tasks/internal/apierr"
)

var bodyRE = regexp.MustCompile(`^\{"error":\{"code":"api_error","message":"internal error; quote trace_id when reporting it"\},"trace_id":"([0-9a-f-]{36})"\}$`)

func TestInternalLogsButDoesNotLeak(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	w := httptest.NewRecorder()
	apierr.Internal(context.Background(), w, log, "finding tasks", errors.New("SELECT * FROM tasks: /var/lib/tasks.db: disk I/O error"))
	if w.Code != 500 {
		t.Fatalf("status %d", w.Code)
	}
	m := bodyRE.FindStringSubmatch(w.Body.String())
	if m == nil {
		t.Fatalf("body %s", w.Body.String())
	}
	if !strings.Contains(logs.String(), m[1]) || !strings.Contains(logs.String(), "disk I/O error") {
		t.Fatalf("log lacks the trace id or the cause: %s", logs.String())
	}
	if w.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Fatal("missing nosniff")
	}
}

func TestTraceIDsAreFresh(t *testing.T) {
	a := apierr.Write(httptest.NewRecorder(), 400, apierr.NoToken, "x")
	b := apierr.Write(httptest.NewRecorder(), 400, apierr.NoToken, "x")
	if a == b || len(a) != 36 {
		t.Fatalf("trace ids %q %q", a, b)
	}
}

func TestUnavailable(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	w := httptest.NewRecorder()
	apierr.Unavailable(context.Background(), w, log, "finding tasks", errors.New("pgstore: find: failed to connect to 10.0.0.5:5432"))
	if w.Code != 503 || w.Header().Get("Retry-After") != apierr.RetryAfterUnavailable {
		t.Fatalf("status %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	re := regexp.MustCompile(`^\{"error":\{"code":"api_error","message":"the task store is unavailable; retry later"\},"trace_id":"([0-9a-f-]{36})"\}$`)
	m := re.FindStringSubmatch(w.Body.String())
	if m == nil {
		t.Fatalf("body %s", w.Body.String())
	}
	if !strings.Contains(logs.String(), m[1]) || !strings.Contains(logs.String(), "level=WARN") || strings.Contains(w.Body.String(), "10.0.0.5") {
		t.Fatalf("log %s; body %s", logs.String(), w.Body.String())
	}
}
