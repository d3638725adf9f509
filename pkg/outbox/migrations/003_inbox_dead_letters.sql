-- An inbox row is an event the group is done with: applied (dead_letter
-- NULL), or given up on and sent to its dead-letter topic (dead_letter: where
-- it went, <topic>/<partition>@<offset>). A redelivery of either is skipped;
-- only a replay of the dead letter (a record whose dlq_replay header names the
-- group) may apply a dead-lettered event, and the row then becomes applied,
-- so a second replay is skipped too. Adding a nullable column rewrites
-- nothing.
ALTER TABLE inbox ADD COLUMN dead_letter text;
