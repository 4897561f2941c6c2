//! `charge.*` → `charges`: what was paid, failed or refunded, for support and reconciliation.

use serde::Deserialize;
use sqlx::AnyConnection;

use super::{Event, EventHandler, HandlerError, ObjectId, id};
use crate::webhook::store::now_ms;

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
        let c: Charge = event.object()?;
        sqlx::query(
            "INSERT INTO charges
                (id, customer_id, amount, amount_refunded, currency, status, refunded, failure_code,
                 failure_message, invoice_id, payment_intent_id, stripe_created, event_created, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (id) DO UPDATE SET
                customer_id = excluded.customer_id,
                amount = excluded.amount,
                amount_refunded = excluded.amount_refunded,
                currency = excluded.currency,
                status = excluded.status,
                refunded = excluded.refunded,
                failure_code = excluded.failure_code,
                failure_message = excluded.failure_message,
                invoice_id = excluded.invoice_id,
                payment_intent_id = excluded.payment_intent_id,
                event_created = excluded.event_created,
                updated_at_ms = excluded.updated_at_ms
             WHERE charges.event_created <= excluded.event_created",
        )
        .bind(&c.id)
        .bind(id(&c.customer))
        .bind(c.amount)
        .bind(c.amount_refunded)
        .bind(&c.currency)
        .bind(&c.status)
        .bind(c.refunded)
        .bind(c.failure_code.as_deref())
        .bind(c.failure_message.as_deref())
        .bind(id(&c.invoice))
        .bind(id(&c.payment_intent))
        .bind(c.created)
        .bind(event.created)
        .bind(now_ms())
        .execute(conn)
        .await?;
        Ok(())
    }
}
