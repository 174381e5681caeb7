package pgstore_test

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/tasksapi/tasks/internal/logtest"
	"github.com/tasksapi/tasks/internal/pgtest"
	"github.com/tasksapi/tasks/pgstore"
)

// TestDefaultLogger: without WithLogger, or with WithLogger(nil), the store
// logs to slog.Default(); a discarding logger silences it. Not parallel: it
// replaces slog.Default().
func TestDefaultLogger(t *testing.T) {
	pgtest.URL(t)
	logs := logtest.CaptureDefault(t)
	const line = "pgstore: applied migration"

	open(t) // a new schema: the migrations are logged
	n := strings.Count(logs.String(), line)
	if n == 0 {
		t.Fatalf("Open without WithLogger logged nothing to slog.Default():\n%s", logs)
	}
	open(t, pgstore.WithLogger(nil))
	if got := strings.Count(logs.String(), line); got != 2*n {
		t.Fatalf("Open with WithLogger(nil): %d migration lines in slog.Default(), want %d:\n%s", got-n, n, logs)
	}
	open(t, pgstore.WithLogger(slog.New(slog.DiscardHandler)))
	if got := strings.Count(logs.String(), line); got != 2*n {
		t.Fatalf("a discarding logger let %d lines through to slog.Default()", got-2*n)
	}
}
