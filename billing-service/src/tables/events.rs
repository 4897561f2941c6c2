//! `stripe_events`: every delivery we acknowledged, and the worker's queue.
//!
//! Storing: `INSERT ... ON CONFLICT (id) DO NOTHING` makes the database the judge of "seen
//! before": concurrent deliveries of the same event race on the primary key and exactly one
//! wins, with no read-then-write window. Many deliveries share one statement (see
//! `webhook::batch`), and `RETURNING id` tells which of them were new. MySQL has neither: there
//! the ids already stored are read, the others inserted with a plain `INSERT`, and if another
//! writer stored one of them in between, the key refuses the whole statement and the two steps
//! run again.
//!
//! A row is stored `pending`, or already `processed` or `ignored` when its handlers ran in the
//! storing transaction (`webhook::batch`).
//!
//! Processing: the worker claims due rows (oldest `created` first) and records each outcome;
//! operators list and replay rows. A row's `status` is an [`EventStatus`], parsed here, at the
//! edge, so no other module compares status strings.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use sqlx::{Any, AnyConnection, Executor, Row};

use crate::clock::now_ms;
use crate::db::{Db, Engine, sql};

/// Where an event is in its life. The table's `CHECK` constraint allows exactly these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    /// Stored, waiting for (another) attempt.
    Pending,
    /// Its handlers ran and their writes committed.
    Processed,
    /// Parked after its last attempt; an operator may replay it.
    Failed,
    /// No handler is registered for its type.
    Ignored,
}

impl EventStatus {
    pub const ALL: [Self; 4] = [Self::Pending, Self::Processed, Self::Failed, Self::Ignored];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processed => "processed",
            Self::Failed => "failed",
            Self::Ignored => "ignored",
        }
    }
}

impl fmt::Display for EventStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an event status (pending, processed, failed or ignored)")]
pub struct UnknownStatus(pub String);

impl FromStr for EventStatus {
    type Err = UnknownStatus;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| UnknownStatus(raw.to_owned()))
    }
}

/// Whether a delivery was new, and whether the worker has anything to do for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// New, and pending: the worker handles it.
    New,
    /// New, and handled as it was stored (see `webhook::batch`): processed or ignored.
    Handled,
    Duplicate,
}

/// Bound parameters per row of [`insert`].
const COLUMNS: usize = 12;

/// The most rows one [`insert`] may take: SQLite's bundled build allows 32,766 bound
/// parameters in a statement (PostgreSQL 65,535), so this keeps one statement valid on both.
/// A power of two, which [`sql::padded_rows`] keeps.
pub const MAX_ROWS: usize = 1 << (32_766 / COLUMNS).ilog2();

/// The columns [`bind_event`] binds, in its order.
const COLUMN_NAMES: &str = "id, type, created, livemode, api_version, account, object_id, \
     payload, received_at_ms, status, attempts, processed_at_ms";

/// PostgreSQL's and SQLite's insert, for each padded row count.
static INSERT_RETURNING: sql::PaddedTexts = sql::PaddedTexts::new();

/// Ids per `UPDATE ... WHERE id IN (...)`: well under every engine's parameter limit.
const MARK_CHUNK: usize = 1000;

/// One event to store: the envelope's fields and the raw body exactly as it came.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub id: &'a str,
    pub event_type: &'a str,
    pub created: i64,
    pub livemode: bool,
    pub api_version: Option<&'a str>,
    pub account: Option<&'a str>,
    pub object_id: Option<&'a str>,
    pub payload: &'a str,
    /// `Pending` for the worker; `Processed` or `Ignored` (after one attempt) when its handlers
    /// run in the storing transaction.
    pub status: EventStatus,
}

