package callback_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tasksapi/tasks/callback"
	"github.com/tasksapi/tasks/taskstore"
)

// A callback given up on (410) is redelivered by Recorder.Redeliver: at
// once (the poll interval is an hour), with the same webhook-id and body,
// as the second attempt; the counters and the hook see it.
func TestRedeliver(t *testing.T) {
	forEachStore(t, func(t *testing.T, store taskstore.Store) {
		rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
			if n == 1 { // the first attempt is answered 410, the next 200
				w.WriteHeader(http.StatusGone)
			}
		})
		var hooked [][]string
		var hookMu sync.Mutex
		rec := newRecorder(t, store, callback.Options{PollInterval: time.Hour, Hooks: callback.Hooks{
			Redelivered: func(_ context.Context, ids []string) {
				hookMu.Lock()
				hooked = append(hooked, slices.Clone(ids))
				hookMu.Unlock()
			},
		}})
		h := rec.Wrap("images_generations", jsonHandler(nil, 200, `{"data":[]}`))
		id := acceptedID(t, post(h, "application/json", `{"prompt":"x","callback_url":"`+rc.URL+`/cb"}`), "")
		if x := waitDelivery(t, store, id); x.CallbackStatus() != taskstore.CallbackFailed || x.Callback.Attempts != 1 {
			t.Fatalf("after 410: %+v", x.Callback)
		}

		got, err := rec.Redeliver(context.Background(), id, "missing")
		if err != nil || !slices.Equal(got, []string{id}) {
			t.Fatalf("Redeliver = %v, %v", got, err)
		}
		x := waitDelivery(t, store, id)
		if x.CallbackStatus() != taskstore.CallbackDelivered || x.Callback.Attempts != 2 || x.Callback.LastStatus != 200 {
			t.Fatalf("after redelivery: %+v", x.Callback)
		}
		d := rc.deliveries()
		if len(d) != 2 || d[0].header.Get("webhook-id") != id || d[1].header.Get("webhook-id") != id || string(d[0].body) != string(d[1].body) {
			t.Fatalf("deliveries: %d, ids %q %q", len(d), d[0].header.Get("webhook-id"), d[len(d)-1].header.Get("webhook-id"))
		}
		// The counters follow the store's record.
		eventually(t, "stats counting the redelivery", func() bool {
			st := rec.Stats()
			return st.Redelivered == 1 && st.Delivered == 1 && st.GivenUp == 1 && st.DeliveriesAttempted == 2
		})
		hookMu.Lock()
		defer hookMu.Unlock()
		if len(hooked) != 1 || !slices.Equal(hooked[0], []string{id}) {
			t.Fatalf("Redelivered hook calls: %v", hooked)
		}
	})
}

// Recover makes due the failed callbacks of tasks finished since a time,
// across several batches, and they are delivered at once.
func TestRecover(t *testing.T) {
	store := newMemStore(t)
	rc := newReceiver(t, nil)
	ctx := context.Background()
	now := time.Now()
	// 1,200 failed callbacks finished in the last minute, a few older
	// ones, and delivered ones: only the first are recovered.
	var want []string
	for i := range 1210 {
		x := taskstore.Task{
			ID: "t-" + string(rune('a'+i%26)) + "-" + time.Duration(i).String(), Type: "images_generations",
			Request:    json.RawMessage(`{}`),
			Response:   json.RawMessage(`{"success":true}`),
			CreatedAt:  now.Add(-time.Hour),
			FinishedAt: now.Add(-time.Duration(i%60) * time.Second),
			Callback:   taskstore.Callback{URL: rc.URL + "/cb", Attempts: 7, LastStatus: 500},
		}
		switch {
		case i >= 1200:
			x.Callback.DeliveredAt, x.Callback.LastStatus = now, 204
		case i%100 == 99:
			x.FinishedAt = now.Add(-2 * time.Hour)
		default:
			want = append(want, x.ID)
		}
		if err := store.Create(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	rec := newRecorder(t, store, callback.Options{PollInterval: time.Hour})
	n, err := rec.Recover(ctx, now.Add(-time.Minute))
	if err != nil || n != len(want) {
		t.Fatalf("Recover = %d, %v; want %d", n, err, len(want))
	}
	eventually(t, "recovered callbacks delivered", func() bool { return rc.count() == len(want) })
	for _, id := range want[:10] {
		if x := getTask(t, store, id); x.CallbackStatus() != taskstore.CallbackDelivered || x.Callback.Attempts != 8 {
			t.Fatalf("%s: %+v", id, x.Callback)
		}
	}
	page, total, err := store.Find(ctx, taskstore.Filter{CallbackStatus: taskstore.CallbackFailed, Limit: 100})
	if err != nil || total != 12 || len(page) != 12 {
		t.Fatalf("failed callbacks left: %d (%v)", total, err)
	}
	if st := rec.Stats(); st.Redelivered != uint64(len(want)) { // counted before Recover returns
		t.Fatalf("stats %+v", st)
	}
	// A cancelled context stops before the store is asked.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if n, err := rec.Recover(cctx, time.Time{}); n != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("Recover with a cancelled context = %d, %v", n, err)
	}
}

func TestRedeliverAfterClose(t *testing.T) {
	store := newMemStore(t)
	rec := newRecorder(t, store, callback.Options{})
	if err := rec.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := rec.Redeliver(context.Background(), "x"); !errors.Is(err, callback.ErrClosed) {
		t.Fatalf("Redeliver after Close: %v", err)
	}
	if _, err := rec.Recover(context.Background(), time.Time{}); !errors.Is(err, callback.ErrClosed) {
		t.Fatalf("Recover after Close: %v", err)
	}
}
