package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/tasksapi/tasks/internal/jsonw"
	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// taskColumns is the whole row packed into a single TEXT value by SQLite:
// the one column the read path and scanTask read. Reading the 19 columns one
// by one costs several allocations per column (a driver.Value, a string or a
// copy for each); the packed row costs a few in all, and the task's strings
// are slices of one Go string.
//
// The packing is a header of decimal integers separated by spaces, then the
// strings and JSON back to back:
//
//	created started finished attempts next delivered status lease
//	len(id) len(trace_id) len(type) len(application_id) len(user_id)
//	len(credential_id) len(callback_url) len(last_error) len(recorder)
//	len(request) len(response) (-1 when NULL) '|' id trace_id …
//	recorder request response
//
// Lengths are in bytes (octet_length), so any UTF-8 content round-trips.
// concat builds the value in one allocation, copying each argument by its
// length (a NUL byte inside a string is kept; a NULL response adds
// nothing), where a chain of || would copy the growing prefix at each step.
const taskColumns = `concat(printf('%d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d|',
	created_ms, started_ms, finished_ms, attempts, next_attempt_ms, delivered_ms, last_status, lease_ms,
	octet_length(id), octet_length(trace_id), octet_length(type), octet_length(application_id),
	octet_length(user_id), octet_length(credential_id), octet_length(callback_url),
	octet_length(last_error), octet_length(recorder), octet_length(request), coalesce(octet_length(response), -1)),
	id, trace_id, type, application_id, user_id, credential_id, callback_url,
	last_error, recorder, request, response)`

// packedFields is the number of integers in the header of taskColumns.
const packedFields = 19

type scanner interface{ Scan(dest ...any) error }

// scanTask reads one row of taskColumns, preceded by the columns in pre.
func scanTask(sc scanner, pre ...any) (taskstore.Task, error) {
	var packed []byte
	if err := sc.Scan(append(pre, &packed)...); err != nil {
		return taskstore.Task{}, err
	}
	return unpackTask(packed)
}

// errPacked is a packed row that does not parse: a bug, or a damaged
// database.
var errPacked = errors.New("malformed packed row")

// packedHeader is the parsed header of a row packed by taskColumns.
type packedHeader struct {
	n      [packedFields]int64
	start  int // offset of the first string
	strLen int // bytes of the nine strings
	reqLen int
	resLen int // -1: NULL response
}

// parseHeader parses and checks the header of a packed row: the lengths it
// states must add up to the bytes that follow it.
func parseHeader(b []byte) (h packedHeader, ok bool) {
	i := 0
	for k := range h.n {
		neg := i < len(b) && b[i] == '-'
		if neg {
			i++
		}
		start := i
		var v int64
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			v = v*10 + int64(b[i]-'0')
			i++
		}
		want := byte(' ')
		if k == packedFields-1 {
			want = '|'
		}
		if i == start || i >= len(b) || b[i] != want {
			return h, false
		}
		i++
		if neg {
			v = -v
		}
		h.n[k] = v
	}
	h.start = i
	lens := h.n[8:]
	for _, l := range lens[:9] {
		if l < 0 || l > int64(len(b)) {
			return h, false
		}
		h.strLen += int(l)
	}
	if lens[9] < 0 || lens[9] > int64(len(b)) || lens[10] < -1 || lens[10] > int64(len(b)) {
		return h, false
	}
	h.reqLen, h.resLen = int(lens[9]), int(lens[10])
	return h, len(b)-i == h.strLen+h.reqLen+max(h.resLen, 0)
}

// task returns the task of the header, with its nine strings cut from str
// (which holds them back to back) and the given request and response.
func (h *packedHeader) task(str string, req, resp []byte) taskstore.Task {
	lens := h.n[8:]
	next := func(l int64) string {
		v := str[:l]
		str = str[l:]
		return v
	}
	var t taskstore.Task
	t.ID, t.TraceID, t.Type = next(lens[0]), next(lens[1]), next(lens[2])
	t.ApplicationID, t.UserID, t.CredentialID = next(lens[3]), next(lens[4]), next(lens[5])
	t.Callback.URL, t.Callback.LastError, t.Recorder = next(lens[6]), next(lens[7]), next(lens[8])
	t.Request, t.Response = req, resp
	n := &h.n
	t.CreatedAt = storekit.FromMillis(n[0])
	t.StartedAt = storekit.FromMillis(n[1])
	t.FinishedAt = storekit.FromMillis(n[2])
	t.Callback.Attempts = int(n[3])
	t.Callback.NextAttemptAt = storekit.FromMillis(n[4])
	t.Callback.DeliveredAt = storekit.FromMillis(n[5])
	t.Callback.LastStatus = int(n[6])
	t.LeaseUntil = storekit.FromMillis(n[7])
	return t
}

