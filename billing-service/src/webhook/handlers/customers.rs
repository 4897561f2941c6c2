//! `customer.created|updated|deleted` → [`tables::customers`](crate::tables::customers): the
//! Stripe customer and, through `metadata.user_id` (set by our checkout), the user it belongs to.

use std::collections::HashMap;

use serde::Deserialize;
use sqlx::AnyConnection;

use super::{Event, EventHandler, HandlerError};
use crate::tables::customers::{self, CustomerUpdate};

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
    let customer: Customer = event.object()?;
    let update = CustomerUpdate {
        stripe_customer_id: &customer.id,
        user_id: customer
            .metadata
            .get("user_id")
            .map(String::as_str)
            .filter(|u| !u.is_empty()),
        email: customer.email.as_deref(),
        name: customer.name.as_deref(),
        deleted: event.event_type == "customer.deleted",
        event_created: event.created,
        listed: event.listed,
    };
    Ok(customers::apply_event(conn, &update).await?)
}
