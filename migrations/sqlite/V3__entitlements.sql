-- The customers' features and the subscriptions' plan details, as in
-- migrations/postgres/V3__entitlements.sql.
CREATE TABLE entitlements (
    customer_id     TEXT NOT NULL,
    feature         TEXT NOT NULL,
    PRIMARY KEY (customer_id, feature)
) WITHOUT ROWID;

CREATE TABLE entitlement_summaries (
    customer_id     TEXT PRIMARY KEY,
    event_created   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
);

ALTER TABLE subscriptions ADD COLUMN lookup_key TEXT;
ALTER TABLE subscriptions ADD COLUMN cancel_at BIGINT;
ALTER TABLE subscriptions ADD COLUMN trial_end BIGINT;
