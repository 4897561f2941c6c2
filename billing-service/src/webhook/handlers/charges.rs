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
    /// It writes our tables and nothing else.
    fn on_receipt(&self) -> bool {
        true
    }

    async fn handle(&self, conn: &mut AnyConnection, event: &Event) -> Result<(), HandlerError> {
        write(conn, event).await.map(drop)
    }

    /// One statement for the lot: the newest event of each charge (the last, in queue order)
    /// is what applying them in turn leaves, the older ones being overwritten.
    async fn handle_batch(
        &self,
        conn: &mut AnyConnection,
        events: &[&Event],
    ) -> Option<Result<(), HandlerError>> {
        Some(write_all(conn, events).await)
    }
}

async fn write_all(conn: &mut AnyConnection, events: &[&Event]) -> Result<(), HandlerError> {
    let charges: Vec<(Charge, &Event)> = events
        .iter()
        .map(|event| Ok((event.object()?, *event)))
        .collect::<Result<_, HandlerError>>()?;
    let mut last = std::collections::HashMap::with_capacity(charges.len());
    for (at, (charge, _)) in charges.iter().enumerate() {
        last.insert(charge.id.as_str(), at);
    }
    let mut rows: Vec<charges::Charge<'_>> = charges
        .iter()
        .enumerate()
        .filter(|(at, (charge, _))| last[charge.id.as_str()] == *at)
        .map(|(_, (charge, event))| row(charge, event))
        .collect();
    // Rows are locked in the order written: two transactions writing the same charges (the
    // worker's, and a delivery's handled as it is stored) take them in one order, and neither
    // waits for the other in a deadlock.
    rows.sort_unstable_by_key(|c| c.id);
    Ok(charges::apply_events(conn, &rows).await?)
}

/// Returns the rows written.
pub(super) async fn write(conn: &mut AnyConnection, event: &Event) -> Result<u64, HandlerError> {
    let c: Charge = event.object()?;
    Ok(charges::apply_event(conn, &row(&c, event)).await?)
}

fn row<'a>(c: &'a Charge, event: &Event) -> charges::Charge<'a> {
    charges::Charge {
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
    }
}