/// Inserts the events in one statement, hence one transaction and one commit, and returns the
/// ids that were new (the others were stored before). Ids must be distinct (the caller
/// deduplicates) and at most [`MAX_ROWS`] events may be given.
///
/// Rows go in in id order, whatever the caller's: a writer that meets an id another writer has
/// inserted but not committed waits for it, so two writers taking the same ids in different
/// orders could each wait for the other (PostgreSQL reports the deadlock and fails one batch).
pub async fn insert(db: &Db, events: &[NewEvent<'_>]) -> Result<HashSet<String>, sqlx::Error> {
    if db.engine == Engine::Mysql {
        return insert_mysql(db, &in_id_order(events)).await;
    }
    insert_returning(&db.pool, db.engine, events).await
}

/// [`insert`] in the caller's transaction, on PostgreSQL or SQLite, whose `ON CONFLICT DO
/// NOTHING` leaves the transaction usable when an id was stored before.
pub async fn insert_in(
    conn: &mut AnyConnection,
    events: &[NewEvent<'_>],
) -> Result<HashSet<String>, sqlx::Error> {
    let engine = Engine::of_connection(conn);
    debug_assert!(engine != Engine::Mysql);
    insert_returning(conn, engine, events).await
}

fn in_id_order<'e, 'a>(events: &'e [NewEvent<'a>]) -> Vec<&'e NewEvent<'a>> {
    debug_assert!(events.len() <= MAX_ROWS);
    let mut events: Vec<&NewEvent<'_>> = events.iter().collect();
    events.sort_unstable_by_key(|e| e.id);
    events
}

async fn insert_returning<'c>(
    executor: impl Executor<'c, Database = Any>,
    engine: Engine,
    events: &[NewEvent<'_>],
) -> Result<HashSet<String>, sqlx::Error> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    debug_assert!(engine != Engine::Mysql);
    let events = in_id_order(events);
    let rows = sql::padded_rows(events.len());
    let text = INSERT_RETURNING.get(rows, || {
        let mut sql = format!("INSERT INTO stripe_events ({COLUMN_NAMES}) ");
        sql::push_padded_select(&mut sql, rows, COLUMNS);
        sql.push_str(" ON CONFLICT (id) DO NOTHING RETURNING id");
        sql
    });
    let received_at_ms = now_ms();
    let mut query = sqlx::query(text);
    // The rows past the batch's are nulls, which the statement leaves out.
    for i in 0..rows {
        query = bind_event(query, events.get(i).copied(), received_at_ms);
    }
    let rows = query
        .bind(i64::try_from(events.len()).unwrap_or(i64::MAX))
        .fetch_all(executor)
        .await?;
    rows.iter()
        .map(|row| row.try_get::<String, _>("id"))
        .collect()
}

/// How often MySQL's read-then-insert is tried while other writers keep storing the same ids.
const MYSQL_INSERT_ATTEMPTS: usize = 5;

