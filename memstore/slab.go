package memstore

import (
	"encoding/json"
	"errors"
	"math"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

// rec is a stored task: times in Unix milliseconds (0 = not set), JSON owned
// by the store and never handed out (readers get copies).
type rec struct {
	id, traceID, typ  string
	app, user, cred   string
	url, lastErr      string
	request, response json.RawMessage
	created, started  int64
	finished, lease   int64
	next, delivered   int64
	attempts          uint32 // storekit.Normalize allows up to MaxInt32; RecordAttempt adds one
	lastStatus        int32  // an HTTP status, 0 to 999
	recorder          string // Task.Recorder, interned
	// ok: the task finished with a success (taskstore.Succeeded of its
	// response), computed once when the response is stored.
	ok bool
	// claimed: a ClaimDeliveries claim on the pending callback that no
	// RecordAttempt has ended. The delivery is in flight while the claim
	// lasts (next, the claim's end, is later than now).
	claimed bool
}

// pending reports whether the callback is due or scheduled (the outbox).
func (r *rec) pending() bool {
	return r.url != "" && r.finished != 0 && r.delivered == 0 && r.next != 0
}

// gaveUp reports whether the callback failed: no further attempt is
// scheduled (taskstore.CallbackFailed).
func (r *rec) gaveUp() bool {
	return r.url != "" && r.finished != 0 && r.delivered == 0 && r.next == 0
}

// recorded reports whether the callback already records attempt a, whose
// delivery time and next attempt (storekit.AttemptMillis) are given: the repeat of
// a RecordAttempt (see taskstore.Store).
func (r *rec) recorded(a taskstore.Attempt, delivered, next int64) bool {
	if r.url == "" || r.finished == 0 || r.lastStatus != int32(a.Status) || r.lastErr != a.Error {
		return false
	}
	switch {
	case delivered != 0:
		return r.delivered == delivered
	case next != 0:
		return r.pending() && !r.claimed && r.next == next
	}
	return r.gaveUp()
}

// task returns the task as a value; its JSON is carved out of *buf, which the
// caller sized for every task it converts (one allocation per page).
func (r *rec) task(buf *[]byte) taskstore.Task {
	return taskstore.Task{
		ID: r.id, TraceID: r.traceID, Type: r.typ,
		Request:       carve(buf, r.request),
		Response:      carve(buf, r.response),
		CreatedAt:     storekit.FromMillis(r.created),
		StartedAt:     storekit.FromMillis(r.started),
		FinishedAt:    storekit.FromMillis(r.finished),
		ApplicationID: r.app, UserID: r.user, CredentialID: r.cred,
		Callback: taskstore.Callback{
			URL: r.url, Attempts: int(r.attempts),
			NextAttemptAt: storekit.FromMillis(r.next),
			DeliveredAt:   storekit.FromMillis(r.delivered),
			LastStatus:    int(r.lastStatus), LastError: r.lastErr,
		},
		LeaseUntil: storekit.FromMillis(r.lease),
		Recorder:   r.recorder,
	}
}

// carve copies b to the end of *buf and returns the copy, capped so that an
// append to it reallocates instead of overwriting the next task's bytes.
func carve(buf *[]byte, b json.RawMessage) json.RawMessage {
	if b == nil {
		return nil
	}
	start := len(*buf)
	*buf = append(*buf, b...)
	return json.RawMessage((*buf)[start:len(*buf):len(*buf)])
}

const (
	pageShift = 8
	pageSize  = 1 << pageShift
	pageMask  = pageSize - 1
)

// errFull is returned when the store holds as many tasks as a slot can
// number (about four billion).
var errFull = errors.New("memstore: store is full")

// slab holds the records in fixed-size pages, addressed by a uint32 slot, so
// that indexes are arrays of small integers the garbage collector does not
// scan, and growing the store never copies the records. Freed slots are
// reused.
type slab struct {
	pages [][]rec
	free  []uint32
	used  uint32 // slots ever handed out
}

func (sl *slab) at(slot uint32) *rec { return &sl.pages[slot>>pageShift][slot&pageMask] }

func (sl *slab) alloc() (uint32, error) {
	if n := len(sl.free); n > 0 {
		slot := sl.free[n-1]
		sl.free = sl.free[:n-1]
		return slot, nil
	}
	if sl.used == math.MaxUint32 {
		return 0, errFull
	}
	slot := sl.used
	if slot>>pageShift == uint32(len(sl.pages)) {
		sl.pages = append(sl.pages, make([]rec, pageSize))
	}
	sl.used++
	return slot, nil
}

func (sl *slab) release(slot uint32) {
	*sl.at(slot) = rec{}
	sl.free = append(sl.free, slot)
}
