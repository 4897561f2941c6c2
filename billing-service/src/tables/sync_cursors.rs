//! `sync_cursors`: how far `billing-service sync` got with each kind of object, so that an
//! interrupted sync goes on from the last page it wrote instead of starting over.
//!
//! Written only by `sync`: [`advance`] runs in the transaction that writes the page's objects,
//! so a page and the cursor past it commit together. A sync that finishes all it was asked for
//! [`clear`]s its rows.

use sqlx::{Any, AnyConnection, Executor, Row};

use crate::clock::now_ms;

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

pub async fn get<'c>(
    conn: impl Executor<'c, Database = Any>,
    kind: &str,
) -> Result<Option<Cursor>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT since, starting_after, pages, listed, written, skipped, finished_at_ms
         FROM sync_cursors WHERE kind = $1",
    )
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

/// Starts the sync of `kind` from its first page, forgetting any earlier cursor.
pub async fn start<'c>(
    conn: impl Executor<'c, Database = Any>,
    kind: &str,
    since: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sync_cursors (kind, since, started_at_ms, updated_at_ms) VALUES ($1, $2, $3, $3)
         ON CONFLICT (kind) DO UPDATE SET
            since = excluded.since, starting_after = NULL, pages = 0, listed = 0, written = 0,
            skipped = 0, started_at_ms = excluded.started_at_ms, finished_at_ms = NULL,
            updated_at_ms = excluded.updated_at_ms",
    )
    .bind(kind)
    .bind(since)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a page written: the next starts after `starting_after` (`None`: that was the last).
pub async fn advance<'c>(
    conn: impl Executor<'c, Database = Any>,
    kind: &str,
    starting_after: Option<&str>,
    page: &Tally,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "UPDATE sync_cursors SET
            starting_after = $1, pages = pages + $2, listed = listed + $3,
            written = written + $4, skipped = skipped + $5, updated_at_ms = $6,
            finished_at_ms = CASE WHEN $1 IS NULL THEN $6 ELSE NULL END
         WHERE kind = $7",
    )
    .bind(starting_after)
    .bind(page.pages)
    .bind(page.listed)
    .bind(page.written)
    .bind(page.skipped)
    .bind(now)
    .bind(kind)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets the cursors of `kinds`: their sync is complete.
pub async fn clear(conn: &mut AnyConnection, kinds: &[&str]) -> Result<(), sqlx::Error> {
    for kind in kinds {
        sqlx::query("DELETE FROM sync_cursors WHERE kind = $1")
            .bind(*kind)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
