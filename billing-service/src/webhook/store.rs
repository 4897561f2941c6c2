//! Storing deliveries: the event row is written before the 2xx, keyed on the event id.
//!
//! `INSERT ... ON CONFLICT (id) DO NOTHING` makes the database the judge of "seen before":
//! concurrent deliveries of the same event race on the primary key and exactly one wins, with
//! no read-then-write window.

use sqlx::Executor;

use super::envelope::Envelope;

/// Whether the delivery was new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    New,
    Duplicate,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

#[tracing::instrument(skip_all, fields(event_id = envelope.id.as_str()))]
pub async fn store_event<'e, E>(
    executor: E,
    envelope: &Envelope,
    payload: &str,
) -> Result<Stored, sqlx::Error>
where
    E: Executor<'e, Database = sqlx::Any>,
{
    let result = sqlx::query(
        "INSERT INTO stripe_events
            (id, type, created, livemode, api_version, account, object_id, payload, received_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(envelope.id.as_str())
    .bind(&envelope.event_type)
    .bind(envelope.created)
    .bind(envelope.livemode)
    .bind(envelope.api_version.as_deref())
    .bind(envelope.account.as_deref())
    .bind(envelope.object_id.as_deref())
    .bind(payload)
    .bind(now_ms())
    .execute(executor)
    .await?;
    Ok(match result.rows_affected() {
        0 => Stored::Duplicate,
        _ => Stored::New,
    })
}
