//! The Stripe customer portal, where a subscriber changes plan, card or cancels.

use billing_stripe::stripe_billing::billing_portal_session::CreateBillingPortalSession;
use billing_stripe::{StripeClient, idempotency_key};
use url::Url;

use crate::auth::AuthUser;
use crate::clock::now_ms;
use crate::db::Db;
use crate::error::ApiError;
use crate::tables::customers;

/// A portal session for the user's customer; 404 when the user has never checked out.
pub async fn open_portal(
    db: &Db,
    stripe: &StripeClient,
    frontend_url: &Url,
    user: &AuthUser,
) -> Result<String, ApiError> {
    let customer = customers::of_user(&mut *db.pool.acquire().await?, user.id.as_str())
        .await?
        .ok_or_else(|| {
            ApiError::NotFound("no billing account yet: start a subscription first".into())
        })?;
    let request = CreateBillingPortalSession::new()
        .customer(customer.as_str())
        .return_url(frontend_url.as_str());
    // A minute's window: a double click opens one session, a later visit a fresh one.
    let minute = (now_ms() / 60_000).to_string();
    let key = idempotency_key("portal", &[&customer, &minute]);
    let session = stripe.send_idempotent(&request, &key).await?;
    Ok(session.url)
}
