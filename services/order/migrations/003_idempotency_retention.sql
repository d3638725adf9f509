---- tern: disable-tx ----
-- Idempotency keys are kept for a retention (IDEMPOTENCY_KEY_RETENTION, 24 h
-- by default), then deleted in small batches, oldest first (prune.go): this
-- index finds them without reading the table. Built CONCURRENTLY, outside a
-- transaction, so that a large table does not block POST /orders on a
-- running instance meanwhile; the DROP clears an invalid index an
-- interrupted build left behind.
DROP INDEX CONCURRENTLY IF EXISTS idempotency_keys_created_at;
CREATE INDEX CONCURRENTLY idempotency_keys_created_at ON idempotency_keys (created_at);
