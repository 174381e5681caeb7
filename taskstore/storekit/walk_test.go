package storekit_test

import (
	"math"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

func TestCursor(t *testing.T) {
	at := time.Date(2025, 1, 1, 0, 0, 0, 5_500_000, time.UTC) // 5.5 ms
	task := func(id string, ms int64) taskstore.Task {
		return taskstore.Task{ID: id, CreatedAt: time.UnixMilli(ms)}
	}
	start := taskstore.Cursor{}
	if ms, id := storekit.CursorKey(start); ms != math.MinInt64 || id != "" || !start.IsStart() {
		t.Fatalf("start key = %d %q", ms, id)
	}
	if !storekit.CursorBefore(start, task("x", -5)) || !storekit.CursorBefore(start, taskstore.Task{ID: "x"}) {
		t.Fatal("the start is not before every task")
	}
	c := taskstore.Cursor{CreatedAt: at, ID: "m"}
	ms, id := storekit.CursorKey(c)
	if ms != at.UnixMilli() || id != "m" || c.IsStart() {
		t.Fatalf("key = %d %q", ms, id)
	}
	for _, tc := range []struct {
		task  taskstore.Task
		after bool
	}{
		{task("m", ms), false}, {task("l", ms), false}, {task("n", ms), true}, {task("mm", ms), true},
		{task("a", ms+1), true}, {task("z", ms-1), false}, {task("M", ms), false}, {task("é", ms), true},
	} {
		if got := storekit.CursorBefore(c, tc.task); got != tc.after {
			t.Errorf("cursor (%d, m) before (%d, %q) = %v, want %v", ms, tc.task.CreatedAt.UnixMilli(), tc.task.ID, got, tc.after)
		}
	}
	if tk := task("q", 7); tk.Cursor() != (taskstore.Cursor{CreatedAt: tk.CreatedAt, ID: "q"}) {
		t.Fatal("Task.Cursor")
	}
}
