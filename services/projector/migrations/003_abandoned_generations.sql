-- A rebuild that does not finish marked its generation by deleting its row,
-- so the next rebuild took the same number, and with it the same consumer
-- group (projector.gN), whose offsets the abandoned rebuild had committed:
-- it went on from there into empty tables, and the events before those
-- offsets were never projected. The row now stays, as abandoned, and a
-- generation number (a consumer group) is never used twice.
ALTER TABLE rm_generations
    DROP CONSTRAINT rm_generations_state_check,
    ADD CONSTRAINT rm_generations_state_check CHECK (state IN ('building', 'current', 'retired', 'abandoned'));
