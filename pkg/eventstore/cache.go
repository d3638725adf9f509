package eventstore

import (
	"sync"

	"github.com/google/uuid"
)

// Cache keeps the last committed state of hot aggregates in memory, so that
// a consumer deciding on the same aggregates batch after batch reads only the
// events appended since (usually none) instead of reloading them.
//
// It holds only states that committed: DecideAll hands its states to the
// cache through the function it returns, which the caller runs after its
// COMMIT succeeded. A state from a transaction that failed, even at COMMIT
// after every statement succeeded, never gets in: the redelivered event
// would otherwise be decided on it (a reservation already "made" decides
// nothing, and the saga stalls), and once another writer took its version
// number the version guard would not even notice. A cached state is a
// starting point only: events other writers appended since are read and
// folded onto it.
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
