//! Carries out a plan against Stripe, in order, saying what it does.
//!
//! Every write carries an `Idempotency-Key` derived from the environment, the object's catalog key
//! and the content wanted, so an interrupted run, re-run, is replayed by Stripe rather than
//! repeated, while a changed catalog gets fresh keys. (The one delete, detaching a feature from a
//! product, is idempotent by nature and carries none.) On failure the error says which object
//! failed, Stripe's message, and what had already been done.

use std::collections::HashMap;
use std::str::FromStr as _;

use billing_stripe::account::{
    MANAGED_BY, META_CATALOG_KEY, META_ENVIRONMENT, META_MANAGED_BY, PORTAL_CATALOG_KEY,
    WEBHOOK_CATALOG_KEY,
};
use billing_stripe::catalog::{Interval, PriceSpec, ProductSpec};
use billing_stripe::stripe_billing::billing_portal_configuration::{
    CreateBillingPortalConfiguration, CreateBillingPortalConfigurationBusinessProfile,
    CreateBillingPortalConfigurationFeatures,
    CreateBillingPortalConfigurationFeaturesSubscriptionCancel,
    CreateBillingPortalConfigurationFeaturesSubscriptionCancelMode,
    CreateBillingPortalConfigurationFeaturesSubscriptionUpdate,
    CreateBillingPortalConfigurationFeaturesSubscriptionUpdateDefaultAllowedUpdates,
    CreateBillingPortalConfigurationFeaturesSubscriptionUpdateProrationBehavior, InvoiceListParam,
    PaymentMethodUpdateParam, SubscriptionUpdateProductParam, UpdateBillingPortalConfiguration,
    UpdateBillingPortalConfigurationBusinessProfile, UpdateBillingPortalConfigurationFeatures,
    UpdateBillingPortalConfigurationFeaturesSubscriptionCancel,
    UpdateBillingPortalConfigurationFeaturesSubscriptionCancelMode,
    UpdateBillingPortalConfigurationFeaturesSubscriptionUpdate,
    UpdateBillingPortalConfigurationFeaturesSubscriptionUpdateDefaultAllowedUpdates,
    UpdateBillingPortalConfigurationFeaturesSubscriptionUpdateProrationBehavior,
};
use billing_stripe::stripe_misc::entitlements_feature::{
    CreateEntitlementsFeature, UpdateEntitlementsFeature,
};
use billing_stripe::stripe_misc::webhook_endpoint::{
    CreateWebhookEndpoint, CreateWebhookEndpointEnabledEvents, UpdateWebhookEndpoint,
    UpdateWebhookEndpointEnabledEvents,
};
use billing_stripe::stripe_product::price::{
    CreatePrice, CreatePriceRecurring, CreatePriceRecurringInterval, UpdatePrice,
};
use billing_stripe::stripe_product::product::{CreateProduct, UpdateProduct};
use billing_stripe::stripe_product::product_feature::{
    CreateProductProductFeature, DeleteProductFeature,
};
use billing_stripe::stripe_shared::ApiVersion;
use billing_stripe::stripe_types::Currency;
use billing_stripe::{API_VERSION, StripeClient, StripeError, idempotency_key};

