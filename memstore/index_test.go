package memstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
	"github.com/tasksapi/tasks/taskstore/storekit"
)

var base = time.Date(2025, 11, 14, 17, 50, 7, 967_000_000, time.UTC)

func cmpKey(k1 int64, id1 string, k2 int64, id2 string) int {
	switch {
	case k1 < k2:
		return -1
	case k1 > k2:
		return 1
	}
	return strings.Compare(id1, id2)
}

// checkIndex verifies the structure of one index: sorted, chunk sizes, count,
// Fenwick tree, and that rank and locate agree.
func checkIndex(t *testing.T, name string, sl *slab, o order, ix *index) []uint32 {
	t.Helper()
	var all []uint32
	for ci, ch := range ix.chunks {
		if len(ch) == 0 || len(ch) > maxChunk {
			t.Fatalf("%s: chunk %d has %d entries", name, ci, len(ch))
		}
		all = append(all, ch...)
	}
	if len(all) != ix.n {
		t.Fatalf("%s: n = %d, entries = %d", name, ix.n, len(all))
	}
	if len(ix.last) != len(ix.chunks) {
		t.Fatalf("%s: %d chunks, %d last times", name, len(ix.chunks), len(ix.last))
	}
	for ci, ch := range ix.chunks {
		if k, _ := sl.sortKey(o, ch[len(ch)-1]); ix.last[ci] != k {
			t.Fatalf("%s: chunk %d ends at %d, recorded %d", name, ci, k, ix.last[ci])
		}
	}
	for i := 1; i < len(all); i++ {
		k1, id1 := sl.sortKey(o, all[i-1])
		k2, id2 := sl.sortKey(o, all[i])
		if cmpKey(k1, id1, k2, id2) >= 0 {
			t.Fatalf("%s: entries %d and %d out of order: (%d %s) (%d %s)", name, i-1, i, k1, id1, k2, id2)
		}
	}
	if (len(ix.chunks) > 1) != (ix.fen != nil) {
		t.Fatalf("%s: %d chunks with fen %v", name, len(ix.chunks), ix.fen)
	}
	pos := 0
	for ci, ch := range ix.chunks {
		for j := range ch {
			if r := ix.rank(ci, j); r != pos {
				t.Fatalf("%s: rank(%d,%d) = %d, want %d", name, ci, j, r, pos)
			}
			if gci, gj := ix.locate(pos); gci != ci || gj != j {
				t.Fatalf("%s: locate(%d) = (%d,%d), want (%d,%d)", name, pos, gci, gj, ci, j)
			}
			pos++
		}
	}
	checkTags(t, name, sl, ix)
	return all
}

// checkSets are the state sets the tag checks count: each state, each task
// status and each callback status.
var checkSets = func() []stateSet {
	var sets []stateSet
	for s := range nStates {
		sets = append(sets, 1<<s)
	}
	for _, st := range taskstore.Statuses {
		sets = append(sets, statesOf(st, ""))
	}
	for _, cs := range taskstore.CallbackStatuses {
		sets = append(sets, statesOf("", cs))
	}
	return sets
}()

// checkTags verifies the state tags of a tagged index against the tasks, the
// per-chunk counts and their Fenwick tree, and that count, rankIn and
// locateIn agree with a plain count; an untagged index carries none.
func checkTags(t *testing.T, name string, sl *slab, ix *index) {
	t.Helper()
	if !ix.tagged {
		if ix.tags != nil || ix.cnt != nil || ix.sfen != nil {
			t.Fatalf("%s: untagged index with tags", name)
		}
		return
	}
	if len(ix.tags) != len(ix.chunks) || len(ix.cnt) != len(ix.chunks) {
		t.Fatalf("%s: %d chunks, %d tag chunks, %d counts", name, len(ix.chunks), len(ix.tags), len(ix.cnt))
	}
	if (len(ix.chunks) > 1) != (ix.sfen != nil) {
		t.Fatalf("%s: %d chunks with state Fenwick %v", name, len(ix.chunks), ix.sfen != nil)
	}
	for ci, ch := range ix.chunks {
		if len(ix.tags[ci]) != len(ch) {
			t.Fatalf("%s: chunk %d has %d entries and %d tags", name, ci, len(ch), len(ix.tags[ci]))
		}
		for j, slot := range ch {
			if got, want := ix.tags[ci][j], sl.at(slot).state(); got != want {
				t.Fatalf("%s: %q tagged %d, its state is %d", name, sl.at(slot).id, got, want)
			}
		}
		if ix.cnt[ci] != tally(ix.tags[ci]) {
			t.Fatalf("%s: chunk %d counts %v, tags %v", name, ci, ix.cnt[ci], tally(ix.tags[ci]))
		}
	}
	for _, set := range checkSets {
		k := 0 // rank among the entries in set
		for ci, ch := range ix.chunks {
			for j := range ch {
				if j%37 == 0 || j == len(ch)-1 {
					if got := ix.rankIn(set, ci, j); got != k {
						t.Fatalf("%s: rankIn(%b, %d, %d) = %d, want %d", name, set, ci, j, got, k)
					}
				}
				if !set.has(ix.tags[ci][j]) {
					continue
				}
				if gci, gj := ix.locateIn(set, k); gci != ci || gj != j {
					t.Fatalf("%s: locateIn(%b, %d) = (%d,%d), want (%d,%d)", name, set, k, gci, gj, ci, j)
				}
				k++
			}
		}
		if got := ix.count(set); got != k {
			t.Fatalf("%s: count(%b) = %d, want %d", name, set, got, k)
		}
	}
}

