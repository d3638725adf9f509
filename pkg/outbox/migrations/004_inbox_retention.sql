---- tern: disable-tx ----
-- Inbox rows are kept for a retention (INBOX_RETENTION, 7 days by default),
-- then deleted in small batches by PruneInbox, oldest first: this index finds
-- them without reading the table. processed_at, which every row has had
-- since 001 (the time its event was applied, or dead-lettered), is the age.
-- Dead-lettered rows are never pruned (they wait for a replay) and stay out
-- of the index.
--
-- Built CONCURRENTLY, outside a transaction, so that a large inbox does not
-- block the consumers of a running instance while the index builds. An
-- interrupted build leaves an invalid index behind, which the DROP clears
-- on the next attempt.
DROP INDEX CONCURRENTLY IF EXISTS inbox_processed_at;
CREATE INDEX CONCURRENTLY inbox_processed_at ON inbox (processed_at) WHERE dead_letter IS NULL;