use crate::plan::{Action, ObjectRef, Plan, PortalWanted};
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
    // What earlier actions created, by catalog key (products) or lookup key (features, prices).
    let mut created = Created::default();
    for action in plan.actions.iter().filter(|a| a.is_change()) {
        let step = action.describe();
        let fail = |error: StripeError, done: &Vec<String>| ApplyError::Stripe {
            step: step.clone(),
            error,
            done: done.clone(),
        };
        match action {
            Action::CreateFeature { spec } => {
                let request =
                    CreateEntitlementsFeature::new(spec.lookup_key.as_str(), spec.name.as_str())
                        .metadata(HashMap::from([(
                            META_MANAGED_BY.to_owned(),
                            MANAGED_BY.to_owned(),
                        )]));
                // No environment: features are the account's, shared by its environments.
                let key =
                    idempotency_key("stripe-setup", &["feature", &spec.lookup_key, &spec.name]);
                let feature = client
                    .send_idempotent(&request, &key)
                    .await
                    .map_err(|e| fail(e, &outcome.done))?;
                let id = feature.id.as_str().to_owned();
                outcome
                    .done
                    .push(format!("created feature {} ({id})", spec.lookup_key));
                created.features.insert(spec.lookup_key.clone(), id);
            }
            Action::UpdateFeature { id, spec, changes } => {
                let request = UpdateEntitlementsFeature::new(id.as_str()).name(spec.name.as_str());
                let joined = changes.join(",");
                let key = idempotency_key(
                    "stripe-setup",
                    &[environment, "update-feature", id, &spec.name, &joined],
                );
                client
                    .send_idempotent(&request, &key)
                    .await
                    .map_err(|e| fail(e, &outcome.done))?;
                outcome.done.push(format!("updated feature {id}"));
            }
            Action::CreateProduct { spec } | Action::CreatePlanProduct { spec, .. } => {
                let product = create_product(client, environment, spec)
                    .await
                    .map_err(|e| fail(e, &outcome.done))?;
                outcome
                    .done
                    .push(format!("created product {} ({product})", spec.key));
                created.products.insert(spec.key.clone(), product);
            }
            Action::UpdateProduct { id, spec, .. } | Action::UpdatePlanProduct { id, spec, .. } => {
                update_product(client, environment, id, spec)
                    .await
                    .map_err(|e| fail(e, &outcome.done))?;
                outcome.done.push(format!("updated product {id}"));
            }
            Action::AttachFeature { product, feature } => {
                let product_id = created
                    .product(product)
                    .map_err(|e| fail(e, &outcome.done))?;
                let feature_id = created
                    .feature(feature)
                    .map_err(|e| fail(e, &outcome.done))?;
                let request =
                    CreateProductProductFeature::new(product_id.as_str(), feature_id.as_str());
                let key = idempotency_key(
                    "stripe-setup",
                    &[environment, "attach-feature", &product_id, &feature_id],
                );
                client
                    .send_idempotent(&request, &key)
                    .await
                    .map_err(|e| fail(e, &outcome.done))?;
                outcome.done.push(format!(
                    "attached feature {} to product {product_id}",
                    feature.key
                ));
            }
            Action::DetachFeature { product, attached } => {
                let product_id = created
                    .product(product)
                    .map_err(|e| fail(e, &outcome.done))?;
                let request = DeleteProductFeature::new(attached.id.as_str(), product_id.as_str());
                client
                    .send(&request)
                    .await
                    .map_err(|e| fail(e, &outcome.done))?;
                outcome.done.push(format!(
                    "detached feature {} from product {product_id}",
                    attached.lookup_key
                ));
            }
            Action::CreatePortal { wanted } => {
                let resolved = created.portal(wanted).map_err(|e| fail(e, &outcome.done))?;
                let request = create_portal(wanted, &resolved, environment);
                let key = idempotency_key(
                    "stripe-setup",
                    &[environment, "portal", &fingerprint(wanted, &resolved)],
                );
                let configuration = client
                    .send_idempotent(&request, &key)
                    .await
                    .map_err(|e| fail(e, &outcome.done))?;
                outcome.done.push(format!(
                    "created portal configuration {}",
                    configuration.id.as_str()
                ));
            }
            Action::UpdatePortal {
                id,
                updated,
                wanted,
                had_business_profile,
                changes,
            } => {
                let resolved = created.portal(wanted).map_err(|e| fail(e, &outcome.done))?;
                let request = update_portal(id, wanted, &resolved, *had_business_profile);
                // What was found (its last change, what differed) is part of the key: the same
                // edit made again later is put back again, not answered from Stripe's replay.
                let updated = updated.to_string();
                let joined = changes.join(",");
                let key = idempotency_key(
                    "stripe-setup",
                    &[
                        environment,
                        "update-portal",
                        id,
                        &updated,
                        &joined,
                        &fingerprint(wanted, &resolved),
                    ],
                );
                client
                    .send_idempotent(&request, &key)
                    .await
                    .map_err(|e| fail(e, &outcome.done))?;
                outcome
                    .done
                    .push(format!("updated portal configuration {id}"));
            }
            Action::CreatePrice {
                spec,
                product,
                replaces,
            } => {
                let product = created
                    .product(product)
                    .map_err(|e| fail(e, &outcome.done))?;
                let product = product.as_str();
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
                created
                    .prices
                    .insert(spec.lookup_key.clone(), price.id.as_str().to_owned());
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
            | Action::KeepFeature { .. }
            | Action::KeepProduct { .. }
            | Action::KeepPlanProduct { .. }
            | Action::KeepProductFeature { .. }
            | Action::KeepPrice { .. }
            | Action::KeepEndpoint { .. }
            | Action::KeepPortal { .. } => continue,
        }
        eprintln!("  done: {step}");
    }
    Ok(outcome)
}

