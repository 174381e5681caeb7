package sqlitestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/tasksapi/tasks/taskstore"
)

// taskColumns is the one column scanTask reads: the whole row packed into
// a single TEXT value by SQLite. Reading the 18 columns one by one through
// database/sql costs several allocations per column (a driver.Value, a
// string or a copy for each); the packed row costs a few in all, and the
// task's strings are slices of one Go string.
//
// The packing is a header of decimal integers separated by spaces, then the
// strings and JSON back to back:
//
//	created started finished attempts next delivered status lease
//	len(id) len(trace_id) len(type) len(application_id) len(user_id)
//	len(credential_id) len(callback_url) len(last_error) len(request)
//	len(response) (-1 when NULL) '|' id trace_id … request response
//
// Lengths are in bytes (octet_length), so any UTF-8 content round-trips.
const taskColumns = `printf('%d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d %d|',
	created_ms, started_ms, finished_ms, attempts, next_attempt_ms, delivered_ms, last_status, lease_ms,
	octet_length(id), octet_length(trace_id), octet_length(type), octet_length(application_id),
	octet_length(user_id), octet_length(credential_id), octet_length(callback_url),
	octet_length(last_error), octet_length(request), coalesce(octet_length(response), -1))
	|| id || trace_id || type || application_id || user_id || credential_id || callback_url
	|| last_error || request || coalesce(response, '')`

// packedFields is the number of integers in the header of taskColumns.
const packedFields = 18

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

// unpackTask decodes a row packed by taskColumns. The task's JSON fields
// are slices of b (capped, so appending to one never overwrites another);
// its strings share one allocation.
func unpackTask(b []byte) (taskstore.Task, error) {
	var (
		t taskstore.Task
		n [packedFields]int64
		i int
	)
	for k := range n {
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
			return t, errPacked
		}
		i++
		if neg {
			v = -v
		}
		n[k] = v
	}
	lens := n[8:]
	strLen := 0
	for _, l := range lens[:8] {
		if l < 0 {
			return t, errPacked
		}
		strLen += int(l)
	}
	reqLen, respLen := int(lens[8]), int(lens[9])
	if reqLen < 0 || len(b)-i != strLen+reqLen+max(respLen, 0) {
		return t, errPacked
	}
	str := string(b[i : i+strLen])
	next := func(l int64) string {
		v := str[:l]
		str = str[l:]
		return v
	}
	t.ID, t.TraceID, t.Type = next(lens[0]), next(lens[1]), next(lens[2])
	t.ApplicationID, t.UserID, t.CredentialID = next(lens[3]), next(lens[4]), next(lens[5])
	t.Callback.URL, t.Callback.LastError = next(lens[6]), next(lens[7])
	i += strLen
	t.Request = b[i : i+reqLen : i+reqLen]
	i += reqLen
	if respLen >= 0 {
		t.Response = b[i : i+respLen : i+respLen]
	}
	t.CreatedAt = taskstore.FromMillis(n[0])
	t.StartedAt = taskstore.FromMillis(n[1])
	t.FinishedAt = taskstore.FromMillis(n[2])
	t.Callback.Attempts = int(n[3])
	t.Callback.NextAttemptAt = taskstore.FromMillis(n[4])
	t.Callback.DeliveredAt = taskstore.FromMillis(n[5])
	t.Callback.LastStatus = int(n[6])
	t.LeaseUntil = taskstore.FromMillis(n[7])
	return t, nil
}

func ms(t time.Time) int64 { return taskstore.ToMillis(t) }

// Create stores a new task (see taskstore.Store).
func (s *Store) Create(ctx context.Context, t taskstore.Task) error {
	const op = "create"
	if err := s.enter(ctx, op); err != nil {
		return err
	}
	defer s.leave()
	n, err := taskstore.Normalize(t, time.Now())
	if err != nil {
		return err
	}
	var resp any // NULL until finished
	if n.Response != nil {
		resp = string(n.Response)
	}
	req := string(n.Request) // a string: the driver binds it as TEXT
	err = s.write(ctx, false, func(w *writer) error {
		_, err := w.insert.Exec(n.ID, n.TraceID, n.Type, ms(n.CreatedAt), ms(n.StartedAt), ms(n.FinishedAt),
			n.ApplicationID, n.UserID, n.CredentialID, n.Callback.URL, n.Callback.Attempts,
			ms(n.Callback.NextAttemptAt), ms(n.Callback.DeliveredAt), n.Callback.LastStatus,
			n.Callback.LastError, ms(n.LeaseUntil), req, resp)
		return err
	})
	return s.translate(op, err)
}

// Get returns the task with the given id, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (taskstore.Task, error) {
	const op = "get"
	if err := s.enter(ctx, op); err != nil {
		return taskstore.Task{}, err
	}
	defer s.leave()
	t, err := scanTask(s.get.QueryRowContext(ctx, id))
	if err != nil {
		return taskstore.Task{}, s.translate(op, err)
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
	atMs := taskstore.MillisOrNow(at)
	err := s.write(ctx, false, func(w *writer) error {
		res, err := w.start.Exec(atMs, id)
		if err != nil {
			return err
		}
		return w.changedOne(res, id, op, "task already started or finished")
	})
	return s.translate(op, err)
}

