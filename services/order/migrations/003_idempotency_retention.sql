-- Idempotency keys are kept for a retention (IDEMPOTENCY_KEY_RETENTION, 24 h
-- by default), then deleted in small batches, oldest first (prune.go): this
-- index finds them without reading the table. Not built CONCURRENTLY, for
-- the reason in pkg/outbox's 004: instances migrating together deadlock on
-- a concurrent build. It blocks POST /orders while it builds, once, at the
-- upgrade.
CREATE INDEX IF NOT EXISTS idempotency_keys_created_at ON idempotency_keys (created_at);
