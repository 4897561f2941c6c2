//! `sync events` against the Stripe double (every request checked against Stripe's schemas):
//! events Stripe has but never delivered are found, stored once and processed by the running
//! service's worker; the ones received are left alone; Stripe's rate limit (429) is waited out; types the handlers do not know and events older than `--since` are not asked for; a
//! second run stores nothing.

use billing_service::sync::events::{Recovered, recover};
use billing_service::webhook::handlers::Handlers;
use billing_stripe::fixtures::{self, EventSpec, SUPPORTED};
use serde_json::json;
use stripe_wiremock::{Kind, StripeDouble};
use test_support::db::every_engine;

use crate::helpers::{event_state, spawn_app_with, stripe_reader, test_settings};

const SINCE: i64 = 1_790_000_000;

#[tokio::test]
async fn missing_events_are_stored_once_and_processed() {
    for db in every_engine().await {
        let stripe = StripeDouble::start().await;
        let mut settings = test_settings(&db.url);
        settings.stripe.api_base = stripe.uri().parse().unwrap();
        let app = spawn_app_with(settings).await;

        // 250 events over three pages, the handled types in turn; the first 10 were delivered.
        let events: Vec<serde_json::Value> = (0..250)
            .map(|i| {
                fixtures::event(&EventSpec {
                    customer: format!("cus_sync{i}"),
                    subscription: format!("sub_sync{i}"),
                    user_id: format!("u-sync-{i}"),
                    created: SINCE + i,
                    ..EventSpec::new(
                        SUPPORTED[i as usize % SUPPORTED.len()],
                        &format!("evt_sync{i:04}"),
                    )
                })
                .unwrap()
            })
            .collect();
        for event in &events {
            stripe.insert(Kind::Event, event.clone());
        }
        for event in &events[..10] {
            assert_eq!(app.deliver(&event.to_string()).await.status(), 200);
        }
        // Not asked for: a type no handler knows, and an event older than --since.
        stripe.insert(
            Kind::Event,
            json!({"id": "evt_product", "object": "event", "type": "product.created",
                   "created": SINCE + 5, "livemode": false, "api_version": billing_stripe::API_VERSION,
                   "data": {"object": {"id": "prod_x", "object": "product"}}}),
        );
        let mut old = events[0].clone();
        old["id"] = json!("evt_too_old");
        old["created"] = json!(SINCE - 10);
        stripe.insert(Kind::Event, old);
        // Stripe limits the rate: the first two asks are refused with 429 and waited out.
        stripe.fail_next("GET", "/v1/events", 429, 2);

        let handlers = Handlers::builtin();
        let types = handlers.event_types();
        let first = recover(&app.db, &stripe_reader(&stripe), &types, SINCE)
            .await
            .unwrap();
        assert_eq!(
            first,
            Recovered {
                listed: 250,
                stored: 240,
                already_had: 10,
                unreadable: 0
            },
            "{}",
            db.engine
        );
        for event in &events {
            let id = event["id"].as_str().unwrap();
            let state = app.wait_processed(id).await;
            assert_eq!(state.status, "processed", "{id}: {state:?}");
            assert_eq!(state.attempts, 1, "{id} processed twice: {state:?}");
        }
        for skipped in ["evt_product", "evt_too_old"] {
            assert!(event_state(&app.db, skipped).await.is_none(), "{skipped}");
        }

        let second = recover(&app.db, &stripe_reader(&stripe), &types, SINCE)
            .await
            .unwrap();
        assert_eq!(second.stored, 0, "{second:?}");
        assert_eq!(second.already_had, 250);

        let listings: Vec<_> = stripe
            .requests()
            .into_iter()
            .filter(|r| r.path == "/v1/events")
            .collect();
        // 3 pages a run, plus the two refused with 429.
        assert_eq!(listings.len(), 8, "{listings:?}");
        assert!(
            listings
                .iter()
                .all(|r| r.header("stripe-version") == Some(billing_stripe::API_VERSION))
        );
        stripe.assert_no_violations();
        app.stop().await;
    }
}

#[tokio::test]
async fn a_refusal_ends_the_sync_with_stripe_s_message() {
    let stripe = StripeDouble::start().await;
    let db = test_support::db::TestDb::sqlite();
    let app = spawn_app_with(test_settings(&db.url)).await;
    stripe.fail_next("GET", "/v1/events", 401, 1);
    let err = recover(
        &app.db,
        &stripe_reader(&stripe),
        &["customer.created"],
        SINCE,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("Stripe refused GET /v1/events (401)"), "{err}");
    app.stop().await;
}
