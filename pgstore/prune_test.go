package pgstore

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// stripeRows counts the count rows not folded yet.
func stripeRows(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.db.QueryRow(`SELECT count(*) FROM task_counts WHERE stripe >= 0`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A pass of Prune calls folds the count stripes now and then, not after
// each call, and always at its end (a call that deletes fewer than its
// limit); the counts stay exact throughout.
func TestPruneFoldsNowAndThen(t *testing.T) {
	s, _ := openInternal(t)
	ctx := context.Background()
	base := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	for i := range 30 {
		x := taskstore.Task{ID: fmt.Sprintf("p-%02d", i), Type: "t", UserID: fmt.Sprint("u", i%3),
			Request: json.RawMessage(`{}`), CreatedAt: base.Add(time.Duration(i) * time.Millisecond)}
		if err := s.Create(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	cut := base.Add(20 * time.Millisecond)
	if n, err := s.Prune(ctx, cut, 5); err != nil || n != 5 {
		t.Fatalf("first Prune: %d, %v", n, err)
	}
	if got := stripeRows(t, s); got != 0 {
		t.Fatalf("%d stripe rows after the first Prune, want 0: it folds when it has not yet", got)
	}
	// Another replica's writes (here: this one's) make stripes again.
	if err := s.Create(ctx, taskstore.Task{ID: "late", Type: "t", UserID: "u9", Request: json.RawMessage(`{}`), CreatedAt: base.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Prune(ctx, cut, 5); err != nil || n != 5 {
		t.Fatalf("second Prune: %d, %v", n, err)
	}
	if got := stripeRows(t, s); got == 0 {
		t.Fatal("the second full Prune, right after a fold, folded again")
	}
	checkCounters(t, s)
	for {
		n, err := s.Prune(ctx, cut, 5)
		if err != nil {
			t.Fatal(err)
		}
		if n < 5 {
			break
		}
	}
	if got := stripeRows(t, s); got != 0 {
		t.Fatalf("%d stripe rows after the pass ended, want 0", got)
	}
	checkCounters(t, s)
}
