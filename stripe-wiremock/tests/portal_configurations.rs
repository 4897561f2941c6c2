//! Customer portal configurations in the double: made, merged, listed and retrieved as Stripe
//! does, parsed by async-stripe, and followed by the portal's own actions (the price switch and
//! cancellation) of a session created under one.

mod common;

use common::{Direct, get, id, parse, post, types};
use serde_json::{Value, json};
use stripe_billing::billing_portal_configuration::{
    CreateBillingPortalConfiguration, CreateBillingPortalConfigurationBusinessProfile,
    CreateBillingPortalConfigurationFeatures,
    CreateBillingPortalConfigurationFeaturesSubscriptionCancel,
    CreateBillingPortalConfigurationFeaturesSubscriptionCancelMode,
    CreateBillingPortalConfigurationFeaturesSubscriptionUpdate,
    CreateBillingPortalConfigurationFeaturesSubscriptionUpdateBillingCycleAnchor,
    CreateBillingPortalConfigurationFeaturesSubscriptionUpdateDefaultAllowedUpdates,
    CreateBillingPortalConfigurationFeaturesSubscriptionUpdateProrationBehavior,
    CreateBillingPortalConfigurationLoginPage, InvoiceListParam, ListBillingPortalConfiguration,
    RetrieveBillingPortalConfiguration, SubscriptionUpdateProductAdjustableQuantityParam,
    SubscriptionUpdateProductParam, UpdateBillingPortalConfiguration,
    UpdateBillingPortalConfigurationFeatures,
    UpdateBillingPortalConfigurationFeaturesSubscriptionCancel,
};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::{BillingPortalConfiguration, BillingPortalSession};
use stripe_wiremock::store::DEFAULT_PORTAL_CONFIGURATION;
use stripe_wiremock::{Api, Kind, SeededCatalog};

fn account() -> (Api, Direct, SeededCatalog) {
    let api = Api::new();
    let catalog = api.seed_default_catalog();
    (api.clone(), Direct(api), catalog)
}

/// Features that let the customer switch among `prices` of `product` and cancel as `mode` says.
fn switching(
    product: &str,
    prices: &[&str],
    mode: CreateBillingPortalConfigurationFeaturesSubscriptionCancelMode,
) -> CreateBillingPortalConfigurationFeatures {
    let mut update = CreateBillingPortalConfigurationFeaturesSubscriptionUpdate::new(true);
    update.default_allowed_updates = Some(vec![
        CreateBillingPortalConfigurationFeaturesSubscriptionUpdateDefaultAllowedUpdates::Price,
    ]);
    update.products = Some(vec![SubscriptionUpdateProductParam::new(
        prices.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>(),
        product,
    )]);
    update.proration_behavior = Some(
        CreateBillingPortalConfigurationFeaturesSubscriptionUpdateProrationBehavior::CreateProrations,
    );
    let mut cancel = CreateBillingPortalConfigurationFeaturesSubscriptionCancel::new(true);
    cancel.mode = Some(mode);
    let mut features = CreateBillingPortalConfigurationFeatures::new();
    features.subscription_update = Some(update);
    features.subscription_cancel = Some(cancel);
    features
}

/// A customer paying the monthly price through Checkout; returns `(customer, subscription)`.
fn subscribed(api: &Api, catalog: &SeededCatalog) -> (String, String) {
    let customer = id(&post(api, "/v1/customers", "email=p@x.test"));
    let session = id(&post(
        api,
        "/v1/checkout/sessions",
        &format!(
            "mode=subscription&customer={customer}&line_items[0][price]={}\
             &line_items[0][quantity]=1&success_url=http://x.test/s",
            catalog.monthly
        ),
    ));
    api.complete_checkout(&session, "4242424242424242").unwrap();
    let subscription = api.retrieve(Kind::CheckoutSession, &session).unwrap()["subscription"]
        .as_str()
        .unwrap()
        .to_owned();
    (customer, subscription)
}

