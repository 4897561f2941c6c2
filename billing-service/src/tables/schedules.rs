//! `subscription_schedules`: written only by `subscription_schedule.*` events (and `sync`'s
//! listed copies, as of the second Stripe read them); every column follows the newest applied.
//! Phases are kept as JSON: their shape varies across API versions and nothing here queries
//! inside them.

use sqlx::AnyConnection;

use crate::clock::now_ms;
use crate::db::sql::{Guard, OnConflict, Upsert};

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

/// How a `subscription_schedule.*` event (or a listed copy) is written.
static APPLY: Upsert = Upsert::new(
    "subscription_schedules",
    "id",
    &[
        ("id", OnConflict::Replace),
        ("customer_id", OnConflict::Replace),
        ("subscription_id", OnConflict::Replace),
        ("status", OnConflict::Replace),
        ("phases", OnConflict::Replace),
        ("event_created", OnConflict::Replace),
        ("updated_at_ms", OnConflict::Stamp),
    ],
    Guard::NewerWins {
        version: "event_created",
        placeholders: false,
    },
);

/// Inserts or updates the schedule, unless a newer event was applied already. Returns the rows
/// written (0 or 1).
pub async fn apply_event(conn: &mut AnyConnection, s: &Schedule<'_>) -> Result<u64, sqlx::Error> {
    APPLY
        .execute(conn, s.id, |query| {
            query
                .bind(s.id)
                .bind(s.customer_id)
                .bind(s.subscription_id)
                .bind(s.status)
                .bind(s.phases)
                .bind(s.event_created)
                .bind(now_ms())
                .bind(s.listed)
        })
        .await
}