/// MySQL's [`insert`]: the ids stored already are read, and the others inserted. A plain
/// `INSERT` is all or nothing, so if another writer stored one of those ids in between (its
/// delivery raced this one), the duplicate key refuses it and both steps run again.
async fn insert_mysql(db: &Db, events: &[&NewEvent<'_>]) -> Result<HashSet<String>, sqlx::Error> {
    if events.is_empty() {
        return Ok(HashSet::new());
    }
    let stored_sql = format!(
        "SELECT id FROM stripe_events WHERE id IN ({})",
        sql::placeholders(Engine::Mysql, 1, events.len())
    );
    let mut attempt = 1;
    loop {
        // Only placeholders are generated.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(stored_sql.clone())).persistent(false);
        for event in events {
            query = query.bind(event.id);
        }
        let stored: HashSet<String> = query
            .fetch_all(&db.pool)
            .await?
            .iter()
            .map(|row| row.try_get::<String, _>("id"))
            .collect::<Result<_, _>>()?;
        let new: Vec<&NewEvent<'_>> = events
            .iter()
            .copied()
            .filter(|e| !stored.contains(e.id))
            .collect();
        if new.is_empty() {
            return Ok(HashSet::new());
        }
        let sql = insert_sql(new.len());
        match bind_events(sql, new.iter().copied())
            .execute(&db.pool)
            .await
        {
            Ok(_) => return Ok(new.iter().map(|e| e.id.to_owned()).collect()),
            Err(sqlx::Error::Database(e))
                if e.is_unique_violation() && attempt < MYSQL_INSERT_ATTEMPTS =>
            {
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// MySQL's `INSERT INTO stripe_events (...) VALUES (...), ...` for `rows` events.
fn insert_sql(rows: usize) -> String {
    let mut sql = format!("INSERT INTO stripe_events ({COLUMN_NAMES}) VALUES ");
    sql::push_placeholder_rows(&mut sql, Engine::Mysql, rows, COLUMNS);
    sql
}

/// The events bound to [`insert_sql`]'s placeholders.
fn bind_events<'q>(
    sql: String,
    events: impl IntoIterator<Item = &'q NewEvent<'q>>,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    let received_at_ms = now_ms();
    // Only placeholders are generated; every value is bound. Not prepared: each batch size is a
    // different text.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
    for event in events {
        query = bind_event(query, Some(event), received_at_ms);
    }
    query
}

/// One row of [`COLUMN_NAMES`]; `None` binds nulls of the same types, for padding.
fn bind_event<'q>(
    query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    event: Option<&'q NewEvent<'q>>,
    received_at_ms: i64,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    let handled = event.map(|e| e.status != EventStatus::Pending);
    query
        .bind(event.map(|e| e.id))
        .bind(event.map(|e| e.event_type))
        .bind(event.map(|e| e.created))
        .bind(event.map(|e| e.livemode))
        .bind(event.and_then(|e| e.api_version))
        .bind(event.and_then(|e| e.account))
        .bind(event.and_then(|e| e.object_id))
        .bind(event.map(|e| e.payload))
        .bind(event.map(|_| received_at_ms))
        .bind(event.map(|e| e.status.as_str()))
        .bind(handled.map(i32::from))
        .bind(handled.and_then(|h| h.then_some(received_at_ms)))
}

/// A claimed row, as the worker gets it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub event_type: String,
    pub created: i64,
    /// The body as stored; the worker parses it.
    pub payload: String,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    pub received_at_ms: i64,
}

/// Claims up to `limit` due events in the caller's transaction, oldest `created` first. The
/// attempt is counted when the outcome is written ([`mark_done`], [`record_failure`]), in the
/// same transaction, so each event's row is written once per batch.
///
/// PostgreSQL and MySQL lock the rows (`FOR UPDATE SKIP LOCKED`: replicas take different
/// events). On SQLite the claim must write, so that the transaction takes the database's write
/// lock up front instead of failing to upgrade to it later; it writes nothing that changes.
pub async fn claim(conn: &mut AnyConnection, limit: u32) -> Result<Vec<Claimed>, sqlx::Error> {
    let due = "FROM stripe_events
               WHERE status = 'pending' AND next_attempt_at_ms <= $1
               ORDER BY created, id LIMIT $2";
    let sql = claim_sql(Engine::of_connection(conn), due);
    // Only fixed text is spliced in.
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now_ms())
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
    claimed_rows(&rows)
}

/// Claims one pending event by id, due or not (the worker re-runs the events of a failed batch
/// one by one); none when it is no longer pending or another worker holds it.
pub async fn claim_one(conn: &mut AnyConnection, id: &str) -> Result<Option<Claimed>, sqlx::Error> {
    let sql = claim_sql(
        Engine::of_connection(conn),
        "FROM stripe_events WHERE id = $1 AND status = 'pending'",
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
    Ok(claimed_rows(&rows)?.pop())
}

/// The claim of the rows `due` selects (`FROM ... WHERE ...`).
fn claim_sql(engine: Engine, due: &'static str) -> String {
    let columns = "id, type, created, payload, attempts + 1 AS attempts, received_at_ms";
    match engine {
        // The rows are selected and locked directly: a lookup of each by id after the queue's
        // index found it would read them twice.
        Engine::Postgres | Engine::Mysql => format!(
            "SELECT {columns} {} FOR UPDATE SKIP LOCKED",
            sql::text(engine, due)
        ),
        Engine::Sqlite => format!(
            "UPDATE stripe_events SET attempts = attempts WHERE id IN (SELECT id {due}) RETURNING {columns}"
        ),
    }
}

fn claimed_rows(rows: &[sqlx::any::AnyRow]) -> Result<Vec<Claimed>, sqlx::Error> {
    let mut claimed = rows
        .iter()
        .map(|row| {
            let attempt: i32 = row.try_get("attempts")?;
            Ok(Claimed {
                id: row.try_get("id")?,
                event_type: row.try_get("type")?,
                created: row.try_get("created")?,
                payload: row.try_get("payload")?,
                attempt: u32::try_from(attempt).unwrap_or(1).max(1),
                received_at_ms: row.try_get("received_at_ms")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    // Neither IN nor RETURNING keeps an order: restore the queue's.
    claimed.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
    Ok(claimed)
}

/// Marks finished events (`processed` or `ignored`) in as few statements as the ids allow.
pub async fn mark_done(
    conn: &mut AnyConnection,
    status: EventStatus,
    ids: &[&str],
) -> Result<(), sqlx::Error> {
    debug_assert!(matches!(
        status,
        EventStatus::Processed | EventStatus::Ignored
    ));
    let done_at = now_ms();
    let engine = Engine::of_connection(conn);
    for chunk in ids.chunks(MARK_CHUNK) {
        let sql = format!(
            "UPDATE stripe_events
             SET status = {}, attempts = attempts + 1, last_error = NULL, next_attempt_at_ms = 0,
                 processed_at_ms = {}
             WHERE id IN ({})",
            sql::placeholders(engine, 1, 1),
            sql::placeholders(engine, 2, 1),
            sql::placeholders(engine, 3, chunk.len())
        );
        // Only placeholders are spliced in; not cached, as every batch size is its own text.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .persistent(false)
            .bind(status.as_str())
            .bind(done_at);
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// What a failed attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Back to `pending`, due again at this time (unix ms).
    RetryAt(i64),
    /// Parked as `failed`.
    Park,
}

/// Records a failed attempt and its error.
pub async fn record_failure(
    conn: &mut AnyConnection,
    id: &str,
    error: &str,
    next: AfterFailure,
) -> Result<(), sqlx::Error> {
    let (status, next_attempt_at_ms) = match next {
        AfterFailure::RetryAt(at) => (EventStatus::Pending, at),
        AfterFailure::Park => (EventStatus::Failed, 0),
    };
    let sql = "UPDATE stripe_events
               SET status = $1, attempts = attempts + 1, last_error = $2, next_attempt_at_ms = $3,
                   processed_at_ms = NULL
               WHERE id = $4";
    sql::query(Engine::of_connection(conn), sql)
        .bind(status.as_str())
        .bind(error)
        .bind(next_attempt_at_ms)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A row as operators see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EventRow {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub created: i64,
    pub status: EventStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub object_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Filter {
    pub status: Option<EventStatus>,
    pub event_type: Option<String>,
    pub limit: i64,
}

/// A stored status outside [`EventStatus`]: the table's constraint forbids it, so the schema
/// and this build disagree.
fn decode_status(raw: String) -> Result<EventStatus, sqlx::Error> {
    raw.parse()
        .map_err(|e: UnknownStatus| sqlx::Error::Decode(e.into()))
}

/// Events matching `filter`, newest first.
pub async fn list(db: &Db, filter: &Filter) -> Result<Vec<EventRow>, sqlx::Error> {
    let sql = "SELECT id, type, created, status, attempts, last_error, object_id FROM stripe_events
               WHERE ($1 IS NULL OR status = $2) AND ($3 IS NULL OR type = $4)
               ORDER BY created DESC, id DESC LIMIT $5";
    let status = filter.status.map(EventStatus::as_str);
    let event_type = filter.event_type.as_deref();
    let rows = sql::query(db.engine, sql)
        .bind(status)
        .bind(status)
        .bind(event_type)
        .bind(event_type)
        .bind(filter.limit)
        .fetch_all(&db.pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(EventRow {
                id: r.try_get("id")?,
                event_type: r.try_get("type")?,
                created: r.try_get("created")?,
                status: decode_status(r.try_get("status")?)?,
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
    let sql = "UPDATE stripe_events
               SET status = 'pending', attempts = 0, next_attempt_at_ms = 0, last_error = NULL
               WHERE id = $1";
    let done = sql::query(db.engine, sql)
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
pub async fn queue_depth<'c>(conn: impl Executor<'c, Database = Any>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM stripe_events WHERE status = 'pending'")
        .fetch_one(conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_unknown_ones_are_named() {
        for status in EventStatus::ALL {
            assert_eq!(status.as_str().parse::<EventStatus>(), Ok(status));
        }
        assert_eq!(
            "done".parse::<EventStatus>(),
            Err(UnknownStatus("done".into()))
        );
    }

    #[test]
    fn the_schema_allows_exactly_these_statuses() {
        let allowed = EventStatus::ALL.map(|s| format!("'{s}'")).join(", ");
        for schema in [
            include_str!("../../../migrations/postgres/V1__billing_tables.sql"),
            include_str!("../../../migrations/mysql/V1__billing_tables.sql"),
            include_str!("../../../migrations/sqlite/V1__billing_tables.sql"),
        ] {
            assert!(
                schema.contains(&format!("CHECK (status IN ({allowed}))")),
                "{allowed}"
            );
        }
    }
}
