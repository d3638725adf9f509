package order

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultKeyRetention is IDEMPOTENCY_KEY_RETENTION unless set: a client
// retries a request within minutes, or hours after an outage of its own,
// not days later.
const DefaultKeyRetention = 24 * time.Hour

// pruneKeys deletes up to $2 idempotency keys first used more than $1
// microseconds ago, oldest first. SKIP LOCKED: instances pruning at once
// share the work. A key being inserted again by a retry at that moment is
// not locked by anyone; the retry, not finding it, creates a new order,
// which is what an expired key means.
const pruneKeys = `
DELETE FROM idempotency_keys WHERE key = ANY(ARRAY(
    SELECT key FROM idempotency_keys
    WHERE created_at < now() - $1::bigint * interval '1 microsecond'
    ORDER BY created_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED))`

// PruneKeys deletes up to limit idempotency keys older than retention and
// returns how many it deleted (a platform.Pruner). A request repeated with
// such a key is then a new request, and places a new order.
func PruneKeys(ctx context.Context, pool *pgxpool.Pool, retention time.Duration, limit int) (int64, error) {
	if retention <= 0 || limit <= 0 {
		return 0, fmt.Errorf("prune idempotency keys: retention (%s) and limit (%d) must be positive", retention, limit)
	}
	tag, err := pool.Exec(ctx, pruneKeys, retention.Microseconds(), limit)
	if err != nil {
		return 0, fmt.Errorf("prune idempotency keys: %w", err)
	}
	return tag.RowsAffected(), nil
}
