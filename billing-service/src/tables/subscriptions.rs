//! `subscriptions`: what each user subscribes to, and the read model behind
//! `GET /billing/subscription` and checkout's "already subscribed" check.
//!
//! One rule per column, whoever writes:
//! - `status`, `price_id`, `current_period_end`, `cancel_at_period_end`, `customer_id`: from the
//!   newest `customer.subscription.*` event (`event_created`); an older event changes nothing.
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
use sqlx::{Any, Executor, Row};

use crate::clock::now_ms;

/// Subscription states in which a user must manage the subscription they have (in the portal)
/// rather than buy a second one.
const LIVE_STATUSES: &str = "'active', 'trialing', 'past_due', 'unpaid'";

/// A subscription as its newest event shows it.
#[derive(Debug, Clone)]
pub struct SubscriptionUpdate<'a> {
    pub id: &'a str,
    pub customer_id: &'a str,
    pub user_id: Option<&'a str>,
    pub status: &'a str,
    pub price_id: Option<&'a str>,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
    pub latest_invoice_id: Option<&'a str>,
    pub event_created: i64,
    /// Read from Stripe's lists by `sync` rather than carried by an event: written only where
    /// it changes the row, so that a sync of what is already known writes nothing.
    pub listed: bool,
}

/// Applies a `customer.subscription.*` event, unless a newer one was applied already. Returns
/// the rows written (0 or 1).
pub async fn apply_event<'c>(
    conn: impl Executor<'c, Database = Any>,
    s: &SubscriptionUpdate<'_>,
) -> Result<u64, sqlx::Error> {
    let written = sqlx::query(
        "INSERT INTO subscriptions
            (id, customer_id, user_id, status, price_id, current_period_end, cancel_at_period_end,
             latest_invoice_id, event_created, created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)
         ON CONFLICT (id) DO UPDATE SET
            customer_id = excluded.customer_id,
            user_id = COALESCE(excluded.user_id, subscriptions.user_id),
            status = excluded.status,
            price_id = excluded.price_id,
            current_period_end = excluded.current_period_end,
            cancel_at_period_end = excluded.cancel_at_period_end,
            latest_invoice_id = COALESCE(excluded.latest_invoice_id, subscriptions.latest_invoice_id),
            event_created = excluded.event_created,
            updated_at_ms = excluded.updated_at_ms
         WHERE subscriptions.event_created <= excluded.event_created
           AND ($11 = FALSE OR subscriptions.event_created = 0
                OR subscriptions.customer_id <> excluded.customer_id
                OR subscriptions.user_id IS DISTINCT FROM COALESCE(excluded.user_id, subscriptions.user_id)
                OR subscriptions.status <> excluded.status
                OR subscriptions.price_id IS DISTINCT FROM excluded.price_id
                OR subscriptions.current_period_end IS DISTINCT FROM excluded.current_period_end
                OR subscriptions.cancel_at_period_end <> excluded.cancel_at_period_end
                OR subscriptions.latest_invoice_id
                   IS DISTINCT FROM COALESCE(excluded.latest_invoice_id, subscriptions.latest_invoice_id))",
    )
    .bind(s.id)
    .bind(s.customer_id)
    .bind(s.user_id)
    .bind(s.status)
    .bind(s.price_id)
    .bind(s.current_period_end)
    .bind(s.cancel_at_period_end)
    .bind(s.latest_invoice_id)
    .bind(s.event_created)
    .bind(now_ms())
    .bind(s.listed)
    .execute(conn)
    .await?;
    Ok(written.rows_affected())
}

/// The `created` of the newest subscription event applied to the row (0 for a placeholder).
pub async fn event_created_of<'c>(
    conn: impl Executor<'c, Database = Any>,
    id: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query("SELECT event_created FROM subscriptions WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(|row| row.try_get::<i64, _>("event_created"))
        .transpose()
}

/// Records that a subscription exists before its own events have arrived, and fills its user
/// while it has none.
pub async fn ensure_exists<'c>(
    conn: impl Executor<'c, Database = Any>,
    id: &str,
    customer_id: &str,
    user_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO subscriptions (id, customer_id, user_id, status, event_created, created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, 'incomplete', 0, $4, $4)
         ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id
         WHERE subscriptions.user_id IS NULL AND excluded.user_id IS NOT NULL",
    )
    .bind(id)
    .bind(customer_id)
    .bind(user_id)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives the customer's subscriptions that have no user yet to `user_id`.
pub async fn fill_user_of_customer<'c>(
    conn: impl Executor<'c, Database = Any>,
    customer_id: &str,
    user_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE subscriptions SET user_id = $1 WHERE customer_id = $2 AND user_id IS NULL")
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
pub async fn apply_payment<'c>(
    conn: impl Executor<'c, Database = Any>,
    subscription_id: &str,
    status: PaymentStatus,
    invoice_id: &str,
    event_created: i64,
    listed: bool,
) -> Result<u64, sqlx::Error> {
    let written = sqlx::query(
        "UPDATE subscriptions SET
            payment_status = $1, latest_invoice_id = $2, payment_event_created = $3, updated_at_ms = $4
         WHERE id = $5 AND payment_event_created <= $3
           AND ($6 = FALSE OR latest_invoice_id IS NULL
                OR (latest_invoice_id = $2 AND payment_status IS DISTINCT FROM $1))",
    )
    .bind(status.as_str())
    .bind(invoice_id)
    .bind(event_created)
    .bind(now_ms())
    .bind(subscription_id)
    .bind(listed)
    .execute(conn)
    .await?;
    Ok(written.rows_affected())
}

/// The status of the user's live subscription, if any.
pub async fn live_status_of_user<'c>(
    conn: impl Executor<'c, Database = Any>,
    user_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let sql = format!(
        "SELECT status FROM subscriptions WHERE user_id = $1 AND status IN ({LIVE_STATUSES}) LIMIT 1"
    );
    // Only a constant list is spliced in.
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .fetch_optional(conn)
        .await
}

/// The user's subscription as our tables know it, for `GET /billing/subscription`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionView {
    pub status: String,
    pub price_id: Option<String>,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
}

/// The user's live subscription, or else the latest one.
pub async fn current_of_user<'c>(
    conn: impl Executor<'c, Database = Any>,
    user_id: &str,
) -> Result<Option<SubscriptionView>, sqlx::Error> {
    let sql = format!(
        "SELECT status, price_id, current_period_end,
                CAST(cancel_at_period_end AS INTEGER) AS cancel_at_period_end
         FROM subscriptions WHERE user_id = $1
         ORDER BY CASE WHEN status IN ({LIVE_STATUSES}) THEN 0 ELSE 1 END, updated_at_ms DESC
         LIMIT 1"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .fetch_optional(conn)
        .await?;
    row.map(|r| {
        Ok(SubscriptionView {
            status: r.try_get("status")?,
            price_id: r.try_get("price_id")?,
            current_period_end: r.try_get("current_period_end")?,
            // The Any driver cannot decode SQLite booleans: read as an integer.
            cancel_at_period_end: r.try_get::<i32, _>("cancel_at_period_end")? == 1,
        })
    })
    .transpose()
}
