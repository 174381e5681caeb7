// Package storecopy copies every task of one taskstore.Store into another,
// and verifies the copy: what `tasksd copy` runs.
//
// Copy walks the source in (CreatedAt, ID) order with Store.Walk, in
// batches, and writes each batch to the destination: with its Import method
// when it has one (sqlitestore and pgstore load a batch in one transaction,
// all or nothing), else with Create. Reading the next batch overlaps with
// writing the current one, and at most three batches are in memory at a
// time, so memory does not grow with the number of tasks.
//
// Every field is copied as it is, with two exceptions that make the
// destination's server carry on where the source's stopped (Expected):
//
//   - an unfinished task loses its lease (LeaseUntil zero, which counts as
//     expired): the destination's recorder finishes it as interrupted and
//     calls back, as after a crash;
//   - a delivery claimed in the source (Record.Claimed: a deliverer held it
//     when the source was last written) is copied due at the task's
//     FinishedAt, not claimed: the destination delivers it again, which
//     at-least-once delivery allows.
//
// Both are functions of the source record alone, so running Copy again
// gives the same expected records. A task whose id the destination holds
// already is not written: if the destination's record equals the expected
// one it is counted as skipped (an earlier, interrupted copy stored it),
// else it is a conflict, listed and left alone. A task the destination
// refuses as invalid (PostgreSQL text holds no NUL character) is listed as
// unstorable. So an interrupted copy resumes by running it again, and never
// writes a task twice.
//
// Copy summarizes what it reads (Result.Source: the tasks per status and
// per callback status, and a SHA-256 over every field of every record as
// copied). Check then reads the destination back and compares its summary,
// and the source store's own counts, with it: one more walk, of the
// destination. Verify walks both stores again, side by side in the same
// order, and compares each source task's expected record with the
// destination's record of that id, field by field, listing the tasks
// missing or different; Check runs it when its comparison fails, and a
// copy from a source that was being written should run it instead of
// Check (a change that moves no count shows only there).
package storecopy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

// DefaultBatch is the number of tasks Copy and Verify read and write at a
// time when Options.Batch is zero.
const DefaultBatch = 2000

// DefaultMaxListed is how many ids of each kind of problem a Result or a
// Verification lists when Options.MaxListed is zero; the counts are
// always complete.
const DefaultMaxListed = 100

// Options tune Copy and Verify. The zero Options are the defaults.
type Options struct {
	// Batch is the number of tasks read and written at a time.
	Batch int
	// MaxListed bounds the ids listed for each kind of problem.
	MaxListed int
	// Progress, when set, is called after each batch with the counts so
	// far, on the goroutine that called Copy or Verify.
	Progress func(Progress)
	// DryRun makes Copy write nothing: it reads and compares as it would
	// and counts as Copied the tasks it would write (none can be found
	// unstorable, as only a write tells).
	DryRun bool
}

func (o Options) batch() int {
	if o.Batch <= 0 {
		return DefaultBatch
	}
	return o.Batch
}

func (o Options) maxListed() int {
	if o.MaxListed <= 0 {
		return DefaultMaxListed
	}
	return o.MaxListed
}

// Progress is how far a Copy or a Verify has come.
type Progress struct {
	// Read is the number of source tasks read so far.
	Read int
	// Copied, Skipped, Conflicts and Unstorable count the tasks read so
	// far by what Copy did with them (Verify leaves them zero).
	Copied, Skipped, Conflicts, Unstorable int
}

// Problem is one task a copy could not make right: its id and why.
type Problem struct {
	ID     string
	Reason string
}

// Problems is a count and the first of the problems it counts.
type Problems struct {
	N      int
	Listed []Problem
}

func (p *Problems) add(max int, id, reason string) {
	p.N++
	if len(p.Listed) < max {
		p.Listed = append(p.Listed, Problem{ID: id, Reason: reason})
	}
}

// Result is what Copy did.
type Result struct {
	// Read counts the source tasks read; each was copied, skipped, or is
	// listed in Conflicts or Unstorable.
	Read, Copied, Skipped int
	// Conflicts are tasks whose id the destination held with a different
	// record; they were left as they are.
	Conflicts Problems
	// Unstorable are tasks the destination refused as invalid.
	Unstorable Problems
	// Source summarizes every source task read, as a copy stores it
	// (Expected), in walk order; set when Copy returns no error.
	Source Summary
}

// OK reports whether every task read is in the destination as expected.
func (r Result) OK() bool { return r.Conflicts.N == 0 && r.Unstorable.N == 0 }

func (r Result) progress() Progress {
	return Progress{Read: r.Read, Copied: r.Copied, Skipped: r.Skipped, Conflicts: r.Conflicts.N, Unstorable: r.Unstorable.N}
}

// Expected returns the task as a copy of the source record r stores it:
// r's task with no lease when unfinished, and due at its FinishedAt, not
// claimed, when r's delivery is claimed. See the package comment.
func Expected(r taskstore.Record) taskstore.Task {
	t := r.Task
	if !t.Finished() {
		t.LeaseUntil = time.Time{}
	}
	if r.Claimed {
		t.Callback.NextAttemptAt = t.FinishedAt
	}
	return t
}

