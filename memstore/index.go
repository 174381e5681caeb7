package memstore

import (
	"math"
	"math/bits"
	"slices"
	"sort"
	"strings"
)

// maxChunk is the largest number of entries in one chunk of an index. Inserts
// and deletes move at most this many entries; a chunk is 2 KiB.
const maxChunk = 512

// order selects the sort key of an index. Every key ends with the task id, so
// the order is total and an entry can be found again from its key.
type order uint8

const (
	byCreated  order = iota // (CreatedAt, ID): every task, and per key
	byLease                 // (LeaseUntil, ID), a zero lease first: unfinished tasks
	byDue                   // (Callback.NextAttemptAt, ID): pending callbacks
	byFinished              // (FinishedAt, ID): failed callbacks
)

// index is an ordered set of slots, ascending by an order's key: a list of
// sorted chunks (a B+tree of height two) with a Fenwick tree over the chunk
// lengths, so that
//
//   - insert and remove cost O(log d + maxChunk), d being the number of
//     chunks between the entry and the end (appending at the end, the usual
//     case since tasks arrive in time order, is O(1) amortised); the time of
//     each chunk's last entry is kept, so only the last O(log maxChunk)
//     steps of a search read the tasks;
//   - the number of entries is O(1), and the rank of a key (hence the number
//     of entries inside a window) is O(log n);
//   - the entry at a rank is O(log n), and walking on from it O(1) per entry.
//
// A tagged index also records the state (task status and callback status) of
// each entry, in a byte array parallel to each chunk, with per-chunk counts of
// each state and a Fenwick tree over those. The entries in a set of states
// are then counted in O(log n) (plus a scan of at most one chunk's bytes),
// the one of a given rank among them found as fast, and walked from there
// without looking at the tasks.
//
// Small indexes (one chunk) carry no Fenwick trees. The zero index is empty
// and untagged.
type index struct {
	key    string     // the interned key of a keyed index (app, user, type, trace)
	chunks [][]uint32 // sorted, each non-empty and at most maxChunk long
	last   []int64    // last[ci]: the sort key's time of the last entry of chunk ci
	fen    []int      // 1-based Fenwick tree of len(chunks[i]); nil with one chunk
	n      int        // number of entries

	tagged bool
	tags   [][]state // tagged: tags[ci][j] is the state of chunks[ci][j]
	cnt    []counts  // tagged: cnt[ci][s] entries of chunk ci are in state s
	sfen   []counts  // tagged: 1-based Fenwick tree of cnt; nil with one chunk
}

// counts holds a number per state.
type counts [nStates]int32

// in returns the sum of the counts of the states in set.
func (c *counts) in(set stateSet) int {
	n := int32(0)
	for m := set; m != 0; m &= m - 1 {
		n += c[bits.TrailingZeros16(uint16(m))]
	}
	return int(n)
}

// sortKey returns the key of slot in order o.
func (sl *slab) sortKey(o order, slot uint32) (int64, string) {
	r := sl.at(slot)
	switch o {
	case byLease:
		if r.lease == 0 {
			return math.MinInt64, r.id
		}
		return r.lease, r.id
	case byDue:
		return r.next, r.id
	case byFinished:
		return r.finished, r.id
	}
	return r.created, r.id
}

// search returns the position (chunk, offset) of the first entry for which
// above is true, above being false then true along the index in order o.
// above gets the entry's time in that order and its slot (to read the id
// only for a tie). When no entry is above, it returns the end: the last chunk
// and its length. An empty index gives (0, 0).
//
// It gallops from the end over the chunks' last times, which the index
// keeps, so that finding an entry d chunks from the end (recent tasks, the
// ones that change) costs O(log d) comparisons that do not read the tasks,
// then O(log maxChunk) that do.
func (ix *index) search(sl *slab, o order, above func(k int64, e uint32) bool) (ci, j int) {
	c := len(ix.chunks)
	if c == 0 {
		return 0, 0
	}
	over := func(i int) bool { ch := ix.chunks[i]; return above(ix.last[i], ch[len(ch)-1]) }
	if !over(c - 1) {
		return c - 1, len(ix.chunks[c-1])
	}
	// The chunk sought is in (lo, hi]: hi's last entry is above, lo's is not
	// (or lo is -1).
	hi, lo := c-1, c-2
	for step := 2; lo >= 0 && over(lo); step *= 2 {
		hi, lo = lo, lo-step
	}
	lo = max(lo, -1)
	ci = lo + 1 + sort.Search(hi-lo-1, func(i int) bool { return over(lo + 1 + i) })
	ch := ix.chunks[ci]
	return ci, sort.Search(len(ch), func(k int) bool {
		ek, _ := sl.sortKey(o, ch[k])
		return above(ek, ch[k])
	})
}

