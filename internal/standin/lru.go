package standin

import "container/list"

// lru is a least-recently-used cache bounded by the summed cost of its
// values. It always keeps the most recent entry, whatever its cost. It is
// not safe for concurrent use; Generator guards it with its mutex.
type lru[V any] struct {
	max, used int64
	cost      func(V) int64
	order     *list.List // of *lruEntry[V], most recent first
	index     map[string]*list.Element
}

type lruEntry[V any] struct {
	key  string
	val  V
	cost int64
}

func newLRU[V any](max int64, cost func(V) int64) *lru[V] {
	return &lru[V]{max: max, cost: cost, order: list.New(), index: make(map[string]*list.Element)}
}

// get returns the value of key and marks it most recently used.
func (c *lru[V]) get(key string) (V, bool) {
	el, ok := c.index[key]
	if !ok {
		var zero V
		return zero, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*lruEntry[V]).val, true
}

// put stores val under key as the most recently used entry and evicts the
// least recently used ones beyond the bound.
func (c *lru[V]) put(key string, val V) {
	if el, ok := c.index[key]; ok {
		e := el.Value.(*lruEntry[V])
		c.used -= e.cost
		e.val, e.cost = val, c.cost(val)
		c.used += e.cost
		c.order.MoveToFront(el)
	} else {
		e := &lruEntry[V]{key: key, val: val, cost: c.cost(val)}
		c.index[key] = c.order.PushFront(e)
		c.used += e.cost
	}
	for c.used > c.max && c.order.Len() > 1 {
		el := c.order.Back()
		e := el.Value.(*lruEntry[V])
		c.order.Remove(el)
		delete(c.index, e.key)
		c.used -= e.cost
	}
}

func (c *lru[V]) len() int { return c.order.Len() }
