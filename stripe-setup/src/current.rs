//! Reads what exists in the Stripe account for one environment, in the terms of the plan.
//!
//! A no-op run is three GET requests (products, prices by lookup key, webhook endpoints) for a
//! catalog of up to 10 prices and 100 products; the lists are paginated beyond that.

use billing_stripe::account::{self, WEBHOOK_CATALOG_KEY, is_catalog_object};
use billing_stripe::catalog::Catalog;
use billing_stripe::{StripeClient, StripeError};

use crate::plan::{Current, CurrentEndpoint, CurrentPrice, CurrentProduct};

/// The catalog's objects in `environment`. The endpoint is ours when its metadata says so and,
/// when `webhook_url` is given, it points there.
pub async fn read(
    client: &StripeClient,
    catalog: &Catalog,
    environment: &str,
    webhook_url: Option<&str>,
) -> Result<Current, StripeError> {
    let product = account::find_product(client, &catalog.product.key, environment).await?;
    let prices = account::prices_by_lookup_keys(client, &catalog.lookup_keys()).await?;
    let endpoints = account::webhook_endpoints(client).await?;

    let product = product.map(|p| CurrentProduct {
        id: p.id.as_str().to_owned(),
        name: p.name,
        description: p.description,
    });
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
        prices,
        endpoint,
    })
}
