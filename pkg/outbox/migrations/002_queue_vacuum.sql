-- The outbox is a queue: every row is deleted soon after it is inserted, so
-- its dead rows grow with traffic while its live rows stay few. The default
-- trigger (a fifth of the table dead) measures against a table that is
-- almost empty; vacuum it after a fixed number of dead rows instead. The
-- inbox only grows, and keeps the default.
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000,
                        autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 10000);