// after returns the predicate of the entries after the key (k, id) in order
// o, or at it and after when at is set, for search.
func after(sl *slab, k int64, id string, at bool) func(int64, uint32) bool {
	return func(ek int64, e uint32) bool {
		if ek != k {
			return ek > k
		}
		c := strings.Compare(sl.at(e).id, id)
		return c > 0 || at && c == 0
	}
}

// find returns the position of slot, which must be in the index with its
// current key in order o. It is search with the comparisons written out,
// since every change of a task's state finds it in up to five indexes.
func (ix *index) find(sl *slab, o order, slot uint32) (ci, j int) {
	k, id := sl.sortKey(o, slot)
	// before reports whether entry e is before the key (k, id).
	before := func(ek int64, e uint32) bool { return ek < k || ek == k && sl.at(e).id < id }
	c := len(ix.chunks)
	lo, hi := -1, c-1 // the chunk is in (lo, hi]: the last chunk's last entry is not before
	for step := 1; hi-step > lo; step *= 2 {
		m := hi - step
		if ch := ix.chunks[m]; before(ix.last[m], ch[len(ch)-1]) {
			lo = m
			break
		}
		hi = m
	}
	for lo+1 < hi {
		m := int(uint(lo+hi) >> 1)
		if ch := ix.chunks[m]; before(ix.last[m], ch[len(ch)-1]) {
			lo = m
		} else {
			hi = m
		}
	}
	if hi < 0 {
		panic("memstore: find in an empty index")
	}
	ch := ix.chunks[hi]
	a, b := 0, len(ch)-1 // the entry is in [a, b]
	for a < b {
		m := int(uint(a+b) >> 1)
		e := ch[m]
		if e == slot {
			return hi, m
		}
		if ek, _ := sl.sortKey(o, e); before(ek, e) {
			a = m + 1
		} else {
			b = m
		}
	}
	if ch[a] != slot {
		panic("memstore: index out of sync with its tasks")
	}
	return hi, a
}

// setLast records the time of the last entry of chunk ci.
func (ix *index) setLast(sl *slab, o order, ci int) {
	ch := ix.chunks[ci]
	ix.last[ci], _ = sl.sortKey(o, ch[len(ch)-1])
}

// insert adds slot, whose key in order o must not be in the index yet. A
// tagged index records the task's current state.
func (ix *index) insert(sl *slab, o order, slot uint32) {
	ix.n++
	var tag state
	if ix.tagged {
		tag = sl.at(slot).state()
	}
	k, id := sl.sortKey(o, slot)
	if len(ix.chunks) == 0 {
		ix.chunks, ix.last = [][]uint32{{slot}}, []int64{k}
		if ix.tagged {
			ix.tags = [][]state{{tag}}
			ix.cnt = make([]counts, 1)
			ix.cnt[0][tag] = 1
		}
		return
	}
	last := len(ix.chunks) - 1
	ci, j := last, len(ix.chunks[last])
	if lk := ix.last[last]; k < lk || k == lk && id < sl.at(ix.chunks[last][j-1]).id {
		ci, j = ix.search(sl, o, after(sl, k, id, false))
	}
	ch := ix.chunks[ci]
	if len(ch) < maxChunk {
		ix.chunks[ci] = slices.Insert(ch, j, slot)
		if j == len(ch) {
			ix.last[ci] = k
		}
		ix.fenAdd(ci, 1)
		if ix.tagged {
			ix.tags[ci] = slices.Insert(ix.tags[ci], j, tag)
			ix.cnt[ci][tag]++
			ix.sfenAdd(ci, tag, 1)
		}
		return
	}
	if ci == last && j == len(ch) {
		// Appending past a full last chunk: start a new one and leave the
		// full one full (tasks mostly arrive in order).
		ix.chunks, ix.last = append(ix.chunks, []uint32{slot}), append(ix.last, k)
		if ix.tagged {
			ix.tags = append(ix.tags, []state{tag})
			var c counts
			c[tag] = 1
			ix.cnt = append(ix.cnt, c)
		}
	} else {
		ix.chunks = split(ix.chunks, ci, j, slot)
		ix.last = slices.Insert(ix.last, ci+1, 0)
		ix.setLast(sl, o, ci)
		ix.setLast(sl, o, ci+1)
		if ix.tagged {
			ix.tags = split(ix.tags, ci, j, tag)
			ix.cnt[ci] = tally(ix.tags[ci])
			ix.cnt = slices.Insert(ix.cnt, ci+1, tally(ix.tags[ci+1]))
		}
	}
	ix.rebuild()
}

