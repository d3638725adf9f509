-- The orders that may still be PENDING, for the deadline (deadline.go). A
-- row is written in the transaction that appends the order's OrderCreated
-- and deleted in the one that takes the order out of PENDING, so finding the
-- orders past their deadline reads a few rows by placed_at instead of every
-- stream. A row left behind for an order that is no longer PENDING costs one
-- load: the deadline finds the order decided, records nothing and deletes it.
CREATE TABLE pending_orders (
    order_id         uuid        PRIMARY KEY,
    -- The event_id of the OrderCreated: the causation_id of a rejection
    -- for the deadline.
    created_event_id uuid        NOT NULL,
    -- The database's clock, the one every instance compares it with.
    placed_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pending_orders_placed_at ON pending_orders (placed_at);

-- The orders placed before this table existed that are still PENDING: those
-- whose stream has one event, since every event after OrderCreated takes an
-- order out of PENDING.
INSERT INTO pending_orders (order_id, created_event_id, placed_at)
SELECT e.aggregate_id, e.event_id, e.occurred_at
FROM events e
WHERE e.aggregate_type = 'order' AND e.version = 1
  AND NOT EXISTS (SELECT 1 FROM events n WHERE n.aggregate_id = e.aggregate_id AND n.version = 2);