// checkStore verifies every index of s against its records.
func checkStore(t *testing.T, s *Store) {
	t.Helper()
	sl := &s.recs
	live := map[uint32]bool{}
	for id, slot := range s.byID {
		if sl.at(slot).id != id {
			t.Fatalf("byID[%q] points at %q", id, sl.at(slot).id)
		}
		live[slot] = true
	}
	sameSet := func(name string, got []uint32, want func(*rec) bool) {
		t.Helper()
		n := 0
		for slot := range live {
			if want(sl.at(slot)) {
				n++
			}
		}
		for _, slot := range got {
			if !live[slot] || !want(sl.at(slot)) {
				t.Fatalf("%s holds slot %d (%q) which does not belong", name, slot, sl.at(slot).id)
			}
		}
		if n != len(got) {
			t.Fatalf("%s has %d entries, want %d", name, len(got), n)
		}
	}
	for slot := range live {
		r := sl.at(slot)
		if r.claimed && !r.pending() {
			t.Fatalf("%q claimed, its callback is %s", r.id, stateNames[r.state()].callback)
		}
		if r.ok != (r.finished != 0 && taskstore.Succeeded(r.response)) {
			t.Fatalf("%q: success bit %v, finished %d with %s", r.id, r.ok, r.finished, r.response)
		}
	}
	// The indexes by created_at know the states of their tasks, but for the
	// trace ones; the others do not.
	tagged := func(name string, ix *index, want bool) {
		t.Helper()
		if ix.tagged != want {
			t.Fatalf("%s: tagged %v, want %v", name, ix.tagged, want)
		}
	}
	tagged("all", &s.all, true)
	for _, b := range s.boxes {
		tagged("leases", &b.leases, false)
		tagged("due", &b.due, false)
		tagged("failed", &b.failed, false)
	}
	for _, ix := range s.byApp {
		tagged("app", ix, true)
	}
	for _, ix := range s.byUser {
		tagged("user", ix, true)
	}
	for _, ix := range s.byType {
		tagged("type", ix, true)
	}
	for _, ix := range s.byPair {
		tagged("pair", ix, true)
	}
	for _, ix := range s.byTrace {
		tagged("trace", ix, false)
	}
	sameSet("all", checkIndex(t, "all", sl, byCreated, &s.all), func(*rec) bool { return true })
	names := map[string]bool{}
	for slot := range live {
		names[sl.at(slot).recorder] = true
	}
	for name := range names {
		if s.boxes[name] == nil {
			t.Fatalf("no indexes for recorder %q", name)
		}
	}
	for name, b := range s.boxes {
		if b.name != name {
			t.Fatalf("box %q is named %q", name, b.name)
		}
		of := func(f func(*rec) bool) func(*rec) bool {
			return func(r *rec) bool { return r.recorder == name && f(r) }
		}
		sameSet("leases "+name, checkIndex(t, "leases", sl, byLease, &b.leases), of(func(r *rec) bool { return r.finished == 0 }))
		sameSet("due "+name, checkIndex(t, "due", sl, byDue, &b.due), of((*rec).pending))
		sameSet("failed "+name, checkIndex(t, "failed", sl, byFinished, &b.failed), of((*rec).gaveUp))
	}
	for _, m := range []struct {
		name string
		m    map[string]*index
		key  func(*rec) string
	}{
		{"app", s.byApp, func(r *rec) string { return r.app }},
		{"user", s.byUser, func(r *rec) string { return r.user }},
		{"type", s.byType, func(r *rec) string { return r.typ }},
	} {
		keys := map[string]bool{}
		for slot := range live {
			if k := m.key(sl.at(slot)); k != "" {
				keys[k] = true
			}
		}
		if len(keys) != len(m.m) {
			t.Fatalf("%s index has %d keys, tasks have %d (empty indexes not dropped?)", m.name, len(m.m), len(keys))
		}
		for k, ix := range m.m {
			if ix.key != k {
				t.Fatalf("%s index %q has key %q", m.name, k, ix.key)
			}
			name := m.name + "[" + k + "]"
			sameSet(name, checkIndex(t, name, sl, byCreated, ix), func(r *rec) bool { return m.key(r) == k })
		}
	}
	traces := map[string][]uint32{}
	for slot := range live {
		if tr := sl.at(slot).traceID; tr != "" {
			traces[tr] = append(traces[tr], slot)
		}
	}
	if len(s.byTrace)+len(s.trace1) != len(traces) {
		t.Fatalf("trace indexes hold %d+%d keys, tasks have %d", len(s.byTrace), len(s.trace1), len(traces))
	}
	for tr, slots := range traces {
		if len(slots) == 1 {
			if got, ok := s.trace1[tr]; !ok || got != slots[0] {
				t.Fatalf("trace %q of one task: trace1 = %d, %v; want %d", tr, got, ok, slots[0])
			}
			continue
		}
		ix := s.byTrace[tr]
		if ix == nil || ix.key != tr {
			t.Fatalf("trace %q of %d tasks has no index", tr, len(slots))
		}
		name := "trace[" + tr + "]"
		sameSet(name, checkIndex(t, name, sl, byCreated, ix), func(r *rec) bool { return r.traceID == tr })
	}
	pairs := map[pair]bool{}
	for slot := range live {
		if r := sl.at(slot); r.app != "" && r.user != "" {
			pairs[pair{r.app, r.user}] = true
		}
	}
	if len(pairs) != len(s.byPair) {
		t.Fatalf("pair index has %d keys, tasks have %d", len(s.byPair), len(pairs))
	}
	for k, ix := range s.byPair {
		name := fmt.Sprintf("pair%v", k)
		sameSet(name, checkIndex(t, name, sl, byCreated, ix), func(r *rec) bool { return r.app == k.app && r.user == k.user })
	}
	if got := int(sl.used) - len(sl.free); got != len(s.byID) {
		t.Fatalf("slab has %d live slots, byID %d", got, len(s.byID))
	}
}

