-- Undo of V3, as in migrations/postgres/U3__entitlements.sql.
ALTER TABLE subscriptions DROP COLUMN trial_end, DROP COLUMN cancel_at, DROP COLUMN lookup_key;
DROP TABLE IF EXISTS entitlement_summaries;
DROP TABLE IF EXISTS entitlements;
