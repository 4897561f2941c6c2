//! Reads what exists in the Stripe account for one environment, in the terms of the plan.
//!
//! A no-op run of the built-in catalog is eight GET requests: products, prices by lookup key,
//! webhook endpoints, one per feature lookup key, the features of each of our products, portal
//! configurations (for a catalog of up to 10 prices and 100 products; the lists are paginated
//! beyond that).

use std::collections::BTreeMap;

use billing_stripe::account::{self, WEBHOOK_CATALOG_KEY, is_catalog_object};
use billing_stripe::catalog::Catalog;
use billing_stripe::stripe_billing::BillingPortalConfiguration;
use billing_stripe::stripe_shared::Product;
use billing_stripe::{StripeClient, StripeError};

use crate::plan::{
    AttachedFeature, Current, CurrentEndpoint, CurrentFeature, CurrentPortal, CurrentPrice,
    CurrentProduct,
};

/// The catalog's objects in `environment`. The endpoint is ours when its metadata says so and,
/// when `webhook_url` is given, it points there.
pub async fn read(
    client: &StripeClient,
    catalog: &Catalog,
    environment: &str,
    webhook_url: Option<&str>,
) -> Result<Current, StripeError> {
    let mut products = account::find_products(client, &catalog.product_keys(), environment).await?;
    let prices = account::prices_by_lookup_keys(client, &catalog.lookup_keys()).await?;
    let endpoints = account::webhook_endpoints(client).await?;
    let feature_keys: Vec<String> = catalog
        .features
        .iter()
        .map(|f| f.lookup_key.clone())
        .collect();
    let features = account::features_by_lookup_keys(client, &feature_keys).await?;
    let portal = account::find_portal_configuration(client, environment).await?;

    let product = match products.remove(&catalog.product.key) {
        Some(p) => Some(product_of(client, p).await?),
        None => None,
    };
    let mut plan_products = BTreeMap::new();
    for spec in catalog.plan_products() {
        if let Some(p) = products.remove(&spec.key) {
            plan_products.insert(spec.key, product_of(client, p).await?);
        }
    }
    let prices = prices
        .into_iter()
        .filter_map(|p| {
            let lookup_key = p.lookup_key?;
            Some(CurrentPrice {
                id: p.id.as_str().to_owned(),
                lookup_key,
                product: p.product.id().as_str().to_owned(),
                unit_amount: p.unit_amount,
                currency: p.currency.to_string(),
                interval: p.recurring.as_ref().map(|r| r.interval.as_str().to_owned()),
                interval_count: p.recurring.as_ref().map_or(0, |r| r.interval_count),
                nickname: p.nickname,
            })
        })
        .collect();
    let features = features
        .into_iter()
        .map(|f| CurrentFeature {
            id: f.id.as_str().to_owned(),
            lookup_key: f.lookup_key,
            name: f.name,
        })
        .collect();
    let endpoint = endpoints
        .into_iter()
        .find(|e| {
            is_catalog_object(&e.metadata, WEBHOOK_CATALOG_KEY, environment)
                && webhook_url.is_none_or(|url| e.url == url)
        })
        .map(|e| {
            let mut enabled_events = e.enabled_events;
            enabled_events.sort();
            CurrentEndpoint {
                id: e.id.as_str().to_owned(),
                url: e.url,
                enabled_events,
                status: e.status,
                api_version: e.api_version,
            }
        });
    Ok(Current {
        product,
        plan_products,
        prices,
        features,
        endpoint,
        portal: portal.map(portal_of),
    })
}

/// A product with the features attached to it (one more read).
async fn product_of(client: &StripeClient, p: Product) -> Result<CurrentProduct, StripeError> {
    let id = p.id.as_str().to_owned();
    let features = account::product_features(client, &id)
        .await?
        .into_iter()
        .map(|f| AttachedFeature {
            id: f.id.as_str().to_owned(),
            feature_id: f.entitlement_feature.id.as_str().to_owned(),
            lookup_key: f.entitlement_feature.lookup_key,
        })
        .collect();
    Ok(CurrentProduct {
        id,
        name: p.name,
        description: p.description,
        features,
    })
}

/// The fields of a portal configuration the plan sets, in comparable form.
pub fn portal_of(c: BillingPortalConfiguration) -> CurrentPortal {
    let features = c.features;
    let update = features.subscription_update;
    let mut allowed_updates: Vec<String> = update
        .default_allowed_updates
        .iter()
        .map(|u| u.as_str().to_owned())
        .collect();
    allowed_updates.sort();
    let mut products: Vec<(String, Vec<String>)> = update
        .products
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let mut prices = p.prices;
            prices.sort();
            (p.product, prices)
        })
        .collect();
    products.sort();
    let cancel = features.subscription_cancel;
    let profile = c.business_profile;
    CurrentPortal {
        id: c.id.as_str().to_owned(),
        updated: c.updated,
        subscription_update: update.enabled,
        allowed_updates,
        products,
        proration_behavior: update.proration_behavior.as_str().to_owned(),
        subscription_cancel: cancel.enabled,
        cancel_mode: cancel.mode.as_str().to_owned(),
        payment_method_update: features.payment_method_update.enabled,
        invoice_history: features.invoice_history.enabled,
        default_return_url: c.default_return_url.filter(|u| !u.is_empty()),
        headline: profile.headline.filter(|h| !h.is_empty()),
        privacy_policy_url: profile.privacy_policy_url.filter(|u| !u.is_empty()),
        terms_of_service_url: profile.terms_of_service_url.filter(|u| !u.is_empty()),
    }
}
