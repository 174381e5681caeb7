package pgstore

import (
	"context"
	"math"
	"strings"
	"testing"
)

// Walk reads an index range of tasks_created forward, whatever the
// position and the plan cache mode: never a pass over the table, never a
// sort.
func TestWalkPlan(t *testing.T) {
	if testing.Short() {
		t.Skip("bulk-loads 50,000 tasks")
	}
	s, _ := openInternal(t)
	ctx := context.Background()
	loadSynthetic(t, s, 50_000)
	conn, err := s.db.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		for _, args := range [][]any{
			{int64(math.MinInt64), "", 2000},
			{explainBase.UnixMilli() + 25_000*60_000, "m", 2000},
		} {
			plan := explain(t, conn, mode, walkTasks, args)
			if !strings.Contains(plan, "Index Scan using tasks_created") || strings.Contains(plan, "Seq Scan") ||
				strings.Contains(plan, "Sort") {
				t.Errorf("%s, %v: plan\n%s", mode, args[:2], plan)
			}
		}
	}
}
