-- The saga log (services/projector/ui_log.go) is a table of each generation,
-- made with the generation's other tables. Generations made before it
-- existed get an empty one here, so that the projection can write to it;
-- it then holds the events projected from now on, and a rebuild (make
-- rebuild) fills a new generation's from the start of the topics. The
-- table is the one createSagaLog makes: keep the two in step.
DO $$
DECLARE
    g int;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('rm_generations'));
    FOR g IN SELECT generation FROM rm_generations WHERE state IN ('current', 'building') LOOP
        EXECUTE format($ddl$
CREATE TABLE IF NOT EXISTS rm_saga_log_g%s (
    order_id        uuid        NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    uuid        NOT NULL,
    version         bigint      NOT NULL,
    event_type      text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    amount          bigint,
    detail          text,
    credit_limit    bigint,
    reserved_before bigint,
    reserved_after  bigint,
    trace_id        text,
    PRIMARY KEY (order_id, aggregate_id, version)
)$ddl$, g);
    END LOOP;
END
$$;
