//! The background worker: stored events → handlers → `processed`, at least once, never lost.
//!
//! One batch is one transaction: claim up to `batch_size` due events (oldest `created` first;
//! `FOR UPDATE SKIP LOCKED` on PostgreSQL so replicas share the queue, SQLite's single writer
//! elsewhere), run their handlers under one savepoint, record each outcome (the finished ones
//! with one statement for the whole batch), commit. A handler's writes and its event's new
//! status therefore commit together. A failing event is rolled back alone (see
//! [`Worker::process`]), so it never holds up the others: it is retried with exponential backoff
//! and parked as `failed` with its error after `max_attempts`.
//!
//! [`Worker::try_execute_batch`] is the unit tests drive to drain the queue deterministically;
//! [`Worker::run_until_stopped`] loops over it, woken by the receiver when this process stored
//! an event (after `batch_window`, so that events arriving together are claimed together), and
//! polling for those stored by other replicas.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use sqlx::{AnyConnection, Connection, Row};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::handlers::{Event, HandlerError, Handlers};
use super::store::now_ms;
use crate::db::{Db, Engine};
use crate::error::chain;
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Tries before an event is parked as `failed`.
    pub max_attempts: u32,
    /// First retry delay; doubled per attempt, with jitter, up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How often to look for events stored by other replicas.
    pub poll_interval: Duration,
    /// How long to let events gather after a wake-up before claiming them: under load, one
    /// batch of many costs the database far less than many batches of one or two.
    pub batch_window: Duration,
    pub batch_size: u32,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            poll_interval: Duration::from_millis(250),
            batch_window: Duration::from_millis(20),
            batch_size: 256,
        }
    }
}

#[derive(Clone)]
pub struct Worker {
    db: Db,
    handlers: Handlers,
    settings: WorkerSettings,
    metrics: Metrics,
    wake: Arc<Notify>,
}

/// What happened to one event in a batch.
enum Outcome {
    Processed,
    Ignored,
    Retry { error: String, delay: Duration },
    Failed { error: String },
}

/// Longest error text kept on a row.
const MAX_ERROR_LEN: usize = 2000;

/// Ids per `UPDATE ... WHERE id IN (...)`: well under every engine's parameter limit.
const MARK_CHUNK: usize = 1000;

/// Records a failed attempt: back to `pending` with its retry time, or `failed`.
async fn set_status(
    conn: &mut AnyConnection,
    id: &str,
    status: &str,
    error: &str,
    next_attempt_at_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE stripe_events
         SET status = $1, attempts = attempts + 1, last_error = $2, next_attempt_at_ms = $3,
             processed_at_ms = NULL
         WHERE id = $4",
    )
    .bind(status)
    .bind(error)
    .bind(next_attempt_at_ms)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Marks finished events (`processed` or `ignored`) in as few statements as the ids allow.
