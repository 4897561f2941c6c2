//! `invoice.paid` / `invoice.payment_failed` → the subscription's payment state in
//! [`tables::subscriptions`](crate::tables::subscriptions), ordered by the invoice events' own
//! `created` (independently of the subscription's events).

use serde::Deserialize;
use sqlx::AnyConnection;

use super::{Event, EventHandler, HandlerError, ObjectId, id};
use crate::tables::subscriptions::{self, PaymentStatus};

#[derive(Deserialize)]
struct Invoice {
    id: String,
    customer: Option<ObjectId>,
    /// Before API version 2025-03-31.
    subscription: Option<ObjectId>,
    /// Since 2025-03-31 the subscription is under `parent.subscription_details`.
    parent: Option<Parent>,
}

#[derive(Deserialize)]
struct Parent {
    subscription_details: Option<SubscriptionDetails>,
}

#[derive(Deserialize)]
struct SubscriptionDetails {
    subscription: Option<ObjectId>,
}

pub struct Invoices;

#[async_trait::async_trait]
impl EventHandler for Invoices {
    /// It writes our tables and nothing else.
    fn on_receipt(&self) -> bool {
        true
    }

    async fn handle(&self, conn: &mut AnyConnection, event: &Event) -> Result<(), HandlerError> {
        write(conn, event).await.map(drop)
    }
}

/// Returns the rows written.
pub(super) async fn write(conn: &mut AnyConnection, event: &Event) -> Result<u64, HandlerError> {
    let invoice: Invoice = event.object()?;
    let subscription = id(&invoice.subscription).or_else(|| {
        invoice
            .parent
            .as_ref()
            .and_then(|p| p.subscription_details.as_ref())
            .and_then(|d| id(&d.subscription))
    });
    let Some(subscription) = subscription else {
        return Ok(0); // a one-off invoice: no subscription to update
    };
    let customer = id(&invoice.customer)
        .ok_or_else(|| HandlerError::Invalid("data.object: missing field `customer`".into()))?;
    let status = match event.event_type.as_str() {
        "invoice.paid" => PaymentStatus::Paid,
        _ => PaymentStatus::PaymentFailed,
    };
    subscriptions::ensure_exists(&mut *conn, subscription, customer, None).await?;
    let written = subscriptions::apply_payment(
        &mut *conn,
        subscription,
        status,
        &invoice.id,
        event.created,
        event.listed,
    )
    .await?;
    Ok(written)
}