// split inserts v at position j of the full chunk ci of all by splitting
// that chunk in two halves, and returns all with the right half after ci.
func split[E any](all [][]E, ci, j int, v E) [][]E {
	ch := all[ci]
	half := maxChunk / 2
	right := make([]E, len(ch)-half, maxChunk)
	copy(right, ch[half:])
	left := ch[:half]
	if j <= half {
		left = slices.Insert(left, j, v)
	} else {
		right = slices.Insert(right, j-half, v)
	}
	all[ci] = left
	return slices.Insert(all, ci+1, right)
}

// tally counts the states of a chunk.
func tally(tags []state) counts {
	var c counts
	for _, t := range tags {
		c[t]++
	}
	return c
}

// remove deletes slot, which must be in the index with its current key in
// order o: callers remove an entry before changing the fields of its key.
func (ix *index) remove(sl *slab, o order, slot uint32) {
	ci, j := ix.find(sl, o, slot)
	ix.n--
	ch := slices.Delete(ix.chunks[ci], j, j+1)
	ix.chunks[ci] = ch
	if j == len(ch) && j > 0 {
		ix.setLast(sl, o, ci)
	}
	var tag state
	if ix.tagged {
		tag = ix.tags[ci][j]
		ix.tags[ci] = slices.Delete(ix.tags[ci], j, j+1)
		ix.cnt[ci][tag]--
	}
	switch {
	case len(ch) == 0:
		ix.dropChunk(ci)
		if len(ix.chunks) == 0 {
			ix.chunks, ix.last, ix.tags, ix.cnt = nil, nil, nil, nil
		}
	case len(ch) < maxChunk/4 && ci+1 < len(ix.chunks) && len(ch)+len(ix.chunks[ci+1]) <= maxChunk:
		ix.merge(ci)
	case len(ch) < maxChunk/4 && ci > 0 && len(ch)+len(ix.chunks[ci-1]) <= maxChunk:
		ix.merge(ci - 1)
	default:
		ix.fenAdd(ci, -1)
		if ix.tagged {
			ix.sfenAdd(ci, tag, -1)
		}
		return
	}
	ix.rebuild()
}

// merge appends chunk ci+1 to chunk ci.
func (ix *index) merge(ci int) {
	ix.chunks[ci] = append(ix.chunks[ci], ix.chunks[ci+1]...)
	ix.last[ci] = ix.last[ci+1]
	if ix.tagged {
		ix.tags[ci] = append(ix.tags[ci], ix.tags[ci+1]...)
		for s, n := range ix.cnt[ci+1] {
			ix.cnt[ci][s] += n
		}
	}
	ix.dropChunk(ci + 1)
}

func (ix *index) dropChunk(ci int) {
	ix.chunks = slices.Delete(ix.chunks, ci, ci+1)
	ix.last = slices.Delete(ix.last, ci, ci+1)
	if ix.tagged {
		ix.tags = slices.Delete(ix.tags, ci, ci+1)
		ix.cnt = slices.Delete(ix.cnt, ci, ci+1)
	}
}

