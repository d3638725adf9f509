package eventstore

import (
	"sync"

	"github.com/google/uuid"
)

// Cache keeps the last known state of hot aggregates in memory, so that a
// consumer deciding on the same aggregates batch after batch reads only the
// events appended since (usually none) instead of reloading them.
//
// It cannot make a decision wrong: a cached state is only a starting point.
// If another writer moved the stream, its new events are read and folded; if
// the cached state never committed (the transaction failed after the
// decision), an append on top of it names a version the stream does not
// have and fails with ErrConflict, upon which DecideAll forgets the cached
// states it used, and the batch is retried from the store.
type Cache[S any] struct {
	mu  sync.Mutex
	m   map[uuid.UUID]Aggregate[S]
	max int
}

// NewCache returns a cache of at most max aggregates.
func NewCache[S any](max int) *Cache[S] {
	return &Cache[S]{m: make(map[uuid.UUID]Aggregate[S]), max: max}
}

func (c *Cache[S]) get(id uuid.UUID) (Aggregate[S], bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	a, ok := c.m[id]
	return a, ok
}

func (c *Cache[S]) put(aggs []*Aggregate[S]) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, a := range aggs {
		if _, ok := c.m[a.ID]; !ok && len(c.m) >= c.max {
			for k := range c.m { // evict one at random: cheap, and fair enough for a hot set
				delete(c.m, k)
				break
			}
		}
		c.m[a.ID] = *a
	}
}

func (c *Cache[S]) forget(ids []uuid.UUID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		delete(c.m, id)
	}
}