/// A portal session of the customer under `configuration`, made through async-stripe.
fn portal(direct: &Direct, customer: &str, configuration: &str) -> BillingPortalSession {
    CreateBillingPortalSession::new()
        .customer(customer)
        .configuration(configuration)
        .send_blocking(direct)
        .unwrap()
}

fn period(subscription: &Value) -> (i64, i64) {
    let item = &subscription["items"]["data"][0];
    (
        item["current_period_start"].as_i64().unwrap(),
        item["current_period_end"].as_i64().unwrap(),
    )
}

#[test]
fn a_configuration_is_made_with_stripes_defaults_and_parses() {
    let (api, direct, catalog) = account();
    let mut features = switching(
        &catalog.product,
        &[&catalog.monthly, &catalog.annual],
        CreateBillingPortalConfigurationFeaturesSubscriptionCancelMode::AtPeriodEnd,
    );
    features.invoice_history = Some(InvoiceListParam::new(true));
    let mut profile = CreateBillingPortalConfigurationBusinessProfile::new();
    profile.headline = Some("Billing".to_owned());
    let created = CreateBillingPortalConfiguration::new(features)
        .business_profile(profile)
        .default_return_url("https://app.x.test/account")
        .login_page(CreateBillingPortalConfigurationLoginPage::new(true))
        .metadata(
            [("env".to_owned(), "stage".to_owned())]
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .name("main")
        .send_blocking(&direct)
        .unwrap();
    assert!(created.id.as_str().starts_with("bpc_"));
    assert!(created.active);
    assert!(!created.is_default);
    assert!(!created.livemode);
    assert!(created.application.is_none());
    assert_eq!(created.name.as_deref(), Some("main"));
    assert_eq!(
        created.default_return_url.as_deref(),
        Some("https://app.x.test/account")
    );
    assert_eq!(
        created.business_profile.headline.as_deref(),
        Some("Billing")
    );
    assert!(created.business_profile.privacy_policy_url.is_none());
    assert!(created.login_page.enabled);
    assert!(
        created
            .login_page
            .url
            .as_deref()
            .unwrap()
            .starts_with("https://billing.stripe.com/p/login/")
    );
    assert_eq!(created.created, created.updated);

    // What was not given has Stripe's defaults, every field present.
    let raw = api
        .retrieve(Kind::BillingPortalConfiguration, created.id.as_str())
        .unwrap();
    assert_eq!(raw["object"], "billing_portal.configuration");
    let features = &raw["features"];
    assert_eq!(
        features["customer_update"],
        json!({"allowed_updates": [], "enabled": false})
    );
    assert_eq!(features["invoice_history"], json!({"enabled": true}));
    assert_eq!(
        features["payment_method_update"],
        json!({"enabled": false, "payment_method_configuration": null})
    );
    assert_eq!(
        features["subscription_cancel"],
        json!({
            "cancellation_reason": {"enabled": false, "options": []},
            "enabled": true, "mode": "at_period_end", "proration_behavior": "none"
        })
    );
    assert_eq!(
        features["subscription_update"],
        json!({
            "billing_cycle_anchor": null,
            "default_allowed_updates": ["price"],
            "enabled": true,
            "products": [{
                "adjustable_quantity": {"enabled": false, "maximum": null, "minimum": 1},
                "prices": [catalog.monthly, catalog.annual],
                "product": catalog.product,
            }],
            "proration_behavior": "create_prorations",
            "schedule_at_period_end": {"conditions": []},
            "trial_update_behavior": "end_trial",
        })
    );
    assert_eq!(raw["metadata"], json!({"env": "stage"}));
    let again = RetrieveBillingPortalConfiguration::new(created.id.clone())
        .send_blocking(&direct)
        .unwrap();
    assert_eq!(again.id, created.id);
    assert!(api.violations().is_empty(), "{:?}", api.violations());
}

#[test]
fn an_update_merges_like_stripe() {
    let (api, direct, catalog) = account();
    let mut features = switching(
        &catalog.product,
        &[&catalog.monthly],
        CreateBillingPortalConfigurationFeaturesSubscriptionCancelMode::AtPeriodEnd,
    );
    if let Some(update) = &mut features.subscription_update {
        let product = &mut update.products.as_mut().unwrap()[0];
        let mut quantity = SubscriptionUpdateProductAdjustableQuantityParam::new(true);
        quantity.maximum = Some(5);
        product.adjustable_quantity = Some(quantity);
    }
    let created = CreateBillingPortalConfiguration::new(features)
        .default_return_url("https://app.x.test/")
        .metadata(
            [("a", "1"), ("b", "2")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .send_blocking(&direct)
        .unwrap();
    let id = created.id.to_string();
    let raw = api.retrieve(Kind::BillingPortalConfiguration, &id).unwrap();
    assert_eq!(
        raw["features"]["subscription_update"]["products"][0]["adjustable_quantity"],
        json!({"enabled": true, "maximum": 5, "minimum": 1})
    );

    // Nested objects merge key by key: turning cancellation off keeps its mode, and the update
    // feature is untouched.
    let mut cancel = UpdateBillingPortalConfigurationFeaturesSubscriptionCancel::new();
    cancel.enabled = Some(false);
    let mut features = UpdateBillingPortalConfigurationFeatures::new();
    features.subscription_cancel = Some(cancel);
    let updated = UpdateBillingPortalConfiguration::new(id.as_str())
        .features(features)
        .name("renamed")
        .send_blocking(&direct)
        .unwrap();
    assert!(!updated.features.subscription_cancel.enabled);
    assert_eq!(updated.name.as_deref(), Some("renamed"));
    assert!(updated.updated > created.updated);
    let after = api.retrieve(Kind::BillingPortalConfiguration, &id).unwrap();
    assert_eq!(
        after["features"]["subscription_cancel"]["mode"],
        "at_period_end"
    );
    assert_eq!(
        after["features"]["subscription_update"],
        raw["features"]["subscription_update"]
    );
    assert_eq!(after["default_return_url"], "https://app.x.test/");

    // `""` unsets: a list becomes empty, a value null; metadata merges key by key.
    let unset = post(
        &api,
        &format!("/v1/billing_portal/configurations/{id}"),
        "features[subscription_update][products]=&default_return_url=&name=\
         &metadata[a]=&metadata[c]=3\
         &business_profile[headline]=Hello&features[customer_update][allowed_updates][0]=email\
         &features[customer_update][enabled]=true&active=false",
    );
    let parsed: BillingPortalConfiguration = parse(&unset);
    assert!(!parsed.active);
    assert_eq!(
        unset["features"]["subscription_update"]["products"],
        json!([])
    );
    assert_eq!(unset["features"]["subscription_update"]["enabled"], true);
    assert_eq!(unset["default_return_url"], Value::Null);
    assert_eq!(unset["name"], Value::Null);
    assert_eq!(unset["metadata"], json!({"b": "2", "c": "3"}));
    assert_eq!(unset["business_profile"]["headline"], "Hello");
    assert_eq!(
        unset["features"]["customer_update"],
        json!({"allowed_updates": ["email"], "enabled": true})
    );

    // Unknown products and prices, and prices of another product, are refused, changing nothing.
    let other = id_of_post(&api, "/v1/products", "name=other");
    for (body, param) in [
        (
            "features[subscription_update][products][0][product]=prod_nope\
             &features[subscription_update][products][0][prices][0]=price_nope"
                .to_owned(),
            "features[subscription_update][products][0][product]",
        ),
        (
            format!(
                "features[subscription_update][products][0][product]={other}\
                 &features[subscription_update][products][0][prices][0]={}",
                catalog.monthly
            ),
            "features[subscription_update][products][0][prices][0]",
        ),
    ] {
        let answer = api.answer(
            "POST",
            &format!("/v1/billing_portal/configurations/{id}"),
            body.as_bytes(),
            &common::headers(None),
        );
        assert_eq!(answer.status, 400, "{}", answer.body);
        assert_eq!(answer.body["error"]["param"], param);
    }
    assert_eq!(
        api.retrieve(Kind::BillingPortalConfiguration, &id).unwrap(),
        unset
    );
    let missing = UpdateBillingPortalConfiguration::new("bpc_nope")
        .name("x")
        .send_blocking(&direct)
        .unwrap_err();
    assert_eq!(missing.status(), 404);
    assert!(api.violations().is_empty(), "{:?}", api.violations());
}

fn id_of_post(api: &Api, path: &str, body: &str) -> String {
    id(&post(api, path, body))
}

#[test]
fn configurations_are_listed_by_active_and_default() {
    let (api, direct, catalog) = account();
    let features = || {
        switching(
            &catalog.product,
            &[&catalog.monthly],
            CreateBillingPortalConfigurationFeaturesSubscriptionCancelMode::AtPeriodEnd,
        )
    };
    let first = CreateBillingPortalConfiguration::new(features())
        .send_blocking(&direct)
        .unwrap();
    let second = CreateBillingPortalConfiguration::new(features())
        .send_blocking(&direct)
        .unwrap();
    UpdateBillingPortalConfiguration::new(first.id.clone())
        .active(false)
        .send_blocking(&direct)
        .unwrap();

    // The account's default configuration is there too, the oldest.
    let all = ListBillingPortalConfiguration::new()
        .send_blocking(&direct)
        .unwrap();
    assert_eq!(all.url, "/v1/billing_portal/configurations");
    let ids: Vec<String> = all.data.iter().map(|c| c.id.to_string()).collect();
    assert_eq!(
        ids,
        [
            second.id.to_string(),
            first.id.to_string(),
            DEFAULT_PORTAL_CONFIGURATION.to_owned()
        ]
    );
    let default = ListBillingPortalConfiguration::new()
        .is_default(true)
        .send_blocking(&direct)
        .unwrap();
    assert_eq!(default.data.len(), 1);
    assert!(default.data[0].is_default);
    assert!(
        default.data[0]
            .features
            .subscription_update
            .products
            .is_none()
    );
    let inactive = ListBillingPortalConfiguration::new()
        .active(false)
        .send_blocking(&direct)
        .unwrap();
    assert_eq!(inactive.data.len(), 1);
    assert_eq!(inactive.data[0].id, first.id);
    let page = ListBillingPortalConfiguration::new()
        .is_default(false)
        .limit(1)
        .send_blocking(&direct)
        .unwrap();
    assert!(page.has_more);
    let (status, _) = get(&api, "/v1/billing_portal/configurations/bpc_nope", "");
    assert_eq!(status, 404);
    assert!(api.violations().is_empty(), "{:?}", api.violations());
}

#[test]
fn a_portal_session_takes_a_known_active_configuration() {
    let (api, direct, catalog) = account();
    let (customer, _) = subscribed(&api, &catalog);
    let configuration = CreateBillingPortalConfiguration::new(switching(
        &catalog.product,
        &[&catalog.monthly],
        CreateBillingPortalConfigurationFeaturesSubscriptionCancelMode::AtPeriodEnd,
    ))
    .default_return_url("https://app.x.test/back")
    .send_blocking(&direct)
    .unwrap();

    // Recorded on the session, whose return URL defaults to the configuration's.
    let session = portal(&direct, &customer, configuration.id.as_str());
    assert_eq!(session.configuration.id(), &configuration.id);
    assert_eq!(
        session.return_url.as_deref(),
        Some("https://app.x.test/back")
    );
    // Without one, the default configuration, made on first use.
    let default = CreateBillingPortalSession::new()
        .customer(customer.as_str())
        .return_url("https://app.x.test/r")
        .send_blocking(&direct)
        .unwrap();
    assert_eq!(
        default.configuration.id().as_str(),
        DEFAULT_PORTAL_CONFIGURATION
    );
    assert_eq!(default.return_url.as_deref(), Some("https://app.x.test/r"));
    let (status, body) = get(
        &api,
        &format!("/v1/billing_portal/configurations/{DEFAULT_PORTAL_CONFIGURATION}"),
        "",
    );
    assert_eq!(status, 200);
    assert_eq!(body["is_default"], true);

    // An unknown configuration is Stripe's resource_missing; an inactive one is refused.
    let unknown = CreateBillingPortalSession::new()
        .customer(customer.as_str())
        .configuration("bpc_nope")
        .send_blocking(&direct)
        .unwrap_err();
    assert_eq!(unknown.status(), 400);
    assert_eq!(unknown.error()["code"], "resource_missing");
    assert_eq!(unknown.error()["param"], "configuration");
    UpdateBillingPortalConfiguration::new(configuration.id.clone())
        .active(false)
        .send_blocking(&direct)
        .unwrap();
    let inactive = CreateBillingPortalSession::new()
        .customer(customer.as_str())
        .configuration(configuration.id.as_str())
        .send_blocking(&direct)
        .unwrap_err();
    assert_eq!(inactive.status(), 400);
    assert_eq!(inactive.error()["param"], "configuration");
    assert_eq!(api.objects(Kind::BillingPortalSession).len(), 2);
    assert!(api.violations().is_empty(), "{:?}", api.violations());
}

#[test]
fn the_portal_switches_only_to_what_its_configuration_offers() {
    let (api, direct, catalog) = account();
    let (customer, subscription) = subscribed(&api, &catalog);
    // Monthly and annual only: daily is not offered.
    let configuration = CreateBillingPortalConfiguration::new(switching(
        &catalog.product,
        &[&catalog.monthly, &catalog.annual],
        CreateBillingPortalConfigurationFeaturesSubscriptionCancelMode::AtPeriodEnd,
    ))
    .send_blocking(&direct)
    .unwrap();
    let session = portal(&direct, &customer, configuration.id.as_str())
        .id
        .to_string();

    let refused = api
        .portal_switch_price(&session, &subscription, &catalog.daily)
        .unwrap_err();
    assert!(refused.contains("does not offer"), "{refused}");
    assert!(refused.contains(&catalog.daily), "{refused}");
    let events = api
        .portal_switch_price(&session, &subscription, &catalog.annual)
        .unwrap();
    assert_eq!(types(&events), ["customer.subscription.updated"]);

    // Without `price` among the allowed updates, or with updates off, nothing switches.
    post(
        &api,
        &format!("/v1/billing_portal/configurations/{}", configuration.id),
        "features[subscription_update][default_allowed_updates][0]=quantity",
    );
    let error = api
        .portal_switch_price(&session, &subscription, &catalog.monthly)
        .unwrap_err();
    assert!(error.contains("default_allowed_updates"), "{error}");
    post(
        &api,
        &format!("/v1/billing_portal/configurations/{}", configuration.id),
        "features[subscription_update][enabled]=false",
    );
    let error = api
        .portal_switch_price(&session, &subscription, &catalog.monthly)
        .unwrap_err();
    assert!(error.contains("subscription_update.enabled"), "{error}");

    // The default configuration (a session without one) offers every price, as before.
    let open = id(&post(
        &api,
        "/v1/billing_portal/sessions",
        &format!("customer={customer}"),
    ));
    let events = api
        .portal_switch_price(&open, &subscription, &catalog.daily)
        .unwrap();
    assert_eq!(types(&events), ["customer.subscription.updated"]);
    assert!(api.violations().is_empty(), "{:?}", api.violations());
}

#[test]
fn a_billing_cycle_anchor_of_now_restarts_the_period_at_every_switch() {
    let (api, direct, catalog) = account();
    let (customer, subscription) = subscribed(&api, &catalog);
    let monthly_too = id(&post(
        &api,
        "/v1/prices",
        &format!(
            "product={}&currency=cad&unit_amount=6000&recurring[interval]=month",
            catalog.product
        ),
    ));
    let mut features = switching(
        &catalog.product,
        &[&catalog.monthly, &monthly_too],
        CreateBillingPortalConfigurationFeaturesSubscriptionCancelMode::AtPeriodEnd,
    );
    let anchored = features.clone();
    if let Some(update) = &mut features.subscription_update {
        update.billing_cycle_anchor =
            Some(CreateBillingPortalConfigurationFeaturesSubscriptionUpdateBillingCycleAnchor::Now);
    }
    // Unchanged (Stripe's default): a switch within one interval keeps the period.
    let unchanged = CreateBillingPortalConfiguration::new(anchored)
        .send_blocking(&direct)
        .unwrap();
    let session = portal(&direct, &customer, unchanged.id.as_str())
        .id
        .to_string();
    api.patch(
        Kind::Subscription,
        &subscription,
        json!({"items": {"object": "list", "has_more": false, "url": "/v1/subscription_items",
        "data": [{
            "id": "si_1", "current_period_start": 100, "current_period_end": 200,
            "price": api.retrieve(Kind::Price, &catalog.monthly).unwrap(),
        }]}}),
    );
    let events = api
        .portal_switch_price(&session, &subscription, &monthly_too)
        .unwrap();
    assert_eq!(period(&events[0]["data"]["object"]), (100, 200));

    let now = CreateBillingPortalConfiguration::new(features)
        .send_blocking(&direct)
        .unwrap();
    let session = portal(&direct, &customer, now.id.as_str()).id.to_string();
    let events = api
        .portal_switch_price(&session, &subscription, &catalog.monthly)
        .unwrap();
    let after = &events[0]["data"]["object"];
    let (start, end) = period(after);
    assert!(start > 200);
    assert_eq!(end - start, 30 * 86_400);
    assert_eq!(after["billing_cycle_anchor"], json!(start));
    assert!(api.violations().is_empty(), "{:?}", api.violations());
}

#[test]
fn the_portal_cancels_as_its_configuration_says() {
    let (api, direct, catalog) = account();
    let (customer, subscription) = subscribed(&api, &catalog);

    // Cancellation off: refused; renewing is still allowed (nothing to renew here).
    let mut off = switching(
        &catalog.product,
        &[&catalog.monthly],
        CreateBillingPortalConfigurationFeaturesSubscriptionCancelMode::AtPeriodEnd,
    );
    off.subscription_cancel =
        Some(CreateBillingPortalConfigurationFeaturesSubscriptionCancel::new(false));
    let off = CreateBillingPortalConfiguration::new(off)
        .send_blocking(&direct)
        .unwrap();
    let session = portal(&direct, &customer, off.id.as_str()).id.to_string();
    let error = api
        .portal_cancel_at_period_end(&session, &subscription, true)
        .unwrap_err();
    assert!(error.contains("subscription_cancel.enabled"), "{error}");
    assert!(
        api.portal_cancel_at_period_end(&session, &subscription, false)
            .unwrap()
            .is_empty()
    );

    // `immediately`: the subscription ends now.
    let immediately = CreateBillingPortalConfiguration::new(switching(
        &catalog.product,
        &[&catalog.monthly],
        CreateBillingPortalConfigurationFeaturesSubscriptionCancelMode::Immediately,
    ))
    .send_blocking(&direct)
    .unwrap();
    let session = portal(&direct, &customer, immediately.id.as_str())
        .id
        .to_string();
    let events = api
        .portal_cancel_at_period_end(&session, &subscription, true)
        .unwrap();
    assert_eq!(types(&events), ["customer.subscription.deleted"]);
    let ended = &events[0]["data"]["object"];
    assert_eq!(ended["status"], "canceled");
    assert_eq!(
        ended["cancellation_details"]["reason"],
        "cancellation_requested"
    );
    assert!(
        api.portal_cancel_at_period_end(&session, &subscription, true)
            .unwrap_err()
            .contains("ended")
    );
    assert!(api.violations().is_empty(), "{:?}", api.violations());
}
