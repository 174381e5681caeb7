package sqlitestore

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"modernc.org/sqlite"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// The read path: Get, Find, Abandoned and Walk run on connections of the
// modernc.org/sqlite driver used directly through database/sql/driver, not
// through database/sql. A read through database/sql costs some thirty
// allocations of its own (the connection pool's bookkeeping, a Stmt's
// per-connection lookup, Rows, the conversion of each value on Scan) and a
// goroutine per transaction; here a read borrows a connection from a
// channel, runs statements prepared once on that connection, and reads each
// row as the one value of taskColumns.
//
// That value is cast to a BLOB, which the driver returns as a []byte it has
// just copied out of SQLite's memory for this row alone (TestDriverBlobsAreFresh
// pins this): the task's request and response are slices of it, and only
// its eight short strings are copied (into one string). Read as TEXT, the
// driver's string could not lend its bytes to a json.RawMessage without a
// second copy of the JSON.

// Read statements. The packed row is named: SQLite names an unnamed result
// column after its expression, and the driver copies that name (the whole
// concat(…) text) into a new Go string on every query.
const (
	packedColumn     = `CAST(` + taskColumns + ` AS BLOB) AS p`
	readGetSQL       = `SELECT ` + packedColumn + ` FROM tasks WHERE id = ?`
	readAbandonedSQL = `SELECT ` + packedColumn + ` FROM tasks INDEXED BY tasks_lease
		WHERE recorder = ? AND finished_ms = 0 AND lease_ms < ? ORDER BY lease_ms, id LIMIT ?`
)

// maxCachedStatements bounds the Find statements each read connection keeps
// prepared. The statement text depends only on the filter's shape (which
// fields are set, and for the types-only merge the number of types), so a
// connection rarely holds more than a few dozen; past the bound a statement
// is prepared for one call and closed after it.
const maxCachedStatements = 512

// readStmt is what the driver's prepared statements implement.
type readStmt interface {
	driver.Stmt
	driver.StmtQueryContext
	driver.StmtExecContext
}

// readConn is one query_only connection and the statements prepared on it.
// It is used by one call at a time: the pool hands it out and takes it back.
type readConn struct {
	pool      *readPool
	conn      driver.Conn
	get       readStmt
	abandoned readStmt
	begin     readStmt
	commit    readStmt
	finds     map[string]readStmt

	inTx bool                // a read transaction is open (BEGIN ran, COMMIT did not)
	args []driver.NamedValue // reused for every statement's arguments
	dest [2]driver.Value     // the columns of a row (one or two)
}

// readPool holds at most size read connections. slots is a buffered channel
// of capacity size holding, for each slot, its idle connection or nil for a
// slot whose connection is not open (not yet, or closed after a failure).
// Taking from slots reserves a slot; every slot taken is given back, with
// the connection or with nil.
type readPool struct {
	connector driver.Connector
	slots     chan *readConn
	size      int

	// Connections opened and discarded so far, and open now (tests read
	// them).
	opened, discarded, live atomic.Int64
	// Pages of status filters with a key read along the status indexes
	// rather than the key's (findChoosing; tests read it).
	stateRoutes atomic.Int64
}

func newReadPool(dsn string, size int) (*readPool, error) {
	connector, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, err
	}
	p := &readPool{connector: connector, slots: make(chan *readConn, size), size: size}
	for range size {
		p.slots <- nil
	}
	return p, nil
}

// warm opens the first connection, so that Open reports a database the read
// path cannot read, and prepares its statements.
func (p *readPool) warm(ctx context.Context) error {
	return p.do(ctx, func(*readConn) error { return nil })
}