// retag records the current state of slot, which must be in the tagged
// index with its current key in order o. It costs O(log n) and moves no
// entry.
func (ix *index) retag(sl *slab, o order, slot uint32) {
	ci, j := ix.find(sl, o, slot)
	old, tag := ix.tags[ci][j], sl.at(slot).state()
	if old == tag {
		return
	}
	ix.tags[ci][j] = tag
	ix.cnt[ci][old]--
	ix.cnt[ci][tag]++
	ix.sfenAdd(ci, old, -1)
	ix.sfenAdd(ci, tag, 1)
}

// rebuild recomputes the Fenwick trees after chunks were split, merged or
// removed, in O(number of chunks) (times the number of states when tagged).
func (ix *index) rebuild() {
	c := len(ix.chunks)
	if c <= 1 {
		ix.fen, ix.sfen = nil, nil
		return
	}
	ix.fen = reuse(ix.fen, c+1)
	for i := 1; i <= c; i++ {
		ix.fen[i] += len(ix.chunks[i-1])
		if p := i + i&-i; p <= c {
			ix.fen[p] += ix.fen[i]
		}
	}
	if !ix.tagged {
		return
	}
	ix.sfen = reuse(ix.sfen, c+1)
	for i := 1; i <= c; i++ {
		node := &ix.sfen[i]
		for s, n := range ix.cnt[i-1] {
			node[s] += n
		}
		if p := i + i&-i; p <= c {
			for s, n := range node {
				ix.sfen[p][s] += n
			}
		}
	}
}

// reuse returns a zeroed slice of length n, in s when it is large enough.
func reuse[E any](s []E, n int) []E {
	if cap(s) >= n {
		s = s[:n]
		clear(s)
		return s
	}
	return make([]E, n, n+n/4+1)
}

func (ix *index) fenAdd(ci, delta int) {
	if ix.fen == nil {
		return
	}
	for i := ci + 1; i < len(ix.fen); i += i & -i {
		ix.fen[i] += delta
	}
}

func (ix *index) sfenAdd(ci int, tag state, delta int32) {
	if ix.sfen == nil {
		return
	}
	for i := ci + 1; i < len(ix.sfen); i += i & -i {
		ix.sfen[i][tag] += delta
	}
}

// rank returns the number of entries before position (ci, j).
func (ix *index) rank(ci, j int) int {
	n := j
	if ix.fen != nil {
		for i := ci; i > 0; i -= i & -i {
			n += ix.fen[i]
		}
	}
	return n
}

// rankIn returns the number of entries in the states of set before
// position (ci, j) of a tagged index: O(log n) plus a scan of j tags.
func (ix *index) rankIn(set stateSet, ci, j int) int {
	if set == allStates {
		return ix.rank(ci, j)
	}
	n := 0
	if ix.sfen != nil {
		for i := ci; i > 0; i -= i & -i {
			n += ix.sfen[i].in(set)
		}
	}
	if ci < len(ix.tags) {
		for _, t := range ix.tags[ci][:j] {
			if set.has(t) {
				n++
			}
		}
	}
	return n
}

// count returns the number of entries in the states of set: O(1) for every
// state, else O(log n).
func (ix *index) count(set stateSet) int {
	switch {
	case set == allStates || ix.n == 0:
		return ix.n
	case ix.sfen != nil:
		n := 0
		for i := len(ix.chunks); i > 0; i -= i & -i {
			n += ix.sfen[i].in(set)
		}
		return n
	}
	return ix.cnt[0].in(set)
}

// locate returns the position of the entry of rank pos (0 <= pos < n).
func (ix *index) locate(pos int) (ci, j int) {
	if ix.fen == nil {
		return 0, pos
	}
	c := len(ix.chunks)
	i := 0
	for step := 1 << (bits.Len(uint(c)) - 1); step > 0; step >>= 1 {
		if ni := i + step; ni <= c && ix.fen[ni] <= pos {
			i = ni
			pos -= ix.fen[ni]
		}
	}
	return i, pos
}

