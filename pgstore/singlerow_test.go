package pgstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// TestSingleRowPlans: the statements on rows found by id read them through
// the primary key, custom and generic plans alike, even with statistics
// that take the partial indexes for empty: the table was analysed while
// every task was unfinished and no callback pending, and then a few
// thousand tasks finished.
func TestSingleRowPlans(t *testing.T) {
	s, _ := openInternal(t)
	ctx := context.Background()
	if _, err := s.db.ExecContext(ctx, `ALTER TABLE tasks SET (autovacuum_enabled = off)`); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i := range 1000 {
		if err := s.Create(ctx, taskstore.Task{ID: fmt.Sprintf("u%05d", i), Type: "t", Request: json.RawMessage(`{}`),
			Callback: taskstore.Callback{URL: "http://r/"}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.db.ExecContext(ctx, `ANALYZE tasks`); err != nil {
		t.Fatal(err)
	}
	for i := range 3000 {
		id := fmt.Sprintf("f%05d", i)
		if err := s.Create(ctx, taskstore.Task{ID: id, Type: "t", Request: json.RawMessage(`{}`),
			Callback: taskstore.Callback{URL: "http://r/"}}); err != nil {
			t.Fatal(err)
		}
		if err := s.Finish(ctx, id, json.RawMessage(`{}`), now); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := s.db.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ms := now.UnixMilli()
	for _, stmt := range []struct {
		name, sql string
		args      []any
	}{
		{"start", startTask, []any{"u00001", ms}},
		{"finish", finishTask, []any{"u00001", "{}", ms, true}},
		{"record", recordAttempt, []any{"f00001", 204, "", ms, int64(0)}},
		{"renew", renewLeases, []any{[]string{"u00001", "u00002"}, ms}},
		{"startBatch", startBatch, []any{[]string{"u00001", "u00002"}, []int64{ms, ms}}},
		{"finishBatch", finishBatch, []any{[]string{"u00001", "u00002"}, []string{`{}`, `{}`}, []int64{ms, ms}, []bool{true, true}}},
		{"recordBatch", recordBatch, []any{[]string{"f00001", "f00002"}, []int32{204, 204}, []string{"", ""}, []int64{ms, ms}, []int64{0, 0}}},
	} {
		for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
			plan := explain(t, conn, mode, stmt.sql, stmt.args)
			for _, partial := range []string{"tasks_outbox", "tasks_unfinished", "tasks_failed", "tasks_callback_failed"} {
				if strings.Contains(plan, "using "+partial+" ") || strings.Contains(plan, "on "+partial+" ") {
					t.Errorf("%s (%s) reads the partial index %s instead of the primary key:\n%s", stmt.name, mode, partial, plan)
				}
			}
			if !strings.Contains(plan, "tasks_pkey") {
				t.Errorf("%s (%s) does not use the primary key:\n%s", stmt.name, mode, plan)
			}
		}
	}
}
