package sqlitestore

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
)

// Checkpoints.
//
// In WAL mode, commits append pages to the -wal file and a checkpoint copies
// them back into the database file, syncing both. By default SQLite runs
// that checkpoint inside the COMMIT that brings the WAL past 1000 pages, so
// with a single writer every write waits for it, and frequent checkpoints
// copy the same hot pages (index ends, the newest table pages) again and
// again.
//
// The store instead runs checkpoints on a connection of their own, in a
// goroutine, while the writer goes on committing: after a commit, at most
// once per checkpointEvery, a PASSIVE checkpoint copies what the WAL holds
// (PASSIVE never waits for readers or the writer). The writer connection
// keeps an automatic checkpoint only as a safety net, at walSafetyPages,
// for when the checkpointer cannot keep up.
//
// A checkpoint copies the WAL but does not empty it: the writer starts the
// WAL over from its beginning only when, as it begins a transaction, every
// frame has been copied and no reader still reads from the WAL. Under a
// steady load new frames arrive while each PASSIVE checkpoint runs, so that
// moment never comes and the WAL grew to the safety net (64 MiB, in bursts
// beyond it) and stayed there. So once the WAL holds walTargetPages, the
// checkpointer asks for a RESTART checkpoint: it takes the write lock
// (writes wait meanwhile), copies the few frames the last PASSIVE one left,
// waits for the readers still on the WAL to finish, and leaves the WAL to
// be started over by the next commit, which also cuts the file down to
// journal_size_limit (walTargetPages as well). The checkpointer waits at
// most restartWait for the lock and the readers (its connection's busy
// timeout); when it gives up (a long read), it tries again after the next
// commits.
//
// The target trades the WAL's size for the writes' waits. Under 16 clients
// submitting, retrieving and listing for two minutes (the long profile of
// internal/reliability TestLongRunWAL, one run each on a shared 2-core
// machine), a 16 MiB target restarted the WAL 2.3 times a second, each
// RESTART taking 10 ms on average (its wait for the lock included), and
// took 1,506 submits a second against 1,318 without restarts (whose WAL
// stayed at 64 MiB): no loss within the machine's noise. A 4 MiB target
// restarted it 5.5 times a second, 14 ms each, and took 1,254.
//
// A writer faster than the checkpoints (one goroutine committing 3 KB tasks
// one by one, some 200 MiB of WAL a second) still outruns them between two
// restarts, and the safety net, which skips its turn while the
// checkpointer holds the checkpoint lock, does not bound it either: the
// WAL file then peaks at 90 to 100 MiB, as it did without restarts.
const (
	checkpointEvery = 100 * time.Millisecond
	walSafetyPages  = 16384 // 64 MiB of 4 KiB pages
	walTargetPages  = 4096  // 16 MiB
	pageSize        = 4096  // SQLite's default, which the store keeps
	restartWait     = 50 * time.Millisecond
)

type checkpointer struct {
	db       *sqlx.DB // one connection, not query_only
	log      *slog.Logger
	kick     chan struct{}
	stop     chan struct{}
	done     chan struct{}
	runs     atomic.Int64 // checkpoints run (tests read it)
	restarts atomic.Int64 // RESTART checkpoints that completed

	failing  bool      // the last checkpoint failed
	lastWarn time.Time // when a failure was last logged
}

func newCheckpointer(db *sqlx.DB, log *slog.Logger) *checkpointer {
	c := &checkpointer{db: db, log: log, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c
}

// committed tells the checkpointer that the WAL grew. It never blocks.
func (c *checkpointer) committed() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *checkpointer) run() {
	defer close(c.done)
	pause := time.NewTimer(0)
	defer pause.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-c.kick:
		}
		c.checkpoint()
		pause.Reset(checkpointEvery)
		select {
		case <-c.stop:
			return
		case <-pause.C:
		}
	}
}

func (c *checkpointer) checkpoint() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var busy, frames, copied int
	err := c.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied)
	if err == nil && frames >= walTargetPages {
		err = c.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(RESTART)").Scan(&busy, &frames, &copied)
		if err == nil && busy == 0 {
			c.restarts.Add(1)
		}
	}
	if err != nil {
		// Logged once a minute at most: a full disk would fail every
		// attempt, after every commit.
		if time.Since(c.lastWarn) >= time.Minute {
			c.log.Warn("sqlitestore: checkpoint failed; retrying after the next commits", "err", err)
			c.lastWarn = time.Now()
		}
		c.failing = true
		return
	}
	if c.failing {
		c.log.Info("sqlitestore: checkpoints work again")
		c.failing = false
	}
	c.runs.Add(1)
}

// close stops the goroutine (a checkpoint under way completes) and closes
// the connection.
func (c *checkpointer) close() error {
	close(c.stop)
	<-c.done
	return c.db.Close()
}
