-- The billing tables. Conventions:
--   * Stripe's own times (created, current_period_end) are unix seconds, as Stripe sends them.
--   * Our bookkeeping times end in _ms and are unix milliseconds (the worker's backoff needs them).
--   * event_created on a row is the `created` of the newest event applied to it: a handler
--     never lets an older event overwrite newer state.

-- Every webhook delivery we accepted, stored before we answer 2xx, keyed on Stripe's event id
-- so that a repeat delivery is recognised. Also the worker's queue.
CREATE TABLE stripe_events (
    id              TEXT PRIMARY KEY,
    type            TEXT NOT NULL,
    created         BIGINT NOT NULL,
    livemode        BOOLEAN NOT NULL,
    api_version     TEXT,
    account         TEXT,
    object_id       TEXT,
    payload         TEXT NOT NULL,
    received_at_ms  BIGINT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processed', 'failed', 'ignored')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    processed_at_ms BIGINT
);
-- The worker's claim query: pending events, oldest first (due ones filtered on the way).
CREATE INDEX stripe_events_queue_idx ON stripe_events (created, id) WHERE status = 'pending';
CREATE INDEX stripe_events_status_idx ON stripe_events (status, created);
CREATE INDEX stripe_events_type_idx ON stripe_events (type, created);

-- Our user <-> Stripe customer. Written by checkout (before Stripe tells us) and by
-- customer.* events.
CREATE TABLE customers (
    stripe_customer_id TEXT PRIMARY KEY,
    user_id         TEXT,
    email           TEXT,
    name            TEXT,
    deleted         BOOLEAN NOT NULL DEFAULT FALSE,
    event_created   BIGINT NOT NULL DEFAULT 0,
    created_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
);
CREATE INDEX customers_user_idx ON customers (user_id);

CREATE TABLE charges (
    id              TEXT PRIMARY KEY,
    customer_id     TEXT,
    amount          BIGINT NOT NULL,
    amount_refunded BIGINT NOT NULL DEFAULT 0,
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL,
    refunded        BOOLEAN NOT NULL DEFAULT FALSE,
    failure_code    TEXT,
    failure_message TEXT,
    invoice_id      TEXT,
    payment_intent_id TEXT,
    stripe_created  BIGINT NOT NULL,
    event_created   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
);
CREATE INDEX charges_customer_idx ON charges (customer_id);

CREATE TABLE subscriptions (
    id              TEXT PRIMARY KEY,
    customer_id     TEXT NOT NULL,
    user_id         TEXT,
    status          TEXT NOT NULL,
    price_id        TEXT,
    current_period_end BIGINT,
    cancel_at_period_end BOOLEAN NOT NULL DEFAULT FALSE,
    latest_invoice_id TEXT,
    -- From invoice.paid / invoice.payment_failed, ordered by their own event_created.
    payment_status  TEXT,
    payment_event_created BIGINT NOT NULL DEFAULT 0,
    event_created   BIGINT NOT NULL DEFAULT 0,
    created_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
);
CREATE INDEX subscriptions_user_idx ON subscriptions (user_id);
CREATE INDEX subscriptions_customer_idx ON subscriptions (customer_id);

CREATE TABLE subscription_schedules (
    id              TEXT PRIMARY KEY,
    customer_id     TEXT,
    subscription_id TEXT,
    status          TEXT NOT NULL,
    phases          TEXT NOT NULL,
    event_created   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
);
CREATE INDEX subscription_schedules_customer_idx ON subscription_schedules (customer_id);
