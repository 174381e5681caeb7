package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/tasksapi/tasks/internal/pgtest"
	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// TestLostBatchAnswer: a group-commit batch of creates whose answer is lost
// after the server stored it is retried, and every task of the batch is
// answered success (its own row found), while a task that was there before
// still conflicts.
func TestLostBatchAnswer(t *testing.T) {
	dbURL := pgtest.FreshSchema(t, pgtest.URL(t))
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	p := pgtest.NewProxy(t, u.Host)
	s, err := Open(context.Background(), p.URL(dbURL), WithRetryGrace(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	mk := func(id string) taskstore.Task {
		x, err := storekit.Normalize(taskstore.Task{ID: id, Type: "t", Request: json.RawMessage(`{"id":"` + id + `"}`)}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	if err := s.Create(ctx, mk("b-existing")); err != nil {
		t.Fatal(err)
	}
	var batch []*pendingCreate
	for i := range 8 {
		batch = append(batch, &pendingCreate{ctx: ctx, t: mk(fmt.Sprintf("b-%d", i)), done: make(chan struct{})})
	}
	other := mk("b-existing")
	other.Request = json.RawMessage(`{"another":"request"}`)
	batch = append(batch, &pendingCreate{ctx: ctx, t: other, done: make(chan struct{})})
	done := make(chan struct{})
	p.Cut(&pgtest.Cut{Match: []byte("b-5"), AfterSend: true, Done: done})
	s.insertBatch(batch)
	select {
	case <-done:
	default:
		t.Fatal("the batch's statement was not cut")
	}
	for _, pc := range batch {
		<-pc.done
		switch {
		case pc.t.ID == "b-existing" && !errors.Is(pc.err, taskstore.ErrConflict):
			t.Errorf("%s: %v, want ErrConflict (it was there before)", pc.t.ID, pc.err)
		case pc.t.ID != "b-existing" && pc.err != nil:
			t.Errorf("%s: %v, want success", pc.t.ID, pc.err)
		}
	}
	if _, total, err := s.Find(ctx, taskstore.Filter{}); err != nil || total != 9 {
		t.Fatalf("stored %d tasks (%v), want 9", total, err)
	}
}
