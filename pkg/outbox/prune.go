package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// pruneInbox deletes up to $2 rows of events applied more than $1
// microseconds ago. The rows are claimed with SKIP LOCKED, so pruners in
// several instances share the work instead of waiting for each other, and
// deleted by their physical address, which the claim holds still. A
// dead-lettered row is not an applied event and stays until a replay
// applies it.
const pruneInbox = `
DELETE FROM inbox WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM inbox
    WHERE processed_at < now() - $1::bigint * interval '1 microsecond' AND dead_letter IS NULL
    ORDER BY processed_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED))`

// PruneInbox deletes up to limit inbox rows of events applied longer than
// retention ago, oldest first, and returns how many it deleted. Call it
// again while it returns limit.
//
// After that, a redelivery of such an event is applied again: the retention
// must outlast any redelivery (see docs/guarantees.md). Rows of dead-lettered
// events are kept whatever their age.
func PruneInbox(ctx context.Context, pool *pgxpool.Pool, retention time.Duration, limit int) (int64, error) {
	if retention <= 0 || limit <= 0 {
		return 0, fmt.Errorf("prune inbox: retention (%s) and limit (%d) must be positive", retention, limit)
	}
	tag, err := pool.Exec(ctx, pruneInbox, retention.Microseconds(), limit)
	if err != nil {
		return 0, fmt.Errorf("prune inbox: %w", err)
	}
	return tag.RowsAffected(), nil
}
