-- eventstore_expect_versions (003) again, planned once per session.
--
-- Its query takes the streams as arrays. Planned for each call's arrays (a
-- custom plan), it was estimated cheaper than the generic plan, so Postgres
-- planned it afresh on every call: about 0.2 ms of a 0.02 ms check, which
-- made the events INSERT that it guards run at a third of its speed
-- (pgbench, eight clients appending one event a transaction: 1,544 against
-- 4,056 tx/s on 18.6). The function now keeps its generic plan.
--
-- A plan kept for a session must not depend on how big the table was when
-- it was made: as 003 wrote it (NOT EXISTS, an anti join), a generic plan
-- made while events was nearly empty is a hash join over a scan of the whole
-- table, kept as the table grows. As a subquery per stream, the lookup can
-- only be a probe of the primary key, whatever the statistics say.
CREATE OR REPLACE FUNCTION eventstore_expect_versions(streams uuid[], expected bigint[]) RETURNS boolean
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    bad_stream uuid;
    bad_version bigint;
BEGIN
    SELECT x.stream, x.version INTO bad_stream, bad_version
    FROM unnest(streams, expected) AS x(stream, version)
    WHERE (SELECT true FROM events e WHERE e.aggregate_id = x.stream AND e.version = x.version) IS NULL
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'stream % is not at version %', bad_stream, bad_version
            USING ERRCODE = 'ES409', DETAIL = bad_stream::text;
    END IF;
    RETURN true;
END
$$;
