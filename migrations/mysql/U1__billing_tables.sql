-- Undo of V1: removes the billing tables and every row in them.
DROP VIEW IF EXISTS stripe_event_summary;
DROP TABLE IF EXISTS subscription_schedules;
DROP TABLE IF EXISTS subscriptions;
DROP TABLE IF EXISTS charges;
DROP TABLE IF EXISTS customers;
DROP TABLE IF EXISTS stripe_events;
