//! `stripe-setup trigger` against the real `billing-service` (the stripe-setup issue: "trigger
//! is tested against billing-service itself"). Both binaries run as processes, on SQLite and,
//! when `DATABASE_URL` names a server, on PostgreSQL.
//!
//! Proves: a load of 200 signed events per type at concurrency 8 is acknowledged in full, the
//! database then holds exactly those events (each id once, none extra), and the worker takes
//! every one to `processed` on its first attempt; and an event signed with the wrong secret is
//! refused (trigger exits 1) with nothing stored. It would fail if the two binaries disagreed on
//! the signature scheme, if the receiver acknowledged before storing, stored twice, or if the
//! worker dropped or failed events of a handled type.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use billing_stripe::catalog::Catalog;
use e2e::WEBHOOK_SECRET;
use e2e::binaries::{STRIPE_SETUP, binary};
use e2e::metrics;
use e2e::service::Service;
use e2e::store::{count, wait_for};
use serde_json::Value;
use test_support::db::every_engine;

/// Handled types whose handlers write different tables.
const TYPES: &[&str] = &[
    "customer.created",
    "charge.succeeded",
    "invoice.paid",
    "checkout.session.completed",
];
const COUNT: usize = 200;

/// `stripe-setup trigger <args>` with the secret in its environment: exit code, stdout, stderr.
async fn trigger(secret: &str, args: Vec<String>) -> (i32, String, String) {
    let secret = secret.to_owned();
    tokio::task::spawn_blocking(move || {
        let output = Command::new(binary(STRIPE_SETUP))
            .arg("trigger")
            .args(&args)
            .env("STRIPE_WEBHOOK_SECRET", &secret)
            .output()
            .expect("stripe-setup runs");
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    })
    .await
    .expect("the trigger task")
}

