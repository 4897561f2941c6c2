//! Starting a subscription: the checks, the user's Stripe customer, the Checkout Session; and
//! where the browser goes when it comes back.
//!
//! Writes to our tables happen only after Stripe has answered, so a Stripe failure leaves
//! nothing half-written. Every create carries an `Idempotency-Key` derived from what makes the
//! request what it is, so a double click, or a retry after a lost answer, opens one session.

use std::collections::HashMap;

use billing_stripe::stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
    RetrieveCheckoutSession,
};
use billing_stripe::stripe_core::customer::CreateCustomer;
use billing_stripe::stripe_shared::CheckoutSessionMode;
use billing_stripe::{StripeClient, idempotency_key};
use serde::Serialize;
use url::Url;

use crate::auth::{AuthUser, UserId};
use crate::clock::now_ms;
use crate::db::Db;
use crate::error::ApiError;
use crate::products::Products;
use crate::tables::{customers, subscriptions};

/// How long a double click is recognised as one: the Checkout Session created in the same
/// window for the same user and price is returned again by Stripe.
const DEDUPE_WINDOW_SECS: i64 = 600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckoutStarted {
    #[serde(rename = "sessionId")]
    pub session_id: String,
    pub url: Option<String>,
}

/// What checkout needs from the application.
pub struct CheckoutContext<'a> {
    pub db: &'a Db,
    pub stripe: &'a StripeClient,
    pub products: &'a Products,
    pub backend_url: &'a Url,
}

pub async fn start_checkout(
    ctx: &CheckoutContext<'_>,
    user: &AuthUser,
    price_reference: &str,
) -> Result<CheckoutStarted, ApiError> {
    let reference = price_reference.trim();
    if reference.is_empty() {
        return Err(ApiError::bad_request(
            "missing_price",
            "price_id is required (a price_... id or a lookup key)",
        ));
    }
    let price = ctx
        .products
        .find(ctx.stripe, reference)
        .await?
        .ok_or_else(|| {
            ApiError::bad_request(
                "unknown_price",
                format!("{reference} is not a subscription price of this catalog"),
            )
        })?;
    if let Some(status) =
        subscriptions::live_status_of_user(&mut *ctx.db.pool.acquire().await?, user.id.as_str())
            .await?
    {
        return Err(ApiError::Conflict {
            code: "already_subscribed",
            message: format!(
                "you already have a subscription ({status}); manage it through POST /billing/portal"
            ),
        });
    }
    let customer = customer_for(ctx.db, ctx.stripe, user).await?;
    let user_metadata = HashMap::from([("user_id".to_owned(), user.id.as_str().to_owned())]);
    let mut line_item = CreateCheckoutSessionLineItems::new();
    line_item.price = Some(price.id.clone());
    line_item.quantity = Some(1);
    let mut subscription_data = CreateCheckoutSessionSubscriptionData::new();
    // So that subscription events name the user even before checkout.session.completed.
    subscription_data.metadata = Some(user_metadata.clone());
    let backend = ctx.backend_url.as_str().trim_end_matches('/');
    let request = CreateCheckoutSession::new()
        .mode(CheckoutSessionMode::Subscription)
        .customer(customer.as_str())
        .client_reference_id(user.id.as_str())
        .line_items(vec![line_item])
        .subscription_data(subscription_data)
        .metadata(user_metadata)
        .success_url(format!(
            "{backend}/billing/success?session_id={{CHECKOUT_SESSION_ID}}"
        ))
        .cancel_url(format!(
            "{backend}/billing/cancel?session_id={{CHECKOUT_SESSION_ID}}"
        ));
    let window = (now_ms() / 1000 / DEDUPE_WINDOW_SECS).to_string();
    let key = idempotency_key(
        "checkout",
        &[user.id.as_str(), &price.id, &customer, &window],
    );
    let session = ctx.stripe.send_idempotent(&request, &key).await?;
    tracing::info!(user_id = user.id.as_str(), price_id = %price.id, session_id = %session.id, "checkout session created");
    Ok(CheckoutStarted {
        session_id: session.id.to_string(),
        url: session.url,
    })
}