func TestIndexRandom(t *testing.T) {
	// Random inserts and removes well past several chunk splits and merges.
	sl := &slab{}
	var ix index
	rng := rand.New(rand.NewPCG(3, 4))
	in := map[uint32]bool{}
	for step := 0; step < 20000; step++ {
		if len(in) > 0 && rng.IntN(3) == 0 {
			for slot := range in {
				ix.remove(sl, byCreated, slot)
				delete(in, slot)
				sl.release(slot)
				break
			}
			continue
		}
		slot, err := sl.alloc()
		if err != nil {
			t.Fatal(err)
		}
		*sl.at(slot) = rec{id: fmt.Sprintf("%06d", rng.IntN(1_000_000)), created: int64(rng.IntN(500))}
		if step > 12000 { // mostly in order later on: the append path
			sl.at(slot).created = int64(1000 + step)
		}
		ix.insert(sl, byCreated, slot)
		in[slot] = true
	}
	got := checkIndex(t, "ix", sl, byCreated, &ix)
	if len(ix.chunks) < 4 {
		t.Fatalf("only %d chunks: the test does not exercise splits", len(ix.chunks))
	}
	if len(got) != len(in) {
		t.Fatalf("index has %d entries, want %d", len(got), len(in))
	}
	// Window bounds agree with a linear count.
	for i := 0; i < 200; i++ {
		lo, hi := int64(rng.IntN(600)), int64(rng.IntN(600))
		want := 0
		for _, slot := range got {
			if c := sl.at(slot).created; c >= lo && c <= hi {
				want++
			}
		}
		l, h := ix.createdBounds(sl, lo, hi, allStates)
		if h-l != want {
			t.Fatalf("window [%d,%d]: %d entries, want %d", lo, hi, h-l, want)
		}
	}
	// Removing everything leaves an empty index.
	for slot := range in {
		ix.remove(sl, byCreated, slot)
	}
	if ix.n != 0 || ix.chunks != nil || ix.last != nil || ix.fen != nil {
		t.Fatalf("emptied index: n=%d chunks=%d fen=%v", ix.n, len(ix.chunks), ix.fen)
	}
}

// setState sets the fields of r that make its state s.
func setState(r *rec, s state) {
	r.started, r.finished, r.url, r.next, r.delivered, r.ok, r.response = 0, 0, "", 0, 0, false, nil
	switch stateNames[s].status {
	case taskstore.StatusRunning:
		r.started = 1
	case taskstore.StatusSucceeded:
		r.started, r.finished, r.ok, r.response = 1, 2, true, json.RawMessage(`{"success":true}`)
	case taskstore.StatusFailed:
		r.started, r.finished, r.response = 1, 2, json.RawMessage(`{"success":false}`)
	}
	switch stateNames[s].callback {
	case taskstore.CallbackWaiting, taskstore.CallbackFailed:
		r.url = "http://r/"
	case taskstore.CallbackPending:
		r.url, r.next = "http://r/", 3
	case taskstore.CallbackDelivered:
		r.url, r.delivered = "http://r/", 3
	}
}

