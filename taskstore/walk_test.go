package taskstore

import (
	"math"
	"testing"
	"time"
)

func TestCursor(t *testing.T) {
	at := time.Date(2025, 1, 1, 0, 0, 0, 5_500_000, time.UTC) // 5.5 ms
	task := func(id string, ms int64) Task { return Task{ID: id, CreatedAt: time.UnixMilli(ms)} }
	start := Cursor{}
	if ms, id := start.Key(); ms != math.MinInt64 || id != "" || !start.IsStart() {
		t.Fatalf("start key = %d %q", ms, id)
	}
	if !start.Before(task("x", -5)) || !start.Before(Task{ID: "x"}) {
		t.Fatal("the start is not before every task")
	}
	c := Cursor{CreatedAt: at, ID: "m"}
	ms, id := c.Key()
	if ms != at.UnixMilli() || id != "m" || c.IsStart() {
		t.Fatalf("key = %d %q", ms, id)
	}
	for _, tc := range []struct {
		task  Task
		after bool
	}{
		{task("m", ms), false}, {task("l", ms), false}, {task("n", ms), true}, {task("mm", ms), true},
		{task("a", ms+1), true}, {task("z", ms-1), false}, {task("M", ms), false}, {task("é", ms), true},
	} {
		if got := c.Before(tc.task); got != tc.after {
			t.Errorf("cursor (%d, m) before (%d, %q) = %v, want %v", ms, tc.task.CreatedAt.UnixMilli(), tc.task.ID, got, tc.after)
		}
	}
	if tk := task("q", 7); tk.Cursor() != (Cursor{CreatedAt: tk.CreatedAt, ID: "q"}) {
		t.Fatal("Task.Cursor")
	}
}
