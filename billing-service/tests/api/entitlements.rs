//! What a user may use: Stripe's entitlement summaries stored per customer, read back through
//! `GET /billing/entitlements` and `GET /billing/entitlements/{feature}`, gated by the
//! subscription's status (past due, unpaid, canceled at period end, canceled).

use billing_service::clock::unix_now;
use billing_stripe::fixtures::EventSpec;
use serde_json::{Value, json};

use stripe_wiremock::{Kind, StripeDouble};

use crate::billing::app_with_stripe;
use crate::helpers::{TestApp, count, event_json, spawn_app};
use test_support::db::every_engine;

impl TestApp {
    async fn get_as(&self, path: &str, user: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .header("x-user-id", user)
            .header("x-user-email", format!("{user}@example.com"))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn features_of(&self, user: &str) -> Value {
        let (status, body) = self.get_as("/billing/entitlements", user).await;
        assert_eq!(status, 200, "{body}");
        body["features"].clone()
    }

    /// Delivers the event and waits until it is processed.
    async fn apply(&self, spec: EventSpec) {
        let id = spec.id.clone();
        assert_eq!(self.deliver(&event_json(&spec)).await.status(), 200);
        let state = self.wait_processed(&id).await;
        assert_eq!(state.status, "processed", "{id}: {:?}", state.last_error);
    }
}

/// Events of one customer (`cus_ent`, user `u-ent`), numbered so that each is newer.
struct Customer {
    created: i64,
    next: u32,
}

impl Customer {
    fn new() -> Self {
        Self {
            created: unix_now() - 1000,
            next: 0,
        }
    }

    fn event(&mut self, event_type: &str) -> EventSpec {
        self.next += 1;
        EventSpec {
            customer: "cus_ent".into(),
            user_id: "u-ent".into(),
            subscription: "sub_ent".into(),
            created: self.created + i64::from(self.next),
            ..EventSpec::new(event_type, &format!("evt_ent_{}", self.next))
        }
    }

    fn summary(&mut self, features: &[&str]) -> EventSpec {
        EventSpec {
            features: features.iter().map(|f| (*f).to_owned()).collect(),
            ..self.event("entitlements.active_entitlement_summary.updated")
        }
    }

    fn subscription(&mut self, status: &str, cancel_at_period_end: bool) -> EventSpec {
        EventSpec {
            status: Some(status.into()),
            cancel_at_period_end,
            ..self.event("customer.subscription.updated")
        }
    }
}

#[tokio::test]
async fn features_follow_the_newest_summary_and_the_subscriptions_status() {
    for db in every_engine().await {
        let app = spawn_app(&db.url).await;
        let mut c = Customer::new();
        // Nothing known of the user yet.
        assert_eq!(app.features_of("u-ent").await, json!([]), "{}", db.engine);

        app.apply(c.event("customer.created")).await;
        app.apply(c.summary(&["reports", "api", "reports"])).await;
        // A summary can come before the subscription's own events: no subscription, no access.
        assert_eq!(app.features_of("u-ent").await, json!([]));
        app.apply(c.subscription("active", false)).await;
        assert_eq!(app.features_of("u-ent").await, json!(["api", "reports"]));
        assert_eq!(
            app.get_as("/billing/entitlements/api", "u-ent").await,
            (200, json!({"feature": "api", "entitled": true}))
        );
        let (status, body) = app.get_as("/billing/entitlements/exports", "u-ent").await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (403, json!("not_entitled"))
        );
        // Another user sees none of it.
        assert_eq!(app.features_of("u-other").await, json!([]));
        assert_eq!(
            app.get_as("/billing/entitlements/api", "u-other").await.0,
            403
        );

        // Trialing: access, and the trial's end is reported.
        app.apply(c.subscription("trialing", false)).await;
        assert_eq!(app.features_of("u-ent").await, json!(["api", "reports"]));
        let (_, subscription) = app.get_as("/billing/subscription", "u-ent").await;
        assert_eq!(subscription["status"], "trialing");
        assert!(subscription["trial_end"].is_i64(), "{subscription}");
        // Past due: Stripe is retrying the payment; access stays.
        app.apply(c.subscription("past_due", false)).await;
        assert_eq!(app.features_of("u-ent").await, json!(["api", "reports"]));
        // Unpaid: the retries are over; access is withheld while Stripe still lists them.
        app.apply(c.subscription("unpaid", false)).await;
        assert_eq!(app.features_of("u-ent").await, json!([]));
        assert_eq!(
            app.get_as("/billing/entitlements/api", "u-ent").await.0,
            403
        );
        // Paid again, then canceled at period end: access until the period ends.
        app.apply(c.subscription("active", true)).await;
        assert_eq!(app.features_of("u-ent").await, json!(["api", "reports"]));
        let (_, subscription) = app.get_as("/billing/subscription", "u-ent").await;
        assert_eq!(subscription["cancel_at_period_end"], json!(true));
        assert!(subscription["cancel_at"].is_i64(), "{subscription}");
        // The period ended: Stripe cancels the subscription.
        app.apply(EventSpec {
            status: Some("canceled".into()),
            ..c.event("customer.subscription.deleted")
        })
        .await;
        assert_eq!(app.features_of("u-ent").await, json!([]));
        app.stop().await;
    }
}

