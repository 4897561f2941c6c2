//! Finding the catalog's objects in a Stripe account.
//!
//! `stripe-setup` compares them with the catalog; billing-service sells the prices it finds. Both
//! must find the same objects the same way: the product by the catalog key and environment in its
//! metadata, prices by lookup key (active only) or by product, endpoints by URL and metadata.
//! Every list reads all pages, because a catalog that grew past one page must not shrink.

use stripe_misc::WebhookEndpoint;
use stripe_misc::webhook_endpoint::ListWebhookEndpoint;
use stripe_product::price::ListPrice;
use stripe_product::product::ListProduct;
use stripe_shared::{Price, PriceType, Product};

use crate::client::{StripeClient, StripeError};

/// Metadata key holding the catalog key of a product, price or endpoint.
pub const META_CATALOG_KEY: &str = "catalog_key";
/// Metadata key holding the environment (`stage`, `prod`, ...) an object was provisioned for.
pub const META_ENVIRONMENT: &str = "environment";
/// Metadata key marking objects this tool manages, so people browsing the Dashboard know.
pub const META_MANAGED_BY: &str = "managed_by";
pub const MANAGED_BY: &str = "stripe-setup";
/// The catalog key recorded on the webhook endpoint.
pub const WEBHOOK_CATALOG_KEY: &str = "webhook";

/// Stripe's largest page, so that reading a small catalog takes one request per list.
const PAGE: i64 = 100;
/// Stripe accepts at most this many `lookup_keys` per request.
const LOOKUP_KEYS_PER_REQUEST: usize = 10;

/// Whether `metadata` marks an object as the catalog's `key` in `environment`.
pub fn is_catalog_object(
    metadata: &std::collections::HashMap<String, String>,
    key: &str,
    environment: &str,
) -> bool {
    metadata.get(META_CATALOG_KEY).map(String::as_str) == Some(key)
        && metadata.get(META_ENVIRONMENT).map(String::as_str) == Some(environment)
}

/// The active product provisioned for `catalog_key` in `environment`, if any. When several match
/// (made by hand, say), the newest wins, as Stripe lists newest first.
pub async fn find_product(
    client: &StripeClient,
    catalog_key: &str,
    environment: &str,
) -> Result<Option<Product>, StripeError> {
    let products = client
        .list_all(
            |after| {
                let list = ListProduct::new().active(true).limit(PAGE);
                match after {
                    Some(id) => list.starting_after(id),
                    None => list,
                }
            },
            |p: &Product| p.id.as_str(),
        )
        .await?;
    Ok(products
        .into_iter()
        .find(|p| is_catalog_object(&p.metadata, catalog_key, environment)))
}

/// Every active recurring price of a product, across all pages.
pub async fn active_recurring_prices(
    client: &StripeClient,
    product_id: &str,
) -> Result<Vec<Price>, StripeError> {
    client
        .list_all(
            |after| {
                let list = ListPrice::new()
                    .active(true)
                    .product(product_id)
                    .type_(PriceType::Recurring)
                    .limit(PAGE);
                match after {
                    Some(id) => list.starting_after(id),
                    None => list,
                }
            },
            |p: &Price| p.id.as_str(),
        )
        .await
}

/// The active prices holding any of `lookup_keys` (a lookup key names at most one price).
pub async fn prices_by_lookup_keys(
    client: &StripeClient,
    lookup_keys: &[String],
) -> Result<Vec<Price>, StripeError> {
    let mut prices = Vec::new();
    for chunk in lookup_keys.chunks(LOOKUP_KEYS_PER_REQUEST) {
        let found = client
            .list_all(
                |after| {
                    let list = ListPrice::new()
                        .active(true)
                        .lookup_keys(chunk.to_vec())
                        .limit(PAGE);
                    match after {
                        Some(id) => list.starting_after(id),
                        None => list,
                    }
                },
                |p: &Price| p.id.as_str(),
            )
            .await?;
        prices.extend(found);
    }
    Ok(prices)
}

/// Every webhook endpoint of the account (Stripe allows at most 16, so usually one page).
pub async fn webhook_endpoints(client: &StripeClient) -> Result<Vec<WebhookEndpoint>, StripeError> {
    client
        .list_all(
            |after| {
                let list = ListWebhookEndpoint::new().limit(PAGE);
                match after {
                    Some(id) => list.starting_after(id),
                    None => list,
                }
            },
            |e: &WebhookEndpoint| e.id.as_str(),
        )
        .await
}
