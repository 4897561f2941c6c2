//! `charges`: what was paid, failed or refunded, for support and reconciliation. Written only
//! by `charge.*` events (and `sync`'s listed copies, as of the second Stripe read them); every
//! column follows the newest applied.

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyConnection};

use crate::clock::now_ms;
use crate::db::sql::{Guard, OnConflict, Upsert};

/// A charge as its newest event shows it.
#[derive(Debug, Clone)]
pub struct Charge<'a> {
    pub id: &'a str,
    pub customer_id: Option<&'a str>,
    pub amount: i64,
    pub amount_refunded: i64,
    pub currency: &'a str,
    pub status: &'a str,
    pub refunded: bool,
    pub failure_code: Option<&'a str>,
    pub failure_message: Option<&'a str>,
    pub invoice_id: Option<&'a str>,
    pub payment_intent_id: Option<&'a str>,
    /// The charge's own `created`.
    pub stripe_created: i64,
    pub event_created: i64,
    /// Read from Stripe's lists by `sync` rather than carried by an event: written only where
    /// it changes the row, so that a sync of what is already known writes nothing.
    pub listed: bool,
}

/// How a `charge.*` event (or a listed copy) is written.
static APPLY: Upsert = Upsert::new(
    "charges",
    "id",
    &[
        ("id", OnConflict::Replace),
        ("customer_id", OnConflict::Replace),
        ("amount", OnConflict::Replace),
        ("amount_refunded", OnConflict::Replace),
        ("currency", OnConflict::Replace),
        ("status", OnConflict::Replace),
        ("refunded", OnConflict::Replace),
        ("failure_code", OnConflict::Replace),
        ("failure_message", OnConflict::Replace),
        ("invoice_id", OnConflict::Replace),
        ("payment_intent_id", OnConflict::Replace),
        ("stripe_created", OnConflict::Keep),
        ("event_created", OnConflict::Replace),
        ("updated_at_ms", OnConflict::Stamp),
    ],
    Guard::NewerWins {
        version: "event_created",
        placeholders: false,
    },
);

/// Inserts or updates the charge, unless a newer event was applied already. Returns the rows
/// written (0 or 1).
pub async fn apply_event(conn: &mut AnyConnection, c: &Charge<'_>) -> Result<u64, sqlx::Error> {
    APPLY
        .execute(conn, c.id, |query| bind(query, c).bind(c.listed))
        .await
}

/// [`apply_event`] for the events of several charges, one row each (distinct ids), carried by
/// events (not listed).
pub async fn apply_events(
    conn: &mut AnyConnection,
    rows: &[Charge<'_>],
) -> Result<(), sqlx::Error> {
    debug_assert!(rows.iter().all(|c| !c.listed));
    APPLY.execute_rows(conn, rows, bind).await
}

/// The columns of [`APPLY`], in order.
fn bind<'q>(
    query: Query<'q, Any, AnyArguments>,
    c: &'q Charge<'_>,
) -> Query<'q, Any, AnyArguments> {
    let now = now_ms();
    query
        .bind(c.id)
        .bind(c.customer_id)
        .bind(c.amount)
        .bind(c.amount_refunded)
        .bind(c.currency)
        .bind(c.status)
        .bind(c.refunded)
        .bind(c.failure_code)
        .bind(c.failure_message)
        .bind(c.invoice_id)
        .bind(c.payment_intent_id)
        .bind(c.stripe_created)
        .bind(c.event_created)
        .bind(now)
}
