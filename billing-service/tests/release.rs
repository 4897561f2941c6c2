//! The release binary, end to end over HTTP, as the frontend, Stripe and an operator use it:
//! products, checkout, the redirect back, a signed webhook, the user's subscription, the portal,
//! then SIGTERM.
//!
//! `.ci/run` builds the release binary beside the other tests: it names it in `RELEASE_BINARY`
//! and the build's process in `RELEASE_BUILD_PID`, and this test waits for the one while the
//! other runs. Elsewhere the test runs when `target/release/billing-service` exists
//! (`cargo build --release -p billing-service`) and says so when it does not.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use billing_service::clock::unix_now;
use billing_stripe::fixtures::{self, EventSpec};
use billing_stripe::signature::header_value;
use serde_json::{Value, json};
use stripe_wiremock::StripeDouble;
use test_support::process::{Launch, Process};

const SECRET: &str = "whsec_release_test";

fn release_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("RELEASE_BINARY").map(PathBuf::from) {
        return Some(wait_for_build(bin));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("release/billing-service");
    bin.exists().then_some(bin)
}

/// `bin`, once the build in `RELEASE_BUILD_PID` has made it; a build that ends without it fails
/// the test.
fn wait_for_build(bin: PathBuf) -> PathBuf {
    let build = std::env::var("RELEASE_BUILD_PID").unwrap_or_default();
    let running = || {
        // An ended child stays a zombie (`Z`) until the script waits for it.
        std::fs::read_to_string(format!("/proc/{build}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30 * 60);
    while !bin.exists() {
        assert!(
            running() || bin.exists(),
            "the release build ({build}) ended without {}: see its log in .ci/run's output",
            bin.display()
        );
        assert!(
            Instant::now() < deadline,
            "no release binary after 30 minutes"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    bin
}

#[tokio::test]
async fn the_release_binary_serves_a_whole_subscription() {
    let Some(bin) = release_binary() else {
        assert!(
            !test_support::under_ci(),
            "CI must build target/release/billing-service before the tests"
        );
        eprintln!(
            "skipped: no target/release/billing-service (cargo build --release -p billing-service)"
        );
        return;
    };
    let stripe = StripeDouble::start().await;
    let catalog = stripe.seed_default_catalog();
    let dir = tempfile::tempdir().unwrap();
    let mut launch = Launch {
        program: bin,
        dir: dir.path(),
        env: Vec::new(),
    };
    for (key, value) in [
        ("STRIPE_API_SECRET_KEY", "sk_test_release"),
        ("STRIPE_WEBHOOK_SECRET", SECRET),
        ("STRIPE_API_BASE", stripe.uri().as_str()),
        ("SERVER_PORT", "0"),
        ("FRONTEND_URL", "https://app.example.com"),
        ("BACKEND_URL", "https://api.example.com"),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
    ] {
        launch = launch.env(key, value);
    }
    let service = Process::start(launch).await;
    let base = service.url("");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let products: Vec<Value> = http
        .get(format!("{base}/billing/products"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = products.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [&catalog.daily, &catalog.monthly, &catalog.annual]);

    let user = |request: reqwest::RequestBuilder| {
        request
            .header("x-user-id", "release-user")
            .header("x-user-email", "release@example.com")
    };
    let checkout = user(http.post(format!("{base}/billing/checkout")))
        .json(&json!({"price_id": "billing_monthly"}))
        .send()
        .await
        .unwrap();
    assert_eq!(checkout.status(), 200);
    let session: Value = checkout.json().await.unwrap();
    let session_id = session["sessionId"].as_str().unwrap();

    let back = http
        .get(format!("{base}/billing/success?session_id={session_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 302);
    let location = back.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("https://app.example.com/billing/confirmation?payment_status=unpaid&amount=5499&currency=cad"),
        "{location}"
    );

    let customer = stripe.objects(stripe_wiremock::Kind::Customer)[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let now = unix_now();
    let event = fixtures::event(&EventSpec {
        customer,
        user_id: "release-user".into(),
        price_id: catalog.monthly.clone(),
        status: Some("active".into()),
        created: now,
        ..EventSpec::new("customer.subscription.created", "evt_release_1")
    })
    .unwrap()
    .to_string();
    let delivered = http
        .post(format!("{base}/webhook/stripe"))
        .header(
            "stripe-signature",
            header_value(SECRET, now, event.as_bytes()),
        )
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(delivered.status(), 200);

    let deadline = Instant::now() + Duration::from_secs(10);
    let subscription = loop {
        let response = user(http.get(format!("{base}/billing/subscription")))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            break response.json::<Value>().await.unwrap();
        }
        assert!(Instant::now() < deadline, "the webhook was never processed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(subscription["status"], "active");
    assert_eq!(subscription["price_id"], catalog.monthly.as_str());

    let portal = user(http.post(format!("{base}/billing/portal")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(portal.status(), 200);

    let (status, logs) = service.terminate();
    assert!(
        status.success(),
        "SIGTERM ends it cleanly: {status:?}\n{logs}"
    );
    stripe.assert_no_violations();
}
