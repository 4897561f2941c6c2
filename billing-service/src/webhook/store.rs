//! Storing deliveries: the event rows are written before the 2xx, keyed on the event id.
//!
//! `INSERT ... ON CONFLICT (id) DO NOTHING` makes the database the judge of "seen before":
//! concurrent deliveries of the same event race on the primary key and exactly one wins, with
//! no read-then-write window. Many deliveries share one statement (see [`super::batch`]), and
//! `RETURNING id` tells which of them were new.

use std::collections::HashSet;

use sqlx::Row;

use super::envelope::Envelope;
use crate::db::Db;

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

/// Bound parameters per row of [`insert_events`].
pub const COLUMNS: usize = 9;

/// The most rows one [`insert_events`] may take: SQLite's bundled build allows 32,766 bound
/// parameters in a statement (PostgreSQL 65,535), so this keeps one statement valid on both.
pub const MAX_ROWS: usize = 32_766 / COLUMNS;

/// One event to store: its envelope and the raw body exactly as it came.
pub struct NewEvent<'a> {
    pub envelope: &'a Envelope,
    pub payload: &'a str,
}

/// Inserts the events in one statement, hence one transaction and one commit, and returns the
/// ids that were new (the others were stored before). Ids must be distinct (the caller
/// deduplicates) and at most [`MAX_ROWS`] events may be given.
pub async fn insert_events(
    db: &Db,
    events: &[NewEvent<'_>],
) -> Result<HashSet<String>, sqlx::Error> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    debug_assert!(events.len() <= MAX_ROWS);
    let mut sql = String::with_capacity(200 + events.len() * 60);
    sql.push_str(
        "INSERT INTO stripe_events
            (id, type, created, livemode, api_version, account, object_id, payload, received_at_ms)
         VALUES ",
    );
    for row in 0..events.len() {
        if row > 0 {
            sql.push(',');
        }
        sql.push('(');
        for column in 0..COLUMNS {
            if column > 0 {
                sql.push(',');
            }
            sql.push('$');
            sql.push_str(&(row * COLUMNS + column + 1).to_string());
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (id) DO NOTHING RETURNING id");
    let received_at_ms = now_ms();
    // Only placeholders are generated; every value is bound. Not cached as a prepared statement:
    // each batch size is a different text, and a cache of hundreds of them helps nobody.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
    for event in events {
        let envelope = event.envelope;
        query = query
            .bind(envelope.id.as_str())
            .bind(&envelope.event_type)
            .bind(envelope.created)
            .bind(envelope.livemode)
            .bind(envelope.api_version.as_deref())
            .bind(envelope.account.as_deref())
            .bind(envelope.object_id.as_deref())
            .bind(event.payload)
            .bind(received_at_ms);
    }
    let rows = query.fetch_all(&db.pool).await?;
    rows.iter()
        .map(|row| row.try_get::<String, _>("id"))
        .collect()
}
