//! Operator views of the event store: `billing-service events list|replay`.

use serde::Serialize;
use sqlx::Row;

use crate::db::Db;

#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub created: i64,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub object_id: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub status: Option<String>,
    pub event_type: Option<String>,
    pub limit: i64,
}

pub async fn list(db: &Db, filter: &Filter) -> Result<Vec<EventRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, type, created, status, attempts, last_error, object_id FROM stripe_events
         WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR type = $2)
         ORDER BY created DESC, id DESC LIMIT $3",
    )
    .bind(filter.status.as_deref())
    .bind(filter.event_type.as_deref())
    .bind(filter.limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(EventRow {
                id: r.try_get("id")?,
                event_type: r.try_get("type")?,
                created: r.try_get("created")?,
                status: r.try_get("status")?,
                attempts: r.try_get("attempts")?,
                last_error: r.try_get("last_error")?,
                object_id: r.try_get("object_id")?,
            })
        })
        .collect()
}

/// Puts one event back in the queue, whatever its state; handlers are idempotent, so replaying
/// a processed event is safe. Returns false when there is no such event.
pub async fn replay(db: &Db, id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE stripe_events SET status = 'pending', attempts = 0, next_attempt_at_ms = 0, last_error = NULL
         WHERE id = $1",
    )
    .bind(id)
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Puts every `failed` event back in the queue; returns how many.
pub async fn replay_failed(db: &Db) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE stripe_events SET status = 'pending', attempts = 0, next_attempt_at_ms = 0, last_error = NULL
         WHERE status = 'failed'",
    )
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected())
}

/// Events waiting to be processed, for the queue-depth metric.
pub async fn queue_depth(db: &Db) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM stripe_events WHERE status = 'pending'")
        .fetch_one(&db.pool)
        .await
}