// Importer is a store that loads many tasks in one all-or-nothing call
// (sqlitestore and pgstore): ErrConflict when an id is stored already,
// ErrInvalid when a task is refused, and nothing stored then.
type Importer interface {
	Import(ctx context.Context, tasks []taskstore.Task) error
}

// Copy copies every task of src into dst; see the package comment. It
// returns what it did so far with the first error that stopped it (a
// cancelled ctx included): a later Copy resumes. Conflicts and unstorable
// tasks do not stop it; Result.OK reports them.
func Copy(ctx context.Context, src, dst taskstore.Store, o Options) (Result, error) {
	var res Result
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Into an empty destination, batches are written without looking
	// their ids up first: none can be there but by another writer, whose
	// task makes the batch's Import fail with ErrConflict, and the batch
	// is then written one task at a time, each checked.
	_, held, err := dst.Find(ctx, taskstore.Filter{})
	if err != nil {
		return res, fmt.Errorf("reading the destination: %w", err)
	}
	empty := held == 0
	// The summary of what is read is kept on the reader's goroutine,
	// which waits for the writes anyway.
	sum := newSummary()
	var buf []byte
	batches, readErr := walk(ctx, src, o.batch(), func(page []taskstore.Record) {
		for _, r := range page {
			buf = sum.add(Expected(r), buf)
		}
	})
	for recs := range batches {
		if err := copyBatch(ctx, dst, recs, o, empty, &res); err != nil {
			cancel()
			for range batches { // let the reader end
			}
			return res, err
		}
		res.Read += len(recs)
		if o.Progress != nil {
			o.Progress(res.progress())
		}
	}
	if err := <-readErr; err != nil {
		return res, fmt.Errorf("reading the source: %w", err)
	}
	sum.finish()
	res.Source = sum
	return res, nil
}

// walk reads s from the start in batches of n records on a goroutine of its
// own and sends them; the channel closes at the end, or at the first error,
// which readErr then holds (nil at the end). One batch waits in the channel
// while the caller works on the one before.
func walk(ctx context.Context, s taskstore.Store, n int, each func([]taskstore.Record)) (<-chan []taskstore.Record, <-chan error) {
	out := make(chan []taskstore.Record)
	readErr := make(chan error, 1)
	go func() {
		defer close(out)
		var after taskstore.Cursor
		for {
			page, err := s.Walk(ctx, after, n)
			if err != nil {
				readErr <- err
				return
			}
			if len(page) > 0 {
				if each != nil {
					each(page)
				}
				select {
				case out <- page:
				case <-ctx.Done():
					readErr <- ctx.Err()
					return
				}
				after = page[len(page)-1].Cursor()
			}
			if len(page) < n {
				readErr <- nil
				return
			}
		}
	}()
	return out, readErr
}

// copyBatch writes the records the destination does not hold, and checks
// those it holds.
func copyBatch(ctx context.Context, dst taskstore.Store, recs []taskstore.Record, o Options, empty bool, res *Result) error {
	maxListed := o.maxListed()
	want := make([]taskstore.Task, len(recs))
	ids := make([]string, len(recs))
	for i, r := range recs {
		want[i] = Expected(r)
		ids[i] = r.ID
	}
	fresh := want
	if !empty {
		held, _, err := dst.Find(ctx, taskstore.Filter{IDs: ids, Limit: len(ids)})
		if err != nil {
			return fmt.Errorf("reading the destination: %w", err)
		}
		byID := make(map[string]taskstore.Task, len(held))
		for _, t := range held {
			byID[t.ID] = t
		}
		fresh = want[:0:0]
		for _, t := range want {
			if h, ok := byID[t.ID]; ok {
				res.check(maxListed, t, h)
				continue
			}
			fresh = append(fresh, t)
		}
	}
	if o.DryRun {
		res.Copied += len(fresh)
		return nil
	}
	if len(fresh) == 0 {
		return nil
	}
	if im, ok := dst.(Importer); ok {
		err := im.Import(ctx, fresh)
		switch {
		case err == nil:
			res.Copied += len(fresh)
			return nil
		case !errors.Is(err, taskstore.ErrConflict) && !errors.Is(err, taskstore.ErrInvalid):
			return fmt.Errorf("writing the destination: %w", err)
		}
		// A task of the batch is refused, or another writer stored one
		// meanwhile: store them one by one to tell which.
	}
	for _, t := range fresh {
		err := dst.Create(ctx, t)
		switch {
		case err == nil:
			res.Copied++
		case errors.Is(err, taskstore.ErrInvalid):
			res.Unstorable.add(maxListed, t.ID, "the destination refuses it: "+reason(err))
		case errors.Is(err, taskstore.ErrConflict):
			h, gerr := dst.Get(ctx, t.ID)
			if gerr != nil {
				return fmt.Errorf("reading the destination: %w", gerr)
			}
			res.check(maxListed, t, h)
		default:
			return fmt.Errorf("writing the destination: %w", err)
		}
	}
	return nil
}

// check counts a task the destination held already: skipped when it is the
// expected record, a conflict otherwise.
func (res *Result) check(maxListed int, want, held taskstore.Task) {
	if d := Diff(want, held); d != "" {
		res.Conflicts.add(maxListed, want.ID, "the destination holds a different task: "+d)
		return
	}
	res.Skipped++
}

func reason(err error) string {
	if r := taskstore.Reason(err); r != "" {
		return r
	}
	return err.Error()
}
