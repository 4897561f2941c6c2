-- Where `billing-service sync` stands, as in migrations/postgres/V2__sync_cursors.sql.
CREATE TABLE sync_cursors (
    kind            VARCHAR(64) NOT NULL PRIMARY KEY,
    since           BIGINT NOT NULL,
    starting_after  VARCHAR(255),
    pages           BIGINT NOT NULL DEFAULT 0,
    listed          BIGINT NOT NULL DEFAULT 0,
    written         BIGINT NOT NULL DEFAULT 0,
    skipped         BIGINT NOT NULL DEFAULT 0,
    started_at_ms   BIGINT NOT NULL,
    finished_at_ms  BIGINT,
    updated_at_ms   BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
