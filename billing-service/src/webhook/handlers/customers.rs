//! `customer.created|updated|deleted` → `customers`: the Stripe customer and, through
//! `metadata.user_id` (set by our checkout), the user it belongs to.

use std::collections::HashMap;

use serde::Deserialize;
use sqlx::AnyConnection;

use super::{Event, EventHandler, HandlerError};
use crate::webhook::store::now_ms;

#[derive(Deserialize)]
struct Customer {
    id: String,
    email: Option<String>,
    name: Option<String>,
    #[serde(default)]
    metadata: HashMap<String, String>,
}

pub struct Customers;

#[async_trait::async_trait]
impl EventHandler for Customers {
    async fn handle(&self, conn: &mut AnyConnection, event: &Event) -> Result<(), HandlerError> {
        let customer: Customer = event.object()?;
        let deleted = event.event_type == "customer.deleted";
        upsert(conn, &customer, deleted, event.created).await?;
        Ok(())
    }
}

async fn upsert(
    conn: &mut AnyConnection,
    customer: &Customer,
    deleted: bool,
    event_created: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO customers
            (stripe_customer_id, user_id, email, name, deleted, event_created, created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
         ON CONFLICT (stripe_customer_id) DO UPDATE SET
            user_id = COALESCE(excluded.user_id, customers.user_id),
            email = excluded.email,
            name = excluded.name,
            deleted = excluded.deleted,
            event_created = excluded.event_created,
            updated_at_ms = excluded.updated_at_ms
         WHERE customers.event_created <= excluded.event_created",
    )
    .bind(&customer.id)
    .bind(customer.metadata.get("user_id").filter(|u| !u.is_empty()))
    .bind(customer.email.as_deref())
    .bind(customer.name.as_deref())
    .bind(deleted)
    .bind(event_created)
    .bind(now_ms())
    .execute(conn)
    .await?;
    Ok(())
}