fn load_args(event_type: &str, url: &str, count: usize) -> Vec<String> {
    [
        event_type,
        "--url",
        url,
        "--count",
        &count.to_string(),
        "--concurrency",
        "8",
        "--json",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggered_events_are_stored_once_and_processed() {
    for db in every_engine().await {
        let service = Service::start(&db.url).await;
        let store = db.pool().await;
        let url = service.url("/webhook/stripe");
        for event_type in TYPES {
            let (code, stdout, stderr) =
                trigger(WEBHOOK_SECRET, load_args(event_type, &url, COUNT)).await;
            let context = format!(
                "{:?} {event_type}: exit {code}\n{stdout}{stderr}\nservice log:\n{}",
                db.engine,
                service.logs()
            );
            assert_eq!(code, 0, "{context}");
            let report: Value = serde_json::from_str(stdout.trim()).expect("--json prints JSON");
            assert_eq!(report["sent"], COUNT, "{context}");
            assert_eq!(report["accepted"], COUNT, "{context}");
            assert_eq!(report["failed"], 0, "{context}");

            // Every acknowledged event is stored: the 2xx comes after the insert, so they are
            // all there at once, pending or done.
            let rows = wait_for(
                &store,
                &format!("every {event_type} processed"),
                Duration::from_secs(30),
                |rows| {
                    let of_type: Vec<_> = rows
                        .iter()
                        .filter(|r| r.event_type == *event_type)
                        .collect();
                    of_type.len() >= COUNT && of_type.iter().all(|r| r.status != "pending")
                },
            )
            .await;
            let of_type: Vec<_> = rows
                .iter()
                .filter(|r| r.event_type == *event_type)
                .collect();
            // Exactly the run's events: trigger names them `evt_trg<run id><8-digit index>`.
            assert_eq!(of_type.len(), COUNT, "{context}");
            let runs: BTreeSet<_> = of_type.iter().map(|r| &r.id[..r.id.len() - 8]).collect();
            assert_eq!(runs.len(), 1, "one run's ids: {runs:?}");
            assert!(runs.iter().all(|r| r.starts_with("evt_trg")), "{runs:?}");
            let indices: BTreeSet<usize> = of_type
                .iter()
                .map(|r| r.id[r.id.len() - 8..].parse().expect("an index"))
                .collect();
            assert_eq!(indices, (0..COUNT).collect(), "{context}");
            for row in &of_type {
                assert_eq!(
                    (row.status.as_str(), row.attempts, row.last_error.as_deref()),
                    ("processed", 1, None),
                    "{:?} {}",
                    db.engine,
                    row.id
                );
            }
        }
        let total = COUNT * TYPES.len();
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM stripe_events").await,
            total as i64,
            "nothing but the triggered events is stored"
        );
        let text = metrics::scrape(&reqwest::Client::new(), &service.url("")).await;
        let accepted = [("result", "accepted")];
        let received = "billing_webhook_events_received_total";
        assert_eq!(metrics::value(&text, received, &accepted), total as f64);
        assert_eq!(
            metrics::value(&text, received, &[("result", "duplicate")]),
            0.0
        );
        let processed = "billing_webhook_events_processed_total";
        assert_eq!(
            metrics::value(&text, processed, &[("outcome", "processed")]),
            total as f64,
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_refused_and_nothing_is_stored() {
    for db in every_engine().await {
        let service = Service::start(&db.url).await;
        let store = db.pool().await;
        let args = load_args("charge.succeeded", &service.url("/webhook/stripe"), 20);
        let (code, stdout, stderr) = trigger("whsec_not_the_services_secret", args).await;
        let context = format!("{:?}: exit {code}\n{stdout}{stderr}", db.engine);
        assert_eq!(code, 1, "{context}");
        let report: Value = serde_json::from_str(stdout.trim()).expect("--json prints JSON");
        assert_eq!(report["sent"], 20, "{context}");
        assert_eq!(report["accepted"], 0, "{context}");
        assert_eq!(report["failed"], 20, "{context}");
        let failure = report["first_failure"].as_str().unwrap_or_default();
        assert!(failure.contains("HTTP 400"), "{context}");
        assert!(failure.contains("bad_signature"), "{context}");

        assert_eq!(count(&store, "SELECT COUNT(*) FROM stripe_events").await, 0);
        let text = metrics::scrape(&reqwest::Client::new(), &service.url("")).await;
        let received = "billing_webhook_events_received_total";
        assert_eq!(
            metrics::value(&text, received, &[("result", "bad_signature")]),
            20.0,
            "{text}"
        );
        assert_eq!(
            metrics::value(&text, received, &[("result", "accepted")]),
            0.0
        );
    }
}

/// Every type the default catalog subscribes to: `trigger` can send it, and the service's
/// handlers take it to `processed` on the first attempt (not `ignored`, not `failed`). With the
/// registry/catalog test in billing-service, this keeps the catalog, the fixtures and the
/// handlers in step end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_of_the_default_catalog_is_sent_and_processed() {
    const EACH: usize = 3;
    let types = Catalog::builtin().webhook.enabled_events;
    for db in every_engine().await {
        let service = Service::start(&db.url).await;
        let store = db.pool().await;
        let url = service.url("/webhook/stripe");
        for event_type in &types {
            let (code, stdout, stderr) =
                trigger(WEBHOOK_SECRET, load_args(event_type, &url, EACH)).await;
            assert_eq!(code, 0, "{} {event_type}: {stdout}{stderr}", db.engine);
        }
        let rows = wait_for(
            &store,
            "every triggered event settled",
            Duration::from_secs(30),
            |rows| rows.len() >= types.len() * EACH && rows.iter().all(|r| r.status != "pending"),
        )
        .await;
        assert_eq!(rows.len(), types.len() * EACH, "{}", db.engine);
        for event_type in &types {
            let of_type: Vec<_> = rows
                .iter()
                .filter(|r| r.event_type == *event_type)
                .collect();
            assert_eq!(of_type.len(), EACH, "{} {event_type}", db.engine);
            for row in of_type {
                assert_eq!(
                    (row.status.as_str(), row.attempts, row.last_error.as_deref()),
                    ("processed", 1, None),
                    "{} {event_type} {}",
                    db.engine,
                    row.id
                );
            }
        }
    }
}
