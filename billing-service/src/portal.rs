//! The Stripe customer portal, where a subscriber changes plan, card or cancels.
//!
//! Sessions are opened with the portal configuration `stripe-setup init` provisions for the
//! catalog (switching among its prices, cancelling at period end, the card, the invoices): the
//! active configuration marked as the catalog's `portal` whose plan switching lists the
//! products the service sells. It is looked up once per [`PortalConfiguration`]'s time to live,
//! not per session. Without one (the catalog not provisioned yet), sessions use the account's
//! default configuration, as Stripe does when none is named, and the service says so in its log.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use billing_stripe::account::{self, META_CATALOG_KEY, PORTAL_CATALOG_KEY};
use billing_stripe::stripe_billing::billing_portal_session::CreateBillingPortalSession;
use billing_stripe::{StripeClient, StripeError, idempotency_key};
use url::Url;

use crate::auth::AuthUser;
use crate::clock::now_ms;
use crate::db::Db;
use crate::error::ApiError;
use crate::products::Products;
use crate::tables::customers;

/// The portal configuration sessions are opened with, cached.
pub struct PortalConfiguration {
    ttl: Duration,
    /// `None` inside: looked up, and there is none.
    cached: Mutex<Option<(Instant, Option<String>)>>,
}

impl PortalConfiguration {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            cached: Mutex::new(None),
        }
    }

    /// The configuration's id, or `None` when the account has none for the catalog.
    pub async fn id(
        &self,
        stripe: &StripeClient,
        products: &Products,
    ) -> Result<Option<String>, ApiError> {
        if let Some((at, id)) = &*self.cached.lock().unwrap_or_else(PoisonError::into_inner)
            && at.elapsed() < self.ttl
        {
            return Ok(id.clone());
        }
        let sold: HashSet<String> = products
            .list(stripe)
            .await?
            .iter()
            .map(|p| p.product.clone())
            .collect();
        let found = find(stripe, &sold).await?;
        if found.is_none() {
            tracing::warn!(
                "no customer-portal configuration of stripe-setup lists the catalog's products: \
                 portal sessions use the account's default configuration (run stripe-setup init)"
            );
        }
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((Instant::now(), found.clone()));
        Ok(found)
    }
}

/// The newest active configuration marked as the catalog's portal whose plan switching lists
/// one of the `sold` products.
async fn find(
    stripe: &StripeClient,
    sold: &HashSet<String>,
) -> Result<Option<String>, StripeError> {
    let configurations = account::portal_configurations(stripe).await?;
    Ok(configurations
        .into_iter()
        .filter(|c| {
            let marked = c.metadata.as_ref().and_then(|m| m.get(META_CATALOG_KEY));
            let switches = c.features.subscription_update.products.iter().flatten();
            c.active
                && marked.map(String::as_str) == Some(PORTAL_CATALOG_KEY)
                && switches.into_iter().any(|p| sold.contains(&p.product))
        })
        .max_by_key(|c| c.created)
        .map(|c| c.id.to_string()))
}

/// What opening a portal session needs.
pub struct PortalContext<'a> {
    pub db: &'a Db,
    pub stripe: &'a StripeClient,
    pub products: &'a Products,
    pub configuration: &'a PortalConfiguration,
    pub return_url: &'a Url,
}

/// A portal session for the user's customer; 404 when the user has never checked out.
pub async fn open_portal(ctx: &PortalContext<'_>, user: &AuthUser) -> Result<String, ApiError> {
    let customer = customers::of_user(&mut *ctx.db.pool.acquire().await?, user.id.as_str())
        .await?
        .ok_or_else(|| {
            ApiError::NotFound("no billing account yet: start a subscription first".into())
        })?;
    let mut request = CreateBillingPortalSession::new()
        .customer(customer.as_str())
        .return_url(ctx.return_url.as_str());
    let configuration = ctx.configuration.id(ctx.stripe, ctx.products).await?;
    if let Some(configuration) = &configuration {
        request = request.configuration(configuration.as_str());
    }
    // A minute's window: a double click opens one session, a later visit a fresh one.
    let minute = (now_ms() / 60_000).to_string();
    let key = idempotency_key("portal", &[&customer, &minute]);
    let session = ctx.stripe.send_idempotent(&request, &key).await?;
    Ok(session.url)
}
