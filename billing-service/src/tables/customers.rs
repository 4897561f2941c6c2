//! `customers`: our user ↔ their Stripe customer.
//!
//! One rule per column, whoever writes:
//! - `user_id`: Stripe is the authority. The `metadata.user_id` of the newest `customer.*`
//!   event wins, also over a different id recorded before (an operator moves a customer to
//!   another user by editing that metadata in Stripe's Dashboard; the change is logged). Our own
//!   checkout and `checkout.session.completed`'s `client_reference_id` only fill the link while
//!   it is empty: they never move a customer from one user to another. An event without
//!   `metadata.user_id` keeps the link as it is.
//! - `email`, `name`, `deleted`: from the newest `customer.*` event; checkout fills `email`
//!   while it is empty.
//! - `event_created`: the `created` of the newest `customer.*` event applied; an older event
//!   changes nothing. Links made by checkout leave it as it is (0 for a new row), so customer
//!   events apply in any order.
//! - A copy listed by `sync` follows the same rule, as of the second Stripe read it, and is
//!   written only where it differs (a row checkout made, `event_created = 0`, always is).

use sqlx::{AnyConnection, Row};

use crate::clock::now_ms;
use crate::db::Engine;
use crate::db::sql::{self, Guard, OnConflict, Upsert};

/// What a `customer.*` event says about a customer.
#[derive(Debug, Clone)]
pub struct CustomerUpdate<'a> {
    pub stripe_customer_id: &'a str,
    /// `metadata.user_id`, when set.
    pub user_id: Option<&'a str>,
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
    pub deleted: bool,
    pub event_created: i64,
    /// Read from Stripe's lists by `sync` rather than carried by an event: written only where
    /// it changes the row, so that a sync of what is already known writes nothing.
    pub listed: bool,
}

/// How a `customer.*` event (or a listed copy) is written: see the rules above.
static APPLY: Upsert = Upsert::new(
    "customers",
    "stripe_customer_id",
    &[
        ("stripe_customer_id", OnConflict::Replace),
        ("user_id", OnConflict::PreferIncoming),
        ("email", OnConflict::Replace),
        ("name", OnConflict::Replace),
        ("deleted", OnConflict::Replace),
        ("event_created", OnConflict::Replace),
        ("created_at_ms", OnConflict::Keep),
        ("updated_at_ms", OnConflict::Stamp),
    ],
    Guard::NewerWins {
        version: "event_created",
        placeholders: true,
    },
);

/// How checkout links a customer: fills the user and email while empty.
static LINK: Upsert = Upsert::new(
    "customers",
    "stripe_customer_id",
    &[
        ("stripe_customer_id", OnConflict::Replace),
        ("user_id", OnConflict::FillEmpty),
        ("email", OnConflict::FillEmpty),
        ("event_created", OnConflict::Keep),
        ("created_at_ms", OnConflict::Keep),
        ("updated_at_ms", OnConflict::Stamp),
    ],
    Guard::Always,
);

/// Applies a `customer.*` event, unless a newer one was applied already. Returns the rows
/// written (0 or 1).
pub async fn apply_event(
    conn: &mut AnyConnection,
    update: &CustomerUpdate<'_>,
) -> Result<u64, sqlx::Error> {
    let engine = Engine::of_connection(conn);
    let before = sql::query(
        engine,
        "SELECT user_id, event_created FROM customers WHERE stripe_customer_id = $1",
    )
    .bind(update.stripe_customer_id)
    .fetch_optional(&mut *conn)
    .await?;
    let existed = before.is_some();
    if let (Some(row), Some(incoming)) = (before, update.user_id) {
        let linked: Option<String> = row.try_get("user_id")?;
        let applied: i64 = row.try_get("event_created")?;
        if let Some(linked) = linked.filter(|l| l != incoming)
            && applied <= update.event_created
        {
            tracing::warn!(
                customer = update.stripe_customer_id,
                from_user = linked,
                to_user = incoming,
                "Stripe's metadata.user_id moves this customer to another user"
            );
        }
    }
    let now = now_ms();
    APPLY
        .execute_knowing(conn, Some(existed), |query| {
            query
                .bind(update.stripe_customer_id)
                .bind(update.user_id)
                .bind(update.email)
                .bind(update.name)
                .bind(update.deleted)
                .bind(update.event_created)
                .bind(now)
                .bind(now)
                .bind(update.listed)
        })
        .await
}

/// Records the customer, and that `user_id` owns it if it has no user yet (checkout, before or
/// after Stripe's events about the customer).
pub async fn link(
    conn: &mut AnyConnection,
    stripe_customer_id: &str,
    user_id: Option<&str>,
    email: Option<&str>,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    LINK.execute(conn, stripe_customer_id, |query| {
        query
            .bind(stripe_customer_id)
            .bind(user_id)
            .bind(email)
            .bind(0_i64)
            .bind(now)
            .bind(now)
    })
    .await?;
    Ok(())
}

/// The user's live Stripe customer, as recorded (the most recently written, should a user have
/// several).
pub async fn of_user(
    conn: &mut AnyConnection,
    user_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let sql = "SELECT stripe_customer_id FROM customers
               WHERE user_id = $1 AND deleted = FALSE
               ORDER BY updated_at_ms DESC LIMIT 1";
    sqlx::query_scalar(sql::text(Engine::of_connection(conn), sql))
        .bind(user_id)
        .fetch_optional(conn)
        .await
}

/// The user a customer belongs to, if we know it.
pub async fn user_of(
    conn: &mut AnyConnection,
    stripe_customer_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let sql = "SELECT user_id FROM customers WHERE stripe_customer_id = $1";
    let user: Option<Option<String>> =
        sqlx::query_scalar(sql::text(Engine::of_connection(conn), sql))
            .bind(stripe_customer_id)
            .fetch_optional(conn)
            .await?;
    Ok(user.flatten())
}
