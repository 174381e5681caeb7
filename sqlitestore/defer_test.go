package sqlitestore

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestDeferPlan: DeferDeliveries finds each listed task by a search on an
// index (the outbox's due time and id, or the id), never by a pass over the
// tasks.
func TestDeferPlan(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "tasks.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	plan := explain(t, s, deferSQL, []any{`[["a",1,2]]`})
	joined := strings.Join(plan, "\n")
	if scanTasks.MatchString(joined) || !strings.Contains(joined, "SEARCH tasks USING INDEX") || !strings.Contains(joined, "id=?") {
		t.Fatalf("DeferDeliveries plan:\n%s\nwant a search of tasks by id", joined)
	}
}
