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
	byCreated order = iota // (CreatedAt, ID): every task, and per key
	byLease                // (LeaseUntil, ID), a zero lease first: unfinished tasks
	byDue                  // (Callback.NextAttemptAt, ID): pending callbacks
)

// index is an ordered set of slots, ascending by an order's key: a list of
// sorted chunks (a B+tree of height two) with a Fenwick tree over the chunk
// lengths, so that
//
//   - insert and remove cost O(log n + maxChunk) (appending at the end, the
//     usual case since tasks arrive in time order, is O(1) amortised);
//   - the number of entries is O(1), and the rank of a key (hence the number
//     of entries inside a window) is O(log n);
//   - the entry at a rank is O(log n), and walking on from it O(1) per entry.
//
// Small indexes (one chunk) carry no Fenwick tree. The zero index is empty.
type index struct {
	key    string     // the interned key of a keyed index (app, user, type, trace)
	chunks [][]uint32 // sorted, each non-empty and at most maxChunk long
	fen    []int      // 1-based Fenwick tree of len(chunks[i]); nil with one chunk
	n      int        // number of entries
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
	}
	return r.created, r.id
}

func cmpKey(k1 int64, id1 string, k2 int64, id2 string) int {
	switch {
	case k1 < k2:
		return -1
	case k1 > k2:
		return 1
	}
	return strings.Compare(id1, id2)
}

// search returns the position (chunk, offset) of the first entry for which
// above is true, above being false then true along the index. When no entry
// is above, it returns the end: the last chunk and its length. An empty index
// gives (0, 0).
func (ix *index) search(above func(uint32) bool) (ci, j int) {
	c := len(ix.chunks)
	if c == 0 {
		return 0, 0
	}
	ci = sort.Search(c, func(i int) bool {
		ch := ix.chunks[i]
		return above(ch[len(ch)-1])
	})
	if ci == c {
		return c - 1, len(ix.chunks[c-1])
	}
	ch := ix.chunks[ci]
	return ci, sort.Search(len(ch), func(k int) bool { return above(ch[k]) })
}

// insert adds slot, whose key in order o must not be in the index yet.
func (ix *index) insert(sl *slab, o order, slot uint32) {
	ix.n++
	if len(ix.chunks) == 0 {
		ix.chunks = [][]uint32{{slot}}
		return
	}
	k, id := sl.sortKey(o, slot)
	last := len(ix.chunks) - 1
	ci, j := last, len(ix.chunks[last])
	if lk, lid := sl.sortKey(o, ix.chunks[last][j-1]); cmpKey(k, id, lk, lid) < 0 {
		ci, j = ix.search(func(e uint32) bool {
			ek, eid := sl.sortKey(o, e)
			return cmpKey(ek, eid, k, id) > 0
		})
	}
	ch := ix.chunks[ci]
	if len(ch) < maxChunk {
		ix.chunks[ci] = slices.Insert(ch, j, slot)
		ix.fenAdd(ci, 1)
		return
	}
	if ci == last && j == len(ch) {
		// Appending past a full last chunk: start a new one and leave the
		// full one full (tasks mostly arrive in order).
		ix.chunks = append(ix.chunks, []uint32{slot})
	} else {
		half := maxChunk / 2
		right := make([]uint32, len(ch)-half, maxChunk)
		copy(right, ch[half:])
		left := ch[:half]
		if j <= half {
			left = slices.Insert(left, j, slot)
		} else {
			right = slices.Insert(right, j-half, slot)
		}
		ix.chunks[ci] = left
		ix.chunks = slices.Insert(ix.chunks, ci+1, right)
	}
	ix.rebuild()
}

// remove deletes slot, which must be in the index with its current key in
// order o: callers remove an entry before changing the fields of its key.
func (ix *index) remove(sl *slab, o order, slot uint32) {
	k, id := sl.sortKey(o, slot)
	ci, j := ix.search(func(e uint32) bool {
		ek, eid := sl.sortKey(o, e)
		return cmpKey(ek, eid, k, id) >= 0
	})
	if ci >= len(ix.chunks) || j >= len(ix.chunks[ci]) || ix.chunks[ci][j] != slot {
		panic("memstore: index out of sync with its tasks")
	}
	ix.n--
	ch := slices.Delete(ix.chunks[ci], j, j+1)
	ix.chunks[ci] = ch
	switch {
	case len(ch) == 0:
		ix.chunks = slices.Delete(ix.chunks, ci, ci+1)
		if len(ix.chunks) == 0 {
			ix.chunks = nil
		}
	case len(ch) < maxChunk/4 && ci+1 < len(ix.chunks) && len(ch)+len(ix.chunks[ci+1]) <= maxChunk:
		ix.chunks[ci] = append(ch, ix.chunks[ci+1]...)
		ix.chunks = slices.Delete(ix.chunks, ci+1, ci+2)
	case len(ch) < maxChunk/4 && ci > 0 && len(ch)+len(ix.chunks[ci-1]) <= maxChunk:
		ix.chunks[ci-1] = append(ix.chunks[ci-1], ch...)
		ix.chunks = slices.Delete(ix.chunks, ci, ci+1)
	default:
		ix.fenAdd(ci, -1)
		return
	}
	ix.rebuild()
}

// rebuild recomputes the Fenwick tree after chunks were split, merged or
// removed, in O(number of chunks).
func (ix *index) rebuild() {
	c := len(ix.chunks)
	if c <= 1 {
		ix.fen = nil
		return
	}
	if cap(ix.fen) >= c+1 {
		ix.fen = ix.fen[:c+1]
		clear(ix.fen)
	} else {
		ix.fen = make([]int, c+1, c+c/4+2)
	}
	for i := 1; i <= c; i++ {
		ix.fen[i] += len(ix.chunks[i-1])
		if p := i + i&-i; p <= c {
			ix.fen[p] += ix.fen[i]
		}
	}
}

func (ix *index) fenAdd(ci, delta int) {
	if ix.fen == nil {
		return
	}
	for i := ci + 1; i < len(ix.fen); i += i & -i {
		ix.fen[i] += delta
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

// createdBounds returns the ranks [lo, hi) of the entries of a byCreated
// index whose CreatedAt lies in the inclusive millisecond window.
func (ix *index) createdBounds(sl *slab, minMs, maxMs int64) (lo, hi int) {
	lo, hi = 0, ix.n
	if minMs != math.MinInt64 {
		lo = ix.rank(ix.search(func(e uint32) bool { return sl.at(e).created >= minMs }))
	}
	if maxMs != math.MaxInt64 {
		hi = ix.rank(ix.search(func(e uint32) bool { return sl.at(e).created > maxMs }))
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

// cursor walks an index downward (newest first for byCreated) from a rank
// for a number of entries.
type cursor struct {
	ix    *index
	ci, j int
	left  int
}

// down returns a cursor at rank top that visits n entries downward
// (n > 0, n <= top+1).
func (ix *index) down(top, n int) cursor {
	ci, j := ix.locate(top)
	return cursor{ix: ix, ci: ci, j: j, left: n}
}

func (c *cursor) slot() uint32 { return c.ix.chunks[c.ci][c.j] }

// next moves to the following entry; false when the cursor is exhausted.
func (c *cursor) next() bool {
	c.left--
	if c.left <= 0 {
		return false
	}
	c.j--
	if c.j < 0 {
		c.ci--
		c.j = len(c.ix.chunks[c.ci]) - 1
	}
	return true
}
