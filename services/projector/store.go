package projector

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/eventsaga/eventsaga/pkg/events/orders"
)

// ErrNotFound: no such row in the read model.
var ErrNotFound = errors.New("not in the read model")

// generation names one generation's tables. Names are built from the
// number alone, never from input.
type generation int

func (g generation) orders() string    { return fmt.Sprintf("rm_orders_g%d", g) }
func (g generation) customers() string { return fmt.Sprintf("rm_customers_g%d", g) }
func (g generation) sagaLog() string   { return fmt.Sprintf("rm_saga_log_g%d", g) }

// tables lists generation g's tables, for DROP TABLE.
func (g generation) tables() string {
	return g.orders() + ", " + g.customers() + ", " + g.sagaLog()
}

const createTables = `
CREATE TABLE IF NOT EXISTS %[1]s (
    order_id         uuid        PRIMARY KEY,
    customer_id      uuid        NOT NULL,
    status           text        NOT NULL,
    total            bigint      NOT NULL,
    rejection_reason text,
    version          bigint      NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS %[2]s (
    customer_id  uuid        PRIMARY KEY,
    registered   boolean     NOT NULL DEFAULT false,
    name         text        NOT NULL DEFAULT '',
    credit_limit bigint      NOT NULL DEFAULT 0,
    reserved     bigint      NOT NULL DEFAULT 0,
    version      bigint      NOT NULL DEFAULT 0,
    updated_at   timestamptz,
    pending      bigint      NOT NULL DEFAULT 0,
    approved     bigint      NOT NULL DEFAULT 0,
    rejected     bigint      NOT NULL DEFAULT 0,
    cancelled    bigint      NOT NULL DEFAULT 0
);
` + createSagaLog

// createIndexes makes the orders table's secondary indexes, which serve the
// queries only: a bulk load (bulk.go) makes them after it has filled the
// table.
const createIndexes = `
CREATE INDEX IF NOT EXISTS %[1]s_customer ON %[1]s (customer_id, order_id);
CREATE INDEX IF NOT EXISTS %[1]s_status ON %[1]s (status, order_id);
`

// store is the read model's database.
type store struct {
	pool *pgxpool.Pool
}

// current returns the current generation, making generation 1 the current
// one on a database that has none.
func (s store) current(ctx context.Context) (generation, error) {
	var g int
	err := s.pool.QueryRow(ctx, `SELECT generation FROM rm_generations WHERE state = 'current'`).Scan(&g)
	if errors.Is(err, pgx.ErrNoRows) {
		if err := s.prepare(ctx, 1); err != nil {
			return 0, err
		}
		_, err = s.pool.Exec(ctx, `INSERT INTO rm_generations (generation, state, switched_at) VALUES (1, 'current', now()) ON CONFLICT DO NOTHING`)
		if err != nil {
			return 0, err
		}
		return s.current(ctx)
	}
	return generation(g), err
}

// prepare creates generation g's tables. Several projector instances
// starting together on a new database all create generation 1: CREATE TABLE
// IF NOT EXISTS is not safe against a concurrent one (the loser fails on the
// catalog's unique index), so they take turns under a transaction-level
// advisory lock. The statements are one simple-protocol query, which
// Postgres runs as one transaction: the lock is held until they are done.
func (s store) prepare(ctx context.Context, g generation) error {
	ddl := "SELECT pg_advisory_xact_lock(hashtext('rm_generations'));\n" + g.ddl(createTables) + ";\n" + g.ddl(createIndexes)
	if _, err := s.pool.Exec(ctx, ddl); err != nil {
		return fmt.Errorf("create generation %d: %w", g, err)
	}
	return nil
}

// ddl is one of this package's statement templates with g's table names.
func (g generation) ddl(template string) string {
	return fmt.Sprintf(template, g.orders(), g.customers(), g.sagaLog())
}

