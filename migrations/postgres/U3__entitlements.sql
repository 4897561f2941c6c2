-- Undo of V3: forgets the customers' entitlements (the next summaries write them again) and the
-- subscriptions' plan lookup key, cancel_at and trial end (the next subscription events do).
ALTER TABLE subscriptions DROP COLUMN IF EXISTS trial_end;
ALTER TABLE subscriptions DROP COLUMN IF EXISTS cancel_at;
ALTER TABLE subscriptions DROP COLUMN IF EXISTS lookup_key;
DROP TABLE IF EXISTS entitlement_summaries;
DROP TABLE IF EXISTS entitlements;
