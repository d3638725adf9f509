-- Every event of every aggregate of one service. Rows are only ever
-- inserted. The primary key makes appends optimistic: two writers that
-- read the same version both try to insert the next one, and one fails.
CREATE TABLE events (
    aggregate_id   uuid        NOT NULL,
    version        bigint      NOT NULL CHECK (version > 0),
    aggregate_type text        NOT NULL,
    event_id       uuid        NOT NULL,
    event_type     text        NOT NULL,
    schema_version int         NOT NULL,
    occurred_at    timestamptz NOT NULL,
    correlation_id uuid        NOT NULL,
    causation_id   uuid        NOT NULL,
    data           jsonb       NOT NULL,
    PRIMARY KEY (aggregate_id, version)
);

-- The latest snapshot of each aggregate whose stream is long enough to
-- have one. A snapshot whose schema is not the one the code expects is
-- ignored, so changing an aggregate's state type needs no migration.
CREATE TABLE snapshots (
    aggregate_id   uuid        PRIMARY KEY,
    aggregate_type text        NOT NULL,
    schema         text        NOT NULL,
    version        bigint      NOT NULL,
    occurred_at    timestamptz NOT NULL,
    state          jsonb       NOT NULL
);
