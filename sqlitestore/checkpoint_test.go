package sqlitestore

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
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

// TestWALRestarted writes until the checkpointer has restarted the WAL a
// few times and checks that the WAL file, which the writes grew past
// journal_size_limit, came back down to it: once the WAL holds
// walTargetPages, a RESTART checkpoint lets the next commit start it over
// and cut the file. Before, the file stayed at its largest (up to 64 MiB)
// for as long as writes went on.
func TestWALRestarted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	request := json.RawMessage(`{"prompt":"` + strings.Repeat("x", 3000) + `"}`) // about a page a task
	const limit = walTargetPages * pageSize
	var largest int64
	exceeded, shrank := false, false
	for i := 0; s.w.ckpt.restarts.Load() < 3; i++ {
		if i > 40*walSafetyPages {
			t.Fatalf("%d RESTART checkpoints after %d tasks", s.w.ckpt.restarts.Load(), i)
		}
		task := mkTask(fmt.Sprintf("task-%06d", i))
		task.Request = request
		if err := s.Create(ctx, task); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path + "-wal")
		if err != nil {
			t.Fatal(err)
		}
		largest = max(largest, fi.Size())
		exceeded = exceeded || fi.Size() > limit
		shrank = shrank || (exceeded && fi.Size() <= limit)
	}
	t.Logf("%d RESTART checkpoints; the WAL file reached %.1f MiB", s.w.ckpt.restarts.Load(), float64(largest)/(1<<20))
	if !exceeded || !shrank {
		t.Errorf("the WAL file exceeded %d bytes: %v; came back down to it: %v", limit, exceeded, shrank)
	}
}
