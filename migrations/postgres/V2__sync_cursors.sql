-- Where `billing-service sync` stands, so that an interrupted sync goes on where it stopped: one
-- row per kind of object it lists (customers, subscriptions, ...), written in the same
-- transaction as each page of objects. A sync that finishes every kind it was asked for deletes
-- their rows, so the next one starts from the beginning.
CREATE TABLE sync_cursors (
    kind            TEXT PRIMARY KEY,
    -- The sync's --since (unix seconds, 0 for everything): a sync of another range starts over.
    since           BIGINT NOT NULL,
    -- Stripe's `starting_after` for the next page: the last object of the last page written.
    starting_after  TEXT,
    pages           BIGINT NOT NULL DEFAULT 0,
    listed          BIGINT NOT NULL DEFAULT 0,
    written         BIGINT NOT NULL DEFAULT 0,
    skipped         BIGINT NOT NULL DEFAULT 0,
    started_at_ms   BIGINT NOT NULL,
    finished_at_ms  BIGINT,
    updated_at_ms   BIGINT NOT NULL
);
