-- The features each customer may use, as Stripe's newest active-entitlement summary lists them
-- (`entitlements.active_entitlement_summary.updated`). A customer's rows are replaced together,
-- in the transaction that processes the summary; `GET /billing/entitlements` reads them.
CREATE TABLE entitlements (
    customer_id     TEXT NOT NULL,
    -- The feature's lookup key, as the catalog names it.
    feature         TEXT NOT NULL,
    PRIMARY KEY (customer_id, feature)
);

-- Which summary each customer's rows come from: an older summary, delivered late, changes
-- nothing. Kept apart from `entitlements` because a customer with no features has no rows there.
CREATE TABLE entitlement_summaries (
    customer_id     TEXT PRIMARY KEY,
    event_created   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
);

-- What `GET /billing/subscription` reports beside the status: the plan by its lookup key, when a
-- cancellation takes effect, and when a trial ends.
ALTER TABLE subscriptions ADD COLUMN lookup_key TEXT;
ALTER TABLE subscriptions ADD COLUMN cancel_at BIGINT;
ALTER TABLE subscriptions ADD COLUMN trial_end BIGINT;