// Each state names the status and callback status that Task reports for
// the record, and statesOf selects them.
func TestStates(t *testing.T) {
	for s := range nStates {
		r := rec{id: "x", created: 1, request: json.RawMessage(`{}`)}
		setState(&r, s)
		if got := r.state(); got != s {
			t.Fatalf("state %d: record reads as %d", s, got)
		}
		var buf []byte
		x := r.task(&buf)
		if x.Status() != stateNames[s].status || x.CallbackStatus() != stateNames[s].callback {
			t.Fatalf("state %d is %+v, the task reads %s/%q", s, stateNames[s], x.Status(), x.CallbackStatus())
		}
		if got := statesOf(x.Status(), x.CallbackStatus()); x.CallbackStatus() != "" && got != 1<<s {
			t.Fatalf("statesOf(%s, %q) = %b, want %b", x.Status(), x.CallbackStatus(), got, 1<<s)
		}
	}
	for _, tc := range []struct {
		st   taskstore.Status
		cs   taskstore.CallbackStatus
		want int
	}{
		{"", "", int(nStates)},
		{taskstore.StatusPending, "", 2},
		{taskstore.StatusSucceeded, "", 4},
		{"", taskstore.CallbackWaiting, 2},
		{"", taskstore.CallbackFailed, 2},
		{taskstore.StatusFailed, taskstore.CallbackFailed, 1},
		{taskstore.StatusRunning, taskstore.CallbackDelivered, 0},
		{taskstore.StatusSucceeded, taskstore.CallbackWaiting, 0},
	} {
		if got := bits.OnesCount16(uint16(statesOf(tc.st, tc.cs))); got != tc.want {
			t.Errorf("statesOf(%q, %q) holds %d states, want %d", tc.st, tc.cs, got, tc.want)
		}
	}
}

// A tagged index under random inserts, removes and state changes, some
// states common and some rare (so that whole chunks lack them): the tags,
// counts and Fenwick trees stay right, and windows in any set of states are
// counted and walked exactly, from any offset.
func TestTaggedIndexRandom(t *testing.T) {
	sl := &slab{}
	ix := index{tagged: true}
	rng := rand.New(rand.NewPCG(7, 8))
	randomState := func() state {
		switch p := rng.IntN(1000); {
		case p == 0:
			return runningWaiting // one in a thousand
		case p < 10:
			return failedFailed // one in a hundred
		case p < 500:
			return succeededDelivered
		}
		return state(rng.IntN(int(nStates)))
	}
	var live []uint32
	for step := 0; step < 30000; step++ {
		switch op := rng.IntN(6); {
		case op == 0 && len(live) > 0:
			k := rng.IntN(len(live))
			slot := live[k]
			ix.remove(sl, byCreated, slot)
			live[k] = live[len(live)-1]
			live = live[:len(live)-1]
			sl.release(slot)
		case op == 1 && len(live) > 0:
			slot := live[rng.IntN(len(live))]
			setState(sl.at(slot), randomState())
			ix.retag(sl, byCreated, slot)
		default:
			slot, err := sl.alloc()
			if err != nil {
				t.Fatal(err)
			}
			*sl.at(slot) = rec{id: fmt.Sprintf("%06d", rng.IntN(1_000_000)), created: int64(rng.IntN(5000))}
			if step > 20000 { // in order later on: the append path
				sl.at(slot).created = int64(5000 + step)
			}
			setState(sl.at(slot), randomState())
			ix.insert(sl, byCreated, slot)
			live = append(live, slot)
		}
	}
	got := checkIndex(t, "ix", sl, byCreated, &ix)
	if len(ix.chunks) < 16 || len(got) != len(live) {
		t.Fatalf("%d chunks, %d entries for %d tasks", len(ix.chunks), len(got), len(live))
	}
	sets := append(checkSets, allStates, 1<<runningWaiting|1<<failedFailed)
	for i := 0; i < 400; i++ {
		set := sets[rng.IntN(len(sets))]
		if i%4 == 0 {
			set = stateSet(rng.IntN(int(allStates) + 1))
		}
		lo, hi := int64(rng.IntN(15000)), int64(rng.IntN(15000))
		if i%3 == 0 {
			lo, hi = math.MinInt64, math.MaxInt64
		}
		var want []uint32 // newest first
		for k := len(got) - 1; k >= 0; k-- {
			r := sl.at(got[k])
			if r.created >= lo && r.created <= hi && set.has(r.state()) {
				want = append(want, got[k])
			}
		}
		l, h := ix.createdBounds(sl, lo, hi, set)
		if h-l != len(want) {
			t.Fatalf("set %b, window [%d,%d]: %d entries, want %d", set, lo, hi, h-l, len(want))
		}
		if h == l {
			continue
		}
		off := 0
		if i%2 == 0 {
			off = rng.IntN(h - l)
		}
		var walked []uint32
		c := ix.down(set, h-1-off, h-l-off)
		for ok := true; ok; ok = c.next() {
			walked = append(walked, c.slot())
		}
		if !slices.Equal(walked, want[off:]) {
			t.Fatalf("set %b, window [%d,%d], offset %d: walked %d entries, want %d", set, lo, hi, off, len(walked), len(want)-off)
		}
	}
	for _, slot := range live {
		ix.remove(sl, byCreated, slot)
	}
	if ix.n != 0 || ix.chunks != nil || ix.last != nil || ix.tags != nil || ix.cnt != nil || ix.fen != nil || ix.sfen != nil {
		t.Fatalf("emptied index: n=%d chunks=%d tags=%d cnt=%d", ix.n, len(ix.chunks), len(ix.tags), len(ix.cnt))
	}
}

