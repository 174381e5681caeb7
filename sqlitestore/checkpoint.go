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
// for when the checkpointer cannot keep up. (With 64 goroutines creating
// about 50,000 small tasks a second for 12 s, the checkpoints found at most
// about 10,500 pages in the WAL: below the net, and the WAL restarted from
// its beginning between them.)
const (
	checkpointEvery = 100 * time.Millisecond
	walSafetyPages  = 16384 // 64 MiB of 4 KiB pages, as journal_size_limit
)

type checkpointer struct {
	db   *sqlx.DB // one connection, not query_only
	log  *slog.Logger
	kick chan struct{}
	stop chan struct{}
	done chan struct{}
	runs atomic.Int64 // checkpoints run (tests read it)

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
	if err := c.db.QueryRowContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)").Scan(&busy, &frames, &copied); err != nil {
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
