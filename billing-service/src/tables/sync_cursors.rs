//! `sync_cursors`: how far `billing-service sync` got with each kind of object, so that an
//! interrupted sync goes on from the last page it wrote instead of starting over.
//!
//! Written only by `sync`: [`advance`] runs in the transaction that writes the page's objects,
//! so a page and the cursor past it commit together. A sync that finishes all it was asked for
//! [`clear`]s its rows.

use sqlx::{AnyConnection, Row};

use crate::clock::now_ms;
use crate::db::Engine;
use crate::db::sql::{self, Guard, OnConflict, Upsert};

/// Counts, since the sync of a kind started (across interruptions).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// List pages read.
    pub pages: i64,
    /// Objects Stripe listed.
    pub listed: i64,
    /// Of those, the ones that changed a row (new, or different from what was stored).
    pub written: i64,
    /// Listed objects that could not be read, or carry nothing to store (a draft invoice).
    pub skipped: i64,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.pages += other.pages;
        self.listed += other.listed;
        self.written += other.written;
        self.skipped += other.skipped;
    }
}

/// Where the sync of a kind stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The `--since` of the sync it belongs to (unix seconds, 0 for everything).
    pub since: i64,
    /// The next page starts after this object; `None` for the first page.
    pub starting_after: Option<String>,
    pub tally: Tally,
    pub finished: bool,
}

pub async fn get(conn: &mut AnyConnection, kind: &str) -> Result<Option<Cursor>, sqlx::Error> {
    let sql = "SELECT since, starting_after, pages, listed, written, skipped, finished_at_ms
               FROM sync_cursors WHERE kind = $1";
    let row = sql::query(Engine::of_connection(conn), sql)
        .bind(kind)
        .fetch_optional(conn)
        .await?;
    row.map(|r| {
        Ok(Cursor {
            since: r.try_get("since")?,
            starting_after: r.try_get("starting_after")?,
            tally: Tally {
                pages: r.try_get("pages")?,
                listed: r.try_get("listed")?,
                written: r.try_get("written")?,
                skipped: r.try_get("skipped")?,
            },
            finished: r.try_get::<Option<i64>, _>("finished_at_ms")?.is_some(),
        })
    })
    .transpose()
}

/// A cursor back at the first page.
static START: Upsert = Upsert::new(
    "sync_cursors",
    "kind",
    &[
        ("kind", OnConflict::Replace),
        ("since", OnConflict::Replace),
        ("starting_after", OnConflict::Replace),
        ("pages", OnConflict::Replace),
        ("listed", OnConflict::Replace),
        ("written", OnConflict::Replace),
        ("skipped", OnConflict::Replace),
        ("started_at_ms", OnConflict::Replace),
        ("finished_at_ms", OnConflict::Replace),
        ("updated_at_ms", OnConflict::Stamp),
    ],
    Guard::Always,
);

/// Starts the sync of `kind` from its first page, forgetting any earlier cursor.
pub async fn start(conn: &mut AnyConnection, kind: &str, since: i64) -> Result<(), sqlx::Error> {
    let now = now_ms();
    START
        .execute(conn, kind, |query| {
            query
                .bind(kind)
                .bind(since)
                .bind(None::<String>)
                .bind(0_i64)
                .bind(0_i64)
                .bind(0_i64)
                .bind(0_i64)
                .bind(now)
                .bind(None::<i64>)
                .bind(now)
        })
        .await?;
    Ok(())
}

/// Records a page written: the next starts after `starting_after` (`None`: that was the last).
pub async fn advance(
    conn: &mut AnyConnection,
    kind: &str,
    starting_after: Option<&str>,
    page: &Tally,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let sql = "UPDATE sync_cursors SET
                   starting_after = $1, pages = pages + $2, listed = listed + $3,
                   written = written + $4, skipped = skipped + $5, updated_at_ms = $6,
                   finished_at_ms = $7
               WHERE kind = $8";
    sql::query(Engine::of_connection(conn), sql)
        .bind(starting_after)
        .bind(page.pages)
        .bind(page.listed)
        .bind(page.written)
        .bind(page.skipped)
        .bind(now)
        .bind(starting_after.is_none().then_some(now))
        .bind(kind)
        .execute(conn)
        .await?;
    Ok(())
}

/// Forgets the cursors of `kinds`: their sync is complete.
pub async fn clear(conn: &mut AnyConnection, kinds: &[&str]) -> Result<(), sqlx::Error> {
    let engine = Engine::of_connection(conn);
    for kind in kinds {
        sql::query(engine, "DELETE FROM sync_cursors WHERE kind = $1")
            .bind(*kind)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
