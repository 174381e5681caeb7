package reliability

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/sqlitestore"
	"github.com/tasksapi/tasks/taskstore"
)

// mountTmpfs mounts a tmpfs of the given size (e.g. "512k") on a new
// directory and unmounts it at the end of the test. It skips the test when
// mounting is not permitted.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := filepath.Join(t.TempDir(), "tmpfs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount -t tmpfs is not permitted here: %v %s", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			exec.Command("umount", "-l", dir).Run()
			t.Logf("umount %s: %v %s", dir, err, out)
		}
	})
	return dir
}

// sqlWords are fragments of SQL that must never reach an error message.
var sqlWords = []string{"SELECT", "INSERT", "UPDATE ", "DELETE FROM", "CREATE TABLE", "WHERE", "PRAGMA"}

// checkCleanError fails the test when err's message carries SQL text or
// one of the paths.
func checkCleanError(t *testing.T, what string, err error, paths ...string) {
	t.Helper()
	msg := err.Error()
	for _, w := range sqlWords {
		if strings.Contains(msg, w) {
			t.Errorf("%s: the error carries SQL (%q): %s", what, w, msg)
		}
	}
	for _, p := range paths {
		if strings.Contains(msg, p) {
			t.Errorf("%s: the error carries the path %s: %s", what, p, msg)
		}
	}
	if !strings.HasPrefix(msg, "sqlitestore: ") {
		t.Errorf("%s: the error does not say where it comes from: %s", what, msg)
	}
}

func diskTask(id string, size int) taskstore.Task {
	return taskstore.Task{
		ID: id, Type: "images_generations", TraceID: "disk",
		Request:  json.RawMessage(`{"prompt":"` + strings.Repeat("p", size) + `"}`),
		Callback: taskstore.Callback{URL: "https://example.com/cb"},
	}
}

// TestDisk: the SQLite store on a read-only database, on a database whose
// directory was deleted while open, and on a full disk. Errors are clear
// (no panic; method errors carry neither SQL nor paths), and nothing is half
// written: a write that failed is not visible, what succeeded is, and the
// file passes PRAGMA integrity_check.
func TestDisk(t *testing.T) {
	t.Run("ReadOnly", testReadOnly)
	t.Run("DirectoryDeleted", testDirectoryDeleted)
	t.Run("FullDisk", testFullDisk)
}

func testReadOnly(t *testing.T) {
	ctx := context.Background()
	var dir string
	var makeRO, makeRW func() error
	if os.Geteuid() == 0 {
		// Root writes through file modes: use a read-only mount instead.
		dir = mountTmpfs(t, "4m")
		makeRO = func() error { return remount(dir, "ro") }
		makeRW = func() error { return remount(dir, "rw") }
	} else {
		dir = filepath.Join(t.TempDir(), "ro")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		makeRO = func() error {
			os.Chmod(filepath.Join(dir, "tasks.db"), 0o444)
			return os.Chmod(dir, 0o555)
		}
		makeRW = func() error {
			os.Chmod(dir, 0o755)
			return os.Chmod(filepath.Join(dir, "tasks.db"), 0o644)
		}
	}
	path := filepath.Join(dir, "tasks.db")
	st, err := sqlitestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	kept := diskTask("kept", 10)
	if err := st.Create(ctx, kept); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := makeRO(); err != nil {
		t.Skipf("cannot make the database read-only: %v", err)
	}
	t.Cleanup(func() { makeRW() })
	if f, err := os.Create(filepath.Join(dir, "probe")); err == nil {
		f.Close()
		t.Skip("the directory is still writable (file modes do not bind this user); cannot test a read-only database")
	}

	st, err = sqlitestore.Open(path)
	if err != nil {
		// Open errors name the path (they are for the operator who chose
		// it) but carry no SQL.
		checkCleanError(t, "Open", err)
		if !strings.Contains(err.Error(), path) {
			t.Errorf("Open error does not name the database: %v", err)
		}
		t.Logf("read-only: Open refuses: %v", err)
	} else {
		got, gerr := st.Get(ctx, "kept")
		cerr := st.Create(ctx, diskTask("new", 10))
		switch {
		case gerr != nil:
			t.Errorf("read-only: Get of a stored task: %v", gerr)
		case got.ID != "kept":
			t.Errorf("read-only: Get returned %+v", got)
		case cerr == nil:
			t.Errorf("read-only: Create succeeded on a read-only database")
		}
		if cerr != nil {
			checkCleanError(t, "Create", cerr, path, dir)
			if _, err := st.Get(ctx, "new"); !errors.Is(err, taskstore.ErrNotFound) {
				t.Errorf("read-only: the failed Create is visible: %v", err)
			}
		}
		t.Logf("read-only: Open works, Create fails: %v", cerr)
		st.Close()
	}

	if err := makeRW(); err != nil {
		t.Fatal(err)
	}
	if res := integrityCheck(t, path); res != "ok" {
		t.Errorf("PRAGMA integrity_check: %s", res)
	}
	st, err = sqlitestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Get(ctx, "kept"); err != nil {
		t.Errorf("after the read-only episode, the stored task: %v", err)
	}
	if _, err := st.Get(ctx, "new"); !errors.Is(err, taskstore.ErrNotFound) {
		t.Errorf("after the read-only episode, the refused task: %v", err)
	}
}

