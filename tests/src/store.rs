//! What `stripe_events` holds, read with the test's own connection (never through the service
//! or a proxy), and waiting for it to get somewhere with a deadline.

use std::time::Duration;

use sqlx::{AnyPool, Row};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: String,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
}

/// Every stored event, by id.
pub async fn stored_events(db: &AnyPool) -> Vec<StoredEvent> {
    sqlx::query("SELECT id, type, status, attempts, last_error FROM stripe_events ORDER BY id")
        .fetch_all(db)
        .await
        .expect("stripe_events can be read")
        .iter()
        .map(|row| StoredEvent {
            id: row.get("id"),
            event_type: row.get("type"),
            status: row.get("status"),
            attempts: row.get("attempts"),
            last_error: row.get("last_error"),
        })
        .collect()
}

/// A `SELECT COUNT(*) ...`.
pub async fn count(db: &AnyPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Polls `stripe_events` until `done` holds, and returns the rows; panics after `timeout`
/// naming `what` and the rows that were not done.
pub async fn wait_for(
    db: &AnyPool,
    what: &str,
    timeout: Duration,
    done: impl Fn(&[StoredEvent]) -> bool,
) -> Vec<StoredEvent> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let rows = stored_events(db).await;
        if done(&rows) {
            return rows;
        }
        if tokio::time::Instant::now() >= deadline {
            let waiting: Vec<_> = rows
                .iter()
                .filter(|r| r.status == "pending")
                .take(10)
                .collect();
            panic!(
                "{what}: not after {timeout:?}; {} rows, pending ones (first 10): {waiting:#?}",
                rows.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until no event is `pending` (the worker has taken every one to a final state).
pub async fn wait_until_settled(db: &AnyPool, timeout: Duration) -> Vec<StoredEvent> {
    wait_for(db, "every stored event leaves pending", timeout, |rows| {
        rows.iter().all(|r| r.status != "pending")
    })
    .await
}