// unpackTask decodes a row packed by taskColumns from a buffer the caller
// owns and never changes: the read path's BLOB, or the []byte database/sql
// scans into (the writer's ClaimDeliveries). The task's JSON fields are
// slices of b (capped, so appending to one never overwrites another); its
// strings share one allocation.
func unpackTask(b []byte) (taskstore.Task, error) {
	h, ok := parseHeader(b)
	if !ok {
		return taskstore.Task{}, errPacked
	}
	i := h.start + h.strLen
	req := b[i : i+h.reqLen : i+h.reqLen]
	i += h.reqLen
	var resp []byte
	if h.resLen >= 0 {
		resp = b[i : i+h.resLen : i+h.resLen]
	}
	return h.task(string(b[h.start:h.start+h.strLen]), req, resp), nil
}

// unpackValue decodes the packed row the driver returned for the read
// path's one column: a []byte of its own (see packedColumn).
func unpackValue(v any) (taskstore.Task, error) {
	if b, ok := v.([]byte); ok {
		return unpackTask(b)
	}
	return taskstore.Task{}, errPacked
}

func ms(t time.Time) int64 { return storekit.ToMillis(t) }

// Create stores a new task (see taskstore.Store).
func (s *Store) Create(ctx context.Context, t taskstore.Task) error {
	const op = "create"
	if err := s.enter(ctx, op); err != nil {
		return err
	}
	defer s.leave()
	n, err := storekit.Normalize(t, time.Now())
	if err != nil {
		return err
	}
	args := insertArgs(n)
	err = s.write(ctx, false, func(w *writer) error {
		_, err := w.insert.Exec(args...)
		return err
	})
	return s.translate(op, err)
}

// insertArgs are the arguments of insertSQL for the normalized task n.
// Request and response are bound as strings (TEXT); a nil response is
// NULL. The failed and gave_up flags come from the task as Task.Status and
// Task.CallbackStatus read it.
func insertArgs(n taskstore.Task) []any {
	var resp any // NULL until finished
	if n.Response != nil {
		resp = string(n.Response)
	}
	return []any{n.ID, n.TraceID, n.Type, ms(n.CreatedAt), ms(n.StartedAt), ms(n.FinishedAt),
		n.ApplicationID, n.UserID, n.CredentialID, n.Callback.URL, n.Callback.Attempts,
		ms(n.Callback.NextAttemptAt), ms(n.Callback.DeliveredAt), n.Callback.LastStatus,
		n.Callback.LastError, ms(n.LeaseUntil), string(n.Request), resp,
		flag(n.Status() == taskstore.StatusFailed), flag(n.CallbackStatus() == taskstore.CallbackFailed),
		n.Recorder}
}

// flag is a 0/1 column's value.
func flag(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// Get returns the task with the given id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (taskstore.Task, error) {
	const op = "get"
	if err := s.enter(ctx, op); err != nil {
		return taskstore.Task{}, err
	}
	defer s.leave()
	var (
		t     taskstore.Task
		found bool
	)
	err := s.reads.do(ctx, func(c *readConn) (err error) {
		t, found, err = c.getTask(ctx, id)
		return err
	})
	switch {
	case err != nil:
		return taskstore.Task{}, s.translate(op, err)
	case !found:
		return taskstore.Task{}, notFound(op, nil)
	}
	return t, nil
}

// Start records that work on the task started at the given time (now when
// zero).
func (s *Store) Start(ctx context.Context, id string, at time.Time) error {
	const op = "start"
	if err := s.enter(ctx, op); err != nil {
		return err
	}
	defer s.leave()
	atMs := storekit.MillisOrNow(at)
	err := s.write(ctx, false, func(w *writer) error {
		res, err := w.start.Exec(atMs, id)
		if err != nil {
			return err
		}
		return w.changedOne(res, id, op, "task already started or finished", w.sameStart, id, atMs)
	})
	return s.translate(op, err)
}

