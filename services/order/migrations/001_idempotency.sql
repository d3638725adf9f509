-- The first answer to each POST /orders that carried an Idempotency-Key,
-- written in the same transaction as the order's first event: a retry after
-- a crash finds either both or neither.
CREATE TABLE idempotency_keys (
    key          text        PRIMARY KEY,
    request_hash bytea       NOT NULL,
    order_id     uuid        NOT NULL,
    response     jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
