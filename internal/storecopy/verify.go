package storecopy

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"
	"time"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// Summary describes one side of a verified copy: how many tasks, per task
// status and per callback status, and a checksum over the records.
type Summary struct {
	Tasks int
	// Status counts the tasks per taskstore.Status.
	Status map[taskstore.Status]int
	// Callback counts the tasks per taskstore.CallbackStatus
	// (CallbackNone for the tasks without a callback).
	Callback map[taskstore.CallbackStatus]int
	// Checksum is the SHA-256 of the records in walk order (see
	// AppendRecord), hex-encoded.
	Checksum string

	h hash.Hash
}

func newSummary() Summary {
	return Summary{Status: map[taskstore.Status]int{}, Callback: map[taskstore.CallbackStatus]int{}, h: sha256.New()}
}

func (s *Summary) add(t taskstore.Task, buf []byte) []byte {
	s.Tasks++
	s.Status[t.Status()]++
	s.Callback[t.CallbackStatus()]++
	buf = AppendRecord(buf[:0], t)
	s.h.Write(buf)
	return buf
}

func (s *Summary) finish() { s.Checksum = hex.EncodeToString(s.h.Sum(nil)) }

// Same reports whether two summaries agree: counts and checksum.
func (s Summary) Same(o Summary) bool {
	if s.Tasks != o.Tasks || s.Checksum != o.Checksum {
		return false
	}
	for _, st := range taskstore.Statuses {
		if s.Status[st] != o.Status[st] {
			return false
		}
	}
	for _, cb := range append([]taskstore.CallbackStatus{taskstore.CallbackNone}, taskstore.CallbackStatuses[:]...) {
		if s.Callback[cb] != o.Callback[cb] {
			return false
		}
	}
	return true
}