/// The ids of what this run created, so that later actions can name it.
#[derive(Default)]
struct Created {
    products: HashMap<String, String>,
    features: HashMap<String, String>,
    prices: HashMap<String, String>,
}

/// The portal's products with their prices, as ids.
type Resolved = Vec<(String, Vec<String>)>;

impl Created {
    fn resolve(
        map: &HashMap<String, String>,
        what: &str,
        object: &ObjectRef,
    ) -> Result<String, StripeError> {
        match &object.id {
            Some(id) => Ok(id.clone()),
            // The plan creates an object before any action naming it; this guards against a
            // reordering.
            None => map.get(&object.key).cloned().ok_or_else(|| {
                StripeError::Config(format!("the {what} {} was not created", object.key))
            }),
        }
    }

    fn product(&self, object: &ObjectRef) -> Result<String, StripeError> {
        Self::resolve(&self.products, "product", object)
    }

    fn feature(&self, object: &ObjectRef) -> Result<String, StripeError> {
        Self::resolve(&self.features, "feature", object)
    }

    fn portal(&self, wanted: &PortalWanted) -> Result<Resolved, StripeError> {
        wanted
            .products
            .iter()
            .map(|p| {
                let prices = p
                    .prices
                    .iter()
                    .map(|price| Self::resolve(&self.prices, "price", price))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((self.product(&p.product)?, prices))
            })
            .collect()
    }
}

async fn create_product(
    client: &StripeClient,
    environment: &str,
    spec: &ProductSpec,
) -> Result<String, StripeError> {
    let mut request =
        CreateProduct::new(spec.name.as_str()).metadata(metadata(&spec.key, environment));
    if let Some(description) = &spec.description {
        request = request.description(description.as_str());
    }
    let key = idempotency_key(
        "stripe-setup",
        &[environment, "product", &spec.key, &spec.name],
    );
    let product = client.send_idempotent(&request, &key).await?;
    Ok(product.id.as_str().to_owned())
}

async fn update_product(
    client: &StripeClient,
    environment: &str,
    id: &str,
    spec: &ProductSpec,
) -> Result<(), StripeError> {
    let mut request = UpdateProduct::new(id).name(spec.name.as_str());
    if let Some(description) = &spec.description {
        request = request.description(description.as_str());
    }
    let key = idempotency_key(
        "stripe-setup",
        &[environment, "update-product", id, &spec.name],
    );
    client.send_idempotent(&request, &key).await?;
    Ok(())
}

/// Everything the portal configuration's requests carry, as one string for idempotency keys.
fn fingerprint(wanted: &PortalWanted, resolved: &Resolved) -> String {
    let products: Vec<String> = resolved
        .iter()
        .map(|(product, prices)| format!("{product}:{}", prices.join(",")))
        .collect();
    [
        products.join(";"),
        wanted.proration_behavior.as_str().to_owned(),
        wanted.return_url.clone().unwrap_or_default(),
        wanted.headline.clone().unwrap_or_default(),
        wanted.privacy_policy_url.clone().unwrap_or_default(),
        wanted.terms_of_service_url.clone().unwrap_or_default(),
    ]
    .join("|")
}

