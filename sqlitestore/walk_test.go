package sqlitestore

import (
	"path/filepath"
	"slices"
	"testing"
)

// Walk seeks its position in tasks_created and reads forward: the
// row-value comparison is a range of the index, not a filter over a pass
// of the whole table or index.
func TestWalkPlan(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "plan.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	plan := explain(t, s, readWalkSQL, []any{int64(0), "x", int64(10)})
	want := []string{"SEARCH tasks USING INDEX tasks_created ((created_ms,id)>(?,?))"}
	if !slices.Equal(plan, want) {
		t.Fatalf("plan of the walk = %q, want %q", plan, want)
	}
}
