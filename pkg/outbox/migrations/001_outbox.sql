-- Messages waiting to be published, written in the same transaction as the
-- state change they announce. The relay publishes rows in id order and deletes
-- a row only after Kafka acknowledged it.
CREATE TABLE outbox (
    id            bigserial   PRIMARY KEY,
    topic         text        NOT NULL,
    key           text        NOT NULL,
    value         bytea       NOT NULL,
    header_keys   text[]      NOT NULL DEFAULT '{}',
    header_values bytea[]     NOT NULL DEFAULT '{}',
    enqueued_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Events a consumer group has applied, written in the same transaction as
-- the effect, so a redelivered event changes nothing.
CREATE TABLE inbox (
    consumer_group text        NOT NULL,
    event_id       uuid        NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
