package projector

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/eventsaga/eventsaga/pkg/events/orders"
)

// A rebuild fills a new generation's tables in bulk: nobody reads them until
// it switches to them, and nobody else writes them. So, while it loads:
//
//   - the tables have only the keys the projection itself needs (orders' and
//     customers' primary keys, which its loads and upserts use); the orders'
//     secondary indexes and the saga log's key, which serve the queries, are
//     built once at the end, from the whole table, instead of row by row;
//   - the saga log gets only the events the folds applied, so a redelivered
//     event is not logged twice although no key skips it;
//   - the customers' order counts are not kept per batch (every partition of
//     the orders would update the same customers' rows, waiting on each
//     other's locks): finishBulk counts the orders once. The counts are by
//     each order's status, so they come out as the per-batch ones would
//     (TestProjectionIndependentOfInterleavingAndRedelivery checks that);
//   - so the partitions share no rows (each aggregate's events are in one
//     partition, as the relay keys them by aggregate), and are applied side
//     by side; and the rows a batch adds, new orders and the saga log, are
//     written by COPY, as no other transaction can be adding them.
//
// A rebuild that fails or stops part-way leaves its generation building,
// never current; the next rebuild starts a new one from the start of the
// topics. finishBulk makes the generation what prepare makes, with its rows
// and counts, before switchTo makes it current.

// startBulk registers a new generation and creates its tables for a bulk
// load.
func (s store) startBulk(ctx context.Context) (generation, error) {
	g, err := s.register(ctx)
	if err != nil {
		return 0, err
	}
	if _, err := s.pool.Exec(ctx, g.ddl(createTables+";\n"+dropSagaLogKey)); err != nil {
		return 0, fmt.Errorf("create generation %d: %w", g, err)
	}
	return g, nil
}

// The saga log's key is made with its table (createSagaLog, which the
// migration shares) and set aside for a bulk load.
const (
	dropSagaLogKey = `ALTER TABLE %[3]s DROP CONSTRAINT %[3]s_pkey`
	addSagaLogKey  = `ALTER TABLE %[3]s ADD PRIMARY KEY (order_id, aggregate_id, version)`
)

// countOrders sets each customer's order counts from its orders' statuses
// ($1-$4: pending, approved, rejected, cancelled), making the row of a
// customer not yet seen, as addCounts does.
const countOrders = `
INSERT INTO %[2]s AS t (customer_id, pending, approved, rejected, cancelled)
SELECT customer_id, count(*) FILTER (WHERE status = $1), count(*) FILTER (WHERE status = $2),
       count(*) FILTER (WHERE status = $3), count(*) FILTER (WHERE status = $4)
FROM %[1]s WHERE status IN ($1, $2, $3, $4)
GROUP BY customer_id
ON CONFLICT (customer_id) DO UPDATE
SET pending = EXCLUDED.pending, approved = EXCLUDED.approved,
    rejected = EXCLUDED.rejected, cancelled = EXCLUDED.cancelled`

// finishBulk ends the bulk load of generation g, in one transaction: it
// builds the indexes and keys that prepare would have made and counts each
// customer's orders. The projection must have stopped. (The tables are not
// analyzed here: that costs as much as an index, and autovacuum analyzes
// tables this new within a minute; until then the planner goes by the
// sizes the index builds recorded.)
func (s store) finishBulk(ctx context.Context, g generation) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, g.ddl(createIndexes+";\n"+addSagaLogKey)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, g.ddl(countOrders), orders.StatusPending, orders.StatusApproved, orders.StatusRejected, orders.StatusCancelled)
		return err
	})
	if err != nil {
		return fmt.Errorf("finish generation %d: %w", g, err)
	}
	return nil
}

// bulkOrders is apply's part for order events in a bulk load: the rows
// that were not in the table (rows holds those that were) are added by COPY,
// as nobody else writes this partition's orders; the saga log gets the events
// the fold applied; the counts wait for finishBulk.
func (p projection) bulkOrders(ctx context.Context, tx pgx.Tx, rows map[uuid.UUID]*OrderRow, evs []Event, steps *sagaLog) error {
	stored := make(map[uuid.UUID]bool, len(rows))
	for id := range rows {
		stored[id] = true
	}
	changed, _, applied := foldOrders(rows, evs)
	steps.addOrders(applied)
	var fresh, updated []*OrderRow
	for _, r := range changed {
		if stored[r.OrderID] {
			updated = append(updated, r)
		} else {
			fresh = append(fresh, r)
		}
	}
	if err := p.gen.writeOrders(ctx, tx, updated); err != nil {
		return fmt.Errorf("write orders: %w", err)
	}
	if err := p.gen.copyOrders(ctx, tx, fresh); err != nil {
		return fmt.Errorf("add orders: %w", err)
	}
	return nil
}

// copyOrders adds rows that are not in the table, by COPY.
func (g generation) copyOrders(ctx context.Context, tx pgx.Tx, rows []*OrderRow) error {
	if len(rows) == 0 {
		return nil
	}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{g.orders()},
		[]string{"order_id", "customer_id", "status", "total", "rejection_reason", "version", "updated_at"},
		pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
			r := rows[i]
			return []any{[16]byte(r.OrderID), [16]byte(r.CustomerID), r.Status, int64(r.Total), stringPtr(r.RejectionReason), r.Version, r.UpdatedAt}, nil
		}))
	return err
}

// copySagaLog adds the batch's rows by COPY: a bulk load's log has no key,
// and gets each event once (see apply).
func (g generation) copySagaLog(ctx context.Context, tx pgx.Tx, l sagaLog) error {
	if len(l.orderIDs) == 0 {
		return nil
	}
	_, err := tx.CopyFrom(ctx, pgx.Identifier{g.sagaLog()},
		[]string{"order_id", "aggregate_id", "aggregate_type", "event_type", "version", "occurred_at", "amount", "detail", "trace_id", "credit_limit", "reserved_before", "reserved_after"},
		pgx.CopyFromSlice(len(l.orderIDs), func(i int) ([]any, error) {
			return []any{l.orderIDs[i], l.aggregateIDs[i], l.aggregateTypes[i], l.types[i], l.versions[i], l.at[i],
				l.amounts[i], l.details[i], l.traces[i], l.limits[i], l.before[i], l.after[i]}, nil
		}))
	return err
}
