//! `entitlements` and `entitlement_summaries`: which features each Stripe customer may use, as
//! Stripe's newest active-entitlement summary says, and the read model behind
//! `GET /billing/entitlements`.
//!
//! - A customer's rows are replaced as a whole by a newer summary ([`replace`]), in the
//!   worker's transaction; `entitlement_summaries` keeps the `created` of the summary they come
//!   from, so an older summary delivered late changes nothing, even for a customer left with no
//!   feature (and so no row here).
//! - What a user may use also depends on their subscription (`access_statuses!`): the reads join
//!   `customers` and `subscriptions` (owned by their modules, only read here) so that a check is
//!   one indexed query.

use sqlx::{AnyConnection, Row};

use crate::clock::now_ms;
use crate::db::Engine;
use crate::db::sql::{self, Guard, OnConflict, Upsert};

/// The subscription statuses in which a customer may use what Stripe lists for them (the one
/// place that decides it):
/// - `active`, `trialing`: granted.
/// - `past_due`: still granted while Stripe retries the payment (the customer keeps working while
///   they fix their card; Stripe's retry schedule ends it by moving the subscription on).
/// - `unpaid`: withheld, even while Stripe still lists the features: the retries are over and
///   the invoice stays open, so the service stops giving what is not paid for.
/// - `canceled`, `incomplete`, `incomplete_expired`, `paused`: none.
/// - canceled at period end: `active`, so granted, until the period ends, when Stripe cancels
///   the subscription and sends a summary without the features.
///
/// A customer none of whose subscriptions is in one of these has access to nothing.
macro_rules! access_statuses {
    () => {
        "'active', 'trialing', 'past_due'"
    };
}

/// How a summary's version is recorded: newer (or the same second, settled by the caller with
/// Stripe's current list) wins.
static SUMMARY: Upsert = Upsert::new(
    "entitlement_summaries",
    "customer_id",
    &[
        ("customer_id", OnConflict::Replace),
        ("event_created", OnConflict::Replace),
        ("updated_at_ms", OnConflict::Stamp),
    ],
    Guard::NewerWins {
        version: "event_created",
        placeholders: false,
    },
);

/// The `created` of the summary the customer's rows come from, if any.
pub async fn summary_created_of(
    conn: &mut AnyConnection,
    customer_id: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let sql = "SELECT event_created FROM entitlement_summaries WHERE customer_id = $1";
    sql::query(Engine::of_connection(conn), sql)
        .bind(customer_id)
        .fetch_optional(conn)
        .await?
        .map(|row| row.try_get::<i64, _>("event_created"))
        .transpose()
}

/// Makes `features` (lookup keys, distinct) the customer's entitlements, unless a newer summary
/// was applied already. Returns whether it was applied.
pub async fn replace(
    conn: &mut AnyConnection,
    customer_id: &str,
    features: &[&str],
    event_created: i64,
) -> Result<bool, sqlx::Error> {
    let engine = Engine::of_connection(conn);
    // The summary row first: it locks the customer's entitlements against another summary
    // processed at the same time, which waits and then sees this one's version.
    let applied = SUMMARY
        .execute(conn, customer_id, |query| {
            query
                .bind(customer_id)
                .bind(event_created)
                .bind(now_ms())
                .bind(false)
        })
        .await?;
    if applied == 0 && summary_created_of(conn, customer_id).await? != Some(event_created) {
        return Ok(false);
    }
    sql::query(engine, "DELETE FROM entitlements WHERE customer_id = $1")
        .bind(customer_id)
        .execute(&mut *conn)
        .await?;
    if features.is_empty() {
        return Ok(true);
    }
    let mut insert = String::from("INSERT INTO entitlements (customer_id, feature) VALUES ");
    sql::push_placeholder_rows(&mut insert, engine, features.len(), 2);
    // Only placeholders are generated; every value is bound.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(insert)).persistent(false);
    for feature in features {
        query = query.bind(customer_id).bind(*feature);
    }
    query.execute(conn).await?;
    Ok(true)
}

/// The features the user may use now (see `access_statuses!`), sorted.
pub async fn of_user(conn: &mut AnyConnection, user_id: &str) -> Result<Vec<String>, sqlx::Error> {
    let sql = concat!(
        "SELECT DISTINCT e.feature FROM customers c
         JOIN entitlements e ON e.customer_id = c.stripe_customer_id
         WHERE c.user_id = $1 AND EXISTS (
             SELECT 1 FROM subscriptions s
             WHERE s.customer_id = c.stripe_customer_id AND s.status IN (",
        access_statuses!(),
        "))
         ORDER BY e.feature"
    );
    sqlx::query_scalar(sql::text(Engine::of_connection(conn), sql))
        .bind(user_id)
        .fetch_all(conn)
        .await
}

/// Whether the user may use `feature` now (see `access_statuses!`).
pub async fn user_has(
    conn: &mut AnyConnection,
    user_id: &str,
    feature: &str,
) -> Result<bool, sqlx::Error> {
    let sql = concat!(
        "SELECT 1 FROM customers c
         JOIN entitlements e ON e.customer_id = c.stripe_customer_id
         WHERE c.user_id = $1 AND e.feature = $2 AND EXISTS (
             SELECT 1 FROM subscriptions s
             WHERE s.customer_id = c.stripe_customer_id AND s.status IN (",
        access_statuses!(),
        "))
         LIMIT 1"
    );
    Ok(sql::query(Engine::of_connection(conn), sql)
        .bind(user_id)
        .bind(feature)
        .fetch_optional(conn)
        .await?
        .is_some())
}