async fn mark_done(
    conn: &mut AnyConnection,
    status: &str,
    ids: &[&str],
) -> Result<(), sqlx::Error> {
    let done_at = now_ms();
    for chunk in ids.chunks(MARK_CHUNK) {
        let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect();
        let sql = format!(
            "UPDATE stripe_events
             SET status = $1, attempts = attempts + 1, last_error = NULL, next_attempt_at_ms = 0,
                 processed_at_ms = $2
             WHERE id IN ({})",
            placeholders.join(",")
        );
        // Only placeholders are spliced in; not cached, as every batch size is its own text.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .persistent(false)
            .bind(status)
            .bind(done_at);
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

impl Worker {
    pub fn new(
        db: Db,
        handlers: Handlers,
        settings: WorkerSettings,
        metrics: Metrics,
        wake: Arc<Notify>,
    ) -> Self {
        Self {
            db,
            handlers,
            settings,
            metrics,
            wake,
        }
    }

    /// Processes one batch; returns how many events it claimed (0: nothing was due).
    pub async fn try_execute_batch(&self) -> Result<usize, sqlx::Error> {
        let mut tx = self.db.pool.begin().await?;
        if self.db.engine == Engine::Postgres {
            // Losing this commit in a database crash only leaves the batch `pending`, to be
            // handled again (handlers are idempotent), so the worker need not wait for the WAL
            // flush; the receiver's inserts, which acknowledge deliveries, still do.
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await?;
        }
        let claimed = self.claim(&mut tx).await?;
        let outcomes = self.process(&mut tx, &claimed).await?;
        // Finished events are marked together: a backlog drains faster with one statement per
        // batch than with one round trip per event.
        let mut processed = Vec::with_capacity(claimed.len());
        let mut ignored = Vec::new();
        for ((event, received_at_ms), outcome) in claimed.iter().zip(&outcomes) {
            let attempts = event.attempt;
            let label = match outcome {
                Outcome::Processed => {
                    processed.push(event.id.as_str());
                    "processed"
                }
                Outcome::Ignored => {
                    ignored.push(event.id.as_str());
                    "ignored"
                }
                Outcome::Retry { error, delay } => {
                    tracing::warn!(event_id = %event.id, attempts, ?delay, %error, "event failed, will retry");
                    let next_attempt = now_ms() + delay.as_millis() as i64;
                    set_status(&mut tx, &event.id, "pending", error, next_attempt).await?;
                    "retry"
                }
                Outcome::Failed { error } => {
                    tracing::error!(event_id = %event.id, attempts, %error, "event parked as failed");
                    set_status(&mut tx, &event.id, "failed", error, 0).await?;
                    "failed"
                }
            };
            let done = matches!(outcome, Outcome::Processed | Outcome::Ignored);
            let latency = done.then(|| (now_ms() - received_at_ms).max(0) as f64 / 1000.0);
            self.metrics.processed(&event.event_type, label, latency);
            if done {
                tracing::debug!(event_id = %event.id, status = label, "event done");
            }
        }
        mark_done(&mut tx, "processed", &processed).await?;
        mark_done(&mut tx, "ignored", &ignored).await?;
        tx.commit().await?;
        Ok(claimed.len())
    }

    /// Claims due events, returning each with the number of this attempt. The attempt is
    /// counted when the outcome is written, in the same transaction, so each event's row is
    /// written once per batch.
    ///
    /// PostgreSQL locks the rows (`FOR UPDATE SKIP LOCKED`: replicas take different events).
    /// On SQLite the claim must write, so that the transaction takes the database's write lock
    /// up front instead of failing to upgrade to it later; it writes nothing that changes.
    async fn claim(&self, conn: &mut AnyConnection) -> Result<Vec<(Event, i64)>, sqlx::Error> {
        let due = "SELECT id FROM stripe_events
                   WHERE status = 'pending' AND next_attempt_at_ms <= $1
                   ORDER BY created, id LIMIT $2";
        let columns = "id, type, created, payload, attempts + 1 AS attempts, received_at_ms";
        let sql = match self.db.engine {
            Engine::Postgres => format!(
                "SELECT {columns} FROM stripe_events WHERE id IN ({due} FOR UPDATE SKIP LOCKED)"
            ),
            Engine::Sqlite => format!(
                "UPDATE stripe_events SET attempts = attempts WHERE id IN ({due}) RETURNING {columns}"
            ),
        };
        // Only fixed text is spliced in.
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms())
            .bind(i64::from(self.settings.batch_size))
            .fetch_all(&mut *conn)
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let payload: String = row.try_get("payload")?;
            let attempt: i32 = row.try_get("attempts")?;
            let event = Event {
                id: row.try_get("id")?,
                event_type: row.try_get("type")?,
                created: row.try_get("created")?,
                payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
                attempt: u32::try_from(attempt).unwrap_or(1),
            };
            claimed.push((event, row.try_get("received_at_ms")?));
        }
        // Neither IN nor RETURNING keeps an order: restore the queue's.
        claimed.sort_by(|a, b| (a.0.created, &a.0.id).cmp(&(b.0.created, &b.0.id)));
        Ok(claimed)
    }

    /// Runs the handlers of a batch and returns each event's outcome, in the batch's order.
    ///
    /// The events run together under one savepoint, so a batch that succeeds costs one
    /// savepoint, not one per event. When an event fails, the savepoint is rolled back, that
    /// event's failure is its outcome (its handlers are not run again in this attempt), and the
    /// events before and after it are run again the same way, each part under its own
    /// savepoint. So a failing event never holds up the others, and the writes of the events
    /// that succeeded commit with their `processed` mark.
    async fn process(
        &self,
        conn: &mut AnyConnection,
        claimed: &[(Event, i64)],
    ) -> Result<Vec<Outcome>, sqlx::Error> {
        let mut outcomes: Vec<Option<Outcome>> = claimed.iter().map(|_| None).collect();
        // Parts still to run; the last pushed runs first, so the queue's order is kept.
        let mut parts = Vec::new();
        parts.push(0..claimed.len());
        while let Some(part) = parts.pop() {
            if part.is_empty() {
                continue;
            }
            let mut savepoint = conn.begin().await?;
            match self
                .run_handlers(&mut savepoint, &claimed[part.clone()])
                .await
            {
                Ok(()) => {
                    savepoint.commit().await?;
                    for i in part {
                        let handled = !self.handlers.for_type(&claimed[i].0.event_type).is_empty();
                        outcomes[i] = Some(if handled {
                            Outcome::Processed
                        } else {
                            Outcome::Ignored
                        });
                    }
                }
                Err((offset, error)) => {
                    savepoint.rollback().await?;
                    let failed = part.start + offset;
                    outcomes[failed] = Some(self.failure(&error, claimed[failed].0.attempt));
                    parts.push(failed + 1..part.end);
                    parts.push(part.start..failed);
                }
            }
        }
        // Every index was in exactly one part that either succeeded or failed at it.
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or(Outcome::Ignored))
            .collect())
    }

    /// Runs the handlers of each event in turn; stops at the first failure and says where.
    async fn run_handlers(
        &self,
        conn: &mut AnyConnection,
        events: &[(Event, i64)],
    ) -> Result<(), (usize, HandlerError)> {
        for (offset, (event, ..)) in events.iter().enumerate() {
            for handler in self.handlers.for_type(&event.event_type) {
                handler
                    .handle(&mut *conn, event)
                    .await
                    .map_err(|e| (offset, e))?;
            }
        }
        Ok(())
    }

    /// What a failed attempt leads to: a retry with backoff, or `failed` for good.
    fn failure(&self, error: &HandlerError, attempts: u32) -> Outcome {
        let mut text = chain(error);
        // At a character boundary: the text can quote the event, in any script.
        let mut end = text.len().min(MAX_ERROR_LEN);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        let permanent = matches!(error, HandlerError::Invalid(_));
        if permanent || attempts >= self.settings.max_attempts {
            return Outcome::Failed { error: text };
        }
        Outcome::Retry {
            error: text,
            delay: self.retry_delay(attempts),
        }
    }

    fn retry_delay(&self, attempts: u32) -> Duration {
        ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_base)
            .with_max_delay(self.settings.retry_max)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(attempts.saturating_sub(1) as usize)
            .unwrap_or(self.settings.retry_max)
    }

    /// Processes batches until nothing is due.
    pub async fn drain(&self) -> Result<usize, sqlx::Error> {
        let mut total = 0;
        loop {
            match self.try_execute_batch().await? {
                0 => return Ok(total),
                n => total += n,
            }
        }
    }

    /// Runs until `shutdown`; a batch under way is finished first.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        tracing::info!("webhook worker started");
        while !shutdown.is_cancelled() {
            let idle = match self.try_execute_batch().await {
                // A full batch: more is probably due.
                Ok(n) if n >= self.settings.batch_size as usize => continue,
                Ok(_) => self.settings.poll_interval,
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "webhook worker cannot reach the database");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(self.settings.batch_window) => {}
                    }
                }
                () = tokio::time::sleep(idle) => {}
            }
        }
        tracing::info!("webhook worker stopped");
    }
}
