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
    let base = stripe.uri();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let key = key.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stripe-setup"));
        command
            .args(&args)
            .env("STRIPE_API_BASE", base)
            .env_remove("STRIPE_WEBHOOK_SECRET");
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
            .contains("Plan: 5 to create, 0 to update, 0 to archive."),
        "{}",
        run.stderr
    );

    let posts = stripe.posts();
    assert_eq!(posts.len(), 5, "{posts:#?}");
    assert!(posts.iter().all(|p| {
        p.idempotency_key()
            .is_some_and(|k| k.starts_with("stripe-setup-"))
    }));

    let products = posts_to(&posts, "/v1/products");
    assert_eq!(products.len(), 1);
    assert_eq!(products[0].params["name"], "billing");
    assert_eq!(products[0].params["metadata"]["catalog_key"], "billing");
    assert_eq!(products[0].params["metadata"]["environment"], "stage");
    let product_id = stripe.objects(Kind::Product)[0]["id"].clone();

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
        assert_eq!(price.params["product"], product_id);
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
async fn a_second_run_changes_nothing_and_makes_three_reads() {
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
        3,
        "a no-op run reads products, prices and endpoints once each"
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
            .contains("Plan: 1 to create, 0 to update, 1 to archive."),
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
    assert_eq!(new_posts.len(), 2, "{new_posts:#?}");
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
        run.stderr.contains("Plan: 5 to create")
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
            .contains("Plan: 1 to create, 0 to update, 1 to archive."),
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
    assert!(run.stderr.contains("+ create webhook endpoint https://billing.example.com/webhook/stripe (18 events) failed"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("Stripe refused the request (400): Injected fault"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("Already done: created product billing"),
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
    assert!(
        run.stderr
            .contains("Plan: 1 to create, 0 to update, 0 to archive."),
        "{}",
        run.stderr
    );
    let new_posts: Vec<RecordedRequest> = stripe.posts().split_off(before);
    assert_eq!(new_posts.len(), 1);
    assert!(run.stdout.starts_with("STRIPE_WEBHOOK_SECRET=whsec_"));
    assert_eq!(stripe.objects(Kind::Product).len(), 1);
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
    assert_eq!(stripe.objects(Kind::Product).len(), 2);
    assert_eq!(stripe.objects(Kind::WebhookEndpoint).len(), 2);
    stripe.assert_no_violations();
}
