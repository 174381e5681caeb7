package memstore

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/tasksapi/tasks/taskstore"
)

var base = time.Date(2025, 11, 14, 17, 50, 7, 967_000_000, time.UTC)

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
	return all
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
	sameSet("all", checkIndex(t, "all", sl, byCreated, &s.all), func(*rec) bool { return true })
	sameSet("leases", checkIndex(t, "leases", sl, byLease, &s.leases), func(r *rec) bool { return r.finished == 0 })
	sameSet("due", checkIndex(t, "due", sl, byDue, &s.due), (*rec).pending)
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
		l, h := ix.createdBounds(sl, lo, hi)
		if h-l != want {
			t.Fatalf("window [%d,%d]: %d entries, want %d", lo, hi, h-l, want)
		}
	}
	// Removing everything leaves an empty index.
	for slot := range in {
		ix.remove(sl, byCreated, slot)
	}
	if ix.n != 0 || ix.chunks != nil || ix.fen != nil {
		t.Fatalf("emptied index: n=%d chunks=%d fen=%v", ix.n, len(ix.chunks), ix.fen)
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
	for i := 0; i < n; i++ {
		// Mostly in time order with jitter and ties: out-of-order inserts.
		ms := i/2 + rng.IntN(300) - 150
		x := taskstore.Task{
			ID: fmt.Sprintf("id-%05d", rng.IntN(1_000_000)), Type: types[rng.IntN(3)],
			TraceID: randomTrace(rng, traces, n), ApplicationID: apps[rng.IntN(3)], UserID: users[rng.IntN(5)],
			Request:   json.RawMessage(`{}`),
			CreatedAt: base.Add(time.Duration(ms) * time.Millisecond),
		}
		if rng.IntN(2) == 0 {
			x.Callback.URL = "http://r/"
		}
		if err := s.Create(ctx, x); err != nil {
			if _, dup := model[x.ID]; dup {
				continue
			}
			t.Fatal(err)
		}
		model[x.ID] = mustGet(t, s, x.ID)
		switch rng.IntN(10) {
		case 0:
			if err := s.Delete(ctx, x.ID); err != nil {
				t.Fatal(err)
			}
			delete(model, x.ID)
		case 1, 2, 3:
			if err := s.Finish(ctx, x.ID, json.RawMessage(`{"ok":true}`), base.Add(time.Duration(i)*time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			model[x.ID] = mustGet(t, s, x.ID)
		case 4:
			if err := s.RenewLeases(ctx, []string{x.ID}, base.Add(time.Duration(rng.IntN(1000))*time.Millisecond)); err != nil {
				t.Fatal(err)
			}
		}
		if i%1000 == 999 {
			checkStore(t, s)
			for j := 0; j < 40; j++ {
				compareFind(t, s, model, randomFilter(rng, apps, users, types, traces, i/2))
			}
		}
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
	claimed, err := s.ClaimDeliveries(ctx, base.Add(time.Hour), time.Minute, n)
	if err != nil {
		t.Fatal(err)
	}
	pending := 0
	for _, x := range model {
		if x.DeliveryState() == taskstore.Pending {
			pending++
		}
	}
	if len(claimed) != pending {
		t.Fatalf("claimed %d, want %d", len(claimed), pending)
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
		for k := 0; k < 30; k++ {
			f.TraceIDs = append(f.TraceIDs, randomTrace(rng, traces, 2*maxMs))
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
	minMs, maxMs, _ := f.CreatedRange()
	var want []taskstore.Task
	for _, x := range model {
		ms := x.CreatedAt.UnixMilli()
		if len(f.IDs) > 0 && !slices.Contains(f.IDs, x.ID) ||
			len(f.TraceIDs) > 0 && !slices.Contains(f.TraceIDs, x.TraceID) ||
			len(f.Types) > 0 && !slices.Contains(f.Types, x.Type) ||
			f.ApplicationID != "" && x.ApplicationID != f.ApplicationID ||
			f.UserID != "" && x.UserID != f.UserID ||
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
