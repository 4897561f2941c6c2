//! Drives the real `stripe-setup` binary against the stateful Stripe double, as an operator would.

use std::process::Command;

use serde_json::{Value, json};
use stripe_wiremock::{Kind, RecordedRequest, StripeDouble};

const URL: &str = "https://billing.example.com/webhook/stripe";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn setup(stripe: &StripeDouble, args: &[&str], key: Option<&str>) -> Run {
    setup_with(stripe, args, key, None).await
}

/// As `setup`, with `FRONTEND_URL` set to `frontend` (it is unset otherwise).
async fn setup_with(
    stripe: &StripeDouble,
    args: &[&str],
    key: Option<&str>,
    frontend: Option<&str>,
) -> Run {
    let base = stripe.uri();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let key = key.map(str::to_owned);
    let frontend = frontend.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stripe-setup"));
        command
            .args(&args)
            .env("STRIPE_API_BASE", base)
            .env_remove("STRIPE_WEBHOOK_SECRET");
        match frontend {
            Some(url) => command.env("FRONTEND_URL", url),
            None => command.env_remove("FRONTEND_URL"),
        };
        match key {
            Some(key) => command.env("STRIPE_API_SECRET_KEY", key),
            None => command.env_remove("STRIPE_API_SECRET_KEY"),
        };
        let output = command.output().expect("the binary runs");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    })
    .await
    .expect("the runner thread completes")
}

async fn init(stripe: &StripeDouble, extra: &[&str]) -> Run {
    let mut args = vec!["init", "--env", "stage", "--webhook-url", URL];
    args.extend_from_slice(extra);
    setup(stripe, &args, Some("sk_test_double")).await
}

async fn status(stripe: &StripeDouble, extra: &[&str]) -> Run {
    let mut args = vec!["status", "--env", "stage"];
    args.extend_from_slice(extra);
    setup(stripe, &args, Some("sk_test_double")).await
}

/// How many events the built-in catalog's endpoint subscribes to.
fn events() -> usize {
    billing_stripe::catalog::Catalog::builtin()
        .webhook
        .enabled_events
        .len()
}

/// The one object of `kind` whose `field` is `value`.
fn one(stripe: &StripeDouble, kind: Kind, field: &str, value: &str) -> Value {
    let found: Vec<Value> = stripe
        .objects(kind)
        .into_iter()
        .filter(|o| o[field] == value)
        .collect();
    assert_eq!(found.len(), 1, "{kind:?} {field}={value}: {found:#?}");
    found.into_iter().next().unwrap()
}

/// Our portal configuration (not the account's default one).
fn our_portal(stripe: &StripeDouble) -> Value {
    let ours: Vec<Value> = stripe
        .objects(Kind::BillingPortalConfiguration)
        .into_iter()
        .filter(|c| c["metadata"]["catalog_key"] == "portal")
        .collect();
    assert_eq!(ours.len(), 1, "{ours:#?}");
    ours.into_iter().next().unwrap()
}

fn posts_to<'a>(posts: &'a [RecordedRequest], path: &str) -> Vec<&'a RecordedRequest> {
    posts.iter().filter(|p| p.path == path).collect()
}

/// The built-in catalog with one substitution, written to a temporary file.
fn catalog_with(from: &str, to: &str) -> tempfile::NamedTempFile {
    let text = billing_stripe::catalog::DEFAULT_TOML;
    assert!(text.contains(from), "{from}");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text.replacen(from, to, 1)).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread")]
