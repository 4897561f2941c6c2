//! Finding the catalog's objects in a Stripe account.
//!
//! `stripe-setup` compares them with the catalog; billing-service sells the prices it finds and
//! opens the portal with the configuration it finds. Both must find the same objects the same
//! way: products (the main one and the plan products) and the portal configuration by the catalog
//! key and environment in their metadata, prices by lookup key (active only) or by product,
//! features by lookup key (active only; Stripe keeps those unique), endpoints by URL and metadata.
//! Every list reads all pages, because a catalog that grew past one page must not shrink.

use std::collections::HashMap;

use stripe_billing::BillingPortalConfiguration;
use stripe_billing::billing_portal_configuration::ListBillingPortalConfiguration;
use stripe_misc::WebhookEndpoint;
use stripe_misc::entitlements_feature::ListEntitlementsFeature;
use stripe_misc::webhook_endpoint::ListWebhookEndpoint;
use stripe_product::ProductFeature;
use stripe_product::price::ListPrice;
use stripe_product::product::ListProduct;
use stripe_product::product_feature::ListProductProductFeature;
use stripe_shared::{EntitlementsFeature, Price, PriceType, Product};

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
/// The catalog key recorded on the customer-portal configuration.
pub const PORTAL_CATALOG_KEY: &str = "portal";

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
    let mut found = find_products(client, &[catalog_key.to_owned()], environment).await?;
    Ok(found.remove(catalog_key))
}

/// The active products provisioned for any of `catalog_keys` in `environment` (the main product
/// and the plan products: `Catalog::product_keys`), by catalog key, from one read of the product
/// list. When several match a key, the newest wins, as in [`find_product`].
pub async fn find_products(
    client: &StripeClient,
    catalog_keys: &[String],
    environment: &str,
) -> Result<HashMap<String, Product>, StripeError> {
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
    let mut found = HashMap::new();
    for product in products {
        let key = catalog_keys
            .iter()
            .find(|key| is_catalog_object(&product.metadata, key, environment));
        if let Some(key) = key
            && !found.contains_key(key)
        {
            found.insert(key.clone(), product);
        }
    }
    Ok(found)
}

/// The active features holding any of `lookup_keys` (Stripe keeps a lookup key unique among
/// active features, so each names at most one): one request per lookup key.
pub async fn features_by_lookup_keys(
    client: &StripeClient,
    lookup_keys: &[String],
) -> Result<Vec<EntitlementsFeature>, StripeError> {
    let mut features = Vec::new();
    for lookup_key in lookup_keys {
        let found = client
            .list_all(
                |after| {
                    let list = ListEntitlementsFeature::new()
                        .lookup_key(lookup_key.as_str())
                        .archived(false)
                        .limit(PAGE);
                    match after {
                        Some(id) => list.starting_after(id),
                        None => list,
                    }
                },
                |f: &EntitlementsFeature| f.id.as_str(),
            )
            .await?;
        // The filter is Stripe's; checking it again costs nothing and guards against a list
        // that ignored it.
        features.extend(
            found
                .into_iter()
                .filter(|f| f.active && &f.lookup_key == lookup_key)
                .take(1),
        );
    }
    Ok(features)
}

/// The features attached to a product (each with its feature), across all pages.
pub async fn product_features(
    client: &StripeClient,
    product_id: &str,
) -> Result<Vec<ProductFeature>, StripeError> {
    client
        .list_all(
            |after| {
                let list = ListProductProductFeature::new(product_id).limit(PAGE);
                match after {
                    Some(id) => list.starting_after(id),
                    None => list,
                }
            },
            |f: &ProductFeature| f.id.as_str(),
        )
        .await
}

/// Every active customer-portal configuration of the account, across all pages, newest first.
pub async fn portal_configurations(
    client: &StripeClient,
) -> Result<Vec<BillingPortalConfiguration>, StripeError> {
    client
        .list_all(
            |after| {
                let list = ListBillingPortalConfiguration::new()
                    .active(true)
                    .limit(PAGE);
                match after {
                    Some(id) => list.starting_after(id),
                    None => list,
                }
            },
            |c: &BillingPortalConfiguration| c.id.as_str(),
        )
        .await
}

/// The active customer-portal configuration `stripe-setup` provisioned for `environment`, if
/// any: portal sessions are created with it (`configuration`), so that subscribers switch among
/// the catalog's prices. When several match, the newest wins.
pub async fn find_portal_configuration(
    client: &StripeClient,
    environment: &str,
) -> Result<Option<BillingPortalConfiguration>, StripeError> {
    let mut newest: Option<BillingPortalConfiguration> = None;
    for configuration in portal_configurations(client).await? {
        let ours = configuration.active
            && configuration
                .metadata
                .as_ref()
                .is_some_and(|m| is_catalog_object(m, PORTAL_CATALOG_KEY, environment));
        // Stripe lists newest first: a later one of the same second does not displace it.
        if ours
            && newest
                .as_ref()
                .is_none_or(|n| configuration.created > n.created)
        {
            newest = Some(configuration);
        }
    }
    Ok(newest)
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