// Finish records the task's response and finish time (now when zero) exactly
// once, clears its lease and makes its callback due, in one UPDATE. Whether
// the response is a success (taskstore.Succeeded) is decided here, in Go,
// and stored as the task's failed flag.
func (s *Store) Finish(ctx context.Context, id string, response json.RawMessage, at time.Time) error {
	const op = "finish"
	if err := s.enter(ctx, op); err != nil {
		return err
	}
	defer s.leave()
	if err := storekit.CheckResponse(response); err != nil {
		return err
	}
	resp, atMs := string(response), storekit.MillisOrNow(at)
	failed := flag(!taskstore.Succeeded(response))
	err := s.write(ctx, false, func(w *writer) error {
		res, err := w.finish.Exec(resp, atMs, failed, atMs, id)
		if err != nil {
			return err
		}
		return w.changedOne(res, id, op, "task already finished", w.sameFinish, id, atMs, resp)
	})
	return s.translate(op, err)
}

// Delete removes the task and its pending delivery.
func (s *Store) Delete(ctx context.Context, id string) error {
	const op = "delete"
	if err := s.enter(ctx, op); err != nil {
		return err
	}
	defer s.leave()
	err := s.write(ctx, false, func(w *writer) error {
		res, err := w.del.Exec(id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return notFound(op, err)
		}
		return nil
	})
	if err == nil {
		s.vac.deleted()
	}
	return s.translate(op, err)
}

