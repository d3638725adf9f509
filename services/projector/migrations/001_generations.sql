-- Read models come in generations: each has its own tables (rm_orders_gN,
-- rm_customers_gN) and consumer group. Queries read the current one; a
-- rebuild fills a new one from the start of the topics and makes it current
-- when it has caught up.
CREATE TABLE rm_generations (
    generation  int         PRIMARY KEY,
    state       text        NOT NULL CHECK (state IN ('building', 'current', 'retired')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    switched_at timestamptz
);
CREATE UNIQUE INDEX rm_generations_one_current ON rm_generations ((true)) WHERE state = 'current';
