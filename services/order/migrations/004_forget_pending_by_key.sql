-- Ending the deadlines of decided orders (deadline.go's forgetPending), as a
-- probe of the primary key whatever the statistics say.
--
-- pending_orders is a queue: a row in with each order, out with its
-- decision, a few dozen live rows among the dead ones autovacuum has not yet
-- removed. Its statistics make it look a page or two big, so the planner
-- scanned it whole, twice (a hash semi join of the table with the rows the
-- statement locks), and each scan read every dead row: 2-6 ms a call at 250
-- sagas/s, the costliest statement of the order service's consumer, where a
-- probe of the key is a few microseconds an order. The function plans its
-- statement once a session with sequential scans off, so the rows to lock
-- are found through pending_orders_pkey, and deletes them by their ctid (a
-- TID scan): no plan that reads the table whole is left to choose.
--
-- Rows another transaction holds (a deadline sweep's) are skipped rather
-- than waited for, as before: the sweep may be waiting for this
-- transaction's event of the same order (see deadline.go).
CREATE OR REPLACE FUNCTION order_forget_pending(ids uuid[]) RETURNS integer
LANGUAGE plpgsql
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    n integer;
BEGIN
    DELETE FROM pending_orders WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM pending_orders WHERE order_id = ANY (ids) FOR UPDATE SKIP LOCKED));
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- When the orders a transaction decided were created and decided, for the
-- saga's latency metric (metrics.go): their OrderCreated and their decision,
-- two probes of events_pkey an order. Planned as a plain statement on a young
-- events table, the plan kept for the session joined a scan of the whole
-- table, and kept doing so as the table grew: 4.6, then 14.4, then 22.8 ms a
-- call over three 20 s runs at 250 sagas/s, against 0.2 ms when it probes.
CREATE OR REPLACE FUNCTION order_decision_times(ids uuid[], versions bigint[])
RETURNS TABLE (order_id uuid, created timestamptz, decided timestamptz)
LANGUAGE plpgsql STABLE
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    RETURN QUERY
    SELECT x.id, c.occurred_at, d.occurred_at
    FROM unnest(ids, versions) AS x(id, version)
    JOIN events c ON c.aggregate_id = x.id AND c.version = 1
    JOIN events d ON d.aggregate_id = x.id AND d.version = x.version;
END
$$;
