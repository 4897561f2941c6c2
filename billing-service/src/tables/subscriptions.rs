//! `subscriptions`: what each user subscribes to, and the read model behind
//! `GET /billing/subscription` and checkout's "already subscribed" check.
//!
//! One rule per column, whoever writes:
//! - `status`, `price_id`, `lookup_key`, `current_period_end`, `cancel_at_period_end`,
//!   `cancel_at`, `trial_end`, `customer_id`: from the newest `customer.subscription.*` event (`event_created`); an older event changes nothing.
//! - `user_id`: a subscription event's value (its `metadata.user_id`, set by our checkout, or
//!   else its customer's user) wins as those columns do; checkout and invoice events only fill
//!   it while it is empty. An event that knows no user keeps the one recorded.
//! - `latest_invoice_id`: the newest subscription or invoice event that names one.
//! - `payment_status`: from invoice events, ordered by their own `created`
//!   (`payment_event_created`), independently of the subscription's events.
//! - Copies listed by `sync` follow the same rules, as of the second Stripe read them, and are
//!   written only where they differ. Its invoices (all read in one second, so their order is
//!   unknown) set `payment_status` only from the subscription's latest invoice.
//!
//! Two subscription events of the same second leave their order unknown (Stripe's `created` has
//! whole seconds); the handler then writes Stripe's current object, with that second, which
//! `<=` lets through ([`event_created_of`] tells it the stored second).
//!
//! A row may exist before the subscription's own events: checkout and invoice events can come
//! first. It is then a placeholder (`incomplete`, `event_created = 0`) that the subscription's
//! events overwrite, whatever their order.

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use crate::clock::now_ms;
use crate::db::Engine;
use crate::db::sql::{self, Guard, OnConflict, Upsert};

/// Subscription states in which a user must manage the subscription they have (in the portal)
/// rather than buy a second one.
macro_rules! live_statuses {
    () => {
        "'active', 'trialing', 'past_due', 'unpaid'"
    };
}

/// A subscription as its newest event shows it.
#[derive(Debug, Clone)]
pub struct SubscriptionUpdate<'a> {
    pub id: &'a str,
    pub customer_id: &'a str,
    pub user_id: Option<&'a str>,
    pub status: &'a str,
    pub price_id: Option<&'a str>,
    /// The price's lookup key: the plan as the catalog names it.
    pub lookup_key: Option<&'a str>,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
    /// When a scheduled cancellation takes effect (unix seconds).
    pub cancel_at: Option<i64>,
    pub trial_end: Option<i64>,
    pub latest_invoice_id: Option<&'a str>,
    pub event_created: i64,
    /// Read from Stripe's lists by `sync` rather than carried by an event: written only where
    /// it changes the row, so that a sync of what is already known writes nothing.
    pub listed: bool,
}

/// How a `customer.subscription.*` event (or a listed copy) is written: see the rules above.
static APPLY: Upsert = Upsert::new(
    "subscriptions",
    "id",
    &[
        ("id", OnConflict::Replace),
        ("customer_id", OnConflict::Replace),
        ("user_id", OnConflict::PreferIncoming),
        ("status", OnConflict::Replace),
        ("price_id", OnConflict::Replace),
        ("lookup_key", OnConflict::Replace),
        ("current_period_end", OnConflict::Replace),
        ("cancel_at_period_end", OnConflict::Replace),
        ("cancel_at", OnConflict::Replace),
        ("trial_end", OnConflict::Replace),
        ("latest_invoice_id", OnConflict::PreferIncoming),
        ("event_created", OnConflict::Replace),
        ("created_at_ms", OnConflict::Keep),
        ("updated_at_ms", OnConflict::Stamp),
    ],
    Guard::NewerWins {
        version: "event_created",
        placeholders: true,
    },
);

/// A placeholder row for a subscription known before its own events; fills only its user.
static ENSURE: Upsert = Upsert::new(
    "subscriptions",
    "id",
    &[
        ("id", OnConflict::Replace),
        ("customer_id", OnConflict::Keep),
        ("user_id", OnConflict::FillEmpty),
        ("status", OnConflict::Keep),
        ("event_created", OnConflict::Keep),
        ("created_at_ms", OnConflict::Keep),
        ("updated_at_ms", OnConflict::Keep),
    ],
    Guard::FillsEmpty,
);

/// Applies a `customer.subscription.*` event, unless a newer one was applied already. Returns
/// the rows written (0 or 1).
pub async fn apply_event(
    conn: &mut AnyConnection,
    s: &SubscriptionUpdate<'_>,
) -> Result<u64, sqlx::Error> {
    let now = now_ms();
    APPLY
        .execute(conn, s.id, |query| {
            query
                .bind(s.id)
                .bind(s.customer_id)
                .bind(s.user_id)
                .bind(s.status)
                .bind(s.price_id)
                .bind(s.lookup_key)
                .bind(s.current_period_end)
                .bind(s.cancel_at_period_end)
                .bind(s.cancel_at)
                .bind(s.trial_end)
                .bind(s.latest_invoice_id)
                .bind(s.event_created)
                .bind(now)
                .bind(now)
                .bind(s.listed)
        })
        .await
}