// Prune deletes at most limit tasks created before the given time, oldest
// first, in one statement.
func (s *Store) Prune(ctx context.Context, before time.Time, limit int) (int, error) {
	const op = "prune"
	if err := s.enter(ctx, op); err != nil {
		return 0, err
	}
	defer s.leave()
	if err := storekit.CheckLimit(limit); err != nil {
		return 0, err
	}
	var deleted int64
	err := s.write(ctx, false, func(w *writer) error {
		res, err := w.prune.Exec(storekit.CeilMillis(before), limit) // created_ms < before, exactly
		if err != nil {
			return err
		}
		deleted, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, s.translate(op, err)
	}
	if deleted > 0 {
		s.vac.deleted()
	}
	return int(deleted), nil
}

// RenewLeases sets the lease of the given unfinished tasks.
func (s *Store) RenewLeases(ctx context.Context, ids []string, until time.Time) error {
	const op = "renew leases"
	if err := s.enter(ctx, op); err != nil {
		return err
	}
	defer s.leave()
	valid, ok := validList(ids)
	if !ok || len(valid) == 0 {
		return nil
	}
	list := jsonList(valid)
	untilMs := ms(until)
	err := s.write(ctx, false, func(w *writer) error {
		_, err := w.renew.Exec(untilMs, list)
		return err
	})
	return s.translate(op, err)
}

// Abandoned returns at most limit unfinished tasks of the recorder whose
// lease is before the given time, oldest lease first (a zero lease first of
// all), from a range of tasks_lease.
func (s *Store) Abandoned(ctx context.Context, recorder string, before time.Time, limit int) ([]taskstore.Task, error) {
	const op = "abandoned"
	if err := s.enter(ctx, op); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := taskstore.CheckRecorder(recorder); err != nil {
		return nil, err
	}
	if err := storekit.CheckLimit(limit); err != nil {
		return nil, err
	}
	// lease_ms < before, with before rounded up to the next whole
	// millisecond. A zero lease (stored as 0) always counts as expired;
	// leases before 1970 are not meaningful.
	args := []any{recorder, max(storekit.CeilMillis(before), 1), int64(limit)}
	var out []taskstore.Task
	err := s.reads.do(ctx, func(c *readConn) (err error) {
		out, err = c.queryTasks(ctx, c.abandoned, args, []taskstore.Task{})
		return err
	})
	if err != nil {
		return nil, s.translate(op, err)
	}
	return out, nil
}

// ClaimDeliveries returns and claims at most limit due deliveries of the
// recorder, earliest due first: the SELECT (a range of tasks_outbox) and
// the UPDATE that moves their due time to now+lease run in one write
// transaction. A zero now or a negative lease is ErrInvalid.
func (s *Store) ClaimDeliveries(ctx context.Context, recorder string, now time.Time, lease time.Duration, limit int) ([]taskstore.Task, error) {
	const op = "claim deliveries"
	if err := s.enter(ctx, op); err != nil {
		return nil, err
	}
	defer s.leave()
	if err := storekit.CheckClaim(recorder, now, lease, limit); err != nil {
		return nil, err
	}
	nowMs, until := ms(now), ms(now.Add(lease))
	claimed := []taskstore.Task{} // never nil, even when nothing is due
	err := s.write(ctx, true, func(w *writer) error {
		claimed = claimed[:0]
		rows, err := w.claimSelect.Query(recorder, nowMs, limit)
		if err != nil {
			return err
		}
		rids := make([]byte, 0, 16*min(limit, 1024))
		rids = append(rids, '[')
		for rows.Next() {
			var rid int64
			t, err := scanTask(rows, &rid)
			if err != nil {
				rows.Close()
				return err
			}
			if len(claimed) > 0 {
				rids = append(rids, ',')
			}
			rids = strconv.AppendInt(rids, rid, 10)
			t.Callback.NextAttemptAt = storekit.FromMillis(until) // as the UPDATE below sets it
			claimed = append(claimed, t)
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if len(claimed) == 0 {
			return nil
		}
		_, err = w.claimUpdate.Exec(until, string(append(rids, ']')))
		return err
	})
	if err != nil {
		return nil, s.translate(op, err)
	}
	return claimed, nil
}

// RecordAttempt records the outcome of a delivery attempt and ends the
// delivery's claim. A delivered attempt with a zero At is delivered now.
func (s *Store) RecordAttempt(ctx context.Context, id string, a taskstore.Attempt) error {
	const op = "record attempt"
	if err := s.enter(ctx, op); err != nil {
		return err
	}
	defer s.leave()
	delivered, next := storekit.AttemptMillis(a)
	err := s.write(ctx, false, func(w *writer) error {
		var (
			res sql.Result
			err error
		)
		switch {
		case delivered != 0:
			res, err = w.recordDelivered.Exec(a.Status, a.Error, delivered, id)
		case next != 0:
			res, err = w.recordRetry.Exec(a.Status, a.Error, next, id, next, a.Status, a.Error)
		default: // given up
			res, err = w.recordGiveUp.Exec(a.Status, a.Error, id)
		}
		if err != nil {
			return err
		}
		return w.changedOne(res, id, op, "callback is not pending", w.sameAttempt, id, delivered, next, a.Status, a.Error)
	})
	return s.translate(op, err)
}

// changedOne turns an UPDATE that matched no row into success when the
// task is already as the write would leave it (same, a count query over
// sameArgs, finds it: the write is a repeat), else into ErrNotFound (no
// such task) or ErrConflict (the task is in the wrong state, with the given
// reason).
func (w *writer) changedOne(res interface{ RowsAffected() (int64, error) }, id, op, reason string, same *sqlx.Stmt, sameArgs ...any) error {
	n, err := res.RowsAffected()
	if err != nil || n > 0 {
		return err
	}
	var found int
	if err := same.QueryRow(sameArgs...).Scan(&found); err != nil || found > 0 {
		return err
	}
	if err := w.exists.QueryRow(id).Scan(&found); err != nil {
		return err
	}
	if found == 0 {
		return notFound(op, nil)
	}
	return fmt.Errorf("sqlitestore: %s: %s: %w", op, reason, taskstore.ErrConflict)
}

func notFound(op string, err error) error {
	if err != nil {
		return err
	}
	return fmt.Errorf("sqlitestore: %s: %w", op, taskstore.ErrNotFound)
}

// jsonList encodes list as a JSON array for json_each. Callers drop the
// strings that are not valid UTF-8 first (validList): no stored task has
// one.
func jsonList(list []string) string {
	b := make([]byte, 0, 2+len(list)*40)
	b = append(b, '[')
	for i, v := range list {
		if i > 0 {
			b = append(b, ',')
		}
		b = jsonw.AppendString(b, v)
	}
	return string(append(b, ']'))
}
