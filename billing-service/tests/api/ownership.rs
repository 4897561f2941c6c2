//! Who may change what, and failures reported as what they are.
//!
//! - Which user a Stripe customer belongs to when Stripe's `metadata.user_id` and ours disagree
//!   (the rule is stated in `tables::customers`): Stripe's newest customer event wins; our
//!   checkout and `checkout.session.completed` only fill a missing link.
//! - A stored body the worker cannot read is parked as `failed` with the reason, not handled
//!   as an empty event.
//! - A query the database refuses is a 500 (a bug), not a 503 (an outage).

use billing_service::clock::unix_now;
use billing_service::db::Db;
use billing_service::tables::customers;
use billing_stripe::fixtures::EventSpec;
use serde_json::Value;

use crate::helpers::{event_json, spawn_app};
use test_support::db::every_engine;

async fn linked_user(db: &Db, customer: &str) -> Option<String> {
    customers::user_of(&mut db.pool.acquire().await.unwrap(), customer)
        .await
        .expect("customers can be read")
}

fn customer_event(id: &str, created: i64, user: Option<&str>) -> String {
    let body = event_json(&EventSpec {
        customer: "cus_Linked".into(),
        user_id: user.unwrap_or("unused").into(),
        created,
        ..EventSpec::new("customer.updated", id)
    });
    let mut event: Value = serde_json::from_str(&body).unwrap();
    if user.is_none() {
        event["data"]["object"]["metadata"] = serde_json::json!({});
    }
    event.to_string()
}

#[tokio::test]
async fn stripe_metadata_decides_the_user_and_checkout_only_fills_a_missing_link() {
    for db in every_engine().await {
        let app = spawn_app(&db.url).await;
        let t = unix_now() - 1000;
        // Our checkout made the customer for user-ours.
        customers::link(
            &mut app.db.pool.acquire().await.unwrap(),
            "cus_Linked",
            Some("user-ours"),
            None,
        )
        .await
        .unwrap();

        // A completed Checkout Session naming someone else does not move it.
        let session = event_json(&EventSpec {
            customer: "cus_Linked".into(),
            user_id: "user-other".into(),
            created: t,
            ..EventSpec::new("checkout.session.completed", "evt_link_session")
        });
        assert_eq!(app.deliver(&session).await.status(), 200);
        app.wait_processed("evt_link_session").await;
        assert_eq!(
            linked_user(&app.db, "cus_Linked").await.as_deref(),
            Some("user-ours"),
            "{}",
            db.engine
        );

        // Stripe's metadata (an operator edited it in the Dashboard) does.
        let moved = customer_event("evt_link_moved", t + 10, Some("user-stripe"));
        assert_eq!(app.deliver(&moved).await.status(), 200);
        app.wait_processed("evt_link_moved").await;
        assert_eq!(
            linked_user(&app.db, "cus_Linked").await.as_deref(),
            Some("user-stripe"),
            "{}",
            db.engine
        );

        // A newer event without the metadata keeps the link; an older one with other metadata
        // changes nothing.
        let silent = customer_event("evt_link_silent", t + 20, None);
        let stale = customer_event("evt_link_stale", t, Some("user-stale"));
        for (id, body) in [("evt_link_silent", silent), ("evt_link_stale", stale)] {
            assert_eq!(app.deliver(&body).await.status(), 200);
            assert_eq!(app.wait_processed(id).await.status, "processed");
        }
        assert_eq!(
            linked_user(&app.db, "cus_Linked").await.as_deref(),
            Some("user-stripe"),
            "{}",
            db.engine
        );

        // And checkout, coming back for the old user, fills nothing either.
        customers::link(
            &mut app.db.pool.acquire().await.unwrap(),
            "cus_Linked",
            Some("user-ours"),
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            linked_user(&app.db, "cus_Linked").await.as_deref(),
            Some("user-stripe")
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn a_stored_body_that_is_not_json_is_parked_with_the_reason() {
    for db in every_engine().await {
        let app = spawn_app(&db.url).await;
        sqlx::query(
            "INSERT INTO stripe_events (id, type, created, livemode, payload, received_at_ms)
             VALUES ('evt_corrupt', 'charge.succeeded', 1700000000, FALSE, '{not json', 0)",
        )
        .execute(&app.db.pool)
        .await
        .unwrap();
        let after = event_json(&EventSpec::new("customer.created", "evt_after_corrupt"));
        assert_eq!(app.deliver(&after).await.status(), 200);

        let corrupt = app.wait_processed("evt_corrupt").await;
        assert_eq!(corrupt.status, "failed", "{}", db.engine);
        assert_eq!(corrupt.attempts, 1, "not retried: no attempt can read it");
        let error = corrupt.last_error.unwrap_or_default();
        assert!(error.contains("the stored body is not JSON"), "{error}");
        assert_eq!(
            app.wait_processed("evt_after_corrupt").await.status,
            "processed",
            "the rest of the queue goes on"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn a_query_the_database_refuses_is_a_500_not_an_outage() {
    for db in every_engine().await {
        let app = spawn_app(&db.url).await;
        // The schema is broken under the running service: a bug, not an unreachable database.
        sqlx::query("DROP TABLE subscriptions")
            .execute(&app.db.pool)
            .await
            .unwrap();
        let response = app
            .client
            .get(format!("{}/billing/subscription", app.address))
            .header("x-user-id", "u-1")
            .header("x-user-email", "u-1@example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 500, "{}", db.engine);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "internal");
        assert_eq!(
            body["error"]["message"], "internal error",
            "no SQL leaks out"
        );

        sqlx::query("ALTER TABLE stripe_events RENAME COLUMN received_at_ms TO received_ms")
            .execute(&app.db.pool)
            .await
            .unwrap();
        let event = event_json(&EventSpec::new("customer.created", "evt_no_table"));
        let refused = app.deliver(&event).await;
        assert_eq!(refused.status(), 500, "not acknowledged: Stripe retries");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "internal");
        // Readiness is about reaching the database, which still answers.
        assert_eq!(app.get("/status/ready").await.status(), 200);
        app.stop().await;
    }
}
