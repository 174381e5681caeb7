package pgstore

import (
	"cmp"
	"context"
	"slices"
	"sync"

	"github.com/jackc/pgx/v5"
)

// Start, Finish and RecordAttempt share statements the way Create does
// (group commit): a call that finds fewer than maxUpdateStatements of its
// kind in flight runs its own single-row UPDATE at once; calls arriving
// while that many are in flight are written together by the next one, with
// one UPDATE … FROM unnest(…) RETURNING id, so that many workers finishing
// at once cost the server a few statements and commits instead of one
// each. Each row keeps the single-row statement's conditions; a row the
// batch did not change is explained as a single call's would be (not found,
// a conflict, or the repeat of a write already applied).

// maxUpdateStatements is how many UPDATEs of one kind run at once.
const maxUpdateStatements = 4

// updateKind is one kind of batched single-row UPDATE.
type updateKind struct {
	op     string
	single string // $1 the id, then the call's arguments
	// batch takes one array per argument, ids first, and returns the ids
	// of the rows it changed.
	batch string
	q     updateQueue
}

// updateQueue is the group-commit state of one kind.
type updateQueue struct {
	mu      sync.Mutex
	waiting []*pendingUpdate
	running int
}

// pendingUpdate is one call waiting for its statement.
type pendingUpdate struct {
	ctx     context.Context
	id      string
	args    []any // after the id
	changed bool
	err     error
	done    chan struct{}
}

func (p *pendingUpdate) complete(changed bool, err error) {
	p.changed, p.err = changed, err
	close(p.done)
}

// batched runs the kind's UPDATE of one row (id, then args) with the calls
// waiting at the same time and returns the number of rows it changed (0 or
// 1). If ctx ends while the statement is in flight, it returns the
// context's error and the row may still have been changed.
func (s *Store) batched(ctx context.Context, k *updateKind, id string, args ...any) (int64, error) {
	if !storable(id) {
		return 0, nil
	}
	p := &pendingUpdate{ctx: ctx, id: id, args: args, done: make(chan struct{})}
	k.q.mu.Lock()
	k.q.waiting = append(k.q.waiting, p)
	lead := k.q.running < maxUpdateStatements
	if lead {
		k.q.running++
	}
	k.q.mu.Unlock()
	if lead {
		s.updateWaiting(k)
	}
	select {
	case <-p.done:
		if p.changed {
			return 1, p.err
		}
		return 0, p.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// updateWaiting takes the waiting calls of kind k (up to maxCreateBatch)
// and writes them, then passes the slot on: to a new goroutine when more
// are waiting, else back to the queue.
func (s *Store) updateWaiting(k *updateKind) {
	k.q.mu.Lock()
	n := min(len(k.q.waiting), maxCreateBatch)
	batch := slices.Clone(k.q.waiting[:n])
	k.q.waiting = slices.Delete(k.q.waiting, 0, n)
	k.q.mu.Unlock()

	s.updateBatch(k, batch)

	k.q.mu.Lock()
	more := len(k.q.waiting) > 0
	if !more {
		k.q.running--
	}
	k.q.mu.Unlock()
	if more {
		s.creates.workers.Go(func() { s.updateWaiting(k) })
	}
}

// updateBatch writes the batch and completes each call.
func (s *Store) updateBatch(k *updateKind, batch []*pendingUpdate) {
	// A call that gave up before its statement was sent is not written;
	// a second call for an id already in the batch is written alone
	// afterwards, so that each row is changed by one call at most.
	live, later := batch[:0:0], batch[:0:0]
	seen := make(map[string]bool, len(batch))
	for _, p := range batch {
		switch {
		case p.ctx.Err() != nil:
			p.complete(false, p.ctx.Err())
		case seen[p.id]:
			later = append(later, p)
		default:
			seen[p.id] = true
			live = append(live, p)
		}
	}
	defer func() {
		for _, p := range later {
			n, err := s.update(p.ctx, k.op, idempotent, k.single, p.id, p.args...)
			p.complete(n == 1, err)
		}
	}()
	switch len(live) {
	case 0:
		return
	case 1:
		p := live[0]
		n, err := s.update(p.ctx, k.op, idempotent, k.single, p.id, p.args...)
		p.complete(n == 1, err)
		return
	}
	// In id order, concurrent batches lock their rows in one order.
	slices.SortFunc(live, func(a, b *pendingUpdate) int { return cmp.Compare(a.id, b.id) })
	arrays := make([]any, 1+len(live[0].args))
	ids := make([]string, len(live))
	for i, p := range live {
		ids[i] = p.id
	}
	arrays[0] = ids
	for j := range live[0].args {
		arrays[1+j] = column(live, j)
	}
	changed := make(map[string]bool, len(live))
	ctx := s.bgCtx // the statement serves every call of the batch
	err := s.do(ctx, k.op, idempotent, func() error {
		clear(changed)
		return s.conn(ctx, func(c *pgx.Conn) error {
			rows, err := c.Query(ctx, k.batch, arrays...)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					return err
				}
				changed[id] = true
			}
			return rows.Err()
		})
	})
	if rowError(err) {
		// One bad row fails the whole statement: write them one by one,
		// so that each call gets its own answer.
		for _, p := range live {
			n, err := s.update(p.ctx, k.op, idempotent, k.single, p.id, p.args...)
			p.complete(n == 1, err)
		}
		return
	}
	for _, p := range live {
		p.complete(changed[p.id], err)
	}
}

