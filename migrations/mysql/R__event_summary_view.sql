-- Repeatable: re-applied whenever this file changes. A per-status, per-type summary of the
-- webhook queue for operators (psql / sqlite3) and the queue-depth metric.
DROP VIEW IF EXISTS stripe_event_summary;
CREATE VIEW stripe_event_summary AS
SELECT status,
       type,
       COUNT(*) AS events,
       MIN(created) AS oldest_created,
       MAX(attempts) AS max_attempts
FROM stripe_events
GROUP BY status, type;
