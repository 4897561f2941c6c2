//! Two `billing-service` processes on one PostgreSQL database, the same event delivered to both
//! 100 times at once (the benchmark/fault issue: Stripe retries, and a load balancer spreads
//! them over replicas). PostgreSQL only (that is where replicas run); skipped with a note when
//! `DATABASE_URL` is not a PostgreSQL URL, never under CI.
//!
//! Proves: every delivery is acknowledged, exactly one of the 200 as new; the event is stored
//! once; its handler runs once in all: one `customers` row, `attempts` = 1, and one
//! `processed` outcome summed over both instances' `/metrics`, with no retry. It would fail if
//! the store's dedupe were a read-then-write race, or if the two workers could both claim the
//! event (a missing `FOR UPDATE SKIP LOCKED` or status check).

use std::time::Duration;

use billing_service::clock::unix_now;
use e2e::WEBHOOK_SECRET;
use e2e::metrics;
use e2e::service::Service;
use e2e::store::{count, wait_for};
use e2e::webhook::{event_body, unique_prefix};
use serde_json::Value;
use test_support::db::{TestDb, servers_or_skip};
use tokio::task::JoinSet;

const DELIVERIES_EACH: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_sent_to_two_instances_is_stored_and_handled_once() {
    for db in servers_or_skip("one_event_sent_to_two_instances_is_stored_and_handled_once").await {
        stored_and_handled_once(&db).await;
    }
}

async fn stored_and_handled_once(db: &TestDb) {
    // Started together, as a rollout does: their migrations take turns.
    let (a, b) = tokio::join!(Service::start(&db.url), Service::start(&db.url));
    let store = db.pool().await;

    let id = format!("{}1", unique_prefix("twice"));
    let body = event_body("customer.created", &id);
    let customer: Value = serde_json::from_str(&body).unwrap();
    let customer_id = customer["data"]["object"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let client = reqwest::Client::new();
    let mut deliveries = JoinSet::new();
    for _ in 0..DELIVERIES_EACH {
        for service in [&a, &b] {
            let (client, url, body) =
                (client.clone(), service.url("/webhook/stripe"), body.clone());
            deliveries.spawn(async move {
                let header = billing_stripe::signature::header_value(
                    WEBHOOK_SECRET,
                    unix_now(),
                    body.as_bytes(),
                );
                let response = client
                    .post(url)
                    .header("content-type", "application/json")
                    .header("stripe-signature", header)
                    .body(body)
                    .timeout(Duration::from_secs(20))
                    .send()
                    .await
                    .expect("the service answers");
                let status = response.status().as_u16();
                let reply: Value = response.json().await.expect("a JSON reply");
                (status, reply)
            });
        }
    }
    let mut new = 0;
    while let Some(delivery) = deliveries.join_next().await {
        let (status, reply) = delivery.expect("a delivery task");
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["id"], id.as_str());
        if reply["duplicate"] == false {
            new += 1;
        }
    }
    assert_eq!(new, 1, "exactly one delivery stored the event");

    wait_for(
        &store,
        "the event processed",
        Duration::from_secs(20),
        |rows| rows.iter().any(|r| r.id == id && r.status == "processed"),
    )
    .await;
    // Give the other instance's worker several polls (every 250 ms) to run it a second time,
    // were the queue to let it.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let rows = e2e::store::stored_events(&store).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let row = &rows[0];
    assert_eq!(
        (row.status.as_str(), row.attempts, row.last_error.as_deref()),
        ("processed", 1, None),
        "claimed and handled once"
    );
    assert_eq!(count(&store, "SELECT COUNT(*) FROM customers").await, 1);
    let stored_customer: String = sqlx::query_scalar("SELECT stripe_customer_id FROM customers")
        .fetch_one(&store)
        .await
        .unwrap();
    assert_eq!(stored_customer, customer_id);

    let (text_a, text_b) = (
        metrics::scrape(&client, &a.url("")).await,
        metrics::scrape(&client, &b.url("")).await,
    );
    let sum = |name: &str, labels: &[(&str, &str)]| {
        metrics::value(&text_a, name, labels) + metrics::value(&text_b, name, labels)
    };
    let processed = "billing_webhook_events_processed_total";
    let of_type = ("type", "customer.created");
    assert_eq!(
        sum(processed, &[of_type, ("outcome", "processed")]),
        1.0,
        "the handler ran once over both instances\nA:\n{text_a}\nB:\n{text_b}"
    );
    assert_eq!(sum(processed, &[of_type]), 1.0, "no retry, no failure");
    let received = "billing_webhook_events_received_total";
    assert_eq!(sum(received, &[("result", "accepted")]), 1.0);
    assert_eq!(
        sum(received, &[("result", "duplicate")]),
        (2 * DELIVERIES_EACH - 1) as f64
    );
    // Each instance really took part.
    for text in [&text_a, &text_b] {
        assert!(metrics::value(text, received, &[]) >= DELIVERIES_EACH as f64);
    }
}