// String gives the counts and the checksum on one line.
func (s Summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d tasks (", s.Tasks)
	for i, st := range taskstore.Statuses {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", st, s.Status[st])
	}
	b.WriteString("); callbacks (")
	fmt.Fprintf(&b, "none %d", s.Callback[taskstore.CallbackNone])
	for _, cb := range taskstore.CallbackStatuses {
		fmt.Fprintf(&b, ", %s %d", cb, s.Callback[cb])
	}
	fmt.Fprintf(&b, "); sha256 %s", s.Checksum)
	return b.String()
}

// Verification is what Verify found.
type Verification struct {
	// Source summarizes the source's tasks as a copy stores them
	// (Expected); Destination the destination's records of the same ids.
	Source, Destination Summary
	// Missing are source tasks the destination does not hold (at their
	// place in the order: a task the destination holds with another
	// CreatedAt is missing, and counted in Other).
	Missing Problems
	// Different are source tasks the destination holds with another
	// record; the reason names the fields.
	Different Problems
	// Other counts the destination's tasks that are not the source's.
	Other int
}

// OK reports whether the destination holds every source task as expected.
func (v Verification) OK() bool {
	return v.Missing.N == 0 && v.Different.N == 0 && v.Source.Same(v.Destination)
}

// Verify walks src and dst side by side and compares them; see the
// package comment. The two walks run at once, on goroutines of their own.
func Verify(ctx context.Context, src, dst taskstore.Store, o Options) (Verification, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n, max := o.batch(), o.maxListed()
	sb, sErr := walk(ctx, src, n, nil)
	db, dErr := walk(ctx, dst, n, nil)
	drain := func() {
		cancel()
		for range sb {
		}
		for range db {
		}
	}
	s, d := &stream{c: sb}, &stream{c: db}
	v := Verification{Source: newSummary(), Destination: newSummary()}
	var buf []byte
	read := 0
	for {
		r, ok := s.next()
		if !ok {
			break
		}
		want := Expected(r)
		buf = v.Source.add(want, buf)
		for {
			h, ok := d.peek()
			if !ok || !storekit.CursorBefore(h.Cursor(), want) {
				break
			}
			v.Other++
			d.next()
		}
		if h, ok := d.peek(); ok && h.ID == want.ID && storekit.ToMillis(h.CreatedAt) == storekit.ToMillis(want.CreatedAt) {
			d.next()
			buf = v.Destination.add(h.Task, buf)
			if diff := Diff(want, h.Task); diff != "" {
				v.Different.add(max, want.ID, diff)
			}
		} else {
			v.Missing.add(max, want.ID, "not in the destination")
		}
		if read++; read%n == 0 && o.Progress != nil {
			o.Progress(Progress{Read: read})
		}
	}
	if err := <-sErr; err != nil { // the source's channel is closed: its walk has ended
		drain()
		return v, fmt.Errorf("reading the source: %w", err)
	}
	for {
		if _, ok := d.next(); !ok {
			break
		}
		v.Other++
	}
	if err := <-dErr; err != nil {
		drain()
		return v, fmt.Errorf("reading the destination: %w", err)
	}
	v.Source.finish()
	v.Destination.finish()
	return v, nil
}

// stream reads the records of a walk one at a time.
type stream struct {
	c    <-chan []taskstore.Record
	page []taskstore.Record
	i    int
}

func (s *stream) peek() (taskstore.Record, bool) {
	for s.i >= len(s.page) {
		p, ok := <-s.c
		if !ok {
			return taskstore.Record{}, false
		}
		s.page, s.i = p, 0
	}
	return s.page[s.i], true
}

func (s *stream) next() (taskstore.Record, bool) {
	r, ok := s.peek()
	if ok {
		s.i++
	}
	return r, ok
}

// Diff names the fields in which got differs from want, "" when none does:
// strings and JSON byte for byte (a nil Response differs from an empty
// one), times to the millisecond.
func Diff(want, got taskstore.Task) string {
	var d []string
	str := func(name, w, g string) {
		if w != g {
			d = append(d, name)
		}
	}
	tm := func(name string, w, g time.Time) {
		if storekit.ToMillis(w) != storekit.ToMillis(g) {
			d = append(d, name)
		}
	}
	num := func(name string, w, g int) {
		if w != g {
			d = append(d, name)
		}
	}
	str("id", want.ID, got.ID)
	str("trace_id", want.TraceID, got.TraceID)
	str("type", want.Type, got.Type)
	str("request", string(want.Request), string(got.Request))
	if string(want.Response) != string(got.Response) || (want.Response == nil) != (got.Response == nil) {
		d = append(d, "response")
	}
	tm("created_at", want.CreatedAt, got.CreatedAt)
	tm("started_at", want.StartedAt, got.StartedAt)
	tm("finished_at", want.FinishedAt, got.FinishedAt)
	str("application_id", want.ApplicationID, got.ApplicationID)
	str("user_id", want.UserID, got.UserID)
	str("credential_id", want.CredentialID, got.CredentialID)
	str("callback url", want.Callback.URL, got.Callback.URL)
	num("callback attempts", want.Callback.Attempts, got.Callback.Attempts)
	tm("callback next attempt", want.Callback.NextAttemptAt, got.Callback.NextAttemptAt)
	tm("callback delivered_at", want.Callback.DeliveredAt, got.Callback.DeliveredAt)
	num("callback last status", want.Callback.LastStatus, got.Callback.LastStatus)
	str("callback last error", want.Callback.LastError, got.Callback.LastError)
	tm("lease", want.LeaseUntil, got.LeaseUntil)
	str("recorder", want.Recorder, got.Recorder)
	return strings.Join(d, ", ")
}

// AppendRecord appends the encoding of every field of t that Checksum
// hashes: each string and JSON value as its length (a uvarint; a nil
// Response as 0 and any other as its length plus one) and its bytes, each
// time as Unix milliseconds and each number as a varint, in the order of
// the Task struct. Two tasks have the same encoding exactly when Diff
// finds no difference between them.
func AppendRecord(b []byte, t taskstore.Task) []byte {
	s := func(v string) {
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	n := func(v int64) { b = binary.AppendVarint(b, v) }
	s(t.ID)
	s(t.TraceID)
	s(t.Type)
	s(string(t.Request))
	if t.Response == nil {
		b = binary.AppendUvarint(b, 0)
	} else {
		b = binary.AppendUvarint(b, uint64(len(t.Response))+1)
		b = append(b, t.Response...)
	}
	n(storekit.ToMillis(t.CreatedAt))
	n(storekit.ToMillis(t.StartedAt))
	n(storekit.ToMillis(t.FinishedAt))
	s(t.ApplicationID)
	s(t.UserID)
	s(t.CredentialID)
	s(t.Callback.URL)
	n(int64(t.Callback.Attempts))
	n(storekit.ToMillis(t.Callback.NextAttemptAt))
	n(storekit.ToMillis(t.Callback.DeliveredAt))
	n(int64(t.Callback.LastStatus))
	s(t.Callback.LastError)
	n(storekit.ToMillis(t.LeaseUntil))
	s(t.Recorder)
	return b
}

// Check verifies a finished Copy at the cost of one walk of the
// destination: the summary of the destination's records (counts and
// checksum) must equal the summary of the records Copy read from the
// source (res.Source), and the source store's own counts (Find's totals,
// per status and per callback status) must still be those Copy read. When
// both hold, the destination holds exactly the records read, and the
// source has as many tasks in each state as when it was read. When either
// differs (the destination holds other tasks, or the source changed), Check
// runs Verify, which reads both stores again and lists the tasks; full
// reports that it did.
//
// Check suits a source nothing writes to during the copy: a change that
// leaves every count as it was (a failed delivery attempt rescheduled)
// shows only in Verify.
func Check(ctx context.Context, src, dst taskstore.Store, res Result, o Options) (v Verification, full bool, err error) {
	if res.Source.h == nil {
		v, err := Verify(ctx, src, dst, o)
		return v, true, err
	}
	dsum := newSummary()
	var buf []byte
	pages, readErr := walk(ctx, dst, o.batch(), nil)
	read := 0
	for page := range pages {
		for _, r := range page {
			buf = dsum.add(r.Task, buf)
		}
		if read += len(page); o.Progress != nil {
			o.Progress(Progress{Read: read})
		}
	}
	if err := <-readErr; err != nil {
		return v, false, fmt.Errorf("reading the destination: %w", err)
	}
	dsum.finish()
	counts, err := storeCounts(ctx, src)
	if err != nil {
		return v, false, fmt.Errorf("reading the source: %w", err)
	}
	if !dsum.Same(res.Source) || !counts.sameCounts(res.Source) {
		v, err := Verify(ctx, src, dst, o)
		return v, true, err
	}
	return Verification{Source: res.Source, Destination: dsum}, false, nil
}

// storeCounts reads a store's totals per status and callback status with
// Find (Limit 0: the count alone, from the stores' counters).
func storeCounts(ctx context.Context, s taskstore.Store) (Summary, error) {
	sum := newSummary()
	_, n, err := s.Find(ctx, taskstore.Filter{})
	if err != nil {
		return sum, err
	}
	sum.Tasks = n
	withCallback := 0
	for _, st := range taskstore.Statuses {
		if _, sum.Status[st], err = s.Find(ctx, taskstore.Filter{Status: st}); err != nil {
			return sum, err
		}
	}
	for _, cb := range taskstore.CallbackStatuses {
		if _, sum.Callback[cb], err = s.Find(ctx, taskstore.Filter{CallbackStatus: cb}); err != nil {
			return sum, err
		}
		withCallback += sum.Callback[cb]
	}
	sum.Callback[taskstore.CallbackNone] = n - withCallback
	return sum, nil
}

// sameCounts reports whether s and o count the same tasks in each state.
func (s Summary) sameCounts(o Summary) bool {
	o.Checksum = s.Checksum
	return s.Same(o)
}
