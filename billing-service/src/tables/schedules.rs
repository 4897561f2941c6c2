//! `subscription_schedules`: written only by `subscription_schedule.*` events (and `sync`'s
//! listed copies, as of the second Stripe read them); every column follows the newest applied. Phases are kept as JSON: their shape varies across API
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
    /// Read from Stripe's lists by `sync` rather than carried by an event: written only where
    /// it changes the row, so that a sync of what is already known writes nothing.
    pub listed: bool,
}

/// Inserts or updates the schedule, unless a newer event was applied already. Returns the rows
/// written (0 or 1).
pub async fn apply_event<'c>(
    conn: impl Executor<'c, Database = Any>,
    s: &Schedule<'_>,
) -> Result<u64, sqlx::Error> {
    let written = sqlx::query(
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
         WHERE subscription_schedules.event_created <= excluded.event_created
           AND ($8 = FALSE
                OR subscription_schedules.customer_id IS DISTINCT FROM excluded.customer_id
                OR subscription_schedules.subscription_id IS DISTINCT FROM excluded.subscription_id
                OR subscription_schedules.status <> excluded.status
                OR subscription_schedules.phases <> excluded.phases)",
    )
    .bind(s.id)
    .bind(s.customer_id)
    .bind(s.subscription_id)
    .bind(s.status)
    .bind(s.phases)
    .bind(s.event_created)
    .bind(now_ms())
    .bind(s.listed)
    .execute(conn)
    .await?;
    Ok(written.rows_affected())
}