/// The `created` of the newest subscription event applied to the row (0 for a placeholder).
pub async fn event_created_of(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let sql = "SELECT event_created FROM subscriptions WHERE id = $1";
    sql::query(Engine::of_connection(conn), sql)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(|row| row.try_get::<i64, _>("event_created"))
        .transpose()
}

/// Records that a subscription exists before its own events have arrived, and fills its user
/// while it has none.
pub async fn ensure_exists(
    conn: &mut AnyConnection,
    id: &str,
    customer_id: &str,
    user_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    ENSURE
        .execute(conn, id, |query| {
            query
                .bind(id)
                .bind(customer_id)
                .bind(user_id)
                .bind("incomplete")
                .bind(0_i64)
                .bind(now)
                .bind(now)
        })
        .await?;
    Ok(())
}

/// Gives the customer's subscriptions that have no user yet to `user_id`.
pub async fn fill_user_of_customer(
    conn: &mut AnyConnection,
    customer_id: &str,
    user_id: &str,
) -> Result<(), sqlx::Error> {
    let sql = "UPDATE subscriptions SET user_id = $1 WHERE customer_id = $2 AND user_id IS NULL";
    sql::query(Engine::of_connection(conn), sql)
        .bind(user_id)
        .bind(customer_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// What an invoice event says about its subscription's payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    Paid,
    PaymentFailed,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paid => "paid",
            Self::PaymentFailed => "payment_failed",
        }
    }
}

/// Records an invoice's outcome on its subscription (which must exist: see [`ensure_exists`]),
/// unless a newer invoice event was applied already. A `listed` invoice counts only as the
/// subscription's latest invoice (or when none is known), and only where it changes the row.
/// Returns the rows written (0 or 1).
pub async fn apply_payment(
    conn: &mut AnyConnection,
    subscription_id: &str,
    status: PaymentStatus,
    invoice_id: &str,
    event_created: i64,
    listed: bool,
) -> Result<u64, sqlx::Error> {
    // `$9` is never null: "differs" needs no null-safe comparison, which each engine spells
    // its own way.
    let sql = "UPDATE subscriptions SET
                   payment_status = $1, latest_invoice_id = $2, payment_event_created = $3,
                   updated_at_ms = $4
               WHERE id = $5 AND payment_event_created <= $6
                 AND ($7 = FALSE OR latest_invoice_id IS NULL
                      OR (latest_invoice_id = $8 AND (payment_status IS NULL OR payment_status <> $9)))";
    // MySQL counts the rows matched (sqlx asks for found rows), as the others do.
    let written = sql::query(Engine::of_connection(conn), sql)
        .bind(status.as_str())
        .bind(invoice_id)
        .bind(event_created)
        .bind(now_ms())
        .bind(subscription_id)
        .bind(event_created)
        .bind(listed)
        .bind(invoice_id)
        .bind(status.as_str())
        .execute(conn)
        .await?;
    Ok(written.rows_affected())
}

/// The status of the user's live subscription, if any.
pub async fn live_status_of_user(
    conn: &mut AnyConnection,
    user_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let sql = concat!(
        "SELECT status FROM subscriptions WHERE user_id = $1 AND status IN (",
        live_statuses!(),
        ") LIMIT 1"
    );
    sqlx::query_scalar(sql::text(Engine::of_connection(conn), sql))
        .bind(user_id)
        .fetch_optional(conn)
        .await
}

/// The user's subscription as our tables know it, for `GET /billing/subscription`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionView {
    pub status: String,
    pub price_id: Option<String>,
    /// The plan, by its price's lookup key (the catalog's name for it).
    pub lookup_key: Option<String>,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
    /// When a scheduled cancellation takes effect (unix seconds).
    pub cancel_at: Option<i64>,
    pub trial_end: Option<i64>,
    /// `paid` or `payment_failed`, from the newest invoice event; `null` before any.
    pub payment_status: Option<String>,
}

/// The user's live subscription, or else the latest one.
pub async fn current_of_user(
    conn: &mut AnyConnection,
    user_id: &str,
) -> Result<Option<SubscriptionView>, sqlx::Error> {
    let sql = concat!(
        "SELECT status, price_id, lookup_key, current_period_end,
                CASE WHEN cancel_at_period_end THEN 1 ELSE 0 END AS cancel_at_period_end,
                cancel_at, trial_end, payment_status
         FROM subscriptions WHERE user_id = $1
         ORDER BY CASE WHEN status IN (",
        live_statuses!(),
        ") THEN 0 ELSE 1 END, updated_at_ms DESC
         LIMIT 1"
    );
    let row = sql::query(Engine::of_connection(conn), sql)
        .bind(user_id)
        .fetch_optional(conn)
        .await?;
    row.map(|r| {
        Ok(SubscriptionView {
            status: r.try_get("status")?,
            price_id: r.try_get("price_id")?,
            lookup_key: r.try_get("lookup_key")?,
            current_period_end: r.try_get("current_period_end")?,
            // The Any driver decodes booleans on no engine but PostgreSQL: read as an integer.
            cancel_at_period_end: r.try_get::<i64, _>("cancel_at_period_end")? == 1,
            cancel_at: r.try_get("cancel_at")?,
            trial_end: r.try_get("trial_end")?,
            payment_status: r.try_get("payment_status")?,
        })
    })
    .transpose()
}