// register adds a new generation, past every existing one, as building.
func (s store) register(ctx context.Context) (generation, error) {
	if _, err := s.current(ctx); err != nil {
		return 0, err
	}
	var g int
	err := s.pool.QueryRow(ctx, `
INSERT INTO rm_generations (generation, state)
SELECT max(generation) + 1, 'building' FROM rm_generations
RETURNING generation`).Scan(&g)
	if err != nil {
		return 0, fmt.Errorf("register a new generation: %w", err)
	}
	return generation(g), nil
}

// switchTo makes g the current generation, and drops the tables of
// generations older than the one it replaces (one is kept to go back to).
func (s store) switchTo(ctx context.Context, g generation) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var old int
		if err := tx.QueryRow(ctx, `UPDATE rm_generations SET state = 'retired' WHERE state = 'current' RETURNING generation`).Scan(&old); err != nil {
			return fmt.Errorf("retire the current generation: %w", err)
		}
		tag, err := tx.Exec(ctx, `UPDATE rm_generations SET state = 'current', switched_at = now() WHERE generation = $1 AND state = 'building'`, int(g))
		if err != nil || tag.RowsAffected() != 1 {
			return fmt.Errorf("make generation %d current: %v (%d rows)", g, err, tag.RowsAffected())
		}
		rows, _ := tx.Query(ctx, `SELECT generation FROM rm_generations WHERE state = 'retired' AND generation < $1`, old)
		stale, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			return err
		}
		for _, x := range stale {
			if _, err := tx.Exec(ctx, "DROP TABLE IF EXISTS "+generation(x).tables()); err != nil {
				return err
			}
		}
		return nil
	})
}

// abandon drops the tables of a generation that a rebuild did not finish.
// Its row stays, as abandoned, so that its number, and the consumer group
// whose offsets the rebuild committed, is never taken again.
func (s store) abandon(ctx context.Context, g generation) {
	_, _ = s.pool.Exec(ctx, "DROP TABLE IF EXISTS "+g.tables())
	_, _ = s.pool.Exec(ctx, `UPDATE rm_generations SET state = 'abandoned' WHERE generation = $1 AND state = 'building'`, int(g))
}

// loadOrders returns the rows of ids that exist.
func (g generation) loadOrders(ctx context.Context, tx pgx.Tx, ids [][16]byte) (map[uuid.UUID]*OrderRow, error) {
	rows, _ := tx.Query(ctx, fmt.Sprintf(`
SELECT order_id, customer_id, status, total, coalesce(rejection_reason, ''), version, updated_at
FROM %s WHERE order_id = ANY($1)`, g.orders()), ids)
	out := make(map[uuid.UUID]*OrderRow, len(ids))
	var r OrderRow
	var oid, cid [16]byte
	_, err := pgx.ForEachRow(rows, []any{&oid, &cid, &r.Status, &r.Total, &r.RejectionReason, &r.Version, &r.UpdatedAt}, func() error {
		row := r
		row.OrderID, row.CustomerID = oid, cid
		out[row.OrderID] = &row
		return nil
	})
	return out, err
}

// writeOrders stores changed rows, never over a newer version.
func (g generation) writeOrders(ctx context.Context, tx pgx.Tx, rows []*OrderRow) error {
	if len(rows) == 0 {
		return nil
	}
	n := len(rows)
	ids, cids := make([][16]byte, n), make([][16]byte, n)
	statuses, reasons := make([]string, n), make([]*string, n)
	totals, versions := make([]int64, n), make([]int64, n)
	at := make([]time.Time, n)
	for i, r := range rows {
		ids[i], cids[i], statuses[i], totals[i], versions[i], at[i] = r.OrderID, r.CustomerID, r.Status, int64(r.Total), r.Version, r.UpdatedAt
		if r.RejectionReason != "" {
			reasons[i] = &r.RejectionReason
		}
	}
	_, err := tx.Exec(ctx, fmt.Sprintf(`
INSERT INTO %[1]s AS t (order_id, customer_id, status, total, rejection_reason, version, updated_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::timestamptz[])
ON CONFLICT (order_id) DO UPDATE
SET customer_id = EXCLUDED.customer_id, status = EXCLUDED.status, total = EXCLUDED.total,
    rejection_reason = EXCLUDED.rejection_reason, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at
WHERE t.version < EXCLUDED.version`, g.orders()), ids, cids, statuses, totals, reasons, versions, at)
	return err
}

