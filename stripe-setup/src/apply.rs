//! Carries out a plan against Stripe, in order, saying what it does.
//!
//! Every write carries an `Idempotency-Key` derived from the environment, the object's catalog key
//! and the content wanted, so an interrupted run, re-run, is replayed by Stripe rather than
//! repeated, while a changed catalog gets fresh keys. On failure the error says which object
//! failed, Stripe's message, and what had already been done.

use std::collections::HashMap;
use std::str::FromStr as _;

use billing_stripe::account::{
    MANAGED_BY, META_CATALOG_KEY, META_ENVIRONMENT, META_MANAGED_BY, WEBHOOK_CATALOG_KEY,
};
use billing_stripe::catalog::{Interval, PriceSpec};
use billing_stripe::stripe_misc::webhook_endpoint::{
    CreateWebhookEndpoint, CreateWebhookEndpointEnabledEvents, UpdateWebhookEndpoint,
    UpdateWebhookEndpointEnabledEvents,
};
use billing_stripe::stripe_product::price::{
    CreatePrice, CreatePriceRecurring, CreatePriceRecurringInterval, UpdatePrice,
};
use billing_stripe::stripe_product::product::{CreateProduct, UpdateProduct};
use billing_stripe::stripe_shared::ApiVersion;
use billing_stripe::stripe_types::Currency;
use billing_stripe::{API_VERSION, StripeClient, StripeError, idempotency_key};

use crate::plan::{Action, Plan};
use crate::secret_output::{self, Destination, SecretFormat};

/// Where a new endpoint's secret goes.
#[derive(Debug, Clone)]
pub struct SecretSink {
    pub format: SecretFormat,
    pub destination: Destination,
}

/// A step that failed, with what had been done before it.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{step} failed: {error}{}", already(.done))]
    Stripe {
        step: String,
        error: StripeError,
        done: Vec<String>,
    },
    #[error(
        "the webhook endpoint {endpoint_id} was created but its signing secret could not be \
         written ({error}); roll the secret in the Stripe Dashboard (Developers > Webhooks > \
         the endpoint > Roll secret) to get a new one{}",
        already(.done)
    )]
    Secret {
        endpoint_id: String,
        error: std::io::Error,
        done: Vec<String>,
    },
}

fn already(done: &[String]) -> String {
    if done.is_empty() {
        ". Nothing had been changed.".to_owned()
    } else {
        format!(". Already done: {}.", done.join("; "))
    }
}

/// What applying did, for the caller's summary.
#[derive(Debug, Default)]
pub struct Outcome {
    pub done: Vec<String>,
    /// Where the new endpoint's secret was written, if an endpoint was created.
    pub secret_written_to: Option<String>,
}

