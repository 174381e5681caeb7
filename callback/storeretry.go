package callback

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// DefaultStoreGrace is how long the recorder keeps retrying a write the
// store reports unavailable, unless Options.StoreGrace says otherwise.
const DefaultStoreGrace = 5 * time.Minute

// Backoff between the rounds of retryUnavailable: from storeRetryFirst,
// doubling, up to storeRetryMax, so that a write lands within about a
// second of the store answering again.
const (
	storeRetryFirst = 100 * time.Millisecond
	storeRetryMax   = time.Second
)

// untilStored runs one of the writes whose result must not be lost (Start,
// Finish, RecordAttempt) until the store takes it: system failures are
// retried as retryStore does and, while the store reports
// taskstore.ErrUnavailable (a database restarting, a network cut), again
// and again for up to Options.StoreGrace, the result waiting in memory. It
// gives up when ctx ends (Close gave up waiting): ctx bounds every store
// call too. f must be safe to repeat: the Store contract makes these three
// writes so when they are given the same arguments, explicit times
// included (a repeat of a write whose answer was lost succeeds).
func (r *Recorder) untilStored(ctx context.Context, what, taskID string, f func(ctx context.Context) error) error {
	began := time.Now()
	err := r.retryUnavailable(ctx, r.o.StoreGrace, what, taskID, f)
	if err == nil && time.Since(began) > storeRetryFirst {
		r.log.Debug("callback: stored after retrying", "what", what, "task_id", taskID, "waited", time.Since(began).Round(time.Millisecond))
	}
	return err
}

// retryUnavailable calls f through retryStore, and again with backoff while
// it fails with taskstore.ErrUnavailable, for up to grace or until ctx
// ends. The first unavailable failure is logged (Warn) with what was being
// written, and the success that follows it (Info).
func (r *Recorder) retryUnavailable(ctx context.Context, grace time.Duration, what, taskID string, f func(ctx context.Context) error) error {
	var since time.Time
	pause := storeRetryFirst
	for {
		err := r.retryStore(ctx, f)
		switch {
		case err == nil:
			if !since.IsZero() {
				r.log.LogAttrs(ctx, slog.LevelInfo, "callback: the store answered again; written",
					slog.String("what", what), slog.String("task_id", taskID),
					slog.Duration("waited", time.Since(since).Round(time.Millisecond)))
			}
			return nil
		case !errors.Is(err, taskstore.ErrUnavailable):
			return err
		}
		if since.IsZero() {
			since = time.Now()
			r.log.LogAttrs(ctx, slog.LevelWarn, "callback: store unavailable; retrying",
				slog.String("what", what), slog.String("task_id", taskID), slog.Duration("for_up_to", grace),
				slog.String("err", err.Error()))
		}
		left := grace - time.Since(since)
		if left <= 0 {
			return err
		}
		t := time.NewTimer(min(pause, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		pause = min(2*pause, storeRetryMax)
	}
}
