package sqlitestore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/tasksapi/tasks/internal/logtest"
	"github.com/tasksapi/tasks/taskstore"
)

// fillAndPrune stores n tasks of about 3 KB, created a millisecond apart,
// calls filled, and prunes all but the newest keep.
func fillAndPrune(t *testing.T, s *Store, n, keep int, filled func()) {
	t.Helper()
	ctx := context.Background()
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	request := json.RawMessage(`{"prompt":"` + strings.Repeat("x", 3000) + `"}`)
	var batch []taskstore.Task
	for i := range n {
		task := mkTask(fmt.Sprintf("task-%06d", i))
		task.Request, task.CreatedAt = request, base.Add(time.Duration(i)*time.Millisecond)
		batch = append(batch, task)
	}
	if err := s.Import(ctx, batch); err != nil {
		t.Fatal(err)
	}
	filled()
	pruned := 0
	for {
		k, err := s.Prune(ctx, base.Add(time.Duration(n-keep)*time.Millisecond), 500)
		if err != nil {
			t.Fatal(err)
		}
		pruned += k
		if k < 500 {
			break
		}
	}
	if pruned != n-keep {
		t.Fatalf("pruned %d, want %d", pruned, n-keep)
	}
}

// pages returns the database's page_count and freelist_count, read through
// the writer.
func pages(t *testing.T, s *Store) (total, free int64) {
	t.Helper()
	err := s.write(context.Background(), false, func(w *writer) error {
		if err := w.conn.QueryRowContext(context.Background(), "PRAGMA page_count").Scan(&total); err != nil {
			return err
		}
		return w.conn.QueryRowContext(context.Background(), "PRAGMA freelist_count").Scan(&free)
	})
	if err != nil {
		t.Fatal(err)
	}
	return total, free
}

// A new file gives the pages that pruning freed back to the file system,
// beyond the reserve (in whole steps), and the file shrinks; the tasks kept
// are intact.
func TestVacuumGivesSpaceBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	var logs logtest.Buffer
	s, err := Open(path, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.vac == nil {
		t.Fatal("a new file has no vacuumer (auto_vacuum is not INCREMENTAL)")
	}
	const n, keep = 3000, 150
	var before int64
	fillAndPrune(t, s, n, keep, func() { before, _ = pages(t, s) })
	var total, free int64
	deadline := time.Now().Add(30 * time.Second)
	for {
		total, free = pages(t, s)
		if free < max(vacuumKeepPages, (total-free)/8)+vacuumStep { // whole steps only
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: %d pages, %d free", total, free)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("pages: %d before pruning, %d after (%d free); %d given back", before, total, free, s.vac.freed.Load())
	if total >= before || s.vac.freed.Load() == 0 {
		t.Errorf("%d pages after pruning 95%% of the tasks, %d before; %d given back", total, before, s.vac.freed.Load())
	}
	_, count, err := s.Find(context.Background(), taskstore.Filter{})
	if err != nil || count != keep {
		t.Fatalf("Find: %d tasks, %v; want %d", count, err, keep)
	}
	if _, err := s.Get(context.Background(), fmt.Sprintf("task-%06d", n-1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > total*pageSize {
		t.Errorf("file of %d bytes, %d pages", fi.Size(), total)
	}
	if !strings.Contains(logs.String(), "free pages given back") {
		t.Errorf("no log line about the pages given back:\n%s", logs.String())
	}
	db, err := sqlx.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res string
	if err := db.Get(&res, "PRAGMA integrity_check"); err != nil || res != "ok" {
		t.Fatalf("integrity_check: %s %v", res, err)
	}
}

// A file created with auto_vacuum off (by an older version) is used as it
// is: no vacuumer, a log line saying how to get space back, the freed
// pages kept for reuse.
func TestVacuumOffForOldFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	raw, err := sqlx.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec("PRAGMA auto_vacuum = NONE; CREATE TABLE older (x)"); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	var logs logtest.Buffer
	s, err := Open(path, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.vac != nil {
		t.Fatal("a vacuumer on a file with auto_vacuum off")
	}
	if !strings.Contains(logs.String(), "VACUUM it offline") {
		t.Errorf("no hint in the log:\n%s", logs.String())
	}
	fillAndPrune(t, s, 2000, 100, func() {})
	total, free := pages(t, s)
	if free < total/2 {
		t.Errorf("%d free pages of %d: the file was vacuumed", free, total)
	}
}

// TestOpenLeavesFileAlone: opening and closing an existing, up-to-date file
// writes nothing to it (setting auto_vacuum is a write, given to new files
// only), and a new file gets auto_vacuum=INCREMENTAL.
func TestOpenLeavesFileAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(context.Background(), mkTask("task-1")); err != nil {
		t.Fatal(err)
	}
	if s.vac == nil {
		t.Fatal("a new file has auto_vacuum off")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		s, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if s.vac == nil {
			t.Fatal("the reopened file has auto_vacuum off")
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		for i := range min(len(before), len(after)) {
			if before[i] != after[i] {
				t.Fatalf("open and close changed the file: byte %d %#x -> %#x (sizes %d, %d)", i, before[i], after[i], len(before), len(after))
			}
		}
		t.Fatalf("open and close changed the file's size: %d -> %d", len(before), len(after))
	}
}