func remount(dir, mode string) error {
	if out, err := exec.Command("mount", "-o", "remount,"+mode, dir).CombinedOutput(); err != nil {
		return fmt.Errorf("mount -o remount,%s: %v %s", mode, err, bytes.TrimSpace(out))
	}
	return nil
}

func testDirectoryDeleted(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "db")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "tasks.db")
	st, err := sqlitestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Create(ctx, diskTask("before", 10)); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}

	// The open store works on the unlinked file or fails cleanly; either
	// way what it reports is what Get and Find show.
	okCreates, failed := 1, 0
	for i := range 50 {
		id := fmt.Sprintf("after-%d", i)
		err := st.Create(ctx, diskTask(id, 100))
		_, gerr := st.Get(ctx, id)
		switch {
		case err != nil:
			failed++
			checkCleanError(t, "Create", err, path, dir)
			if !errors.Is(gerr, taskstore.ErrNotFound) && gerr != nil {
				checkCleanError(t, "Get", gerr, path, dir)
			} else if gerr == nil {
				t.Errorf("Create %s failed (%v) but Get finds the task", id, err)
			}
		case gerr != nil:
			t.Errorf("Create %s succeeded but Get fails: %v", id, gerr)
		default:
			okCreates++
		}
	}
	if okCreates > 1 {
		t.Errorf("%d Creates were acknowledged after the database directory was deleted; they would be lost at Close", okCreates-1)
	}
	if err := st.Finish(ctx, "before", json.RawMessage(`{"success":true}`), zeroTime); !errors.Is(err, sqlitestore.ErrFileGone) {
		t.Errorf("Finish after the directory was deleted: %v, want ErrFileGone", err)
	} else {
		checkCleanError(t, "Finish", err, path, dir)
	}
	if _, total, err := st.Find(ctx, taskstore.Filter{}); err != nil {
		checkCleanError(t, "Find", err, path, dir)
	} else if total != okCreates {
		t.Errorf("Find counts %d tasks; %d Creates succeeded", total, okCreates)
	}
	if err := st.Close(); err != nil {
		checkCleanError(t, "Close", err, path, dir)
	}
	_, err = sqlitestore.Open(path)
	if err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Open in the deleted directory: %v; want an error saying the directory does not exist", err)
	}
	t.Logf("directory deleted while open: %d of 50 later Creates failed cleanly; reopening: %v", failed, err)
}

