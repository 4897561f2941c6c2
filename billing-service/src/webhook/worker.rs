//! The background worker: stored events → handlers → `processed`, at least once, never lost.
//!
//! One batch is one transaction: claim up to `batch_size` due events (oldest `created` first;
//! `FOR UPDATE SKIP LOCKED` on PostgreSQL so replicas share the queue, SQLite's single writer
//! elsewhere), run each event's handlers inside a savepoint, record each outcome (the finished
//! ones with one statement for the whole batch), commit. A handler's writes and its event's new
//! status therefore commit together. A failing event is rolled back to its savepoint alone, so
//! it never holds up the others: it is retried with exponential backoff and parked as `failed`
//! with its error after `max_attempts`.
//!
//! [`Worker::try_execute_batch`] is the unit tests drive to drain the queue deterministically;
//! [`Worker::run_until_stopped`] loops over it, woken at once by the receiver when this process
//! stored an event, and polling for those stored by other replicas.

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
    pub batch_size: u32,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(600),
            poll_interval: Duration::from_millis(250),
            batch_size: 64,
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
         SET status = $1, last_error = $2, next_attempt_at_ms = $3, processed_at_ms = NULL
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
             SET status = $1, last_error = NULL, next_attempt_at_ms = 0, processed_at_ms = $2
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
        let claimed = self.claim(&mut tx).await?;
        // Finished events are marked together after the loop: a backlog drains faster with one
        // statement per batch than with one round trip per event.
        let mut processed = Vec::with_capacity(claimed.len());
        let mut ignored = Vec::new();
        for (event, attempts, received_at_ms) in &claimed {
            let outcome = self.process(&mut tx, event, *attempts).await?;
            let label = match &outcome {
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

    /// Claims due events, counting the attempt as it goes. The first statement writes, so on
    /// SQLite the transaction takes the write lock up front instead of failing to upgrade later.
    async fn claim(&self, conn: &mut AnyConnection) -> Result<Vec<(Event, i32, i64)>, sqlx::Error> {
        let lock = match self.db.engine {
            Engine::Postgres => "FOR UPDATE SKIP LOCKED",
            Engine::Sqlite => "",
        };
        let sql = format!(
            "UPDATE stripe_events SET attempts = attempts + 1
             WHERE id IN (SELECT id FROM stripe_events
                          WHERE status = 'pending' AND next_attempt_at_ms <= $1
                          ORDER BY created, id LIMIT $2 {lock})
             RETURNING id, type, created, payload, attempts, received_at_ms"
        );
        // Only a fixed locking clause is spliced in.
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms())
            .bind(i64::from(self.settings.batch_size))
            .fetch_all(&mut *conn)
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in rows {
            let payload: String = row.try_get("payload")?;
            let event = Event {
                id: row.try_get("id")?,
                event_type: row.try_get("type")?,
                created: row.try_get("created")?,
                payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
            };
            claimed.push((
                event,
                row.try_get("attempts")?,
                row.try_get("received_at_ms")?,
            ));
        }
        // RETURNING has no order: restore the queue's.
        claimed.sort_by(|a, b| (a.0.created, &a.0.id).cmp(&(b.0.created, &b.0.id)));
        Ok(claimed)
    }

    async fn process(
        &self,
        conn: &mut AnyConnection,
        event: &Event,
        attempts: i32,
    ) -> Result<Outcome, sqlx::Error> {
        let handlers = self.handlers.for_type(&event.event_type);
        if handlers.is_empty() {
            return Ok(Outcome::Ignored);
        }
        let mut savepoint = conn.begin().await?;
        let mut result = Ok(());
        for handler in handlers {
            result = handler.handle(&mut savepoint, event).await;
            if result.is_err() {
                break;
            }
        }
        let error = match result {
            Ok(()) => {
                savepoint.commit().await?;
                return Ok(Outcome::Processed);
            }
            Err(e) => {
                savepoint.rollback().await?;
                e
            }
        };
        let mut text = chain(&error);
        text.truncate(MAX_ERROR_LEN);
        let permanent = matches!(error, HandlerError::Invalid(_));
        if permanent || attempts >= self.settings.max_attempts as i32 {
            return Ok(Outcome::Failed { error: text });
        }
        Ok(Outcome::Retry {
            error: text,
            delay: self.retry_delay(attempts),
        })
    }

    fn retry_delay(&self, attempts: i32) -> Duration {
        ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_base)
            .with_max_delay(self.settings.retry_max)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(attempts.saturating_sub(1).max(0) as usize)
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
                Ok(0) => self.settings.poll_interval,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "webhook worker cannot reach the database");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(idle) => {}
            }
        }
        tracing::info!("webhook worker stopped");
    }
}