// column returns the j-th argument of every call as a typed slice, for
// unnest.
func column(batch []*pendingUpdate, j int) any {
	switch batch[0].args[j].(type) {
	case int64:
		out := make([]int64, len(batch))
		for i, p := range batch {
			out[i] = p.args[j].(int64)
		}
		return out
	case int:
		out := make([]int32, len(batch))
		for i, p := range batch {
			out[i] = int32(p.args[j].(int))
		}
		return out
	case bool:
		out := make([]bool, len(batch))
		for i, p := range batch {
			out[i] = p.args[j].(bool)
		}
		return out
	case string:
		out := make([]string, len(batch))
		for i, p := range batch {
			out[i] = p.args[j].(string)
		}
		return out
	}
	panic("pgstore: no array type for a batched argument")
}

// The batched kinds. Each batch statement keeps its single-row statement's
// conditions, row by row, written so as to imply no partial index's
// predicate (see startTask).
func newUpdateKinds() (start, finish, record *updateKind) {
	return &updateKind{op: "start", single: startTask, batch: startBatch},
		&updateKind{op: "finish", single: finishTask, batch: finishBatch},
		&updateKind{op: "record attempt", single: recordAttempt, batch: recordBatch}
}

const (
	startBatch = `UPDATE tasks t SET started_ms = u.ms
FROM unnest($1::text[], $2::bigint[]) AS u(id, ms)
WHERE t.id = u.id AND t.started_ms = 0 AND t.finished_ms + 0 = 0
RETURNING t.id`
	finishBatch = `UPDATE tasks t SET response = u.response::json,
finished_ms = u.ms, success = u.ok, lease_ms = 0,
next_attempt_ms = CASE WHEN t.callback_url <> '' THEN u.ms ELSE t.next_attempt_ms END
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::boolean[]) AS u(id, response, ms, ok)
WHERE t.id = u.id AND t.finished_ms + 0 = 0
RETURNING t.id`
	recordBatch = `UPDATE tasks t SET attempts = t.attempts + 1,
last_status = u.status, last_error = u.error, delivered_ms = u.delivered, next_attempt_ms = u.next, claim_ms = 0
FROM unnest($1::text[], $2::integer[], $3::text[], $4::bigint[], $5::bigint[]) AS u(id, status, error, delivered, next)
WHERE t.id = u.id AND t.callback_url <> '' AND t.finished_ms <> 0 AND t.delivered_ms = 0 AND t.next_attempt_ms + 0 <> 0
AND NOT (t.claim_ms = 0 AND t.next_attempt_ms = u.next AND t.last_status = u.status AND t.last_error = u.error)
RETURNING t.id`
)
