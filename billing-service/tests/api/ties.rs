//! Two events on one subscription in the same second (Stripe's `created` has whole seconds):
//! whichever order they are delivered and processed in, the row ends as Stripe's current
//! object, read from the Stripe double when the tie is seen, and the tie is counted. When Stripe
//! cannot be read, the usual rule applies and that is counted too.

use billing_stripe::fixtures::{self, EventSpec};
use serde_json::Value;
use stripe_wiremock::{Kind, StripeDouble};
use test_support::db::every_engine;

use crate::helpers::{TestApp, spawn_app_with, test_settings};

const SECOND: i64 = 1_790_000_000;

fn event(event_type: &str, id: &str, subscription: &str, status: &str) -> Value {
    fixtures::event(&EventSpec {
        customer: "cus_tie".into(),
        subscription: subscription.into(),
        user_id: "u-tie".into(),
        status: Some(status.into()),
        price_id: "price_tie".into(),
        created: SECOND,
        ..EventSpec::new(event_type, id)
    })
    .unwrap()
}

async fn status_of(app: &TestApp, subscription: &str) -> String {
    let sql = "SELECT status FROM subscriptions WHERE id = $1";
    let row: (String,) = sqlx::query_as(billing_service::db::sql::text(app.db.engine, sql))
        .bind(subscription)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    row.0
}

#[tokio::test]
async fn a_same_second_tie_ends_as_stripe_s_current_object_in_either_order() {
    for db in every_engine().await {
        for reversed in [false, true] {
            let stripe = StripeDouble::start().await;
            let sub = format!("sub_tie_{reversed}");
            let created = event(
                "customer.subscription.created",
                &format!("evt_tie_created_{reversed}"),
                &sub,
                "incomplete",
            );
            let updated = event(
                "customer.subscription.updated",
                &format!("evt_tie_updated_{reversed}"),
                &sub,
                "active",
            );
            // What Stripe has now: the subscription as the later event left it.
            stripe.insert(Kind::Subscription, updated["data"]["object"].clone());
            let mut settings = test_settings(&db.url);
            settings.stripe.api_base = stripe.uri().parse().unwrap();
            let app = spawn_app_with(settings).await;

            let order = match reversed {
                false => [&created, &updated],
                true => [&updated, &created],
            };
            for e in order {
                assert_eq!(app.deliver(&e.to_string()).await.status(), 200);
                app.wait_processed(e["id"].as_str().unwrap()).await;
            }
            assert_eq!(
                status_of(&app, &sub).await,
                "active",
                "reversed={reversed} on {}",
                db.engine
            );
            let metrics = app.get("/metrics").await.text().await.unwrap();
            let tied = order[1]["type"].as_str().unwrap();
            assert!(
                metrics.contains(&format!(
                    r#"billing_webhook_same_second_ties_total{{type="{tied}",settled="stripe"}} 1"#
                )),
                "{metrics}"
            );
            let reads: Vec<_> = stripe
                .requests()
                .into_iter()
                .filter(|r| r.path == format!("/v1/subscriptions/{sub}"))
                .collect();
            assert_eq!(reads.len(), 1, "only the tie reads Stripe: {reads:?}");
            stripe.assert_no_violations();
            app.stop().await;
        }
    }
}

#[tokio::test]
async fn without_stripe_a_tie_keeps_the_usual_rule_and_is_counted() {
    let db = test_support::db::TestDb::sqlite();
    // test_settings points Stripe at a closed port.
    let app = spawn_app_with(test_settings(&db.url)).await;
    let updated = event(
        "customer.subscription.updated",
        "evt_tie_u",
        "sub_kept",
        "active",
    );
    let created = event(
        "customer.subscription.created",
        "evt_tie_c",
        "sub_kept",
        "incomplete",
    );
    for e in [&updated, &created] {
        assert_eq!(app.deliver(&e.to_string()).await.status(), 200);
        app.wait_processed(e["id"].as_str().unwrap()).await;
    }
    // The later-processed event wins, as before.
    assert_eq!(status_of(&app, "sub_kept").await, "incomplete");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(
            r#"billing_webhook_same_second_ties_total{type="customer.subscription.created",settled="kept"} 1"#
        ),
        "{metrics}"
    );
    app.stop().await;
}
