-- The customers' features and the subscriptions' plan details, as in
-- migrations/postgres/V3__entitlements.sql. A lookup key is at most 80 characters.
CREATE TABLE entitlements (
    customer_id     VARCHAR(255) NOT NULL,
    feature         VARCHAR(80) NOT NULL,
    PRIMARY KEY (customer_id, feature)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE entitlement_summaries (
    customer_id     VARCHAR(255) NOT NULL PRIMARY KEY,
    event_created   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

ALTER TABLE subscriptions
    ADD COLUMN lookup_key VARCHAR(255),
    ADD COLUMN cancel_at BIGINT,
    ADD COLUMN trial_end BIGINT;