fn create_portal(
    wanted: &PortalWanted,
    resolved: &Resolved,
    environment: &str,
) -> CreateBillingPortalConfiguration {
    let mut update = CreateBillingPortalConfigurationFeaturesSubscriptionUpdate::new(true);
    update.default_allowed_updates = Some(vec![
        CreateBillingPortalConfigurationFeaturesSubscriptionUpdateDefaultAllowedUpdates::Price,
    ]);
    update.products = Some(portal_products(resolved));
    update.proration_behavior = Some(
        CreateBillingPortalConfigurationFeaturesSubscriptionUpdateProrationBehavior::from_str(
            wanted.proration_behavior.as_str(),
        )
        .unwrap_or_else(|never| match never {}),
    );
    let mut cancel = CreateBillingPortalConfigurationFeaturesSubscriptionCancel::new(true);
    cancel.mode = Some(CreateBillingPortalConfigurationFeaturesSubscriptionCancelMode::AtPeriodEnd);
    let mut features = CreateBillingPortalConfigurationFeatures::new();
    features.subscription_update = Some(update);
    features.subscription_cancel = Some(cancel);
    features.payment_method_update = Some(PaymentMethodUpdateParam::new(true));
    features.invoice_history = Some(InvoiceListParam::new(true));
    let mut request = CreateBillingPortalConfiguration::new(features)
        .metadata(metadata(PORTAL_CATALOG_KEY, environment));
    if let Some(url) = &wanted.return_url {
        request = request.default_return_url(url.as_str());
    }
    if wanted.headline.is_some()
        || wanted.privacy_policy_url.is_some()
        || wanted.terms_of_service_url.is_some()
    {
        let mut profile = CreateBillingPortalConfigurationBusinessProfile::new();
        profile.headline = wanted.headline.clone();
        profile.privacy_policy_url = wanted.privacy_policy_url.clone();
        profile.terms_of_service_url = wanted.terms_of_service_url.clone();
        request = request.business_profile(profile);
    }
    request
}

/// Sends every field the plan sets, so that whatever drifted is put back. A headline or link the
/// catalog does not set is cleared (Stripe's empty value) only when the configuration has one.
fn update_portal(
    id: &str,
    wanted: &PortalWanted,
    resolved: &Resolved,
    had_business_profile: [bool; 3],
) -> UpdateBillingPortalConfiguration {
    let mut update = UpdateBillingPortalConfigurationFeaturesSubscriptionUpdate::new();
    update.enabled = Some(true);
    update.default_allowed_updates = Some(vec![
        UpdateBillingPortalConfigurationFeaturesSubscriptionUpdateDefaultAllowedUpdates::Price,
    ]);
    update.products = Some(portal_products(resolved));
    update.proration_behavior = Some(
        UpdateBillingPortalConfigurationFeaturesSubscriptionUpdateProrationBehavior::from_str(
            wanted.proration_behavior.as_str(),
        )
        .unwrap_or_else(|never| match never {}),
    );
    let mut cancel = UpdateBillingPortalConfigurationFeaturesSubscriptionCancel::new();
    cancel.enabled = Some(true);
    cancel.mode = Some(UpdateBillingPortalConfigurationFeaturesSubscriptionCancelMode::AtPeriodEnd);
    let mut features = UpdateBillingPortalConfigurationFeatures::new();
    features.subscription_update = Some(update);
    features.subscription_cancel = Some(cancel);
    features.payment_method_update = Some(PaymentMethodUpdateParam::new(true));
    features.invoice_history = Some(InvoiceListParam::new(true));
    let mut request = UpdateBillingPortalConfiguration::new(id).features(features);
    if let Some(url) = &wanted.return_url {
        request = request.default_return_url(url.as_str());
    }
    let field = |wants: &Option<String>, had: bool| match wants {
        Some(value) => Some(value.clone()),
        None if had => Some(String::new()),
        None => None,
    };
    let [had_headline, had_privacy, had_terms] = had_business_profile;
    let mut profile = UpdateBillingPortalConfigurationBusinessProfile::new();
    profile.headline = field(&wanted.headline, had_headline);
    profile.privacy_policy_url = field(&wanted.privacy_policy_url, had_privacy);
    profile.terms_of_service_url = field(&wanted.terms_of_service_url, had_terms);
    if profile != UpdateBillingPortalConfigurationBusinessProfile::new() {
        request = request.business_profile(profile);
    }
    request
}

fn portal_products(resolved: &Resolved) -> Vec<SubscriptionUpdateProductParam> {
    resolved
        .iter()
        .map(|(product, prices)| {
            SubscriptionUpdateProductParam::new(prices.clone(), product.as_str())
        })
        .collect()
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
