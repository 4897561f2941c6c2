//! `subscription_schedules`: written only by `subscription_schedule.*` events; every column
//! follows the newest event applied. Phases are kept as JSON: their shape varies across API
//! versions and nothing here queries inside them.

use sqlx::{Any, Executor};

use crate::clock::now_ms;

#[derive(Debug, Clone)]
pub struct Schedule<'a> {
    pub id: &'a str,
    pub customer_id: Option<&'a str>,
    pub subscription_id: Option<&'a str>,
    pub status: &'a str,
    /// The `phases` array as JSON text.
    pub phases: &'a str,
    pub event_created: i64,
}

/// Inserts or updates the schedule, unless a newer event was applied already.
pub async fn apply_event<'c>(
    conn: impl Executor<'c, Database = Any>,
    s: &Schedule<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO subscription_schedules
            (id, customer_id, subscription_id, status, phases, event_created, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (id) DO UPDATE SET
            customer_id = excluded.customer_id,
            subscription_id = excluded.subscription_id,
            status = excluded.status,
            phases = excluded.phases,
            event_created = excluded.event_created,
            updated_at_ms = excluded.updated_at_ms
         WHERE subscription_schedules.event_created <= excluded.event_created",
    )
    .bind(s.id)
    .bind(s.customer_id)
    .bind(s.subscription_id)
    .bind(s.status)
    .bind(s.phases)
    .bind(s.event_created)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}
