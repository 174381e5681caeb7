package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// Space.
//
// Deleting tasks (Prune, Delete) frees pages inside the database file: they
// go to SQLite's freelist and are reused by later writes, but the file does
// not shrink by itself. A file created by this package has
// auto_vacuum=INCREMENTAL (set in the writer's connection string, which
// SQLite honours only while a database has no tables), which lets
// PRAGMA incremental_vacuum move pages from the end of the file into free
// ones and cut the end off.
//
// After writes that deleted tasks, the vacuumer gives back the free pages
// beyond a reserve, vacuumStep pages per write call (a solo transaction of
// the writer, like Import) and only whole steps, pausing after each call
// nine times as long as it took: a tenth of the writer's time at most, and
// less when the writer is busy. (A pruning pass frees pages the whole time;
// giving them back after each of its writes, in steps of some 90 pages at a
// quarter of the writer's time, made submits 1.35x slower at p99 under 16
// clients, against 1.05x this way.) The reserve, max(vacuumKeepPages, an
// eighth of the pages in use), stays in the file for the next writes to
// reuse: a retention that prunes a little every hour frees about what the
// next hour writes, and giving that back would only make the file grow it
// again.
//
// A file created before (auto_vacuum off) keeps its size: its free pages
// are reused, never given back. Changing that takes a VACUUM, which rewrites
// the whole file, needs as much free disk again and holds the database
// while it runs, so Open does not do it; the README gives the command (run
// with tasksd stopped) and the time it takes.
const (
	vacuumStep      = 512  // 2 MiB of 4 KiB pages per write call
	vacuumKeepPages = 1024 // 4 MiB
	vacuumShare     = 0.1
	vacuumQuiet     = 10 * time.Second
)

// vacuumer gives free pages back to the file system in the background.
type vacuumer struct {
	s      *Store
	log    *slog.Logger
	kick   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	freed atomic.Int64 // pages given back (tests read it)
}

// newVacuumer starts a vacuumer and has it look at the free pages at once.
func newVacuumer(s *Store, log *slog.Logger) *vacuumer {
	v := &vacuumer{s: s, log: log, kick: make(chan struct{}, 1), done: make(chan struct{})}
	v.ctx, v.cancel = context.WithCancel(context.Background())
	v.kick <- struct{}{}
	go v.run()
	return v
}

// deleted tells the vacuumer that tasks were deleted. It never blocks.
func (v *vacuumer) deleted() {
	if v == nil {
		return
	}
	select {
	case v.kick <- struct{}{}:
	default:
	}
}

// run gives pages back after each kick until none beyond the reserve are
// left. It logs one line for a run of such work, once no kick came for
// vacuumQuiet (a pruning pass kicks it after each batch), or at Close.
func (v *vacuumer) run() {
	defer close(v.done)
	ctx := v.ctx
	quiet := time.NewTimer(0)
	<-quiet.C
	var (
		start time.Time
		freed int64 // since start
	)
	report := func() {
		if freed > 0 {
			v.log.Info("sqlitestore: free pages given back to the file system", "mib", freed*pageSize>>20,
				"took", time.Since(start).Round(time.Millisecond).String())
		}
		freed = 0
	}
	for {
		select {
		case <-ctx.Done():
			report()
			return
		case <-quiet.C:
			report()
			continue
		case <-v.kick:
		}
		if freed == 0 {
			start = time.Now()
		}
		for {
			t0 := time.Now()
			n, more, err := v.step(ctx)
			freed += n
			v.freed.Add(n)
			if err != nil {
				if ctx.Err() == nil {
					v.log.Warn("sqlitestore: giving free pages back to the file system", "err", err)
				}
				break
			}
			if !more || !pause(ctx, time.Since(t0), vacuumShare) {
				break
			}
		}
		quiet.Reset(vacuumQuiet)
	}
}

// extraPages is how many free pages of the database q reads lie beyond
// the reserve.
func extraPages(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (int64, error) {
	var free, total int64
	if err := q.QueryRowContext(ctx, "PRAGMA freelist_count").Scan(&free); err != nil {
		return 0, err
	}
	if err := q.QueryRowContext(ctx, "PRAGMA page_count").Scan(&total); err != nil {
		return 0, err
	}
	return free - max(vacuumKeepPages, (total-free)/8), nil
}

// step gives back vacuumStep of the free pages beyond the reserve, in one
// write call, when there are that many; more reports that another step
// could follow. It looks first through the checkpointer's connection, so
// that the writer is not asked for nothing.
func (v *vacuumer) step(ctx context.Context) (freed int64, more bool, err error) {
	if extra, err := extraPages(ctx, v.s.w.ckpt.db); err != nil || extra < vacuumStep {
		return 0, false, err
	}
	err = v.s.submit(ctx, true, true, func(w *writer) error {
		freed, more = 0, false
		extra, err := extraPages(ctx, w.conn)
		if err != nil || extra < vacuumStep {
			return err
		}
		// PRAGMA takes no parameters; vacuumStep is a constant.
		if _, err := w.conn.ExecContext(ctx, fmt.Sprintf("PRAGMA incremental_vacuum(%d)", vacuumStep)); err != nil {
			return err
		}
		freed, more = vacuumStep, extra >= 2*vacuumStep
		return nil
	})
	return freed, more, err
}

// close stops the vacuumer and waits for it; a step the writer has begun
// completes.
func (v *vacuumer) close() {
	if v == nil {
		return
	}
	v.cancel()
	<-v.done
}

// pause waits (1-share)/share times as long as the work took (at least a
// millisecond, so that writes queued behind it go first); it reports false
// when ctx ends first.
func pause(ctx context.Context, took time.Duration, share float64) bool {
	t := time.NewTimer(max(time.Duration(float64(took)*(1-share)/share), time.Millisecond))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// autoVacuumIncremental is PRAGMA auto_vacuum's value for INCREMENTAL.
const autoVacuumIncremental = 2
