//! What the service adds to a checkout, over the Stripe calls it makes.
//!
//! A checkout for a new user is two Stripe writes (create the customer, create the Checkout
//! Session) plus our own work: the headers, the cached catalog, two small queries and an insert.
//! This runs the real application in-process against the Stripe double and measures, request by
//! request, (a) `POST /billing/checkout` end to end and (b) the same two Stripe requests sent
//! straight to the double with the same bodies. The difference is the service's cost.
//!
//! `cargo bench -p billing-service --bench checkout_latency` (SQLite; set `DATABASE_URL` to a
//! `postgres://` server to measure there; the database named in it is used as is and gets the
//! service's tables).

use std::time::{Duration, Instant};

use billing_service::configuration::Settings;
use billing_service::startup::Application;
use stripe_wiremock::StripeDouble;
use tokio_util::sync::CancellationToken;

const WARMUP: usize = 100;
const RUNS: usize = 2000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let stripe = StripeDouble::start().await;
    let catalog = stripe.seed_default_catalog();
    // A database of its own on the server DATABASE_URL names (SQLite without one), dropped after.
    let db = match test_support::db::postgres_admin_url() {
        Some(admin) => test_support::db::TestDb::postgres(&admin).await,
        None => test_support::db::TestDb::sqlite(),
    };
    let database_url = db.url.clone();
    let stripe_base = stripe.uri();
    let env = move |key: &str| -> Option<String> {
        match key {
            "STRIPE_API_SECRET_KEY" => Some("sk_test_bench".into()),
            "STRIPE_WEBHOOK_SECRET" => Some("whsec_bench".into()),
            "STRIPE_API_BASE" => Some(stripe_base.clone()),
            "DATABASE_URL" => Some(database_url.clone()),
            "SERVER_PORT" => Some("0".into()),
            _ => None,
        }
    };
    let settings = Settings::from_env(&env).expect("settings");
    let app = Application::build(settings).await.expect("app");
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let http = reqwest::Client::new();
    let run_tag = std::process::id();

    let mut service = Vec::with_capacity(RUNS);
    let mut direct = Vec::with_capacity(RUNS);
    for i in 0..WARMUP + RUNS {
        let user = format!("bench-{run_tag}-{i}");
        let started = Instant::now();
        let response = http
            .post(format!("{base}/billing/checkout"))
            .header("x-user-id", &user)
            .header("x-user-email", format!("{user}@example.com"))
            .json(&serde_json::json!({"price_id": "billing_monthly"}))
            .send()
            .await
            .expect("checkout");
        assert_eq!(
            response.status(),
            200,
            "{}",
            response.text().await.unwrap_or_default()
        );
        response.bytes().await.expect("body");
        let through_service = started.elapsed();

        // The same two writes, straight to "Stripe", with the bodies the service sent.
        let started = Instant::now();
        let customer: serde_json::Value = http
            .post(format!("{}/v1/customers", stripe.uri()))
            .bearer_auth("sk_test_bench")
            .header("idempotency-key", format!("direct-customer-{run_tag}-{i}"))
            .form(&[
                ("email", format!("d{user}@example.com")),
                ("metadata[user_id]", format!("d{user}")),
            ])
            .send()
            .await
            .expect("customer")
            .json()
            .await
            .expect("customer body");
        let customer = customer["id"].as_str().unwrap_or_default().to_owned();
        http.post(format!("{}/v1/checkout/sessions", stripe.uri()))
            .bearer_auth("sk_test_bench")
            .header("idempotency-key", format!("direct-session-{run_tag}-{i}"))
            .form(&[
                ("mode", "subscription"),
                ("customer", customer.as_str()),
                ("client_reference_id", &format!("d{user}")),
                ("line_items[0][price]", catalog.monthly.as_str()),
                ("line_items[0][quantity]", "1"),
                ("subscription_data[metadata][user_id]", &format!("d{user}")),
                ("metadata[user_id]", &format!("d{user}")),
                (
                    "success_url",
                    "http://localhost:8080/billing/success?session_id={CHECKOUT_SESSION_ID}",
                ),
                (
                    "cancel_url",
                    "http://localhost:8080/billing/cancel?session_id={CHECKOUT_SESSION_ID}",
                ),
            ])
            .send()
            .await
            .expect("session")
            .bytes()
            .await
            .expect("session body");
        let straight = started.elapsed();
        if i >= WARMUP {
            service.push(through_service);
            direct.push(straight);
        }
    }
    stripe.assert_no_violations();
    shutdown.cancel();
    let _ = server.await;

    let mut added: Vec<Duration> = service
        .iter()
        .zip(&direct)
        .map(|(s, d)| s.saturating_sub(*d))
        .collect();
    service.sort();
    direct.sort();
    added.sort();
    println!(
        "checkout latency over {RUNS} new-user checkouts ({} warm-up)",
        WARMUP
    );
    println!("{:<34} {:>10} {:>10}", "", "p50 (µs)", "p99 (µs)");
    for (name, sample) in [
        ("POST /billing/checkout", &service),
        ("the two Stripe calls, direct", &direct),
        ("added by the service (per request)", &added),
    ] {
        println!(
            "{name:<34} {:>10.0} {:>10.0}",
            micros(percentile(sample, 0.5)),
            micros(percentile(sample, 0.99))
        );
    }
}
