-- Raises (SQLSTATE ES409) unless the stream is at the expected version, so
-- that an append planned against a version the stream never had aborts the
-- whole transaction, including one that is only implicit (a pipelined batch),
-- instead of inserting nothing while the statements after it commit.
CREATE FUNCTION eventstore_expect_version(stream uuid, expected bigint) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF expected = 0 OR EXISTS (SELECT 1 FROM events WHERE aggregate_id = stream AND version = expected) THEN
        RETURN true;
    END IF;
    RAISE EXCEPTION 'stream % is not at version %', stream, expected USING ERRCODE = 'ES409';
END
$$;
