// Package logtest captures what is logged through slog.Default() during a
// test.
package logtest

import (
	"bytes"
	"log"
	"log/slog"
	"sync"
	"testing"
)

// Buffer is a concurrency-safe log sink.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what was logged so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// CaptureDefault makes slog.Default() write text records (Debug and up) to
// the returned Buffer until the test ends, then restores slog.Default() and
// the log package's output. It changes process-wide state: the test must
// not be parallel, nor run in parallel with tests that log.
func CaptureDefault(t testing.TB) *Buffer {
	t.Helper()
	old, oldOut, oldFlags := slog.Default(), log.Writer(), log.Flags()
	b := &Buffer{}
	slog.SetDefault(slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() {
		slog.SetDefault(old)
		// SetDefault redirected the log package to the capturing handler;
		// restoring the original default logger does not undo that.
		log.SetOutput(oldOut)
		log.SetFlags(oldFlags)
	})
	return b
}
