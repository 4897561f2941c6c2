//! The account look-ups added for features, plan products and the portal configuration, against
//! the Stripe double: what billing-service and stripe-setup find must be what stripe-setup made.

use std::time::Duration;

use billing_stripe::account;
use billing_stripe::{SecretKey, StripeClient, StripeConfig};
use serde_json::json;
use stripe_wiremock::{Kind, StripeDouble};

fn client(base: &str) -> StripeClient {
    let mut config = StripeConfig::new(SecretKey::parse("sk_test_double").unwrap());
    config.api_base = base.to_owned();
    config.initial_backoff = Duration::from_millis(10);
    StripeClient::new(&config).unwrap()
}

fn id(object: &serde_json::Value) -> String {
    object["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn products_of_the_catalog_are_found_by_key_and_environment() {
    let stripe = StripeDouble::start().await;
    let client = client(&stripe.uri());
    let product = |name: &str, key: &str, environment: &str| {
        id(&stripe
            .create(
                Kind::Product,
                json!({"name": name,
                       "metadata": {"catalog_key": key, "environment": environment}}),
            )
            .unwrap())
    };
    let main = product("billing", "billing", "stage");
    let annual = product("billing Annual Plan", "billing.annual", "stage");
    product("billing", "billing", "prod");
    product("other", "other", "stage");

    let keys = ["billing".to_owned(), "billing.annual".to_owned()];
    let found = account::find_products(&client, &keys, "stage")
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found["billing"].id.as_str(), main);
    assert_eq!(found["billing.annual"].id.as_str(), annual);
    assert!(
        account::find_products(&client, &keys, "dev")
            .await
            .unwrap()
            .is_empty()
    );
    let one = account::find_product(&client, "billing", "stage")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(one.id.as_str(), main);
    stripe.assert_no_violations();
}

#[tokio::test]
async fn features_are_found_by_lookup_key_active_only_and_attachments_by_product() {
    let stripe = StripeDouble::start().await;
    let client = client(&stripe.uri());
    let feature = |key: &str, name: &str| {
        id(&stripe
            .create(Kind::Feature, json!({"lookup_key": key, "name": name}))
            .unwrap())
    };
    let old = feature("priority_support", "Old support");
    stripe.patch(Kind::Feature, &old, json!({"active": false}));
    let support = feature("priority_support", "Priority support");
    let basic = feature("billing_basic", "Billing basics");
    feature("unrelated", "Unrelated");

    let keys = [
        "billing_basic".to_owned(),
        "priority_support".to_owned(),
        "missing".to_owned(),
    ];
    let found = account::features_by_lookup_keys(&client, &keys)
        .await
        .unwrap();
    let found: Vec<(String, String)> = found
        .into_iter()
        .map(|f| (f.lookup_key, f.id.as_str().to_owned()))
        .collect();
    assert_eq!(
        found,
        [
            ("billing_basic".to_owned(), basic.clone()),
            ("priority_support".to_owned(), support.clone())
        ]
    );

    let product = id(&stripe
        .create(Kind::Product, json!({"name": "billing"}))
        .unwrap());
    for feature in [&basic, &support] {
        stripe
            .create(
                Kind::ProductFeature,
                json!({"product": product, "entitlement_feature": feature}),
            )
            .unwrap();
    }
    let attached = account::product_features(&client, &product).await.unwrap();
    let mut keys: Vec<String> = attached
        .into_iter()
        .map(|a| a.entitlement_feature.lookup_key)
        .collect();
    keys.sort();
    assert_eq!(keys, ["billing_basic", "priority_support"]);
    stripe.assert_no_violations();
}

#[tokio::test]
async fn the_portal_configuration_is_ours_active_and_the_newest() {
    let stripe = StripeDouble::start().await;
    let client = client(&stripe.uri());
    assert!(
        account::find_portal_configuration(&client, "stage")
            .await
            .unwrap()
            .is_none(),
        "the account's default configuration is not ours"
    );
    let configuration = |environment: &str| {
        id(&stripe
            .create(
                Kind::BillingPortalConfiguration,
                json!({
                    "features": {"invoice_history": {"enabled": true}},
                    "metadata": {"catalog_key": "portal", "environment": environment},
                }),
            )
            .unwrap())
    };
    let older = configuration("stage");
    let newer = configuration("stage");
    configuration("prod");
    let found = account::find_portal_configuration(&client, "stage")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id.as_str(), newer);
    stripe.patch(
        Kind::BillingPortalConfiguration,
        &newer,
        json!({"active": false}),
    );
    let found = account::find_portal_configuration(&client, "stage")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id.as_str(), older, "an inactive one is not used");
    assert!(
        account::find_portal_configuration(&client, "dev")
            .await
            .unwrap()
            .is_none()
    );
    stripe.assert_no_violations();
}
