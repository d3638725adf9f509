-- eventstore_expect_version (002) guarded one stream at a time; appends have
-- used eventstore_expect_versions (003) since, and nothing calls it. It is
-- dropped here rather than taken out of 002: databases that applied 002 keep
-- the function until this runs, and tern needs the numbering unbroken.
DROP FUNCTION IF EXISTS eventstore_expect_version(uuid, bigint);