// locateIn returns the position of the entry of rank pos among the entries
// of a tagged index in the states of set (0 <= pos < count(set)).
func (ix *index) locateIn(set stateSet, pos int) (ci, j int) {
	if set == allStates {
		return ix.locate(pos)
	}
	if ix.sfen != nil {
		c := len(ix.chunks)
		for step := 1 << (bits.Len(uint(c)) - 1); step > 0; step >>= 1 {
			if ni := ci + step; ni <= c {
				if n := ix.sfen[ni].in(set); n <= pos {
					ci = ni
					pos -= n
				}
			}
		}
	}
	// Scan the chunk from the nearer end.
	tags := ix.tags[ci]
	if k := ix.cnt[ci].in(set); pos >= k/2 {
		pos = k - 1 - pos
		for j := len(tags) - 1; j >= 0; j-- {
			if set.has(tags[j]) {
				if pos == 0 {
					return ci, j
				}
				pos--
			}
		}
	} else {
		for j, t := range tags {
			if set.has(t) {
				if pos == 0 {
					return ci, j
				}
				pos--
			}
		}
	}
	panic("memstore: state counts out of sync with the tags")
}

// createdBounds returns the ranks [lo, hi) of the entries of a byCreated
// index whose CreatedAt lies in the inclusive millisecond window, counting
// only the entries in the states of set (every entry when the index is not
// tagged).
func (ix *index) createdBounds(sl *slab, minMs, maxMs int64, set stateSet) (lo, hi int) {
	if !ix.tagged {
		set = allStates
	}
	lo, hi = 0, ix.count(set)
	if minMs != math.MinInt64 {
		ci, j := ix.search(sl, byCreated, func(k int64, _ uint32) bool { return k >= minMs })
		lo = ix.rankIn(set, ci, j)
	}
	if maxMs != math.MaxInt64 {
		ci, j := ix.search(sl, byCreated, func(k int64, _ uint32) bool { return k > maxMs })
		hi = ix.rankIn(set, ci, j)
	}
	return lo, max(lo, hi)
}

// each calls fn for the entries in ascending order until fn returns false.
func (ix *index) each(fn func(slot uint32) bool) {
	for _, ch := range ix.chunks {
		for _, e := range ch {
			if !fn(e) {
				return
			}
		}
	}
}

// from calls fn for the entries in ascending order from position (ci, j)
// until fn returns false.
func (ix *index) from(ci, j int, fn func(slot uint32) bool) {
	for ; ci < len(ix.chunks); ci, j = ci+1, 0 {
		for _, e := range ix.chunks[ci][j:] {
			if !fn(e) {
				return
			}
		}
	}
}

// cursor walks an index downward (newest first for byCreated) from a rank
// for a number of entries, visiting only the entries in the states of set.
type cursor struct {
	ix    *index
	set   stateSet // allStates: every entry
	ci, j int
	rank  int // of the current entry, among those in set
	left  int
}

// down returns a cursor at rank top among the entries in the states of set
// (every entry when the index is not tagged) that visits n of them downward
// (n > 0, n <= top+1).
func (ix *index) down(set stateSet, top, n int) cursor {
	if !ix.tagged {
		set = allStates
	}
	ci, j := ix.locateIn(set, top)
	return cursor{ix: ix, set: set, ci: ci, j: j, rank: top, left: n}
}

func (c *cursor) slot() uint32 { return c.ix.chunks[c.ci][c.j] }

// next moves to the following entry; false when the cursor is exhausted.
// Between two entries in its set, it scans the tags of at most two chunks,
// jumping over the chunks that hold none with the Fenwick tree.
func (c *cursor) next() bool {
	c.left--
	if c.left <= 0 {
		return false
	}
	c.rank--
	if c.set == allStates {
		c.j--
		if c.j < 0 {
			c.ci--
			c.j = len(c.ix.chunks[c.ci]) - 1
		}
		return true
	}
	for j := c.j - 1; ; j-- {
		if j < 0 {
			c.ci--
			if c.ix.cnt[c.ci].in(c.set) == 0 {
				c.ci, c.j = c.ix.locateIn(c.set, c.rank)
				return true
			}
			j = len(c.ix.chunks[c.ci]) - 1
		}
		if c.set.has(c.ix.tags[c.ci][j]) {
			c.j = j
			return true
		}
	}
}
