-- The billing tables, as in migrations/postgres (read its comments there). For MySQL 8.0+ and
-- MariaDB 10.6+:
--   * Every table is utf8mb4 with a binary collation: Stripe's ids are case-sensitive
--     (cus_a and cus_A are two customers), and "did this value change" must see a change of case.
--   * Ids are VARCHAR(255), Stripe's longest, so that they can be keys; bodies are LONGTEXT.
--   * Booleans are BOOLEAN (TINYINT(1)); the service reads them back as integers, as on SQLite.
--   * MySQL has no partial index: the queue's index leads with the status instead.

CREATE TABLE stripe_events (
    id              VARCHAR(255) NOT NULL PRIMARY KEY,
    type            VARCHAR(255) NOT NULL,
    created         BIGINT NOT NULL,
    livemode        BOOLEAN NOT NULL,
    api_version     VARCHAR(255),
    account         VARCHAR(255),
    object_id       VARCHAR(255),
    payload         LONGTEXT NOT NULL,
    received_at_ms  BIGINT NOT NULL,
    status          VARCHAR(16) NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processed', 'failed', 'ignored')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    processed_at_ms BIGINT
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
-- The worker's claim (pending, oldest first) and the per-status listing share it.
CREATE INDEX stripe_events_queue_idx ON stripe_events (status, created, id);
CREATE INDEX stripe_events_type_idx ON stripe_events (type, created);

CREATE TABLE customers (
    stripe_customer_id VARCHAR(255) NOT NULL PRIMARY KEY,
    user_id         VARCHAR(255),
    email           TEXT,
    name            TEXT,
    deleted         BOOLEAN NOT NULL DEFAULT FALSE,
    event_created   BIGINT NOT NULL DEFAULT 0,
    created_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE INDEX customers_user_idx ON customers (user_id);

CREATE TABLE charges (
    id              VARCHAR(255) NOT NULL PRIMARY KEY,
    customer_id     VARCHAR(255),
    amount          BIGINT NOT NULL,
    amount_refunded BIGINT NOT NULL DEFAULT 0,
    currency        VARCHAR(16) NOT NULL,
    status          VARCHAR(32) NOT NULL,
    refunded        BOOLEAN NOT NULL DEFAULT FALSE,
    failure_code    VARCHAR(255),
    failure_message TEXT,
    invoice_id      VARCHAR(255),
    payment_intent_id VARCHAR(255),
    stripe_created  BIGINT NOT NULL,
    event_created   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE INDEX charges_customer_idx ON charges (customer_id);

CREATE TABLE subscriptions (
    id              VARCHAR(255) NOT NULL PRIMARY KEY,
    customer_id     VARCHAR(255) NOT NULL,
    user_id         VARCHAR(255),
    status          VARCHAR(32) NOT NULL,
    price_id        VARCHAR(255),
    current_period_end BIGINT,
    cancel_at_period_end BOOLEAN NOT NULL DEFAULT FALSE,
    latest_invoice_id VARCHAR(255),
    payment_status  VARCHAR(32),
    payment_event_created BIGINT NOT NULL DEFAULT 0,
    event_created   BIGINT NOT NULL DEFAULT 0,
    created_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE INDEX subscriptions_user_idx ON subscriptions (user_id);
CREATE INDEX subscriptions_customer_idx ON subscriptions (customer_id);

CREATE TABLE subscription_schedules (
    id              VARCHAR(255) NOT NULL PRIMARY KEY,
    customer_id     VARCHAR(255),
    subscription_id VARCHAR(255),
    status          VARCHAR(32) NOT NULL,
    phases          LONGTEXT NOT NULL,
    event_created   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE INDEX subscription_schedules_customer_idx ON subscription_schedules (customer_id);