#[tokio::test]
async fn an_older_summary_changes_nothing_and_a_newer_empty_one_removes_everything() {
    for db in every_engine().await {
        let app = spawn_app(&db.url).await;
        let mut c = Customer::new();
        app.apply(c.event("customer.created")).await;
        app.apply(c.subscription("active", false)).await;
        let old = c.summary(&["basic"]);
        let new = c.summary(&["basic", "priority_support"]);
        let newest_empty = c.summary(&[]);
        app.apply(new).await;
        app.apply(old).await;
        assert_eq!(
            app.features_of("u-ent").await,
            json!(["basic", "priority_support"]),
            "{}",
            db.engine
        );
        let created = newest_empty.created;
        app.apply(newest_empty).await;
        assert_eq!(app.features_of("u-ent").await, json!([]));
        assert_eq!(count(&app.db, "SELECT COUNT(*) FROM entitlements").await, 0);
        // Another summary of the same second: which is newer is unknown, and Stripe (unreachable
        // here) cannot say; the later-processed one wins, as with the other objects.
        app.apply(EventSpec {
            created,
            ..c.summary(&["exports"])
        })
        .await;
        assert_eq!(app.features_of("u-ent").await, json!(["exports"]));
        app.stop().await;
    }
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let db = test_support::db::TestDb::sqlite();
    let app = spawn_app(&db.url).await;
    // No user: the auth proxy did not vouch for anyone.
    let anonymous = app.get("/billing/entitlements").await;
    assert_eq!(anonymous.status(), 401);
    let anonymous = app.get("/billing/entitlements/api").await;
    assert_eq!(anonymous.status(), 401);
    let long = "f".repeat(81);
    for bad in [long.as_str(), "a%00b", "a%0Ab"] {
        let (status, body) = app
            .get_as(&format!("/billing/entitlements/{bad}"), "u-1")
            .await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (400, json!("invalid_feature")),
            "{bad}"
        );
    }
    // A summary whose lookup key Stripe could never have made is parked, not retried.
    let mut c = Customer::new();
    let spec = c.summary(&[&"k".repeat(81)]);
    let id = spec.id.clone();
    assert_eq!(app.deliver(&event_json(&spec)).await.status(), 200);
    let state = app.wait_processed(&id).await;
    assert_eq!(state.status, "failed", "{state:?}");
    assert!(
        state.last_error.unwrap_or_default().contains("lookup key"),
        "the error names the problem"
    );
    app.stop().await;
}

/// The catalog with features, as `stripe-setup init` provisions it: every plan has
/// `billing_basic`; the annual plan, a product of its own, also `priority_support`.
struct Plans {
    annual: String,
    configuration: String,
}

fn provision(stripe: &StripeDouble) -> Plans {
    let id = |v: Value| v["id"].as_str().unwrap().to_owned();
    let feature = |key: &str| {
        id(stripe
            .create(Kind::Feature, json!({"lookup_key": key, "name": key}))
            .unwrap())
    };
    let (basic, priority) = (feature("billing_basic"), feature("priority_support"));
    let product = |name: &str, features: &[&str]| {
        let product = id(stripe.create(Kind::Product, json!({"name": name})).unwrap());
        for feature in features {
            stripe
                .create(
                    Kind::ProductFeature,
                    json!({"product": product, "entitlement_feature": feature}),
                )
                .unwrap();
        }
        product
    };
    let main = product("billing", &[&basic]);
    let annual_plan = product("billing Annual Plan", &[&basic, &priority]);
    let price = |product: &str, key: &str, amount: i64, interval: &str| {
        id(stripe
            .create(
                Kind::Price,
                json!({"product": product, "currency": "cad", "unit_amount": amount,
                       "lookup_key": key, "recurring": {"interval": interval}}),
            )
            .unwrap())
    };
    let monthly = price(&main, "billing_monthly", 5499, "month");
    let annual = price(&annual_plan, "billing_annual", 50000, "year");
    // The portal configuration: switching between the two plans, marked as the catalog's.
    let configuration = id(stripe
        .create(
            Kind::BillingPortalConfiguration,
            json!({
                "metadata": {"catalog_key": "portal", "environment": "test"},
                "features": {
                    "subscription_update": {
                        "enabled": true,
                        "default_allowed_updates": ["price"],
                        "proration_behavior": "create_prorations",
                        "products": [
                            {"product": main, "prices": [monthly]},
                            {"product": annual_plan, "prices": [annual]}
                        ]
                    },
                    "subscription_cancel": {"enabled": true, "mode": "at_period_end"},
                    "payment_method_update": {"enabled": true},
                    "invoice_history": {"enabled": true}
                }
            }),
        )
        .unwrap());
    Plans {
        annual,
        configuration,
    }
}

impl TestApp {
    /// Checks out `price` as the user and pays on Stripe's page; returns the events Stripe sends.
    async fn subscribe(&self, stripe: &StripeDouble, user: &str, price: &str) -> Vec<Value> {
        let started: Value = self
            .checkout(user, json!({"price_id": price}))
            .await
            .json()
            .await
            .unwrap();
        stripe
            .api()
            .complete_checkout(started["sessionId"].as_str().unwrap(), "4242424242424242")
            .unwrap()
    }