// addCounts adds count changes to customers' rows, creating rows for
// customers not yet seen. Rows are updated in the order of their IDs, the
// same in every transaction, so that transactions from different partitions
// wait for each other instead of deadlocking.
func (g generation) addCounts(ctx context.Context, tx pgx.Tx, counts map[uuid.UUID]*Counts) error {
	if len(counts) == 0 {
		return nil
	}
	ids := make([]uuid.UUID, 0, len(counts))
	for id := range counts {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) })
	n := len(ids)
	keys := make([][16]byte, n)
	p, a, r, c := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	for i, id := range ids {
		k := counts[id]
		keys[i], p[i], a[i], r[i], c[i] = id, k.Pending, k.Approved, k.Rejected, k.Cancelled
	}
	_, err := tx.Exec(ctx, fmt.Sprintf(`
INSERT INTO %[1]s AS t (customer_id, pending, approved, rejected, cancelled)
SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])
ON CONFLICT (customer_id) DO UPDATE
SET pending = t.pending + EXCLUDED.pending, approved = t.approved + EXCLUDED.approved,
    rejected = t.rejected + EXCLUDED.rejected, cancelled = t.cancelled + EXCLUDED.cancelled`, g.customers()), keys, p, a, r, c)
	return err
}

// loadCustomers returns the rows of ids that exist.
func (g generation) loadCustomers(ctx context.Context, tx pgx.Tx, ids [][16]byte) (map[uuid.UUID]*CustomerRow, error) {
	rows, _ := tx.Query(ctx, fmt.Sprintf(`
SELECT customer_id, registered, name, credit_limit, reserved, version, coalesce(updated_at, 'epoch')
FROM %s WHERE customer_id = ANY($1)`, g.customers()), ids)
	out := make(map[uuid.UUID]*CustomerRow, len(ids))
	var r CustomerRow
	var id [16]byte
	_, err := pgx.ForEachRow(rows, []any{&id, &r.Registered, &r.Name, &r.CreditLimit, &r.Reserved, &r.Version, &r.UpdatedAt}, func() error {
		row := r
		row.CustomerID = id
		out[row.CustomerID] = &row
		return nil
	})
	return out, err
}

// writeCustomers stores the customer events' part of changed rows, never
// over a newer version, in the order of their IDs (see addCounts).
func (g generation) writeCustomers(ctx context.Context, tx pgx.Tx, rows []*CustomerRow) error {
	if len(rows) == 0 {
		return nil
	}
	slices.SortFunc(rows, func(a, b *CustomerRow) int { return slices.Compare(a.CustomerID[:], b.CustomerID[:]) })
	n := len(rows)
	ids, names := make([][16]byte, n), make([]string, n)
	reg := make([]bool, n)
	limits, reserved, versions := make([]int64, n), make([]int64, n), make([]int64, n)
	at := make([]time.Time, n)
	for i, r := range rows {
		ids[i], reg[i], names[i], limits[i], reserved[i], versions[i], at[i] = r.CustomerID, r.Registered, r.Name, int64(r.CreditLimit), int64(r.Reserved), r.Version, r.UpdatedAt
	}
	_, err := tx.Exec(ctx, fmt.Sprintf(`
INSERT INTO %[1]s AS t (customer_id, registered, name, credit_limit, reserved, version, updated_at)
SELECT * FROM unnest($1::uuid[], $2::bool[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::timestamptz[])
ON CONFLICT (customer_id) DO UPDATE
SET registered = EXCLUDED.registered, name = EXCLUDED.name, credit_limit = EXCLUDED.credit_limit,
    reserved = EXCLUDED.reserved, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at
WHERE t.version < EXCLUDED.version`, g.customers()), ids, reg, names, limits, reserved, versions, at)
	return err
}

