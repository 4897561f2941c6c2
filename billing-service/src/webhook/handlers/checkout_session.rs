//! `checkout.session.completed`: ties the Stripe customer and its new subscription to the user
//! who opened Checkout (`client_reference_id`, set by our checkout route). It only fills links
//! that are missing: see [`tables::customers`](crate::tables::customers) for who wins.

use serde::Deserialize;
use sqlx::AnyConnection;

use super::{Event, EventHandler, HandlerError, ObjectId, id};
use crate::tables::{customers, subscriptions};

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
    /// It writes our tables and nothing else.
    fn on_receipt(&self) -> bool {
        true
    }

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
        customers::link(&mut *conn, customer, user, email).await?;
        if let Some(subscription) = id(&session.subscription) {
            subscriptions::ensure_exists(&mut *conn, subscription, customer, user).await?;
        }
        if let Some(user) = user {
            subscriptions::fill_user_of_customer(&mut *conn, customer, user).await?;
        }
        Ok(())
    }
}