    /// Delivers what Stripe sent, in order, and waits for each to be processed.
    async fn deliver_all(&self, events: &[Value]) {
        for event in events {
            assert_eq!(self.deliver(&event.to_string()).await.status(), 200);
            let id = event["id"].as_str().unwrap();
            let state = self.wait_processed(id).await;
            assert_eq!(
                state.status, "processed",
                "{}: {:?}",
                event["type"], state.last_error
            );
        }
    }
}

#[tokio::test]
async fn a_plan_switch_changes_the_reported_plan_and_the_features() {
    for db in every_engine().await {
        let stripe = StripeDouble::start().await;
        let plans = provision(&stripe);
        // Summaries carry one entitlement: the rest must be listed from Stripe.
        stripe.set_summary_entitlements_limit(1);
        let app = app_with_stripe(&db, &stripe).await;

        let events = app.subscribe(&stripe, "u-plan", "billing_monthly").await;
        app.deliver_all(&events).await;
        assert_eq!(
            app.features_of("u-plan").await,
            json!(["billing_basic"]),
            "{}",
            db.engine
        );
        let (_, subscription) = app.get_as("/billing/subscription", "u-plan").await;
        assert_eq!(subscription["lookup_key"], "billing_monthly");
        assert_eq!(subscription["status"], "active");
        // Checkout's first invoice was paid (`invoice.paid`).
        assert_eq!(subscription["payment_status"], "paid");
        assert_eq!(subscription["trial_end"], Value::Null);

        // The user switches to the annual plan in the portal.
        let portal = app
            .as_user(reqwest::Method::POST, "/billing/portal", "u-plan")
            .await;
        assert_eq!(portal.status(), 200);
        let session = stripe.objects(Kind::BillingPortalSession)[0].clone();
        // Opened with the catalog's configuration, not the account's default.
        assert_eq!(session["configuration"], plans.configuration.as_str());
        let session = session["id"].as_str().unwrap().to_owned();
        let subscription_id = stripe.objects(Kind::Subscription)[0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let events = stripe
            .api()
            .portal_switch_price(&session, &subscription_id, &plans.annual)
            .unwrap();
        let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert!(
            types.contains(&"entitlements.active_entitlement_summary.updated"),
            "{types:?}"
        );
        app.deliver_all(&events).await;
        assert_eq!(
            app.features_of("u-plan").await,
            json!(["billing_basic", "priority_support"]),
            "{}",
            db.engine
        );
        let (_, subscription) = app.get_as("/billing/subscription", "u-plan").await;
        assert_eq!(subscription["lookup_key"], "billing_annual");
        assert_eq!(
            app.get_as("/billing/entitlements/priority_support", "u-plan")
                .await
                .0,
            200
        );
        // The summary held one of two: the service read the rest from Stripe.
        let listed = stripe
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path == "/v1/entitlements/active_entitlements")
            .count();
        assert!(listed >= 1, "the whole list was never read");
        stripe.assert_no_violations();
        app.stop().await;
    }
}

#[tokio::test]
async fn a_list_stripe_cannot_give_now_is_retried_never_half_written() {
    let db = test_support::db::TestDb::sqlite();
    let stripe = StripeDouble::start().await;
    provision(&stripe);
    stripe.set_summary_entitlements_limit(1);
    let app = app_with_stripe(&db, &stripe).await;
    let events = app.subscribe(&stripe, "u-retry", "billing_annual").await;
    let (summaries, others): (Vec<Value>, Vec<Value>) = events
        .into_iter()
        .partition(|e| e["type"] == "entitlements.active_entitlement_summary.updated");
    app.deliver_all(&others).await;
    let [summary] = summaries.as_slice() else {
        panic!("one summary: {summaries:?}")
    };
    assert_eq!(summary["data"]["object"]["entitlements"]["has_more"], true);

    // Stripe fails the list twice: those attempts fail, nothing is written, the event waits.
    stripe.fail_next("GET", "/v1/entitlements/active_entitlements", 500, 2);
    assert_eq!(app.deliver(&summary.to_string()).await.status(), 200);
    let id = summary["id"].as_str().unwrap();
    let state = crate::helpers::wait_for_event(&app.db, id, |s| s.attempts >= 1).await;
    assert_eq!(state.status, "pending", "{state:?}");
    assert_eq!(app.features_of("u-retry").await, json!([]));
    assert_eq!(count(&app.db, "SELECT COUNT(*) FROM entitlements").await, 0);
    // The third attempt reads the whole list.
    let state = crate::helpers::wait_for_event(&app.db, id, |s| s.status != "pending").await;
    assert_eq!(
        (state.status.as_str(), state.attempts),
        ("processed", 3),
        "{state:?}"
    );
    assert_eq!(
        app.features_of("u-retry").await,
        json!(["billing_basic", "priority_support"])
    );
    stripe.assert_no_violations();
    app.stop().await;
}