// Finish records the task's response and finish time (now when zero) exactly
// once, clears its lease and makes its callback due, in one UPDATE.
func (s *Store) Finish(ctx context.Context, id string, response json.RawMessage, at time.Time) error {
	const op = "finish"
	if err := s.enter(ctx, op); err != nil {
		return err
	}
	defer s.leave()
	switch {
	case len(response) == 0:
		return taskstore.Invalidf("response is required")
	case !json.Valid(response):
		return taskstore.Invalidf("response must be valid JSON")
	}
	resp, atMs := string(response), taskstore.MillisOrNow(at)
	err := s.write(ctx, false, func(w *writer) error {
		res, err := w.finish.Exec(resp, atMs, atMs, id)
		if err != nil {
			return err
		}
		return w.changedOne(res, id, op, "task already finished")
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
	if limit <= 0 {
		return 0, taskstore.Invalidf("limit must be positive")
	}
	var deleted int64
	err := s.write(ctx, false, func(w *writer) error {
		res, err := w.prune.Exec(ms(before), limit)
		if err != nil {
			return err
		}
		deleted, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, s.translate(op, err)
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
	list, ok := jsonList(ids)
	if !ok {
		return nil
	}
	untilMs := ms(until)
	err := s.write(ctx, false, func(w *writer) error {
		_, err := w.renew.Exec(untilMs, list)
		return err
	})
	return s.translate(op, err)
}

// Abandoned returns at most limit unfinished tasks whose lease is before the
// given time, oldest lease first (a zero lease first of all).
func (s *Store) Abandoned(ctx context.Context, before time.Time, limit int) ([]taskstore.Task, error) {
	const op = "abandoned"
	if err := s.enter(ctx, op); err != nil {
		return nil, err
	}
	defer s.leave()
	if limit <= 0 {
		return nil, taskstore.Invalidf("limit must be positive")
	}
	// lease_ms < before, with before rounded up to the next whole
	// millisecond. A zero lease (stored as 0) always counts as expired;
	// leases before 1970 are not meaningful.
	rows, err := s.abandoned.QueryContext(ctx, max(taskstore.CeilMillis(before), 1), limit)
	if err != nil {
		return nil, s.translate(op, err)
	}
	defer rows.Close()
	out := []taskstore.Task{}
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, s.translate(op, err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, s.translate(op, err)
	}
	return out, nil
}

// ClaimDeliveries returns and claims at most limit due deliveries, earliest
// due first: the SELECT and the UPDATE that moves their due time to now+lease
// run in one write transaction. A zero now or a negative lease is ErrInvalid.
func (s *Store) ClaimDeliveries(ctx context.Context, now time.Time, lease time.Duration, limit int) ([]taskstore.Task, error) {
	const op = "claim deliveries"
	if err := s.enter(ctx, op); err != nil {
		return nil, err
	}
	defer s.leave()
	switch {
	case limit <= 0:
		return nil, taskstore.Invalidf("limit must be positive")
	case now.IsZero():
		return nil, taskstore.Invalidf("now is required")
	case lease < 0:
		return nil, taskstore.Invalidf("lease must not be negative")
	}
	nowMs, until := ms(now), ms(now.Add(lease))
	var claimed []taskstore.Task
	err := s.write(ctx, true, func(w *writer) error {
		claimed = claimed[:0]
		rows, err := w.claimSelect.Query(nowMs, limit)
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
	out := make([]taskstore.Task, len(claimed))
	for i, t := range claimed {
		t.Callback.NextAttemptAt = taskstore.FromMillis(until)
		out[i] = t
	}
	return out, nil
}

// RecordAttempt records the outcome of a delivery attempt. A delivered
// attempt with a zero At is delivered now.
func (s *Store) RecordAttempt(ctx context.Context, id string, a taskstore.Attempt) error {
	const op = "record attempt"
	if err := s.enter(ctx, op); err != nil {
		return err
	}
	defer s.leave()
	delivered, next := int64(0), ms(a.Next)
	if a.Delivered {
		delivered, next = taskstore.MillisOrNow(a.At), 0
	}
	err := s.write(ctx, false, func(w *writer) error {
		res, err := w.record.Exec(a.Status, a.Error, delivered, next, id)
		if err != nil {
			return err
		}
		return w.changedOne(res, id, op, "callback is not pending")
	})
	return s.translate(op, err)
}

// changedOne turns an UPDATE that matched no row into ErrNotFound (no such
// task) or ErrConflict (the task is in the wrong state, with the given
// reason).
func (w *writer) changedOne(res interface{ RowsAffected() (int64, error) }, id, op, reason string) error {
	n, err := res.RowsAffected()
	if err != nil || n > 0 {
		return err
	}
	var found int
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

// jsonList encodes the valid UTF-8 strings of list as a JSON array for
// json_each. Stored ids and names are valid UTF-8 (taskstore.Normalize), so
// the others could never match; ok is false when none is left.
func jsonList(list []string) (string, bool) {
	b := make([]byte, 0, 2+len(list)*40)
	b = append(b, '[')
	n := 0
	for _, v := range list {
		if !utf8.ValidString(v) {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		b = taskstore.AppendString(b, v)
		n++
	}
	return string(append(b, ']')), n > 0
}
