-- Undo of V3, as in migrations/postgres/U3__entitlements.sql.
ALTER TABLE subscriptions DROP COLUMN trial_end;
ALTER TABLE subscriptions DROP COLUMN cancel_at;
ALTER TABLE subscriptions DROP COLUMN lookup_key;
DROP TABLE IF EXISTS entitlement_summaries;
DROP TABLE IF EXISTS entitlements;