// TestModel runs random operations against the store and a plain reference
// model, comparing Find answers and checking every index after each batch.
// It uses enough tasks for the big indexes to span many chunks.
func TestModel(t *testing.T) {
	ctx := context.Background()
	s := New()
	defer s.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	model := map[string]taskstore.Task{}
	apps := []string{"a1", "a2", ""}
	users := []string{"u1", "u2", "u3", "u4", ""}
	types := []string{"t1", "t2", "t3"}
	traces := []string{"tr1", "tr2", "", "", ""}
	n := 6000
	if testing.Short() {
		n = 2000
	}
	responses := []json.RawMessage{json.RawMessage(`{"success":true}`), json.RawMessage(`{"success":false}`), json.RawMessage(`{"ok":true}`)}
	var created []string // every id created, deleted ones included
	refresh := func(ids ...string) {
		for _, id := range ids {
			if x, err := s.Get(ctx, id); err == nil {
				model[id] = x
			}
		}
	}
	randomID := func() string { return created[rng.IntN(len(created))] }
	var inFlight []string // claimed, most recent last
	// Two recorders' tasks, their names drawn from a source of their own.
	recorders, rrng := []string{"", "b"}, rand.New(rand.NewPCG(7, 8))
	for i := 0; i < n; i++ {
		// Mostly in time order with jitter and ties: out-of-order inserts.
		ms := i/2 + rng.IntN(300) - 150
		now := base.Add(time.Duration(i) * time.Millisecond)
		x := taskstore.Task{
			ID: fmt.Sprintf("id-%05d", rng.IntN(1_000_000)), Type: types[rng.IntN(3)],
			TraceID: randomTrace(rng, traces, n), ApplicationID: apps[rng.IntN(3)], UserID: users[rng.IntN(5)],
			Request:   json.RawMessage(`{}`),
			CreatedAt: base.Add(time.Duration(ms) * time.Millisecond),
			Recorder:  recorders[rrng.IntN(2)],
		}
		if rng.IntN(2) == 0 {
			x.Callback.URL = "http://r/"
		}
		if rng.IntN(8) == 0 { // stored finished, its callback in any state
			x.StartedAt, x.FinishedAt = x.CreatedAt, now
			x.Response = responses[rng.IntN(len(responses))]
			if x.Callback.URL != "" {
				switch rng.IntN(3) {
				case 0:
					x.Callback.NextAttemptAt = now.Add(time.Duration(rng.IntN(500)) * time.Millisecond)
				case 1:
					x.Callback.Attempts, x.Callback.LastStatus, x.Callback.DeliveredAt = 1, 204, now
				case 2:
					x.Callback.Attempts, x.Callback.LastStatus = 5, 500
				}
			}
		}
		if err := s.Create(ctx, x); err != nil {
			if _, dup := model[x.ID]; dup {
				continue
			}
			t.Fatal(err)
		}
		created = append(created, x.ID)
		refresh(x.ID)
		var err error
		switch rng.IntN(16) {
		case 0:
			err = s.Delete(ctx, x.ID)
			delete(model, x.ID)
		case 1, 2, 3:
			id := x.ID
			if rng.IntN(2) == 0 {
				id = randomID()
			}
			err = s.Finish(ctx, id, responses[rng.IntN(len(responses))], now)
			refresh(id)
		case 4:
			err = s.RenewLeases(ctx, []string{x.ID}, base.Add(time.Duration(rng.IntN(1000))*time.Millisecond))
		case 5, 6:
			id := randomID()
			err = s.Start(ctx, id, now)
			refresh(id)
		case 7, 8:
			var claimed []taskstore.Task
			claimed, err = s.ClaimDeliveries(ctx, recorders[rrng.IntN(2)], now, time.Duration(rng.IntN(3))*time.Second, 1+rng.IntN(4))
			for _, c := range claimed {
				refresh(c.ID)
				inFlight = append(inFlight, c.ID)
			}
		case 9, 10:
			id := randomID()
			if k := len(inFlight); k > 0 && rng.IntN(4) > 0 {
				id, inFlight = inFlight[k-1], inFlight[:k-1]
			}
			a := taskstore.Attempt{At: now, Status: 500, Error: "status 500"}
			switch rng.IntN(3) {
			case 0:
				a = taskstore.Attempt{At: now, Status: 204, Delivered: true}
			case 1:
				a.Next = now.Add(time.Duration(rng.IntN(2000)) * time.Millisecond)
			}
			err = s.RecordAttempt(ctx, id, a)
			refresh(id)
		case 11:
			list := []string{randomID(), randomID(), x.ID}
			_, err = s.Redeliver(ctx, list, now)
			refresh(list...)
		case 12:
			if rng.IntN(3) > 0 {
				break
			}
			var got []string
			got, err = s.RedeliverFailed(ctx, recorders[rrng.IntN(2)], base.Add(time.Duration(rng.IntN(i+1))*time.Millisecond), now, 1+rng.IntN(3))
			refresh(got...)
		}
		if err != nil && !errors.Is(err, taskstore.ErrConflict) && !errors.Is(err, taskstore.ErrNotFound) {
			t.Fatal(err)
		}
		if i%1000 == 999 {
			checkStore(t, s)
			for j := 0; j < 60; j++ {
				compareFind(t, s, model, randomFilter(rng, apps, users, types, traces, i/2))
			}
		}
	}
	// Every state occurs, so that the filters above were put to the test.
	seen := map[state]int{}
	for _, x := range model {
		seen[s.recs.at(s.byID[x.ID]).state()]++
	}
	if len(seen) != int(nStates) {
		t.Fatalf("states reached: %v", seen)
	}
	// Prune from the front and check again.
	pruned, err := s.Prune(ctx, base.Add(time.Duration(n/8)*time.Millisecond), n)
	if err != nil {
		t.Fatal(err)
	}
	if pruned == 0 {
		t.Fatal("nothing pruned")
	}
	for id, x := range model {
		if x.CreatedAt.Before(base.Add(time.Duration(n/8) * time.Millisecond)) {
			delete(model, id)
		}
	}
	checkStore(t, s)
	if len(model) != len(s.byID) {
		t.Fatalf("after prune: store has %d tasks, model %d", len(s.byID), len(model))
	}
	for j := 0; j < 100; j++ {
		compareFind(t, s, model, randomFilter(rng, apps, users, types, traces, n/2))
	}
	// Claim every due delivery: earliest due first, as many as pending.
	// Each recorder claims its own.
	pending := map[string]int{}
	for _, x := range model {
		if x.CallbackStatus() == taskstore.CallbackPending {
			pending[x.Recorder]++
		}
	}
	for _, name := range recorders {
		claimed, err := s.ClaimDeliveries(ctx, name, base.Add(100*time.Hour), time.Minute, n)
		if err != nil {
			t.Fatal(err)
		}
		if len(claimed) != pending[name] || pending[name] == 0 {
			t.Fatalf("recorder %q claimed %d, want %d", name, len(claimed), pending[name])
		}
		for _, c := range claimed {
			if c.Recorder != name {
				t.Fatalf("recorder %q claimed %q of recorder %q", name, c.ID, c.Recorder)
			}
		}
	}
	checkStore(t, s)
	// Make every failed callback due again, in batches.
	failed := s.all.count(statesOf("", taskstore.CallbackFailed))
	total := 0
	for _, name := range recorders {
		for {
			got, err := s.RedeliverFailed(ctx, name, time.Time{}, base.Add(101*time.Hour), 7)
			if err != nil {
				t.Fatal(err)
			}
			total += len(got)
			if len(got) < 7 {
				break
			}
		}
		if n := s.boxes[name].failed.n; n != 0 {
			t.Fatalf("recorder %q: %d failed callbacks left", name, n)
		}
	}
	if total != failed || failed == 0 {
		t.Fatalf("RedeliverFailed made %d due of %d failed", total, failed)
	}
	checkStore(t, s)
}