/// Applies `plan` for `environment`; progress goes to stderr.
pub async fn apply(
    client: &StripeClient,
    environment: &str,
    plan: &Plan,
    secret: &SecretSink,
) -> Result<Outcome, ApplyError> {
    let mut outcome = Outcome::default();
    let mut product_id = plan.actions.iter().find_map(|a| match a {
        Action::KeepProduct { id, .. } | Action::UpdateProduct { id, .. } => Some(id.clone()),
        _ => None,
    });
    for action in plan.actions.iter().filter(|a| a.is_change()) {
        let step = action.describe();
        let fail = |error: StripeError, done: &Vec<String>| ApplyError::Stripe {
            step: step.clone(),
            error,
            done: done.clone(),
        };
        match action {
            Action::CreateProduct { spec } => {
                let mut request = CreateProduct::new(spec.name.as_str())
                    .metadata(metadata(&spec.key, environment));
                if let Some(description) = &spec.description {
                    request = request.description(description.as_str());
                }
                let key = idempotency_key(
                    "stripe-setup",
                    &[environment, "product", &spec.key, &spec.name],
                );
                let product = client
                    .send_idempotent(&request, &key)
                    .await
                    .map_err(|e| fail(e, &outcome.done))?;
                product_id = Some(product.id.as_str().to_owned());
                outcome.done.push(format!(
                    "created product {} ({})",
                    spec.key,
                    product.id.as_str()
                ));
            }
            Action::UpdateProduct { id, spec, .. } => {
                let mut request = UpdateProduct::new(id.as_str()).name(spec.name.as_str());
                if let Some(description) = &spec.description {
                    request = request.description(description.as_str());
                }
                let key = idempotency_key(
                    "stripe-setup",
                    &[environment, "update-product", id, &spec.name],
                );
                client
                    .send_idempotent(&request, &key)
                    .await
                    .map_err(|e| fail(e, &outcome.done))?;
                outcome.done.push(format!("updated product {id}"));
            }
            Action::CreatePrice { spec, replaces } => {
                let Some(product) = product_id.as_deref() else {
                    // The plan always puts the product first; this guards against a reordering.
                    return Err(fail(
                        StripeError::Config("no product to attach the price to".into()),
                        &outcome.done,
                    ));
                };
                let replaced = replaces.as_ref().map_or("", |p| p.id.as_str());
                let amount = spec.unit_amount.to_string();
                let count = spec.interval_count.to_string();
                let key = idempotency_key(
                    "stripe-setup",
                    &[
                        environment,
                        "price",
                        &spec.key,
                        &spec.lookup_key,
                        &amount,
                        &spec.currency,
                        spec.interval.as_str(),
                        &count,
                        &spec.nickname,
                        product,
                        replaced,
                    ],
                );
                let price = client
                    .send_idempotent(&create_price(spec, product, environment), &key)
                    .await
                    .map_err(|e| fail(e, &outcome.done))?;
                outcome.done.push(format!(
                    "created price {} ({})",
                    spec.lookup_key,
                    price.id.as_str()
                ));
            }
            Action::UpdatePrice { id, spec, .. } => {
                let request = UpdatePrice::new(id.as_str()).nickname(spec.nickname.as_str());
                let key = idempotency_key(
                    "stripe-setup",
                    &[environment, "update-price", id, &spec.nickname],
                );
                client
                    .send_idempotent(&request, &key)
                    .await
                    .map_err(|e| fail(e, &outcome.done))?;
                outcome.done.push(format!("updated price {id}"));
            }
            Action::ArchivePrice { price } => {
                let request = UpdatePrice::new(price.id.as_str()).active(false);
                let key =
                    idempotency_key("stripe-setup", &[environment, "archive-price", &price.id]);
                client
                    .send_idempotent(&request, &key)
                    .await
                    .map_err(|e| fail(e, &outcome.done))?;
                outcome.done.push(format!("archived price {}", price.id));
            }
            Action::CreateEndpoint { url, events } => {
                let enabled: Vec<CreateWebhookEndpointEnabledEvents> = events
                    .iter()
                    .map(|e| {
                        CreateWebhookEndpointEnabledEvents::from_str(e)
                            .unwrap_or_else(|never| match never {})
                    })
                    .collect();
                let api_version =
                    ApiVersion::from_str(API_VERSION).unwrap_or_else(|never| match never {});
                let request = CreateWebhookEndpoint::new(enabled, url.as_str())
                    .api_version(api_version)
                    .metadata(metadata(WEBHOOK_CATALOG_KEY, environment));
                let joined = events.join(",");
                let key = idempotency_key(
                    "stripe-setup",
                    &[environment, "endpoint", url, &joined, API_VERSION],
                );
                let endpoint = client
                    .send_idempotent(&request, &key)
                    .await
                    .map_err(|e| fail(e, &outcome.done))?;
                let endpoint_id = endpoint.id.as_str().to_owned();
                outcome
                    .done
                    .push(format!("created webhook endpoint {endpoint_id}"));
                let Some(signing_secret) = endpoint.secret.as_deref() else {
                    return Err(ApplyError::Secret {
                        endpoint_id,
                        error: std::io::Error::other("Stripe's response carried no secret"),
                        done: outcome.done,
                    });
                };
                let text =
                    secret_output::render(secret.format, signing_secret, &endpoint_id, environment);
                match secret_output::write(&secret.destination, &text) {
                    Ok(place) => outcome.secret_written_to = Some(place),
                    Err(error) => {
                        return Err(ApplyError::Secret {
                            endpoint_id,
                            error,
                            done: outcome.done,
                        });
                    }
                }
            }
            Action::UpdateEndpoint {
                id, events, enable, ..
            } => {
                let enabled: Vec<UpdateWebhookEndpointEnabledEvents> = events
                    .iter()
                    .map(|e| {
                        UpdateWebhookEndpointEnabledEvents::from_str(e)
                            .unwrap_or_else(|never| match never {})
                    })
                    .collect();
                let mut request = UpdateWebhookEndpoint::new(id.as_str()).enabled_events(enabled);
                if *enable {
                    request = request.disabled(false);
                }
                let joined = events.join(",");
                let enabled_flag = enable.to_string();
                let key = idempotency_key(
                    "stripe-setup",
                    &[environment, "update-endpoint", id, &joined, &enabled_flag],
                );
                client
                    .send_idempotent(&request, &key)
                    .await
                    .map_err(|e| fail(e, &outcome.done))?;
                outcome.done.push(format!("updated webhook endpoint {id}"));
            }
            // Nothing the API can do: the plan's line says what to do by hand.
            Action::EndpointApiVersion { .. }
            | Action::MissingEndpoint
            | Action::KeepProduct { .. }
            | Action::KeepPrice { .. }
            | Action::KeepEndpoint { .. } => continue,
        }
        eprintln!("  done: {step}");
    }
    Ok(outcome)
}

fn metadata(key: &str, environment: &str) -> HashMap<String, String> {
    HashMap::from([
        (META_CATALOG_KEY.to_owned(), key.to_owned()),
        (META_ENVIRONMENT.to_owned(), environment.to_owned()),
        (META_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
    ])
}

fn create_price(spec: &PriceSpec, product: &str, environment: &str) -> CreatePrice {
    let interval = match spec.interval {
        Interval::Day => CreatePriceRecurringInterval::Day,
        Interval::Week => CreatePriceRecurringInterval::Week,
        Interval::Month => CreatePriceRecurringInterval::Month,
        Interval::Year => CreatePriceRecurringInterval::Year,
    };
    let mut recurring = CreatePriceRecurring::new(interval);
    if spec.interval_count != 1 {
        recurring.interval_count = Some(u64::from(spec.interval_count));
    }
    let currency = Currency::from_str(&spec.currency).unwrap_or_else(|never| match never {});
    CreatePrice::new(currency)
        .product(product)
        .unit_amount(spec.unit_amount)
        .nickname(spec.nickname.as_str())
        .lookup_key(spec.lookup_key.as_str())
        // Always: the key may be held by an archived price, or by the price this one replaces.
        .transfer_lookup_key(true)
        .recurring(recurring)
        .metadata(metadata(&spec.key, environment))
}