// order returns one order of the read model.
func (g generation) order(ctx context.Context, q pgxQuerier, id uuid.UUID) (OrderRow, error) {
	rows, _ := q.Query(ctx, fmt.Sprintf(`
SELECT order_id, customer_id, status, total, coalesce(rejection_reason, ''), version, updated_at
FROM %s WHERE order_id = $1`, g.orders()), [16]byte(id))
	list, err := collectOrders(rows)
	if err != nil {
		return OrderRow{}, err
	}
	if len(list) == 0 {
		return OrderRow{}, ErrNotFound
	}
	return list[0], nil
}

// OrderFilter selects orders; zero fields select all.
type OrderFilter struct {
	CustomerID uuid.UUID
	Status     string
	After      uuid.UUID // the last order of the previous page
	Limit      int
}

// listOrders returns orders by ascending ID (IDs are time-ordered, so this
// is the order they were placed in), a page at a time.
func (g generation) listOrders(ctx context.Context, q pgxQuerier, f OrderFilter) ([]OrderRow, error) {
	rows, _ := q.Query(ctx, fmt.Sprintf(`
SELECT order_id, customer_id, status, total, coalesce(rejection_reason, ''), version, updated_at
FROM %s
WHERE ($1::uuid IS NULL OR customer_id = $1)
  AND ($2::text IS NULL OR status = $2)
  AND ($3::uuid IS NULL OR order_id > $3)
ORDER BY order_id
LIMIT $4`, g.orders()), nullUUID(f.CustomerID), nullString(f.Status), nullUUID(f.After), f.Limit)
	return collectOrders(rows)
}

// stuckOrders returns the orders PENDING since before cutoff, by ascending
// ID, a page at a time. A PENDING order's row holds only its OrderCreated,
// so updated_at is when it was placed. The index on (status, order_id) reads
// only PENDING rows, few in a working system, and as IDs are time-ordered,
// the oldest first: the scan stops at the page's end, before the young ones.
// No index on updated_at is needed.
func (g generation) stuckOrders(ctx context.Context, q pgxQuerier, cutoff time.Time, f OrderFilter) ([]OrderRow, error) {
	rows, _ := q.Query(ctx, fmt.Sprintf(`
SELECT order_id, customer_id, status, total, coalesce(rejection_reason, ''), version, updated_at
FROM %s
WHERE status = $1 AND updated_at < $2
  AND ($3::uuid IS NULL OR order_id > $3)
ORDER BY order_id
LIMIT $4`, g.orders()), orders.StatusPending, cutoff, nullUUID(f.After), f.Limit)
	return collectOrders(rows)
}

func collectOrders(rows pgx.Rows) ([]OrderRow, error) {
	var out []OrderRow
	var r OrderRow
	var oid, cid [16]byte
	_, err := pgx.ForEachRow(rows, []any{&oid, &cid, &r.Status, &r.Total, &r.RejectionReason, &r.Version, &r.UpdatedAt}, func() error {
		r.OrderID, r.CustomerID = oid, cid
		out = append(out, r)
		return nil
	})
	return out, err
}

// CustomerView is a registered customer with the counts of its orders.
type CustomerView struct {
	CustomerRow
	Orders Counts
}

// customer returns a registered customer of the read model.
func (g generation) customer(ctx context.Context, q pgxQuerier, id uuid.UUID) (CustomerView, error) {
	var v CustomerView
	var cid [16]byte
	var at *time.Time
	err := q.QueryRow(ctx, fmt.Sprintf(`
SELECT customer_id, registered, name, credit_limit, reserved, version, updated_at, pending, approved, rejected, cancelled
FROM %s WHERE customer_id = $1 AND registered`, g.customers()), [16]byte(id)).Scan(
		&cid, &v.Registered, &v.Name, &v.CreditLimit, &v.Reserved, &v.Version, &at,
		&v.Orders.Pending, &v.Orders.Approved, &v.Orders.Rejected, &v.Orders.Cancelled)
	if errors.Is(err, pgx.ErrNoRows) {
		return v, ErrNotFound
	}
	v.CustomerID = cid
	if at != nil {
		v.UpdatedAt = *at
	}
	return v, err
}

type pgxQuerier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func nullUUID(id uuid.UUID) any {
	if id == uuid.Nil {
		return nil
	}
	return [16]byte(id)
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}