/// The user's Stripe customer: the one we recorded, or a new one (with `metadata[user_id]`),
/// recorded once Stripe has made it. The key is the user's, so two concurrent first checkouts
/// get the same customer from Stripe.
async fn customer_for(db: &Db, stripe: &StripeClient, user: &AuthUser) -> Result<String, ApiError> {
    if let Some(customer) =
        customers::of_user(&mut *db.pool.acquire().await?, user.id.as_str()).await?
    {
        return Ok(customer);
    }
    let request = CreateCustomer::new()
        .email(user.email.as_str())
        .metadata(HashMap::from([(
            "user_id".to_owned(),
            user.id.as_str().to_owned(),
        )]));
    let key = idempotency_key("customer", &[user.id.as_str()]);
    let customer = stripe.send_idempotent(&request, &key).await?;
    customers::link(
        &mut *db.pool.acquire().await?,
        customer.id.as_str(),
        Some(user.id.as_str()),
        Some(user.email.as_str()),
    )
    .await?;
    Ok(customer.id.to_string())
}

/// Where the browser goes after Checkout: always the frontend's confirmation page (never a URL
/// taken from the request), with what the session says, or `payment_status=unknown` when the
/// session cannot be read.
///
/// A session id is no secret (it sits in the browser's history and the frontend's logs), so
/// anyone may get the payment status, amount and currency. The Stripe customer and our user id
/// are added only for the signed-in user the session belongs to (`client_reference_id`).
pub async fn confirmation_after_success(
    stripe: &StripeClient,
    frontend_url: &Url,
    session_id: Option<&str>,
    user: Option<&UserId>,
) -> Url {
    let Some(id) = session_id.filter(|id| is_session_id(id)) else {
        return confirmation(frontend_url, &[("payment_status", "unknown")]);
    };
    match stripe.send(&RetrieveCheckoutSession::new(id)).await {
        Ok(session) => {
            let amount = session
                .amount_total
                .map(|a| a.to_string())
                .unwrap_or_default();
            let currency = session.currency.map(|c| c.to_string()).unwrap_or_default();
            let mut url = confirmation(
                frontend_url,
                &[
                    ("payment_status", session.payment_status.as_str()),
                    ("amount", &amount),
                    ("currency", &currency),
                ],
            );
            let owner = session.client_reference_id.as_deref();
            if let Some(user) = user.filter(|u| owner == Some(u.as_str())) {
                let customer = session.customer.as_ref().map(|c| c.id().to_string());
                url.query_pairs_mut()
                    .append_pair("customer", customer.as_deref().unwrap_or_default())
                    .append_pair("reference", user.as_str());
            }
            url
        }
        Err(e) => {
            tracing::warn!(session_id = id, error = %e, "cannot read the Checkout Session after success");
            confirmation(frontend_url, &[("payment_status", "unknown")])
        }
    }
}

pub fn confirmation_after_cancel(frontend_url: &Url, session_id: Option<&str>) -> Url {
    let reference = session_id
        .filter(|id| is_session_id(id))
        .unwrap_or_default();
    confirmation(
        frontend_url,
        &[("payment_status", "canceled"), ("session_id", reference)],
    )
}

fn is_session_id(id: &str) -> bool {
    id.starts_with("cs_")
        && id.len() <= 255
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn confirmation(frontend_url: &Url, params: &[(&str, &str)]) -> Url {
    let mut url = frontend_url.clone();
    let path = format!("{}/billing/confirmation", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_fragment(None);
    url.query_pairs_mut().clear().extend_pairs(params);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmation_stays_on_the_frontend() {
        let frontend = Url::parse("https://app.example.com/shop/").unwrap();
        let url = confirmation_after_cancel(&frontend, Some("cs_test_1"));
        assert_eq!(
            url.as_str(),
            "https://app.example.com/shop/billing/confirmation?payment_status=canceled&session_id=cs_test_1"
        );
        let hostile = confirmation_after_cancel(&frontend, Some("https://evil.example/&x=1"));
        assert_eq!(hostile.host_str(), Some("app.example.com"));
        assert!(!hostile.as_str().contains("evil"));
    }
}