func testFullDisk(t *testing.T) {
	ctx := context.Background()
	dir := mountTmpfs(t, "512k")
	path := filepath.Join(dir, "tasks.db")
	st, err := sqlitestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			st.Close()
		}
	}()
	var stored []taskstore.Task
	var fullErr error
	var failedID string
	for i := range 1000 {
		task := diskTask(fmt.Sprintf("task-%03d", i), 8000)
		if err := st.Create(ctx, task); err != nil {
			fullErr, failedID = err, task.ID
			break
		}
		stored = append(stored, task)
	}
	if fullErr == nil {
		t.Fatal("1000 tasks of 8 KB fit on a 512 KiB tmpfs")
	}
	checkCleanError(t, "Create on a full disk", fullErr, path, dir)
	var se *sqlitestore.Error
	if !errors.As(fullErr, &se) || se.Code != "SQLITE_FULL" {
		t.Errorf("Create on a full disk: %v (%T); want a *sqlitestore.Error with SQLITE_FULL", fullErr, fullErr)
	}
	if _, err := st.Get(ctx, failedID); !errors.Is(err, taskstore.ErrNotFound) {
		t.Errorf("the Create that failed is visible: %v", err)
	}
	// What succeeded is intact and counted.
	check := func(st taskstore.Store, when string) {
		t.Helper()
		if _, total, err := st.Find(ctx, taskstore.Filter{}); err != nil || total != len(stored) {
			t.Errorf("%s: Find total %d (%v); %d Creates succeeded", when, total, err, len(stored))
		}
		for _, want := range stored {
			got, err := st.Get(ctx, want.ID)
			if err != nil || !bytes.Equal(got.Request, want.Request) {
				t.Errorf("%s: task %s: %v", when, want.ID, err)
			}
		}
	}
	check(st, "on the full disk")

	// A Finish with a large response fails whole or succeeds whole.
	big := json.RawMessage(`{"success":false,"error":{"code":"api_error","message":"` + strings.Repeat("m", 64000) + `"}}`)
	ferr := st.Finish(ctx, stored[0].ID, big, zeroTime)
	got, err := st.Get(ctx, stored[0].ID)
	switch {
	case err != nil:
		t.Errorf("Get after Finish on a full disk: %v", err)
	case ferr != nil && (got.Finished() || got.Response != nil || got.CallbackStatus() != taskstore.CallbackWaiting):
		t.Errorf("Finish failed (%v) but the task shows finished=%v, response %d bytes, delivery %s",
			ferr, got.Finished(), len(got.Response), got.CallbackStatus())
	case ferr == nil && (!got.Finished() || !bytes.Equal(got.Response, big) || got.CallbackStatus() != taskstore.CallbackPending):
		t.Errorf("Finish succeeded but the task shows finished=%v, delivery %s", got.Finished(), got.CallbackStatus())
	}
	if ferr != nil {
		checkCleanError(t, "Finish on a full disk", ferr, path, dir)
	}
	derr := st.Delete(ctx, stored[1].ID)
	if derr != nil {
		checkCleanError(t, "Delete on a full disk", derr, path, dir)
		if _, err := st.Get(ctx, stored[1].ID); err != nil {
			t.Errorf("Delete failed (%v) but the task is gone: %v", derr, err)
		}
	} else {
		stored = append(stored[:1], stored[2:]...)
	}
	if ferr == nil {
		stored[0].Response = big
	}
	closed = true
	if err := st.Close(); err != nil {
		checkCleanError(t, "Close on a full disk", err, path, dir)
	}
	if res := integrityCheck(t, path); res != "ok" {
		t.Errorf("PRAGMA integrity_check: %s", res)
	}
	st2, err := sqlitestore.Open(path)
	if err != nil {
		t.Fatalf("reopening after the disk filled up: %v", err)
	}
	defer st2.Close()
	check(st2, "after reopening")
	t.Logf("full disk: %d tasks stored, then Create: %v; Finish: %v; Delete: %v; integrity ok, reopened with the same %d tasks",
		len(stored)+btoi(derr == nil), fullErr, ferr, derr, len(stored))
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// zeroTime asks a store for the current time.
var zeroTime time.Time
