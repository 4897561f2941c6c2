//! `checkout.session.completed`: ties the Stripe customer and its new subscription to the user
//! who opened Checkout (`client_reference_id`, set by our checkout route).

use serde::Deserialize;
use sqlx::AnyConnection;

use super::subscriptions::ensure_placeholder;
use super::{Event, EventHandler, HandlerError, ObjectId, id};
use crate::webhook::store::now_ms;

#[derive(Deserialize)]
struct Session {
    customer: Option<ObjectId>,
    client_reference_id: Option<String>,
    subscription: Option<ObjectId>,
    customer_details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    email: Option<String>,
}

pub struct CheckoutCompleted;

#[async_trait::async_trait]
impl EventHandler for CheckoutCompleted {
    async fn handle(&self, conn: &mut AnyConnection, event: &Event) -> Result<(), HandlerError> {
        let session: Session = event.object()?;
        let Some(customer) = id(&session.customer) else {
            return Ok(()); // a guest payment: nobody to link
        };
        let user = session
            .client_reference_id
            .as_deref()
            .filter(|u| !u.is_empty());
        let email = session
            .customer_details
            .as_ref()
            .and_then(|d| d.email.as_deref());
        // event_created stays 0 so that customer.* events still apply in any order.
        sqlx::query(
            "INSERT INTO customers (stripe_customer_id, user_id, email, event_created, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, 0, $4, $4)
             ON CONFLICT (stripe_customer_id) DO UPDATE SET
                user_id = COALESCE(excluded.user_id, customers.user_id),
                email = COALESCE(customers.email, excluded.email),
                updated_at_ms = excluded.updated_at_ms",
        )
        .bind(customer)
        .bind(user)
        .bind(email)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
        if let Some(subscription) = id(&session.subscription) {
            ensure_placeholder(conn, subscription, customer, user).await?;
        }
        if let Some(user) = user {
            sqlx::query(
                "UPDATE subscriptions SET user_id = $1 WHERE customer_id = $2 AND user_id IS NULL",
            )
            .bind(user)
            .bind(customer)
            .execute(conn)
            .await?;
        }
        Ok(())
    }
}
