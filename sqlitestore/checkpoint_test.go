package sqlitestore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
)

// TestBackgroundCheckpoint checks that committed tasks reach the database
// file itself, not only the WAL, without any commit running a checkpoint:
// the writer's automatic checkpoint only starts at walSafetyPages, far more
// than these writes fill.
func TestBackgroundCheckpoint(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tasks.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const n = 200
	for i := range n {
		if err := s.Create(ctx, mkTask(fmt.Sprintf("task-%03d", i))); err != nil {
			t.Fatal(err)
		}
	}
	// A copy of the main file alone (no -wal) holds what was checkpointed.
	inMainFile := func() int {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		cp := filepath.Join(dir, fmt.Sprintf("copy-%d.db", time.Now().UnixNano()))
		if err := os.WriteFile(cp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		db, err := sqlx.Open("sqlite", cp+"?_pragma=query_only(1)")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var got int
		if err := db.Get(&got, "SELECT count(*) FROM tasks"); err != nil {
			return -1 // caught mid-checkpoint: try again
		}
		return got
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got := inMainFile()
		if got == n && s.w.ckpt.runs.Load() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the database file holds %d of %d tasks after %d checkpoints", got, n, s.w.ckpt.runs.Load())
		}
	}
}
