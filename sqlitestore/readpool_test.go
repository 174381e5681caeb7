package sqlitestore

import (
	"context"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// TestDriverBlobsAreFresh pins what the read path relies on to hand out the
// request and response as slices of the packed row without copying them:
// the driver returns each BLOB in a new buffer of its own, which neither a
// later row nor closing the rows overwrites. (database/sql/driver allows a
// driver to reuse the buffer; modernc.org/sqlite does not. Should an upgrade
// change that, this test fails.)
func TestDriverBlobsAreFresh(t *testing.T) {
	s := openInternal(t)
	ctx := context.Background()
	c, err := s.reads.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s.reads.release(ctx, c, nil)
	st, err := c.prepare(ctx, `SELECT CAST(v AS BLOB) FROM (SELECT 'first row' AS v UNION ALL SELECT 'other row')`)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rows, err := st.QueryContext(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	dest := make([]driver.Value, 1)
	var got [][]byte
	for {
		if err := rows.Next(dest); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		b, ok := dest[0].([]byte)
		if !ok {
			t.Fatalf("a BLOB is a %T, not a []byte", dest[0])
		}
		got = append(got, b)
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || string(got[0]) != "first row" || string(got[1]) != "other row" || &got[0][0] == &got[1][0] {
		t.Fatalf("rows read %q: the driver reused a BLOB buffer", got)
	}
}

// TestFailedConnectionIsReplaced: a read that fails on its connection (here
// because the table is gone) closes that connection, and the next read gets
// a new one that works once the cause is gone, also when the failure came
// in the middle of a read transaction.
func TestFailedConnectionIsReplaced(t *testing.T) {
	path := t.TempDir() + "/tasks.db"
	s, err := Open(path, WithReadConns(1))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		task := taskstore.Task{ID: id, Type: "t", UserID: "u", Request: json.RawMessage(`{}`)}
		if err := s.Create(ctx, task); err != nil {
			t.Fatal(err)
		}
	}
	// A second connection renames the table under the store's feet.
	other, err := newReadPool(path+"?_pragma=busy_timeout(10000)", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer other.close()
	oc, err := other.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.release(ctx, oc, nil)
	rename := func(t *testing.T, from, to string) {
		t.Helper()
		if _, err := oc.conn.(driver.ExecerContext).ExecContext(ctx, `ALTER TABLE `+from+` RENAME TO `+to, nil); err != nil {
			t.Fatal(err)
		}
	}

	for _, tc := range []struct {
		name string
		read func() error
	}{
		{"Get", func() error { _, err := s.Get(ctx, "a"); return err }},
		{"FindFirstPage", func() error {
			_, _, err := s.Find(ctx, taskstore.Filter{UserID: "u", Limit: 1})
			return err
		}},
		// The count (from task_counts) succeeds; the page fails inside
		// the transaction.
		{"FindInTransaction", func() error {
			_, _, err := s.Find(ctx, taskstore.Filter{UserID: "u", Offset: 1, Limit: 1})
			return err
		}},
		{"Abandoned", func() error { _, err := s.Abandoned(ctx, "", storekit.FromMillis(1<<40), 10); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opened, discarded := s.reads.opened.Load(), s.reads.discarded.Load()
			rename(t, "tasks", "gone")
			err := tc.read()
			var se *Error
			if !errors.As(err, &se) || se.Code == "" {
				t.Fatalf("read with the table gone = %v, want an *Error with a code", err)
			}
			if d := s.reads.discarded.Load() - discarded; d != 1 {
				t.Fatalf("%d connections discarded after the failure, want 1", d)
			}
			rename(t, "gone", "tasks")
			if err := tc.read(); err != nil {
				t.Fatalf("read after the table is back: %v", err)
			}
			if o := s.reads.opened.Load() - opened; o != 1 {
				t.Fatalf("%d connections opened after the failure, want 1", o)
			}
		})
	}
}

// TestCloseWhileReading closes the store while readers are running: each
// read either succeeds or returns ErrClosed, and Close closes every read
// connection, including those in use when it was called.
func TestCloseWhileReading(t *testing.T) {
	s, err := Open(t.TempDir()+"/tasks.db", WithReadConns(3))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		if err := s.Create(ctx, taskstore.Task{ID: id, Type: "t", UserID: "u", Request: json.RawMessage(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	started := make(chan struct{}, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				var err error
				switch (g + i) % 3 {
				case 0:
					_, err = s.Get(ctx, "a")
				case 1:
					_, _, err = s.Find(ctx, taskstore.Filter{UserID: "u", Limit: 2})
				default:
					_, _, err = s.Find(ctx, taskstore.Filter{UserID: "u", Offset: 1, Limit: 2})
				}
				if i == 10 {
					started <- struct{}{}
				}
				if err != nil {
					if !errors.Is(err, taskstore.ErrClosed) {
						errs <- err
					}
					return
				}
			}
		})
	}
	for range 8 {
		<-started
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("read during Close: %v", err)
	}
	if n := s.reads.live.Load(); n != 0 {
		t.Errorf("%d read connections still open after Close", n)
	}
	if s.reads.opened.Load() == 0 {
		t.Error("no read connection was opened")
	}
}

// TestReleaseAfterCancelOrPanic: a read whose context ended outside a
// transaction keeps its connection (the driver only interrupted the
// statement); inside a transaction, or after a panic, the connection is
// discarded; and a panicking read gives its slot back, so that the pool
// (and Close, which waits for every slot) is not one short.
func TestReleaseAfterCancelOrPanic(t *testing.T) {
	s := openInternal(t)
	p := s.reads
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	t.Run("cancelled outside a transaction", func(t *testing.T) {
		before := p.discarded.Load()
		c, err := p.acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		p.release(cancelled, c, context.Canceled)
		if got := p.discarded.Load() - before; got != 0 {
			t.Errorf("%d connections discarded, want 0", got)
		}
	})
	t.Run("cancelled inside a transaction", func(t *testing.T) {
		before := p.discarded.Load()
		c, err := p.acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		c.inTx = true
		p.release(cancelled, c, context.Canceled)
		if got := p.discarded.Load() - before; got != 1 {
			t.Errorf("%d connections discarded, want 1", got)
		}
	})
	t.Run("panic", func(t *testing.T) {
		before := p.discarded.Load()
		func() {
			defer func() {
				if recover() == nil {
					t.Error("the panic did not go on")
				}
			}()
			p.do(context.Background(), func(*readConn) error { panic("boom") })
		}()
		if got := p.discarded.Load() - before; got != 1 {
			t.Errorf("%d connections discarded, want 1", got)
		}
		// Every slot is back: all of them can be taken without waiting.
		var held []*readConn
		for range p.size {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err := p.acquire(ctx)
			cancel()
			if err != nil {
				t.Fatalf("slot %d of %d: %v", len(held)+1, p.size, err)
			}
			held = append(held, c)
		}
		for _, c := range held {
			p.release(context.Background(), c, nil)
		}
	})
	if _, err := s.Get(context.Background(), "missing"); !errors.Is(err, taskstore.ErrNotFound) {
		t.Errorf("Get after the subtests: %v", err)
	}
}