// acquire returns a connection for the caller's exclusive use, opening one
// when the slot it got has none. It waits while all size connections are in
// use, until ctx is done. A nil error must be followed by release.
func (p *readPool) acquire(ctx context.Context) (*readConn, error) {
	var c *readConn
	select {
	case c = <-p.slots:
	default:
		select {
		case c = <-p.slots:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if c != nil {
		return c, nil
	}
	c, err := p.open(ctx)
	if err != nil {
		p.slots <- nil
		return nil, err
	}
	return c, nil
}

// errPanicked stands for the outcome of a read that panicked.
var errPanicked = errors.New("read panicked")

// do runs f on a connection of the pool and gives the connection back, even
// when f panics (the panic goes on).
func (p *readPool) do(ctx context.Context, f func(*readConn) error) error {
	c, err := p.acquire(ctx)
	if err != nil {
		return err
	}
	returned := false
	defer func() {
		if !returned {
			p.release(ctx, c, errPanicked)
		}
	}()
	err = f(c)
	returned = true
	p.release(ctx, c, err)
	return err
}

// release gives c back to the pool. failed is the error of the call that
// used it: after a failure the connection is closed, and the next call that
// gets its slot opens a fresh one. So a connection that saw an I/O error,
// corruption, a busy timeout or a panic is never used again, and a
// transaction a failure left open is rolled back. (Reopening costs about
// 0.1 ms.) The exception is a call whose context ended outside a
// transaction: the driver interrupted its statement, which leaves the
// connection as good as before, so a client that hangs up does not cost a
// reconnection.
func (p *readPool) release(ctx context.Context, c *readConn, failed error) {
	if failed != nil && (ctx.Err() == nil || c.inTx) {
		p.discarded.Add(1)
		p.closeConn(c)
		c = nil
	}
	p.slots <- c
}

// close closes every connection. The caller guarantees that no call holds
// one (Store.Close waits for the calls in flight).
func (p *readPool) close() error {
	var errs []error
	for range p.size {
		if c := <-p.slots; c != nil {
			errs = append(errs, p.closeConn(c))
		}
	}
	return errors.Join(errs...)
}

func (p *readPool) open(ctx context.Context) (*readConn, error) {
	dc, err := p.connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	c := &readConn{
		pool:  p,
		conn:  dc,
		finds: make(map[string]readStmt),
		args:  make([]driver.NamedValue, 0, 8),
	}
	for _, st := range []struct {
		dst *readStmt
		sql string
	}{
		{&c.get, readGetSQL}, {&c.abandoned, readAbandonedSQL},
		{&c.begin, `BEGIN`}, {&c.commit, `COMMIT`},
	} {
		s, err := c.prepare(ctx, st.sql)
		if err != nil {
			c.close()
			return nil, err
		}
		*st.dst = s
	}
	p.opened.Add(1)
	p.live.Add(1)
	return c, nil
}

func (p *readPool) closeConn(c *readConn) error {
	p.live.Add(-1)
	return c.close()
}

func (c *readConn) prepare(ctx context.Context, query string) (readStmt, error) {
	pc, ok := c.conn.(driver.ConnPrepareContext)
	if !ok {
		return nil, errors.New("sqlite driver: connection does not implement ConnPrepareContext")
	}
	ds, err := pc.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	st, ok := ds.(readStmt)
	if !ok {
		ds.Close()
		return nil, fmt.Errorf("sqlite driver: statement %T does not implement StmtQueryContext and StmtExecContext", ds)
	}
	return st, nil
}

// close closes the connection; SQLite rolls back a transaction left open.
func (c *readConn) close() error {
	var errs []error
	for _, st := range []readStmt{c.get, c.abandoned, c.begin, c.commit} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	for _, st := range c.finds {
		errs = append(errs, st.Close())
	}
	clear(c.finds)
	errs = append(errs, c.conn.Close())
	return errors.Join(errs...)
}

// bind sets the statement arguments: args as positional parameters. An int
// becomes an int64, the only integer type the driver binds.
func (c *readConn) bind(args []any) []driver.NamedValue {
	c.args = c.args[:0]
	for i, a := range args {
		if v, ok := a.(int); ok {
			a = int64(v)
		}
		c.args = append(c.args, driver.NamedValue{Ordinal: i + 1, Value: a})
	}
	return c.args
}

// done drops the references the connection kept to the last call's
// arguments and values, so that an idle connection holds no caller memory.
func (c *readConn) done() {
	clear(c.args)
	c.args = c.args[:0]
	clear(c.dest[:])
}

// query runs st with args and calls row with each row's values (ncol
// columns), until the rows end or row fails.
func (c *readConn) query(ctx context.Context, st readStmt, args []any, ncol int, row func([]driver.Value) error) (err error) {
	defer c.done()
	rows, err := st.QueryContext(ctx, c.bind(args))
	if err != nil {
		return err
	}
	defer func() {
		if cerr := rows.Close(); err == nil {
			err = cerr
		}
	}()
	dest := c.dest[:ncol]
	for {
		if err := rows.Next(dest); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		if err := row(dest); err != nil {
			return err
		}
	}
}

// getTask reads the task with the given id; found is false when there is
// none.
func (c *readConn) getTask(ctx context.Context, id string) (t taskstore.Task, found bool, err error) {
	defer c.done()
	c.args = append(c.args[:0], driver.NamedValue{Ordinal: 1, Value: id})
	rows, err := c.get.QueryContext(ctx, c.args)
	if err != nil {
		return t, false, err
	}
	err = rows.Next(c.dest[:1])
	switch {
	case err == io.EOF:
		err = nil
	case err == nil:
		found = true
		t, err = unpackValue(c.dest[0])
	}
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	return t, found, err
}

// queryTasks runs st, whose one column is the packed row, and appends the
// rows' tasks to out.
func (c *readConn) queryTasks(ctx context.Context, st readStmt, args []any, out []taskstore.Task) ([]taskstore.Task, error) {
	err := c.query(ctx, st, args, 1, func(v []driver.Value) error {
		t, err := unpackValue(v[0])
		if err != nil {
			return err
		}
		out = append(out, t)
		return nil
	})
	return out, err
}

// errPageFull ends the rows of a page whose tasks reached
// Filter.PageBytes.
var errPageFull = errors.New("sqlitestore: page full")

// queryPage is queryTasks for a Find page: with pageBytes > 0 it stops
// reading rows (the next ones are never read) once the tasks appended
// weigh pageBytes (taskstore.Filter.PageBytes).
func (c *readConn) queryPage(ctx context.Context, st readStmt, args []any, out []taskstore.Task, pageBytes int) ([]taskstore.Task, error) {
	if pageBytes <= 0 {
		return c.queryTasks(ctx, st, args, out)
	}
	weight := 0
	err := c.query(ctx, st, args, 1, func(v []driver.Value) error {
		if weight >= pageBytes {
			return errPageFull
		}
		t, err := unpackValue(v[0])
		if err != nil {
			return err
		}
		out = append(out, t)
		weight += storekit.Weight(t)
		return nil
	})
	if err == errPageFull {
		err = nil
	}
	return out, err
}

// queryInt runs st, which returns one integer.
func (c *readConn) queryInt(ctx context.Context, st readStmt, args []any) (n int64, err error) {
	rows := 0
	err = c.query(ctx, st, args, 1, func(v []driver.Value) error {
		rows++
		return intValue(v[0], &n)
	})
	if err == nil && rows != 1 {
		err = fmt.Errorf("count returned %d rows", rows)
	}
	return n, err
}

func intValue(v driver.Value, n *int64) error {
	var ok bool
	if *n, ok = v.(int64); !ok {
		return fmt.Errorf("count is a %T, not an integer", v)
	}
	return nil
}

// exec runs one of the connection's BEGIN or COMMIT statements. They take
// no lock that another connection could hold (a deferred BEGIN reads
// nothing; the COMMIT of a read transaction only releases it), so they never
// wait and do not watch the caller's context: a call cancelled after BEGIN
// must still be able to end its transaction.
func (c *readConn) exec(st readStmt) error {
	_, err := st.ExecContext(context.Background(), nil)
	return err
}

// findStmt returns the connection's prepared statement for query, preparing
// it on first use. When the cache is full the statement is not kept: the
// caller closes it when keep is false.
func (c *readConn) findStmt(ctx context.Context, query string) (st readStmt, keep bool, err error) {
	if st, ok := c.finds[query]; ok {
		return st, true, nil
	}
	st, err = c.prepare(ctx, query)
	if err != nil {
		return nil, false, err
	}
	if len(c.finds) >= maxCachedStatements {
		return st, false, nil
	}
	c.finds[query] = st
	return st, true, nil
}

// find runs q. With a limit of zero it runs only the count. For the first
// page it runs q.firstSQL, one statement (so one snapshot) returning the
// count next to each row of the page; when the page is empty nothing
// matches, and the count is zero. For a later page it runs the count and
// then, unless offset skips every match, the page, in one read transaction
// so that they agree; the count comes first so that an offset past the end
// costs no walk through the matches.
func (c *readConn) find(ctx context.Context, q findQuery, offset int) (page []taskstore.Task, total int, err error) {
	if q.choice != nil {
		return c.findChoosing(ctx, q, offset)
	}
	if q.limit > 0 && offset == 0 {
		st, keep, err := c.findStmt(ctx, q.firstSQL)
		if err != nil {
			return nil, 0, err
		}
		if !keep {
			defer st.Close()
		}
		var n int64
		// The number of rows is not known before they come.
		page = make([]taskstore.Task, 0, min(q.limit, 16))
		weight := 0
		err = c.query(ctx, st, q.firstArgs, 2, func(v []driver.Value) error {
			if q.pageBytes > 0 && weight >= q.pageBytes {
				return errPageFull // the count came with the first row
			}
			if err := intValue(v[0], &n); err != nil {
				return err
			}
			t, err := unpackValue(v[1])
			if err != nil {
				return err
			}
			page = append(page, t)
			weight += storekit.Weight(t)
			return nil
		})
		if err != nil && err != errPageFull {
			return nil, 0, err
		}
		return page, int(n), nil
	}
	countSt, keep, err := c.findStmt(ctx, q.countSQL)
	if err != nil {
		return nil, 0, err
	}
	if !keep {
		defer countSt.Close()
	}
	if q.limit == 0 {
		n, err := c.queryInt(ctx, countSt, q.countArgs)
		return []taskstore.Task{}, int(n), err
	}
	pageSt, keep, err := c.findStmt(ctx, q.pageSQL)
	if err != nil {
		return nil, 0, err
	}
	if !keep {
		defer pageSt.Close()
	}
	if err := c.exec(c.begin); err != nil {
		return nil, 0, err
	}
	c.inTx = true
	// On a failure below the transaction stays open: the pool closes the
	// connection, which rolls it back.
	n, err := c.queryInt(ctx, countSt, q.countArgs)
	if err != nil {
		return nil, 0, err
	}
	total = int(n)
	page = []taskstore.Task{}
	if total > offset {
		page = make([]taskstore.Task, 0, min(q.limit, total-offset))
		if page, err = c.queryPage(ctx, pageSt, q.pageArgs, page, q.pageBytes); err != nil {
			return nil, 0, err
		}
	}
	if err := c.exec(c.commit); err != nil {
		return nil, 0, err
	}
	c.inTx = false
	return page, total, nil
}

// keyRouteRatio: when at least one in keyRouteRatio of a key's tasks has
// the statuses asked for, Find walks the key's index without weighing the
// status indexes: a page then costs at most keyRouteRatio rows read per
// task returned.
const keyRouteRatio = 8

// doneEntryCost is what skipping an entry of tasks_done costs next to
// reading a row: tasks_done carries the application, user and type, so a
// task of another key is skipped in the index. (Measured at 1M tasks: about
// 0.12 µs an entry against 1.3 µs a row.)
const doneEntryCost = 1.0 / 8

// findChoosing runs a query with two routes (see routeChoice), in one read
// transaction: the counters of the key and of the statuses, then the count
// (unless the counters are the count) and the page along the cheaper
// route. Walking the key's index reads about Offset+Limit rows per
// matching share of the key's tasks (each row is read to check its state);
// walking the status indexes skips about Offset+Limit entries of tasks_done
// per matching share of the tasks in the final states asked for, and reads
// every task in the transient states asked for (tasks_lease and
// tasks_outbox are not in page order, and their rows are read to check the
// key). Nothing is read past the counters when they show that no task
// matches.
func (c *readConn) findChoosing(ctx context.Context, q findQuery, offset int) (page []taskstore.Task, total int, err error) {
	ch := q.choice
	if err := c.exec(c.begin); err != nil {
		return nil, 0, err
	}
	c.inTx = true
	// On a failure below the transaction stays open: the pool closes the
	// connection, which rolls it back.
	nKey, match, err := c.queryPair(ctx, ch.statsSQL, ch.statsArgs)
	if err != nil {
		return nil, 0, err
	}
	page = []taskstore.Task{}
	route := q
	wantRows := q.limit > 0 || !ch.countIsMatch
	if match > 0 && wantRows && match*keyRouteRatio < nKey {
		done, transient, err := c.queryPair(ctx, ch.globalSQL, nil)
		if err != nil {
			return nil, 0, err
		}
		want := float64(satAdd(offset, max(q.limit, 1)))
		keyCost := want * float64(nKey) / float64(match)
		stateCost := want*float64(done)/float64(match)*doneEntryCost + float64(transient)
		if stateCost < keyCost {
			route = ch.alt
			c.pool.stateRoutes.Add(1)
		}
	}
	switch {
	case match == 0:
		// Nothing matches, in the window or out of it.
	case ch.countIsMatch:
		total = int(match)
	default:
		n, err := c.queryOne(ctx, route.countSQL, route.countArgs)
		if err != nil {
			return nil, 0, err
		}
		total = int(n)
	}
	if q.limit > 0 && total > offset {
		st, done, err := c.stmt(ctx, route.pageSQL)
		if err != nil {
			return nil, 0, err
		}
		page = make([]taskstore.Task, 0, min(q.limit, total-offset))
		page, err = c.queryPage(ctx, st, route.pageArgs, page, q.pageBytes)
		done()
		if err != nil {
			return nil, 0, err
		}
	}
	if err := c.exec(c.commit); err != nil {
		return nil, 0, err
	}
	c.inTx = false
	return page, total, nil
}

// stmt returns the prepared statement for query (see findStmt) and the
// function to call once it is no longer used.
func (c *readConn) stmt(ctx context.Context, query string) (readStmt, func(), error) {
	st, keep, err := c.findStmt(ctx, query)
	if err != nil {
		return nil, nil, err
	}
	if keep {
		return st, func() {}, nil
	}
	return st, func() { st.Close() }, nil
}

// queryOne runs query, which returns one integer.
func (c *readConn) queryOne(ctx context.Context, query string, args []any) (int64, error) {
	st, done, err := c.stmt(ctx, query)
	if err != nil {
		return 0, err
	}
	defer done()
	return c.queryInt(ctx, st, args)
}

// queryPair runs query, which returns one row of two integers.
func (c *readConn) queryPair(ctx context.Context, query string, args []any) (a, b int64, err error) {
	st, done, err := c.stmt(ctx, query)
	if err != nil {
		return 0, 0, err
	}
	defer done()
	rows := 0
	err = c.query(ctx, st, args, 2, func(v []driver.Value) error {
		rows++
		if err := intValue(v[0], &a); err != nil {
			return err
		}
		return intValue(v[1], &b)
	})
	if err == nil && rows != 1 {
		err = fmt.Errorf("counters returned %d rows", rows)
	}
	return a, b, err
}
