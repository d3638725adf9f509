-- eventstore_expect_version for many streams at once, so that the appends of
-- many aggregates go in one statement: raises (SQLSTATE ES409, the stream in
-- DETAIL) unless every stream is at its expected version.
CREATE FUNCTION eventstore_expect_versions(streams uuid[], expected bigint[]) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    bad_stream uuid;
    bad_version bigint;
BEGIN
    SELECT x.stream, x.version INTO bad_stream, bad_version
    FROM unnest(streams, expected) AS x(stream, version)
    WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.aggregate_id = x.stream AND e.version = x.version)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'stream % is not at version %', bad_stream, bad_version
            USING ERRCODE = 'ES409', DETAIL = bad_stream::text;
    END IF;
    RETURN true;
END
$$;
