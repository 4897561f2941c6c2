//! `charges`: what was paid, failed or refunded, for support and reconciliation. Written only
//! by `charge.*` events (and `sync`'s listed copies, as of the second Stripe read them); every
//! column follows the newest applied.

use sqlx::{Any, Executor};

use crate::clock::now_ms;

/// A charge as its newest event shows it.
#[derive(Debug, Clone)]
pub struct Charge<'a> {
    pub id: &'a str,
    pub customer_id: Option<&'a str>,
    pub amount: i64,
    pub amount_refunded: i64,
    pub currency: &'a str,
    pub status: &'a str,
    pub refunded: bool,
    pub failure_code: Option<&'a str>,
    pub failure_message: Option<&'a str>,
    pub invoice_id: Option<&'a str>,
    pub payment_intent_id: Option<&'a str>,
    /// The charge's own `created`.
    pub stripe_created: i64,
    pub event_created: i64,
    /// Read from Stripe's lists by `sync` rather than carried by an event: written only where
    /// it changes the row, so that a sync of what is already known writes nothing.
    pub listed: bool,
}

/// Inserts or updates the charge, unless a newer event was applied already. Returns the rows
/// written (0 or 1).
pub async fn apply_event<'c>(
    conn: impl Executor<'c, Database = Any>,
    c: &Charge<'_>,
) -> Result<u64, sqlx::Error> {
    let written = sqlx::query(
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
         WHERE charges.event_created <= excluded.event_created
           AND ($15 = FALSE
                OR charges.customer_id IS DISTINCT FROM excluded.customer_id
                OR charges.amount <> excluded.amount
                OR charges.amount_refunded <> excluded.amount_refunded
                OR charges.currency <> excluded.currency
                OR charges.status <> excluded.status
                OR charges.refunded <> excluded.refunded
                OR charges.failure_code IS DISTINCT FROM excluded.failure_code
                OR charges.failure_message IS DISTINCT FROM excluded.failure_message
                OR charges.invoice_id IS DISTINCT FROM excluded.invoice_id
                OR charges.payment_intent_id IS DISTINCT FROM excluded.payment_intent_id)",
    )
    .bind(c.id)
    .bind(c.customer_id)
    .bind(c.amount)
    .bind(c.amount_refunded)
    .bind(c.currency)
    .bind(c.status)
    .bind(c.refunded)
    .bind(c.failure_code)
    .bind(c.failure_message)
    .bind(c.invoice_id)
    .bind(c.payment_intent_id)
    .bind(c.stripe_created)
    .bind(c.event_created)
    .bind(now_ms())
    .bind(c.listed)
    .execute(conn)
    .await?;
    Ok(written.rows_affected())
}
