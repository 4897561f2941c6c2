//! `charge.*` → [`tables::charges`](crate::tables::charges): what was paid, failed or refunded.

use serde::Deserialize;
use sqlx::AnyConnection;

use super::{Event, EventHandler, HandlerError, ObjectId, id};
use crate::tables::charges;

#[derive(Deserialize)]
struct Charge {
    id: String,
    customer: Option<ObjectId>,
    amount: i64,
    #[serde(default)]
    amount_refunded: i64,
    currency: String,
    status: String,
    #[serde(default)]
    refunded: bool,
    failure_code: Option<String>,
    failure_message: Option<String>,
    invoice: Option<ObjectId>,
    payment_intent: Option<ObjectId>,
    created: i64,
}

pub struct Charges;

#[async_trait::async_trait]
impl EventHandler for Charges {
    async fn handle(&self, conn: &mut AnyConnection, event: &Event) -> Result<(), HandlerError> {
        write(conn, event).await.map(drop)
    }
}

/// Returns the rows written.
pub(super) async fn write(conn: &mut AnyConnection, event: &Event) -> Result<u64, HandlerError> {
    let c: Charge = event.object()?;
    let row = charges::Charge {
        id: &c.id,
        customer_id: id(&c.customer),
        amount: c.amount,
        amount_refunded: c.amount_refunded,
        currency: &c.currency,
        status: &c.status,
        refunded: c.refunded,
        failure_code: c.failure_code.as_deref(),
        failure_message: c.failure_message.as_deref(),
        invoice_id: id(&c.invoice),
        payment_intent_id: id(&c.payment_intent),
        stripe_created: c.created,
        event_created: event.created,
        listed: event.listed,
    };
    Ok(charges::apply_event(conn, &row).await?)
}