func mustGet(t *testing.T, s *Store, id string) taskstore.Task {
	t.Helper()
	x, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func randomFilter(rng *rand.Rand, apps, users, types, traces []string, maxMs int) taskstore.Filter {
	var f taskstore.Filter
	if rng.IntN(3) == 0 {
		f.ApplicationID = apps[rng.IntN(2)]
	}
	if rng.IntN(2) == 0 {
		f.UserID = users[rng.IntN(4)]
	}
	if rng.IntN(4) == 0 {
		f.Types = append(f.Types, types[rng.IntN(3)])
		if rng.IntN(2) == 0 {
			f.Types = append(f.Types, types[rng.IntN(3)])
		}
	}
	if rng.IntN(5) == 0 {
		f.TraceIDs = []string{traces[rng.IntN(2)], "none"}
	}
	if rng.IntN(5) == 0 {
		noEmpty := rng.IntN(2) == 0 // else the trace ids are no source
		for k := 0; k < 30; k++ {
			if tr := randomTrace(rng, traces, 2*maxMs); tr != "" || !noEmpty {
				f.TraceIDs = append(f.TraceIDs, tr)
			}
		}
	}
	if rng.IntN(6) == 0 {
		for k := 0; k < 20; k++ {
			f.IDs = append(f.IDs, fmt.Sprintf("id-%05d", rng.IntN(1_000_000)))
		}
	}
	if rng.IntN(3) == 0 {
		f.CreatedMin = base.Add(time.Duration(rng.IntN(maxMs+1)) * time.Millisecond)
	}
	if rng.IntN(3) == 0 {
		f.CreatedMax = base.Add(time.Duration(rng.IntN(maxMs+1)) * time.Millisecond)
	}
	if rng.IntN(3) == 0 {
		f.Status = taskstore.Statuses[rng.IntN(len(taskstore.Statuses))]
	}
	if rng.IntN(3) == 0 {
		f.CallbackStatus = taskstore.CallbackStatuses[rng.IntN(len(taskstore.CallbackStatuses))]
	}
	f.Offset = rng.IntN(3) * rng.IntN(200)
	f.Limit = rng.IntN(40)
	return f
}

// randomTrace returns a shared trace id, none, or one of n/3 others, most
// of which belong to one task only.
func randomTrace(rng *rand.Rand, traces []string, n int) string {
	if rng.IntN(2) == 0 {
		return traces[rng.IntN(len(traces))]
	}
	return fmt.Sprintf("x-%d", rng.IntN(n/3+1))
}

func compareFind(t *testing.T, s *Store, model map[string]taskstore.Task, f taskstore.Filter) {
	t.Helper()
	minMs, maxMs, _ := storekit.CreatedRange(f)
	var want []taskstore.Task
	for _, x := range model {
		ms := x.CreatedAt.UnixMilli()
		if len(f.IDs) > 0 && !slices.Contains(f.IDs, x.ID) ||
			len(f.TraceIDs) > 0 && !slices.Contains(f.TraceIDs, x.TraceID) ||
			len(f.Types) > 0 && !slices.Contains(f.Types, x.Type) ||
			f.ApplicationID != "" && x.ApplicationID != f.ApplicationID ||
			f.UserID != "" && x.UserID != f.UserID ||
			f.Status != "" && x.Status() != f.Status ||
			f.CallbackStatus != "" && x.CallbackStatus() != f.CallbackStatus ||
			ms < minMs || ms > maxMs {
			continue
		}
		want = append(want, x)
	}
	sort.Slice(want, func(i, j int) bool {
		if !want[i].CreatedAt.Equal(want[j].CreatedAt) {
			return want[i].CreatedAt.After(want[j].CreatedAt)
		}
		return want[i].ID > want[j].ID
	})
	total := len(want)
	lo := min(f.Offset, total)
	want = want[lo : lo+min(f.Limit, total-lo)]
	got, gotTotal, err := s.Find(context.Background(), f)
	if err != nil {
		t.Fatal(err)
	}
	ids := func(ts []taskstore.Task) []string {
		out := make([]string, len(ts))
		for i, x := range ts {
			out[i] = x.ID
		}
		return out
	}
	if gotTotal != total || !slices.Equal(ids(got), ids(want)) {
		t.Fatalf("Find(%+v)\n got %d %v\nwant %d %v", f, gotTotal, ids(got), total, ids(want))
	}
}

// TestPlan checks the plan Find makes for each status and callback status,
// alone and with every other field: the keyed indexes answer a status from
// their tags, with no residual condition (the total in O(log n), the page
// in O(log n + limit)); the sources without tags (ids, trace ids) check the
// state of each of their few candidates; no shape walks more candidates
// than the smallest field selects, and callback_status failed alone walks
// none but its page.
func TestPlan(t *testing.T) {
	ctx := context.Background()
	s := New()
	defer s.Close()
	const n = 20_000
	for i := range n {
		x := taskstore.Task{
			ID: fmt.Sprintf("id-%05d", i), Type: []string{"t1", "t2", "t3"}[i%3],
			ApplicationID: []string{"a1", "a2"}[i%2], UserID: fmt.Sprintf("u%d", i%8),
			Request: json.RawMessage(`{}`), CreatedAt: base.Add(time.Duration(i) * time.Millisecond),
			Callback: taskstore.Callback{URL: "http://r/"},
		}
		if i%50 == 0 {
			x.TraceID = fmt.Sprintf("tr%d", i%7)
		}
		if i < n-100 { // the newest 100 are pending or running
			x.StartedAt, x.FinishedAt = x.CreatedAt, x.CreatedAt.Add(time.Second)
			x.Response = json.RawMessage(`{"success":true}`)
			x.Callback.Attempts = 1
			if i%101 == 0 {
				x.Callback.LastStatus = 410 // failed: 1%
			} else {
				x.Callback.DeliveredAt = x.FinishedAt
			}
		} else if i%2 == 0 {
			x.StartedAt = x.CreatedAt
		}
		if err := s.Create(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	window := taskstore.Filter{CreatedMin: base.Add(5 * time.Second), CreatedMax: base.Add(15 * time.Second)}
	shapes := []struct {
		name string
		f    taskstore.Filter
		src  source
	}{
		{"alone", taskstore.Filter{}, srcAll},
		{"window", window, srcAll},
		{"user", taskstore.Filter{UserID: "u3"}, srcUser},
		{"app", taskstore.Filter{ApplicationID: "a1"}, srcApp},
		{"app+user", taskstore.Filter{ApplicationID: "a1", UserID: "u3"}, srcPair},
		{"type", taskstore.Filter{Types: []string{"t2"}}, srcTypes},
		{"types", taskstore.Filter{Types: []string{"t1", "t3"}}, srcTypes},
		{"trace", taskstore.Filter{TraceIDs: []string{"tr1", "tr2"}}, srcTraces},
		{"ids", taskstore.Filter{IDs: []string{"id-00101", "id-00007", "id-19990"}}, srcIDs},
	}
	var filters []taskstore.Filter
	for _, st := range taskstore.Statuses {
		filters = append(filters, taskstore.Filter{Status: st})
	}
	for _, cs := range taskstore.CallbackStatuses {
		filters = append(filters, taskstore.Filter{CallbackStatus: cs})
		filters = append(filters, taskstore.Filter{Status: taskstore.StatusSucceeded, CallbackStatus: cs})
	}
	for _, sh := range shapes {
		for _, sf := range filters {
			f := sh.f
			f.Status, f.CallbackStatus, f.Limit = sf.Status, sf.CallbackStatus, 12
			set := statesOf(f.Status, f.CallbackStatus)
			minMs, maxMs, _ := storekit.CreatedRange(f)
			q := s.plan(f, set, minMs, maxMs)
			cands := len(q.slots)
			for _, ix := range q.runs {
				lo, hi := ix.createdBounds(&s.recs, minMs, maxMs, set)
				cands += hi - lo
			}
			matching := 0
			for slot := range s.recs.used {
				r := s.recs.at(slot)
				if r.created >= minMs && r.created <= maxMs && set.has(r.state()) &&
					(f.UserID == "" || r.user == f.UserID) && (f.ApplicationID == "" || r.app == f.ApplicationID) &&
					(f.Types == nil || slices.Contains(f.Types, r.typ)) &&
					(f.TraceIDs == nil || slices.Contains(f.TraceIDs, r.traceID)) && (f.IDs == nil || slices.Contains(f.IDs, r.id)) {
					matching++
				}
			}
			name := fmt.Sprintf("%s, status %q, callback %q", sh.name, f.Status, f.CallbackStatus)
			few := sh.src == srcIDs || sh.src == srcTraces // few tasks, no tags
			switch {
			case few && (q.src != sh.src && q.src != srcAll):
				t.Errorf("%s: source %d, want %d or all", name, q.src, sh.src)
			case few && cands > 3*n/50/7: // the tasks of two trace ids of seven
				t.Errorf("%s: %d candidates from source %d", name, cands, q.src)
			case few && q.checkState != (q.src == sh.src):
				t.Errorf("%s: source %d, state checked %v", name, q.src, q.checkState)
			case !few && q.src != sh.src:
				t.Errorf("%s: source %d, want %d", name, q.src, sh.src)
			case !few && !q.trivial():
				t.Errorf("%s: residual conditions on a keyed source", name)
			case !few && cands != matching:
				t.Errorf("%s: %d candidates for %d matches", name, cands, matching)
			}
			_, total, err := s.Find(ctx, f)
			if err != nil || total != matching {
				t.Errorf("%s: total %d, %v; want %d", name, total, err, matching)
			}
		}
	}
	// A user and a type with a status: the smaller of the two, the other
	// checked on each candidate.
	f := taskstore.Filter{UserID: "u3", Types: []string{"t1", "t2"}, CallbackStatus: taskstore.CallbackFailed, Limit: 12}
	set := statesOf("", f.CallbackStatus)
	q := s.plan(f, set, math.MinInt64, math.MaxInt64)
	if q.src != srcUser || q.types == nil || q.runs[0].count(set) > s.all.count(set)/4 {
		t.Errorf("user+types+failed: source %d, residual types %v", q.src, q.types)
	}
	// Ids naming more tasks than hold the states: the index of all tasks in
	// those states is the source.
	f = taskstore.Filter{CallbackStatus: taskstore.CallbackWaiting}
	for i := range 500 {
		f.IDs = append(f.IDs, fmt.Sprintf("id-%05d", i))
	}
	set = statesOf("", f.CallbackStatus)
	if q := s.plan(f, set, math.MinInt64, math.MaxInt64); q.src != srcAll || q.ids == nil || q.checkState {
		t.Errorf("500 ids, callback waiting: source %d, residual ids %v, state checked %v", q.src, q.ids != nil, q.checkState)
	}
}
