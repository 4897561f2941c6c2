//! `customer.subscription.*` → [`tables::subscriptions`](crate::tables::subscriptions): what
//! `GET /billing/subscription` answers from.
//!
//! Reads both API generations: before 2025-03-31 `current_period_end` sat on the subscription
//! and the price could come as `plan`; since then it sits on each item.

use std::collections::HashMap;

use serde::Deserialize;
use sqlx::AnyConnection;

use super::{Event, EventHandler, HandlerError, ObjectId, id};
use crate::tables::customers;
use crate::tables::subscriptions::{self, SubscriptionUpdate};

#[derive(Deserialize)]
struct Subscription {
    id: String,
    customer: ObjectId,
    status: String,
    #[serde(default)]
    cancel_at_period_end: bool,
    cancel_at: Option<i64>,
    trial_end: Option<i64>,
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
    lookup_key: Option<String>,
}

impl Subscription {
    fn first_item(&self) -> Option<&Item> {
        self.items.as_ref().and_then(|items| items.data.first())
    }

    fn price(&self) -> Option<&Plan> {
        let item = self.first_item();
        item.and_then(|i| i.price.as_ref().or(i.plan.as_ref()))
            .or(self.plan.as_ref())
    }

    fn current_period_end(&self) -> Option<i64> {
        self.current_period_end
            .or_else(|| self.first_item().and_then(|i| i.current_period_end))
    }
}

pub struct Subscriptions;

#[async_trait::async_trait]
impl EventHandler for Subscriptions {
    /// It writes our tables, and leaves a same-second tie to the worker.
    fn on_receipt(&self) -> bool {
        true
    }

    async fn handle(&self, conn: &mut AnyConnection, event: &Event) -> Result<(), HandlerError> {
        write(conn, event).await.map(drop)
    }
}

/// Returns the rows written.
pub(super) async fn write(conn: &mut AnyConnection, event: &Event) -> Result<u64, HandlerError> {
    let mut s: Subscription = event.object()?;
    if (event.ties.is_some() || event.on_receipt)
        && subscriptions::event_created_of(&mut *conn, &s.id).await? == Some(event.created)
    {
        if event.on_receipt {
            return Err(HandlerError::Deferred(
                "a same-second tie, settled with Stripe",
            ));
        }
        if let Some(ties) = &event.ties
            && let Some(current) = ties
                .current(event, &format!("/v1/subscriptions/{}", s.id))
                .await
        {
            match serde_json::from_value(current) {
                Ok(current) => s = current,
                Err(e) => {
                    tracing::warn!(event_id = %event.id, error = %e, "Stripe's subscription cannot be read; the event's copy is written")
                }
            }
        }
    }
    let user_id = match s.metadata.get("user_id").filter(|u| !u.is_empty()) {
        Some(user) => Some(user.clone()),
        None => customers::user_of(&mut *conn, &s.customer.0).await?,
    };
    let update = SubscriptionUpdate {
        id: &s.id,
        customer_id: &s.customer.0,
        user_id: user_id.as_deref(),
        status: &s.status,
        price_id: s.price().map(|p| p.id.as_str()),
        lookup_key: s.price().and_then(|p| p.lookup_key.as_deref()),
        cancel_at: s.cancel_at,
        trial_end: s.trial_end,
        current_period_end: s.current_period_end(),
        cancel_at_period_end: s.cancel_at_period_end,
        latest_invoice_id: id(&s.latest_invoice),
        event_created: event.created,
        listed: event.listed,
    };
    Ok(subscriptions::apply_event(&mut *conn, &update).await?)
}
