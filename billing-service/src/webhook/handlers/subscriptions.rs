//! `customer.subscription.*` → `subscriptions`: what `GET /billing/subscription` answers from.
//!
//! Reads both API generations: before 2025-03-31 `current_period_end` sat on the subscription
//! and the price could come as `plan`; since then it sits on each item.

use std::collections::HashMap;

use serde::Deserialize;
use sqlx::AnyConnection;

use super::{Event, EventHandler, HandlerError, ObjectId, id};
use crate::webhook::store::now_ms;

#[derive(Deserialize)]
struct Subscription {
    id: String,
    customer: ObjectId,
    status: String,
    #[serde(default)]
    cancel_at_period_end: bool,
    current_period_end: Option<i64>,
    items: Option<Items>,
    plan: Option<Plan>,
    latest_invoice: Option<ObjectId>,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

#[derive(Deserialize)]
struct Items {
    #[serde(default)]
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    price: Option<Plan>,
    plan: Option<Plan>,
    current_period_end: Option<i64>,
}

#[derive(Deserialize)]
struct Plan {
    id: String,
}

impl Subscription {
    fn first_item(&self) -> Option<&Item> {
        self.items.as_ref().and_then(|items| items.data.first())
    }

    fn price_id(&self) -> Option<&str> {
        let item = self.first_item();
        item.and_then(|i| i.price.as_ref().or(i.plan.as_ref()))
            .or(self.plan.as_ref())
            .map(|p| p.id.as_str())
    }

    fn current_period_end(&self) -> Option<i64> {
        self.current_period_end
            .or_else(|| self.first_item().and_then(|i| i.current_period_end))
    }
}

pub struct Subscriptions;

#[async_trait::async_trait]
impl EventHandler for Subscriptions {
    async fn handle(&self, conn: &mut AnyConnection, event: &Event) -> Result<(), HandlerError> {
        let s: Subscription = event.object()?;
        let user_id = match s.metadata.get("user_id").filter(|u| !u.is_empty()) {
            Some(user) => Some(user.clone()),
            None => user_of_customer(conn, &s.customer.0).await?,
        };
        let now = now_ms();
        sqlx::query(
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
             WHERE subscriptions.event_created <= excluded.event_created",
        )
        .bind(&s.id)
        .bind(&s.customer.0)
        .bind(user_id)
        .bind(&s.status)
        .bind(s.price_id())
        .bind(s.current_period_end())
        .bind(s.cancel_at_period_end)
        .bind(id(&s.latest_invoice))
        .bind(event.created)
        .bind(now)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// The user a customer belongs to, if we know it (from checkout or `customer.*` events).
pub async fn user_of_customer(
    conn: &mut AnyConnection,
    customer_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let user: Option<Option<String>> =
        sqlx::query_scalar("SELECT user_id FROM customers WHERE stripe_customer_id = $1")
            .bind(customer_id)
            .fetch_optional(conn)
            .await?;
    Ok(user.flatten())
}

/// Records that a subscription exists before its own events have arrived (checkout and
/// invoice events can come first). `event_created = 0` lets the subscription's own events,
/// whatever their order, overwrite everything but the user.
pub async fn ensure_placeholder(
    conn: &mut AnyConnection,
    subscription_id: &str,
    customer_id: &str,
    user_id: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO subscriptions (id, customer_id, user_id, status, event_created, created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, 'incomplete', 0, $4, $4)
         ON CONFLICT (id) DO UPDATE SET user_id = COALESCE(excluded.user_id, subscriptions.user_id)",
    )
    .bind(subscription_id)
    .bind(customer_id)
    .bind(user_id)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}