async fn first_run_creates_everything_with_accepted_requests_and_writes_the_secret() {
    let stripe = StripeDouble::start().await;
    let run = init(&stripe, &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("Plan: 12 to create, 0 to update, 0 to archive."),
        "{}",
        run.stderr
    );

    let posts = stripe.posts();
    assert_eq!(posts.len(), 12, "{posts:#?}");
    assert!(posts.iter().all(|p| {
        p.idempotency_key()
            .is_some_and(|k| k.starts_with("stripe-setup-"))
    }));

    let products = posts_to(&posts, "/v1/products");
    assert_eq!(products.len(), 2);
    assert_eq!(products[0].params["name"], "billing");
    assert_eq!(products[0].params["metadata"]["catalog_key"], "billing");
    assert_eq!(products[0].params["metadata"]["environment"], "stage");
    let product_id = one(&stripe, Kind::Product, "name", "billing")["id"].clone();
    let plan_product_id = one(&stripe, Kind::Product, "name", "billing Annual Plan")["id"].clone();

    let prices = posts_to(&posts, "/v1/prices");
    let summary: Vec<Value> = prices
        .iter()
        .map(|p| {
            json!([
                p.params["lookup_key"],
                p.params["unit_amount"],
                p.params["currency"],
                p.params["recurring"]["interval"],
                p.params["nickname"]
            ])
        })
        .collect();
    assert_eq!(
        summary,
        [
            json!(["billing_monthly", 5499, "cad", "month", "Monthly Plan"]),
            json!(["billing_daily", 299, "cad", "day", "Daily Plan"]),
            json!(["billing_annual", 50000, "cad", "year", "Annual Plan"]),
        ]
    );
    for price in &prices {
        let expected = match price.params["lookup_key"].as_str() {
            Some("billing_annual") => &plan_product_id,
            _ => &product_id,
        };
        assert_eq!(&price.params["product"], expected);
        assert_eq!(price.params["transfer_lookup_key"], true);
        assert_eq!(price.params["metadata"]["environment"], "stage");
    }

    let endpoints = posts_to(&posts, "/v1/webhook_endpoints");
    assert_eq!(endpoints.len(), 1);
    let endpoint = &endpoints[0].params;
    assert_eq!(endpoint["url"], URL);
    assert_eq!(endpoint["api_version"], billing_stripe::API_VERSION);
    let mut sent: Vec<&str> = endpoint["enabled_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    sent.sort_unstable();
    let mut catalog = billing_stripe::catalog::Catalog::builtin()
        .webhook
        .enabled_events;
    catalog.sort();
    assert_eq!(
        sent, catalog,
        "the endpoint subscribes to the catalog's events"
    );
    for event in [
        "charge.failed",
        "charge.succeeded",
        "customer.created",
        "subscription_schedule.created",
    ] {
        assert!(
            endpoint["enabled_events"]
                .as_array()
                .unwrap()
                .contains(&json!(event))
        );
    }

    let secret = stripe.objects(Kind::WebhookEndpoint)[0]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(run.stdout, format!("STRIPE_WEBHOOK_SECRET={secret}\n"));
    assert!(
        run.stderr.contains("written to standard output"),
        "{}",
        run.stderr
    );
    stripe.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn features_plan_products_and_the_portal_are_provisioned_once() {
    let stripe = StripeDouble::start().await;
    let run = setup_with(
        &stripe,
        &["init", "--env", "stage", "--webhook-url", URL],
        Some("sk_test_double"),
        Some("https://app.example.com"),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    for line in [
        "+ create feature billing_basic (\"Billing basics\")",
        "+ create feature priority_support (\"Priority support\")",
        "+ attach feature billing_basic (new) to product billing (new)",
        "+ create plan product billing.annual (\"billing Annual Plan\", for price billing_annual)",
        "+ attach feature priority_support (new) to product billing.annual (new)",
        "+ create portal configuration (switching among 3 prices of 2 products, proration \
         create_prorations; cancel at period end; payment method update; invoice history; \
         default return URL https://app.example.com)",
    ] {
        assert!(run.stderr.contains(line), "{line} in {}", run.stderr);
    }
    let posts = stripe.posts();

    // Features, by lookup key, with the catalog's names.
    let features = posts_to(&posts, "/v1/entitlements/features");
    assert_eq!(features.len(), 2, "{features:#?}");
    let basic = one(&stripe, Kind::Feature, "lookup_key", "billing_basic");
    assert_eq!(basic["name"], "Billing basics");
    let support = one(&stripe, Kind::Feature, "lookup_key", "priority_support");
    assert_eq!(support["name"], "Priority support");

    // The product grants billing_basic; the annual plan's product grants both.
    let product = one(&stripe, Kind::Product, "name", "billing");
    let plan = one(&stripe, Kind::Product, "name", "billing Annual Plan");
    assert_eq!(plan["metadata"]["catalog_key"], "billing.annual");
    assert_eq!(plan["metadata"]["environment"], "stage");
    assert_eq!(attached(&stripe, &product).await, ["billing_basic"]);
    assert_eq!(
        attached(&stripe, &plan).await,
        ["billing_basic", "priority_support"]
    );
    let annual = one(&stripe, Kind::Price, "lookup_key", "billing_annual");
    assert_eq!(annual["product"], plan["id"]);

    // The portal: switching among the catalog's prices, cancel at period end, card, invoices.
    let portal = our_portal(&stripe);
    assert_eq!(portal["metadata"]["environment"], "stage");
    assert_eq!(portal["default_return_url"], "https://app.example.com");
    let features = &portal["features"];
    assert_eq!(features["subscription_update"]["enabled"], true);
    assert_eq!(
        features["subscription_update"]["default_allowed_updates"],
        json!(["price"])
    );
    assert_eq!(
        features["subscription_update"]["proration_behavior"],
        "create_prorations"
    );
    let monthly = one(&stripe, Kind::Price, "lookup_key", "billing_monthly");
    let daily = one(&stripe, Kind::Price, "lookup_key", "billing_daily");
    assert_eq!(
        features["subscription_update"]["products"],
        json!([
            {"product": product["id"], "prices": [monthly["id"], daily["id"]],
             "adjustable_quantity": features["subscription_update"]["products"][0]["adjustable_quantity"]},
            {"product": plan["id"], "prices": [annual["id"]],
             "adjustable_quantity": features["subscription_update"]["products"][1]["adjustable_quantity"]},
        ])
    );
    assert_eq!(features["subscription_cancel"]["enabled"], true);
    assert_eq!(features["subscription_cancel"]["mode"], "at_period_end");
    assert_eq!(features["payment_method_update"]["enabled"], true);
    assert_eq!(features["invoice_history"]["enabled"], true);
    let portal_posts = posts_to(&posts, "/v1/billing_portal/configurations");
    assert_eq!(portal_posts.len(), 1);

    // billing-service finds it as stripe-setup does.
    let found = find_portal(&stripe, "stage").await;
    assert_eq!(found.as_deref(), portal["id"].as_str());
    assert_eq!(find_portal(&stripe, "prod").await, None);

    // A second run writes nothing, and says everything is kept.
    let before = stripe.requests().len();
    let again = setup_with(
        &stripe,
        &["init", "--env", "stage", "--webhook-url", URL],
        Some("sk_test_double"),
        Some("https://app.example.com"),
    )
    .await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(again.stderr.contains("No changes."), "{}", again.stderr);
    let second: Vec<RecordedRequest> = stripe.requests().split_off(before);
    assert!(second.iter().all(|r| r.method == "GET"), "{second:#?}");

    // `status` (with FRONTEND_URL, as the service's environment has it) reports every object kept.
    let run = setup_with(
        &stripe,
        &["status", "--env", "stage"],
        Some("sk_test_double"),
        Some("https://app.example.com"),
    )
    .await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let portal_id = portal["id"].as_str().unwrap();
    for line in [
        format!(
            "= unchanged feature billing_basic ({})",
            basic["id"].as_str().unwrap()
        ),
        format!(
            "= unchanged feature priority_support ({})",
            support["id"].as_str().unwrap()
        ),
        format!(
            "= unchanged feature billing_basic on product billing ({})",
            product["id"].as_str().unwrap()
        ),
        format!(
            "= unchanged plan product billing.annual ({})",
            plan["id"].as_str().unwrap()
        ),
        format!(
            "= unchanged feature priority_support on product billing.annual ({})",
            plan["id"].as_str().unwrap()
        ),
        format!(
            "= unchanged portal configuration {portal_id} (default return URL https://app.example.com)"
        ),
    ] {
        assert!(run.stdout.contains(&line), "{line} in {}", run.stdout);
    }
    // Without the URL, the configuration's is left alone (and named).
    let run = status(&stripe, &[]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("default return URL https://app.example.com left as it is"),
        "{}",
        run.stdout
    );
    stripe.assert_no_violations();
}

fn client(stripe: &StripeDouble) -> billing_stripe::StripeClient {
    let mut config = billing_stripe::StripeConfig::new(
        billing_stripe::SecretKey::parse("sk_test_double").unwrap(),
    );
    config.api_base = stripe.uri();
    billing_stripe::StripeClient::new(&config).unwrap()
}

/// What `billing_stripe::account::find_portal_configuration` finds in `environment`.
async fn find_portal(stripe: &StripeDouble, environment: &str) -> Option<String> {
    billing_stripe::account::find_portal_configuration(&client(stripe), environment)
        .await
        .unwrap()
        .map(|c| c.id.as_str().to_owned())
}

/// The lookup keys of the features attached to `product`, sorted (read through the API: a
/// product feature does not name its product).
async fn attached(stripe: &StripeDouble, product: &Value) -> Vec<String> {
    let id = product["id"].as_str().unwrap();
    let mut features: Vec<String> = billing_stripe::account::product_features(&client(stripe), id)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.entitlement_feature.lookup_key)
        .collect();
    features.sort();
    features
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renamed_feature_is_updated_and_a_feature_added_to_a_price_moves_it() {
    let stripe = StripeDouble::start().await;
    assert_eq!(init(&stripe, &[]).await.code, 0);
    let basic = one(&stripe, Kind::Feature, "lookup_key", "billing_basic");
    let old_monthly = one(&stripe, Kind::Price, "lookup_key", "billing_monthly");
    let before = stripe.posts().len();

    let text = billing_stripe::catalog::DEFAULT_TOML
        .replacen(
            "name = \"Billing basics\"",
            "name = \"Billing essentials\"",
            1,
        )
        .replacen(
            "interval = \"month\"\n",
            "interval = \"month\"\nfeatures = [\"priority_support\"]\n",
            1,
        );
    let catalog = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(catalog.path(), text).unwrap();
    let path = catalog.path().to_str().unwrap();
    let run = init(&stripe, &["--catalog", path]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let old_id = old_monthly["id"].as_str().unwrap();
    for line in [
        format!(
            "~ update feature billing_basic ({}): name \"Billing basics\" → \"Billing essentials\"",
            basic["id"].as_str().unwrap()
        ),
        "+ create plan product billing.monthly (\"billing Monthly Plan\", for price billing_monthly)"
            .to_owned(),
        "+ attach feature priority_support".to_owned(),
        format!(
            "+ create price billing_monthly (5499 cad/month, \"Monthly Plan\") on product \
             billing.monthly (new), taking the lookup key from {old_id}"
        ),
        format!("- archive price {old_id}"),
        "~ update portal configuration".to_owned(),
        "Plan: 4 to create, 2 to update, 1 to archive.".to_owned(),
    ] {
        assert!(run.stderr.contains(&line), "{line} in {}", run.stderr);
    }
    let new_posts: Vec<RecordedRequest> = stripe.posts().split_off(before);
    assert_eq!(new_posts.len(), 7, "{new_posts:#?}");

    assert_eq!(
        one(&stripe, Kind::Feature, "lookup_key", "billing_basic")["name"],
        "Billing essentials"
    );
    assert_eq!(stripe.objects(Kind::Feature).len(), 2);
    let plan = one(&stripe, Kind::Product, "name", "billing Monthly Plan");
    assert_eq!(plan["metadata"]["catalog_key"], "billing.monthly");
    let monthly = one(&stripe, Kind::Price, "lookup_key", "billing_monthly");
    assert_eq!(monthly["product"], plan["id"]);
    assert_eq!(monthly["unit_amount"], 5499);
    let archived = stripe
        .objects(Kind::Price)
        .into_iter()
        .find(|p| p["id"] == old_id)
        .unwrap();
    assert_eq!(archived["active"], false);
    // The portal now offers the new price on its product, not the archived one.
    let products = our_portal(&stripe)["features"]["subscription_update"]["products"].clone();
    let offered: Vec<(Value, Value)> = products
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["prices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|price| (p["product"].clone(), price.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        offered.contains(&(plan["id"].clone(), monthly["id"].clone())),
        "{offered:?}"
    );
    assert!(
        !offered.iter().any(|(_, price)| price == old_id),
        "{offered:?}"
    );
    assert_eq!(offered.len(), 3);

    let again = init(&stripe, &["--catalog", path]).await;
    assert!(again.stderr.contains("No changes."), "{}", again.stderr);
    stripe.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_portal_configuration_edited_elsewhere_is_put_back() {
    let stripe = StripeDouble::start().await;
    assert_eq!(init(&stripe, &[]).await.code, 0);
    let portal = our_portal(&stripe);
    let id = portal["id"].as_str().unwrap().to_owned();
    let mut features = portal["features"].clone();
    features["subscription_update"]["proration_behavior"] = json!("none");
    features["subscription_cancel"]["mode"] = json!("immediately");
    features["invoice_history"]["enabled"] = json!(false);
    stripe.patch(
        Kind::BillingPortalConfiguration,
        &id,
        json!({"features": features}),
    );

    let run = status(&stripe, &[]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    let line = format!(
        "~ update portal configuration {id}: proration_behavior none → create_prorations, \
         cancellation on (immediately) → on (at_period_end), invoice history off → on"
    );
    assert!(run.stdout.contains(&line), "{line} in {}", run.stdout);

    let before = stripe.posts().len();
    let run = init(&stripe, &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains(&line), "{}", run.stderr);
    let new_posts: Vec<RecordedRequest> = stripe.posts().split_off(before);
    assert_eq!(new_posts.len(), 1, "{new_posts:#?}");
    assert_eq!(
        new_posts[0].path,
        format!("/v1/billing_portal/configurations/{id}")
    );
    let features = &our_portal(&stripe)["features"];
    assert_eq!(
        features["subscription_update"]["proration_behavior"],
        "create_prorations"
    );
    assert_eq!(features["subscription_cancel"]["mode"], "at_period_end");
    assert_eq!(features["invoice_history"]["enabled"], true);

    // The same edit again is put back again (not answered from an idempotent replay).
    let mut features = features.clone();
    features["subscription_update"]["proration_behavior"] = json!("none");
    features["subscription_cancel"]["mode"] = json!("immediately");
    features["invoice_history"]["enabled"] = json!(false);
    stripe.patch(
        Kind::BillingPortalConfiguration,
        &id,
        json!({"features": features}),
    );
    assert_eq!(init(&stripe, &[]).await.code, 0);
    assert_eq!(
        our_portal(&stripe)["features"]["subscription_update"]["proration_behavior"],
        "create_prorations"
    );

    // The catalog's proration and headline, and a return URL given later.
    let catalog = catalog_with(
        "proration_behavior = \"create_prorations\"",
        "proration_behavior = \"always_invoice\"\nheadline = \"Your plan\"",
    );
    let run = setup_with(
        &stripe,
        &[
            "init",
            "--env",
            "stage",
            "--webhook-url",
            URL,
            "--catalog",
            catalog.path().to_str().unwrap(),
            "--return-url",
            "https://app.example.com/account",
        ],
        Some("sk_test_double"),
        Some("https://ignored.example.com"),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "~ update portal configuration {id}: proration_behavior create_prorations → \
             always_invoice, default_return_url none → https://app.example.com/account, headline \
             none → \"Your plan\""
        )),
        "{}",
        run.stderr
    );
    let portal = our_portal(&stripe);
    assert_eq!(
        portal["features"]["subscription_update"]["proration_behavior"],
        "always_invoice"
    );
    assert_eq!(portal["business_profile"]["headline"], "Your plan");
    assert_eq!(
        portal["default_return_url"],
        "https://app.example.com/account"
    );
    // Back to the built-in catalog: the headline is cleared.
    let run = init(&stripe, &[]).await;
    assert!(
        run.stderr.contains("headline \"Your plan\" → none"),
        "{}",
        run.stderr
    );
    let portal = our_portal(&stripe);
    assert!(
        portal["business_profile"]["headline"].is_null()
            || portal["business_profile"]["headline"] == "",
        "{portal:#}"
    );
    assert!(init(&stripe, &[]).await.stderr.contains("No changes."));
    stripe.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_feature_the_catalog_no_longer_grants_is_detached_not_archived() {
    let stripe = StripeDouble::start().await;
    assert_eq!(init(&stripe, &[]).await.code, 0);
    let product = one(&stripe, Kind::Product, "name", "billing");
    let before = stripe.posts().len();
    let catalog = catalog_with("features = [\"billing_basic\"]\n", "");
    let run = init(&stripe, &["--catalog", catalog.path().to_str().unwrap()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let feature = one(&stripe, Kind::Feature, "lookup_key", "billing_basic");
    let line = format!(
        "- detach feature billing_basic ({}) from product billing ({})",
        feature["id"].as_str().unwrap(),
        product["id"].as_str().unwrap()
    );
    assert!(run.stderr.contains(&line), "{line} in {}", run.stderr);
    // The plan product stops granting it too (it grants the product's features).
    assert_eq!(
        run.stderr
            .matches("\n- detach feature billing_basic")
            .count(),
        2,
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("Plan: 0 to create, 0 to update, 0 to archive, 2 to detach."),
        "{}",
        run.stderr
    );
    assert_eq!(
        stripe.posts().len(),
        before,
        "a detach is a DELETE, not a POST"
    );
    let deletes: Vec<RecordedRequest> = stripe
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect();
    assert_eq!(deletes.len(), 2, "{deletes:#?}");
    assert_eq!(feature["active"], true, "the feature itself is kept");
    assert!(attached(&stripe, &product).await.is_empty());
    let plan = one(&stripe, Kind::Product, "name", "billing Annual Plan");
    assert_eq!(attached(&stripe, &plan).await, ["priority_support"]);
    let again = init(&stripe, &["--catalog", catalog.path().to_str().unwrap()]).await;
    assert!(again.stderr.contains("No changes."), "{}", again.stderr);
    stripe.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_changes_nothing_and_only_reads_each_list_once() {
    let stripe = StripeDouble::start().await;
    assert_eq!(init(&stripe, &[]).await.code, 0);
    let before = stripe.requests().len();

    let run = init(&stripe, &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("No changes. The Stripe account matches the catalog."),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Roll secret"), "{}", run.stderr);
    assert_eq!(run.stdout, "", "no secret is printed again");
    let second: Vec<RecordedRequest> = stripe.requests().split_off(before);
    assert!(second.iter().all(|r| r.method == "GET"), "{second:#?}");
    assert_eq!(
        second.len(),
        8,
        "a no-op run reads products, prices, endpoints, the two features, the two products' \
         features and the portal configurations once each: {second:#?}"
    );
    assert_eq!(stripe.objects(Kind::Price).len(), 3);
    stripe.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_amount_transfers_the_lookup_key_and_archives_the_old_price() {
    let stripe = StripeDouble::start().await;
    assert_eq!(init(&stripe, &[]).await.code, 0);
    let old = stripe.objects(Kind::Price)[0].clone();
    assert_eq!(old["lookup_key"], "billing_monthly");
    let before = stripe.posts().len();

    let catalog = catalog_with("unit_amount = 5499", "unit_amount = 5999");
    let path = catalog.path().to_str().unwrap();
    let run = init(&stripe, &["--catalog", path]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("Plan: 1 to create, 1 to update, 1 to archive."),
        "{}",
        run.stderr
    );
    let old_id = old["id"].as_str().unwrap();
    assert!(
        run.stderr.contains(&format!("- archive price {old_id}")),
        "{}",
        run.stderr
    );

    let new_posts: Vec<RecordedRequest> = stripe.posts().split_off(before);
    // The new price, the old one archived, the portal offering the new one instead.
    assert_eq!(new_posts.len(), 3, "{new_posts:#?}");
    assert_eq!(new_posts[0].path, "/v1/prices");
    assert_eq!(new_posts[0].params["unit_amount"], 5999);
    assert_eq!(new_posts[0].params["lookup_key"], "billing_monthly");
    assert_eq!(new_posts[0].params["transfer_lookup_key"], true);
    assert_eq!(new_posts[1].path, format!("/v1/prices/{old_id}"));
    assert_eq!(new_posts[1].params, json!({"active": false}));

    let prices = stripe.objects(Kind::Price);
    let holder: Vec<&Value> = prices
        .iter()
        .filter(|p| p["lookup_key"] == "billing_monthly")
        .collect();
    assert_eq!(holder.len(), 1);
    assert_eq!(holder[0]["unit_amount"], 5999);
    let archived = prices.iter().find(|p| p["id"] == old["id"]).unwrap();
    assert_eq!(archived["active"], false);

    let again = init(&stripe, &["--catalog", path]).await;
    assert!(again.stderr.contains("No changes."), "{}", again.stderr);
    stripe.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_event_list_updates_the_endpoint() {
    let stripe = StripeDouble::start().await;
    assert_eq!(init(&stripe, &[]).await.code, 0);
    let before = stripe.posts().len();
    let catalog = catalog_with("  \"invoice.payment_failed\",\n", "  \"payout.paid\",\n");
    let run = init(&stripe, &["--catalog", catalog.path().to_str().unwrap()]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("+payout.paid, -invoice.payment_failed"),
        "{}",
        run.stderr
    );
    let new_posts: Vec<RecordedRequest> = stripe.posts().split_off(before);
    assert_eq!(new_posts.len(), 1, "{new_posts:#?}");
    let endpoint_id = stripe.objects(Kind::WebhookEndpoint)[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        new_posts[0].path,
        format!("/v1/webhook_endpoints/{endpoint_id}")
    );
    let events = new_posts[0].params["enabled_events"].as_array().unwrap();
    assert!(
        events.contains(&json!("payout.paid"))
            && !events.contains(&json!("invoice.payment_failed"))
    );
    assert_eq!(run.stdout, "");
    assert_eq!(stripe.objects(Kind::WebhookEndpoint).len(), 1);
    stripe.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_writes_nothing() {
    let stripe = StripeDouble::start().await;
    let run = init(&stripe, &["--dry-run"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("Plan: 12 to create")
            && run.stderr.contains("Dry run: nothing was changed.")
    );
    assert!(stripe.posts().is_empty());
    assert!(!stripe.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn status_exits_zero_only_when_the_account_matches() {
    let stripe = StripeDouble::start().await;
    let status = |extra: Vec<&'static str>| {
        let stripe = &stripe;
        async move {
            let mut args = vec!["status", "--env", "stage"];
            args.extend(extra);
            setup(stripe, &args, Some("sk_test_double")).await
        }
    };
    let run = status(vec![]).await;
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stdout.contains("+ create product billing"),
        "{}",
        run.stdout
    );

    assert_eq!(init(&stripe, &[]).await.code, 0);
    let run = status(vec![]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("No changes."));
    assert_eq!(status(vec!["--webhook-url", URL]).await.code, 0);
    assert_eq!(
        status(vec!["--webhook-url", "https://elsewhere.example.com/w"])
            .await
            .code,
        1
    );

    // Another environment in the same account has nothing yet.
    let mut other = setup(&stripe, &["status", "--env", "dev"], Some("sk_test_double")).await;
    assert_eq!(other.code, 1, "{}", other.stdout);

    stripe.patch(
        Kind::Price,
        stripe.objects(Kind::Price)[1]["id"].as_str().unwrap(),
        json!({"unit_amount": 1}),
    );
    let run = status(vec![]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .contains("Plan: 1 to create, 1 to update, 1 to archive."),
        "{}",
        run.stdout
    );
    other = setup(
        &stripe,
        &["status", "--env", "stage", "--catalog", "/nonexistent.toml"],
        Some("sk_test_double"),
    )
    .await;
    assert_eq!(other.code, 1);
    assert!(
        other
            .stderr
            .contains("/nonexistent.toml: cannot read the catalog"),
        "{}",
        other.stderr
    );
    assert!(stripe.posts().iter().all(|p| p.status == 200));
    stripe.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_secret_can_go_to_a_file_as_json_or_as_a_kubernetes_secret() {
    let stripe = StripeDouble::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret.json");
    let run = init(
        &stripe,
        &[
            "--secret-output",
            "json",
            "--secret-file",
            file.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let endpoint = &stripe.objects(Kind::WebhookEndpoint)[0];
    assert_eq!(written["STRIPE_WEBHOOK_SECRET"], endpoint["secret"]);
    assert_eq!(written["webhook_endpoint_id"], endpoint["id"]);
    assert!(run.stderr.contains(file.to_str().unwrap()));

    let other = StripeDouble::start().await;
    let run = init(&other, &["--secret-output", "k8s"]).await;
    let secret = other.objects(Kind::WebhookEndpoint)[0]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        run.stdout.starts_with("apiVersion: v1\nkind: Secret\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("STRIPE_WEBHOOK_SECRET: {secret}\n"))
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn a_secret_file_that_is_a_link_is_refused_before_any_request() {
    let stripe = StripeDouble::start().await;
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("somewhere-shared");
    std::fs::write(&target, "").unwrap();
    let link = dir.path().join("secret.env");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let run = init(&stripe, &["--secret-file", link.to_str().unwrap()]).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("is a symbolic link"), "{}", run.stderr);
    assert!(stripe.requests().is_empty(), "nothing was asked of Stripe");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_keys_urls_and_catalogs_are_refused_before_any_request() {
    let stripe = StripeDouble::start().await;

    let run = setup(
        &stripe,
        &["init", "--env", "stage", "--webhook-url", URL],
        None,
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("STRIPE_API_SECRET_KEY is not set"),
        "{}",
        run.stderr
    );

    let run = setup(
        &stripe,
        &["init", "--env", "stage", "--webhook-url", URL],
        Some("sk_live_x"),
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("refusing to use a live key"),
        "{}",
        run.stderr
    );
    let run = setup(&stripe, &["status", "--env", "prod"], Some("sk_test_x")).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("refusing to use a test key for environment 'prod'"),
        "{}",
        run.stderr
    );

    // Provisioned, so that the `--yes` status at the end can match.
    assert_eq!(init(&stripe, &[]).await.code, 0);
    let before = stripe.requests().len();
    let bad_url = setup(
        &stripe,
        &[
            "init",
            "--env",
            "stage",
            "--webhook-url",
            "http://billing.example.com/webhook",
        ],
        Some("sk_test_x"),
    )
    .await;
    assert_eq!(bad_url.code, 1);
    assert!(
        bad_url.stderr.contains("invalid webhook URL"),
        "{}",
        bad_url.stderr
    );

    for (from, to, message) in [
        (
            "interval = \"day\"",
            "interval = \"weekly\"",
            "unknown interval 'weekly' (expected day, week, month or year)",
        ),
        (
            "unit_amount = 299",
            "unit_amount = -299",
            "unit_amount must be a positive amount",
        ),
        (
            "lookup_key = \"billing_annual\"",
            "lookup_key = \"billing_daily\"",
            "duplicate lookup key 'billing_daily'",
        ),
        (
            "features = [\"priority_support\"]",
            "features = [\"priority_support\", \"gold_support\"]",
            "the price 'annual' grants the feature 'gold_support', which no [[features]] entry \
             defines",
        ),
        (
            "lookup_key = \"priority_support\"",
            "lookup_key = \"billing_basic\"",
            "duplicate feature lookup key 'billing_basic'",
        ),
        (
            "proration_behavior = \"create_prorations\"",
            "proration_behavior = \"prorate\"",
            "unknown proration_behavior 'prorate' (expected create_prorations, none or \
             always_invoice)",
        ),
    ] {
        let catalog = catalog_with(from, to);
        let path = catalog.path().to_str().unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        let line = text
            .lines()
            .collect::<Vec<_>>()
            .iter()
            .rposition(|l| l.contains(to))
            .unwrap()
            + 1;
        let run = init(&stripe, &["--catalog", path]).await;
        assert_eq!(run.code, 1);
        let expected = format!("{path}:{line}: {message}");
        assert!(
            run.stderr.contains(&expected),
            "expected {expected:?} in {}",
            run.stderr
        );
    }
    let run = setup_with(
        &stripe,
        &["init", "--env", "stage", "--webhook-url", URL],
        Some("sk_test_x"),
        Some("app.example.com"),
    )
    .await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("invalid return URL 'app.example.com' (--return-url or FRONTEND_URL)"),
        "{}",
        run.stderr
    );
    assert_eq!(
        stripe.requests().len(),
        before,
        "no request after a refusal"
    );

    // --yes overrides the key/environment check.
    let run = setup(
        &stripe,
        &["status", "--env", "stage", "--yes"],
        Some("sk_live_x"),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_stripe_errors_are_retried_with_the_same_key() {
    let stripe = StripeDouble::start().await;
    stripe.fail_next("POST", "/v1/prices", 429, 1);
    stripe.fail_next("POST", "/v1/prices", 503, 1);
    stripe.fail_next("GET", "/v1/products", 500, 1);
    let run = init(&stripe, &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let price_posts = posts_to(&stripe.posts(), "/v1/prices")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(
        price_posts.iter().map(|p| p.status).collect::<Vec<_>>(),
        [429, 503, 200, 200, 200]
    );
    assert_eq!(
        price_posts[0].idempotency_key(),
        price_posts[2].idempotency_key()
    );
    assert_eq!(stripe.objects(Kind::Price).len(), 3);
    stripe.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_names_the_object_and_what_was_done_and_a_rerun_finishes_the_job() {
    let stripe = StripeDouble::start().await;
    stripe.fail_next("POST", "/v1/webhook_endpoints", 400, 1);
    let run = init(&stripe, &[]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(&format!(
            "+ create webhook endpoint https://billing.example.com/webhook/stripe ({} events) failed",
            events()
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("Stripe refused the request (400): Injected fault"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("Already done: created feature billing_basic")
            && run.stderr.contains("created product billing ("),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("created price billing_annual"),
        "{}",
        run.stderr
    );

    let before = stripe.posts().len();
    let run = init(&stripe, &[]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    // The endpoint, and the portal configuration that comes after it.
    assert!(
        run.stderr
            .contains("Plan: 2 to create, 0 to update, 0 to archive."),
        "{}",
        run.stderr
    );
    let new_posts: Vec<RecordedRequest> = stripe.posts().split_off(before);
    assert_eq!(new_posts.len(), 2);
    assert!(run.stdout.starts_with("STRIPE_WEBHOOK_SECRET=whsec_"));
    assert_eq!(stripe.objects(Kind::Product).len(), 2);
    assert_eq!(stripe.objects(Kind::Price).len(), 3);
    stripe.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn environments_are_kept_apart() {
    let stripe = StripeDouble::start().await;
    assert_eq!(init(&stripe, &[]).await.code, 0);
    let run = setup(
        &stripe,
        &[
            "init",
            "--env",
            "pr-42",
            "--webhook-url",
            "https://pr-42.example.com/webhook/stripe",
        ],
        Some("sk_test_double"),
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Each its product and plan product, endpoint and portal configuration; features are the
    // account's, shared.
    assert_eq!(stripe.objects(Kind::Product).len(), 4);
    assert_eq!(stripe.objects(Kind::WebhookEndpoint).len(), 2);
    assert_eq!(stripe.objects(Kind::Feature).len(), 2);
    let portals = stripe
        .objects(Kind::BillingPortalConfiguration)
        .into_iter()
        .filter(|c| c["metadata"]["catalog_key"] == "portal")
        .count();
    assert_eq!(portals, 2);
    stripe.assert_no_violations();
}
