package sqlitestore_test

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/tasksapi/tasks/internal/logtest"
	"github.com/tasksapi/tasks/sqlitestore"
)

// TestDefaultLogger: without WithLogger, or with WithLogger(nil), the store
// logs to slog.Default(); a discarding logger silences it. Not parallel: it
// replaces slog.Default().
func TestDefaultLogger(t *testing.T) {
	logs := logtest.CaptureDefault(t)
	const line = "sqlitestore: schema migrated"

	mustOpen(t) // a new file: the migrations are logged
	n := strings.Count(logs.String(), line)
	if n == 0 {
		t.Fatalf("Open without WithLogger logged nothing to slog.Default():\n%s", logs)
	}
	mustOpen(t, sqlitestore.WithLogger(nil))
	if got := strings.Count(logs.String(), line); got != 2*n {
		t.Fatalf("Open with WithLogger(nil): %d migration lines in slog.Default(), want %d:\n%s", got-n, n, logs)
	}
	mustOpen(t, sqlitestore.WithLogger(slog.New(slog.DiscardHandler)))
	if got := strings.Count(logs.String(), line); got != 2*n {
		t.Fatalf("a discarding logger let %d lines through to slog.Default()", got-2*n)
	}
}
