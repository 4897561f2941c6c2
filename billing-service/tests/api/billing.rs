//! The billing API the frontend uses, against a stateful Stripe double that refuses anything
//! the real API would refuse: products, checkout, the redirects back, the subscription and the
//! portal, with each bad input, Stripe failing, and Stripe too slow.

use billing_service::clock::unix_now;
use std::time::{Duration, Instant};

use billing_stripe::fixtures::EventSpec;
use serde_json::{Value, json};
use stripe_wiremock::{Kind, RecordedRequest, StripeDouble};

use crate::helpers::{TestApp, event_json, spawn_app_with, test_settings};
use test_support::db::{TestDb, every_engine};

const FRONTEND: &str = "https://app.example.com";
const BACKEND: &str = "https://api.example.com";

/// The catalog as `stripe-setup init` provisions it, plus what must never be sold: a one-time
/// price of the same product, a price of another product, an archived price.
struct Seeded {
    monthly: String,
    daily: String,
    annual: String,
    one_time: String,
    foreign: String,
}

fn seed(stripe: &StripeDouble) -> Seeded {
    let catalog = stripe.seed_default_catalog();
    let price = |params: Value| {
        stripe.create(Kind::Price, params).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let one_time = price(
        json!({"product": catalog.product, "currency": "cad", "unit_amount": 999, "nickname": "Setup fee"}),
    );
    let archived = price(
        json!({"product": catalog.product, "currency": "cad", "unit_amount": 100, "recurring": {"interval": "month"}}),
    );
    stripe.patch(Kind::Price, &archived, json!({"active": false}));
    let other = stripe
        .create(Kind::Product, json!({"name": "other"}))
        .unwrap()["id"]
        .clone();
    let foreign = price(
        json!({"product": other, "currency": "cad", "unit_amount": 1, "recurring": {"interval": "month"}}),
    );
    Seeded {
        monthly: catalog.monthly,
        daily: catalog.daily,
        annual: catalog.annual,
        one_time,
        foreign,
    }
}

pub(crate) async fn app_with_stripe(db: &TestDb, stripe: &StripeDouble) -> TestApp {
    let mut settings = test_settings(&db.url);
    settings.stripe.api_base = url::Url::parse(&stripe.uri()).unwrap();
    settings.stripe.timeout = Duration::from_secs(1);
    settings.frontend_url = url::Url::parse(FRONTEND).unwrap();
    settings.backend_url = url::Url::parse(BACKEND).unwrap();
    spawn_app_with(settings).await
}

impl TestApp {
    pub(crate) async fn checkout(&self, user: &str, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}/billing/checkout", self.address))
            .header("x-user-id", user)
            .header("x-user-email", format!("{user}@example.com"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// A request as the user, with a JSON body `{}` on a POST (as the frontend sends it).
    pub(crate) async fn as_user(
        &self,
        method: reqwest::Method,
        path: &str,
        user: &str,
    ) -> reqwest::Response {
        let post = method == reqwest::Method::POST;
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address))
            .header("x-user-id", user)
            .header("x-user-email", format!("{user}@example.com"));
        if post {
            request = request.json(&json!({}));
        }
        request.send().await.unwrap()
    }

    /// The `Location` of a redirect for a signed-in user.
    async fn redirect_as(&self, path: &str, user: &str) -> String {
        self.location(path, Some(user)).await.1
    }

    /// The `Location` of a redirect, without following it.
    async fn redirect(&self, path: &str) -> (u16, String) {
        self.location(path, None).await
    }

    async fn location(&self, path: &str, user: Option<&str>) -> (u16, String) {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut request = client.get(format!("{}{path}", self.address));
        if let Some(user) = user {
            request = request
                .header("x-user-id", user)
                .header("x-user-email", format!("{user}@example.com"));
        }
        let response = request.send().await.unwrap();
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        (response.status().as_u16(), location)
    }
}

fn posts_to<'a>(stripe: &'a [RecordedRequest], path: &str) -> Vec<&'a RecordedRequest> {
    stripe
        .iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .collect()
}

async fn error_code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn products_lists_the_catalog_prices_in_order_and_caches_them() {
    for db in every_engine().await {
        let stripe = StripeDouble::start().await;
        let seeded = seed(&stripe);
        let app = app_with_stripe(&db, &stripe).await;

        let response = app.get("/billing/products").await;
        assert_eq!(response.status(), 200, "{:?}", db.engine);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let products: Value = response.json().await.unwrap();
        assert_eq!(
            products,
            json!([
                {"id": seeded.daily, "nickname": "Daily Plan", "interval": "day", "type": "recurring",
                 "price": "CAD $2.99/day", "unit_amount": 299, "currency": "cad", "lookup_key": "billing_daily"},
                {"id": seeded.monthly, "nickname": "Monthly Plan", "interval": "month", "type": "recurring",
                 "price": "CAD $54.99/month", "unit_amount": 5499, "currency": "cad", "lookup_key": "billing_monthly"},
                {"id": seeded.annual, "nickname": "Annual Plan", "interval": "year", "type": "recurring",
                 "price": "CAD $500.00/year", "unit_amount": 50000, "currency": "cad", "lookup_key": "billing_annual"},
            ])
        );
        let reads = stripe.requests().len();
        assert_eq!(app.get("/billing/products").await.status(), 200);
        assert_eq!(
            stripe.requests().len(),
            reads,
            "second read served from the cache"
        );
        stripe.assert_no_violations();
        app.stop().await;
    }
}

/// The reads of the catalog's prices by lookup key: one per read of the whole list.
fn list_reads(stripe: &StripeDouble) -> usize {
    stripe
        .requests()
        .iter()
        .filter(|r| {
            r.method == "GET" && r.path == "/v1/prices" && r.params.get("lookup_keys").is_some()
        })
        .count()
}

#[tokio::test]
async fn a_cold_burst_and_made_up_prices_cost_stripe_one_read_each() {
    let db = TestDb::sqlite();
    let stripe = StripeDouble::start().await;
    seed(&stripe);
    let app = app_with_stripe(&db, &stripe).await;

    // 20 requests at once on an empty cache share one read, and none waits on a lock for it.
    let burst: Vec<_> = (0..20).map(|_| app.get("/billing/products")).collect();
    for response in futures_util::future::join_all(burst).await {
        assert_eq!(response.status(), 200);
    }
    assert_eq!(list_reads(&stripe), 1, "one read for the whole burst");

    // Unknown prices, as a client making them up would send them: the list was just read, so
    // none of them makes the service ask Stripe again.
    let users: Vec<String> = (0..30).map(|i| format!("prober-{i}")).collect();
    let unknown: Vec<_> = users
        .iter()
        .map(|user| app.checkout(user, json!({"price_id": format!("price_madeup_{user}")})))
        .collect();
    for response in futures_util::future::join_all(unknown).await {
        assert_eq!(
            error_code(response).await,
            (400, "unknown_price".to_owned())
        );
    }
    assert_eq!(list_reads(&stripe), 1, "made-up prices cost no Stripe read");
    stripe.assert_no_violations();
    app.stop().await;
}

#[tokio::test]
async fn products_reads_every_page() {
    let db = TestDb::sqlite();
    let stripe = StripeDouble::start().await;
    let seeded = seed(&stripe);
    let product = stripe.objects(Kind::Price)[0]["product"].clone();
    for amount in 1..=120 {
        stripe
            .create(
                Kind::Price,
                json!({"product": product, "currency": "cad", "unit_amount": 10_000 + amount, "recurring": {"interval": "month"}}),
            )
            .unwrap();
    }
    let app = app_with_stripe(&db, &stripe).await;
    let products: Vec<Value> = app.get("/billing/products").await.json().await.unwrap();
    assert_eq!(products.len(), 123);
    assert_eq!(products[0]["id"], seeded.daily);
    let pages = stripe
        .requests()
        .iter()
        .filter(|r| {
            r.method == "GET" && r.path == "/v1/prices" && r.params.get("product").is_some()
        })
        .count();
    assert_eq!(pages, 2, "100 per page: two pages for 123 prices");
    stripe.assert_no_violations();
    app.stop().await;
}

#[tokio::test]
async fn checkout_opens_a_subscription_session_for_the_user() {
    for db in every_engine().await {
        let stripe = StripeDouble::start().await;
        let seeded = seed(&stripe);
        let app = app_with_stripe(&db, &stripe).await;

        let response = app
            .checkout("user-1", json!({"price_id": "billing_monthly"}))
            .await;
        assert_eq!(response.status(), 200, "{:?}", db.engine);
        let reply: Value = response.json().await.unwrap();
        let session_id = reply["sessionId"].as_str().unwrap().to_owned();
        assert!(session_id.starts_with("cs_test_"));
        assert!(
            reply["url"]
                .as_str()
                .unwrap()
                .starts_with("https://checkout.stripe.com/")
        );

        let requests = stripe.requests();
        let customers = posts_to(&requests, "/v1/customers");
        assert_eq!(customers.len(), 1);
        assert_eq!(
            customers[0].params,
            json!({"email": "user-1@example.com", "metadata": {"user_id": "user-1"}})
        );
        assert!(customers[0].idempotency_key().is_some());
        let customer_id = stripe.objects(Kind::Customer)[0]["id"]
            .as_str()
            .unwrap()
            .to_owned();

        let sessions = posts_to(&requests, "/v1/checkout/sessions");
        assert_eq!(sessions.len(), 1);
        assert_eq!(
            sessions[0].params,
            json!({
                "mode": "subscription",
                "customer": customer_id,
                "client_reference_id": "user-1",
                "line_items": [{"price": seeded.monthly, "quantity": 1}],
                "subscription_data": {"metadata": {"user_id": "user-1"}},
                "metadata": {"user_id": "user-1"},
                "success_url": format!("{BACKEND}/billing/success?session_id={{CHECKOUT_SESSION_ID}}"),
                "cancel_url": format!("{BACKEND}/billing/cancel?session_id={{CHECKOUT_SESSION_ID}}"),
            })
        );
        assert!(sessions[0].idempotency_key().is_some());
        assert!(
            sessions[0]
                .header("content-type")
                .unwrap()
                .starts_with("application/x-www-form-urlencoded")
        );

        let recorded: String =
            sqlx::query_scalar("SELECT stripe_customer_id FROM customers WHERE user_id = 'user-1'")
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
        assert_eq!(recorded, customer_id);
        stripe.assert_no_violations();
        app.stop().await;
    }
}

#[tokio::test]
async fn a_returning_user_keeps_one_customer_and_a_double_click_opens_one_session() {
    for db in every_engine().await {
        let stripe = StripeDouble::start().await;
        let seeded = seed(&stripe);
        let app = app_with_stripe(&db, &stripe).await;

        let first: Value = app
            .checkout("u2", json!({"price_id": seeded.monthly}))
            .await
            .json()
            .await
            .unwrap();
        let again: Value = app
            .checkout("u2", json!({"price_id": seeded.monthly}))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            first["sessionId"], again["sessionId"],
            "double click on {}",
            db.engine
        );
        let annual: Value = app
            .checkout("u2", json!({"price_id": "billing_annual"}))
            .await
            .json()
            .await
            .unwrap();
        assert_ne!(annual["sessionId"], first["sessionId"]);

        assert_eq!(
            stripe.objects(Kind::Customer).len(),
            1,
            "one customer per user"
        );
        assert_eq!(stripe.objects(Kind::CheckoutSession).len(), 2);
        let requests = stripe.requests();
        let sessions = posts_to(&requests, "/v1/checkout/sessions");
        assert_eq!(sessions[0].idempotency_key(), sessions[1].idempotency_key());
        assert_ne!(sessions[0].idempotency_key(), sessions[2].idempotency_key());
        let customers: Vec<&Value> = sessions.iter().map(|s| &s.params["customer"]).collect();
        assert!(customers.iter().all(|c| *c == customers[0]));

        // Another user gets another customer.
        assert_eq!(
            app.checkout("u3", json!({"price_id": seeded.daily}))
                .await
                .status(),
            200
        );
        assert_eq!(stripe.objects(Kind::Customer).len(), 2);
        stripe.assert_no_violations();
        app.stop().await;
    }
}

#[tokio::test]
async fn only_a_json_body_is_taken_so_no_cross_site_form_can_post() {
    let db = TestDb::sqlite();
    let stripe = StripeDouble::start().await;
    seed(&stripe);
    let app = app_with_stripe(&db, &stripe).await;
    let post = |path: &str, content_type: &'static str, body: &'static str| {
        app.client
            .post(format!("{}{path}", app.address))
            .header("x-user-id", "u4")
            .header("x-user-email", "u4@example.com")
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    // What an HTML form on another site can send, the JSON-looking text/plain trick included.
    for (content_type, body) in [
        (
            "application/x-www-form-urlencoded",
            "price_id=billing_daily",
        ),
        ("text/plain", r#"{"price_id": "billing_daily", "x": "="}"#),
        ("multipart/form-data; boundary=x", "--x--"),
    ] {
        for path in ["/billing/checkout", "/billing/portal"] {
            let response = post(path, content_type, body).await.unwrap();
            assert_eq!(
                error_code(response).await,
                (415, "unsupported_media_type".to_owned()),
                "{path} {content_type}"
            );
        }
    }
    // The query string no longer names a price.
    let response = post(
        "/billing/checkout?price_id=billing_daily",
        "application/json",
        "",
    )
    .await
    .unwrap();
    assert_eq!(error_code(response).await, (400, "invalid_json".to_owned()));
    let response = post("/billing/portal", "application/json", "[]")
        .await
        .unwrap();
    assert_eq!(error_code(response).await, (400, "invalid_json".to_owned()));
    assert!(stripe.posts().is_empty(), "nothing reached Stripe");
    let response = post(
        "/billing/checkout",
        "application/json; charset=utf-8",
        r#"{"price_id": "billing_daily"}"#,
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    stripe.assert_no_violations();
    app.stop().await;
}

#[tokio::test]
async fn bad_checkouts_are_refused_before_anything_is_written() {
    for db in every_engine().await {
        let stripe = StripeDouble::start().await;
        let seeded = seed(&stripe);
        let app = app_with_stripe(&db, &stripe).await;
        let url = format!("{}/billing/checkout", app.address);
        let body = json!({"price_id": "billing_monthly"});

        let no_headers = app.client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(error_code(no_headers).await, (401, "unauthorized".into()));
        let empty_user = app
            .client
            .post(&url)
            .header("x-user-id", "")
            .header("x-user-email", "a@example.com")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(empty_user).await, (401, "unauthorized".into()));
        let no_email = app
            .client
            .post(&url)
            .header("x-user-id", "u")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(no_email).await.0, 401);
        let bad_email = app
            .client
            .post(&url)
            .header("x-user-id", "u")
            .header("x-user-email", "not-an-email")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(bad_email).await, (400, "invalid_email".into()));
        let malformed = app
            .client
            .post(&url)
            .header("x-user-id", "u")
            .header("x-user-email", "u@example.com")
            .header("content-type", "application/json")
            .body("{\"price_id\": ")
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(malformed).await, (400, "invalid_json".into()));
        for price in [
            "price_unknown",
            "no_such_lookup_key",
            &seeded.foreign,
            &seeded.one_time,
        ] {
            let response = app.checkout("u", json!({"price_id": price})).await;
            assert_eq!(
                error_code(response).await,
                (400, "unknown_price".into()),
                "{price}"
            );
        }
        let missing = app.checkout("u", json!({})).await;
        assert_eq!(error_code(missing).await, (400, "invalid_json".into()));
        let huge = app
            .checkout("u", json!({"price_id": "x".repeat(20 * 1024)}))
            .await;
        assert_eq!(error_code(huge).await, (413, "payload_too_large".into()));

        assert!(stripe.posts().is_empty(), "no write reached Stripe");
        assert_eq!(
            crate::helpers::count(&app.db, "SELECT COUNT(*) FROM customers").await,
            0
        );
        stripe.assert_no_violations();
        app.stop().await;
    }
}

#[tokio::test]
async fn a_subscriber_is_sent_to_the_portal_instead_of_a_second_subscription() {
    for db in every_engine().await {
        let stripe = StripeDouble::start().await;
        seed(&stripe);
        let app = app_with_stripe(&db, &stripe).await;

        let no_account = app
            .as_user(reqwest::Method::POST, "/billing/portal", "u5")
            .await;
        assert_eq!(error_code(no_account).await.0, 404);
        let none = app
            .as_user(reqwest::Method::GET, "/billing/subscription", "u5")
            .await;
        assert_eq!(error_code(none).await.0, 404);

        assert_eq!(
            app.checkout("u5", json!({"price_id": "billing_monthly"}))
                .await
                .status(),
            200
        );
        let customer = stripe.objects(Kind::Customer)[0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        // Stripe tells us the subscription started.
        let event = event_json(&EventSpec {
            customer: customer.clone(),
            user_id: "u5".into(),
            status: Some("active".into()),
            price_id: "price_x".into(),
            current_period_end: 1_900_000_000,
            created: unix_now(),
            ..EventSpec::new("customer.subscription.created", "evt_sub_u5")
        });
        assert_eq!(app.deliver(&event).await.status(), 200);
        app.wait_processed("evt_sub_u5").await;

        let current: Value = app
            .as_user(reqwest::Method::GET, "/billing/subscription", "u5")
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            current,
            json!({
                "status": "active", "price_id": "price_x", "lookup_key": "billing_monthly",
                "current_period_end": 1_900_000_000i64, "cancel_at_period_end": false,
                "cancel_at": null, "trial_end": null, "payment_status": null
            }),
            "{}",
            db.engine
        );

        let second = app
            .checkout("u5", json!({"price_id": "billing_annual"}))
            .await;
        assert_eq!(error_code(second).await, (409, "already_subscribed".into()));

        // Stripe refusing (here: the account's portal not set up) is not the user's to read.
        stripe.fail_next("POST", "/v1/billing_portal/sessions", 400, 1);
        let refused = app
            .as_user(reqwest::Method::POST, "/billing/portal", "u5")
            .await;
        assert_eq!(refused.status(), 400);
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "stripe_rejected");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            !message.contains("Injected fault"),
            "Stripe's words leaked: {message}"
        );
        let portal = app
            .as_user(reqwest::Method::POST, "/billing/portal", "u5")
            .await;
        assert_eq!(portal.status(), 200);
        let portal: Value = portal.json().await.unwrap();
        assert!(
            portal["url"]
                .as_str()
                .unwrap()
                .starts_with("https://billing.stripe.com/")
        );
        let requests = stripe.requests();
        let portal_posts = posts_to(&requests, "/v1/billing_portal/sessions");
        assert_eq!(
            portal_posts[0].params,
            json!({"customer": customer, "return_url": format!("{FRONTEND}/")})
        );
        assert!(portal_posts[0].idempotency_key().is_some());
        stripe.assert_no_violations();
        app.stop().await;
    }
}

#[tokio::test]
async fn stripe_rate_limits_are_retried_with_the_same_key() {
    let db = TestDb::sqlite();
    let stripe = StripeDouble::start().await;
    seed(&stripe);
    let app = app_with_stripe(&db, &stripe).await;
    stripe.fail_next("POST", "/v1/checkout/sessions", 429, 2);
    let response = app
        .checkout("u6", json!({"price_id": "billing_monthly"}))
        .await;
    assert_eq!(response.status(), 200);
    let requests = stripe.requests();
    let attempts = posts_to(&requests, "/v1/checkout/sessions");
    assert_eq!(
        attempts.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 429, 200]
    );
    assert!(
        attempts
            .iter()
            .all(|r| r.idempotency_key() == attempts[0].idempotency_key())
    );
    assert_eq!(stripe.objects(Kind::CheckoutSession).len(), 1);
    stripe.assert_no_violations();
    app.stop().await;
}

#[tokio::test]
async fn stripe_down_or_slow_is_a_502_and_writes_nothing() {
    for db in every_engine().await {
        let stripe = StripeDouble::start().await;
        seed(&stripe);
        let app = app_with_stripe(&db, &stripe).await;
        // Fill the product cache first, so the failures below hit the writes.
        assert_eq!(app.get("/billing/products").await.status(), 200);

        stripe.fail_next("POST", "/v1/customers", 500, 10);
        let response = app
            .checkout("u7", json!({"price_id": "billing_monthly"}))
            .await;
        let (status, code) = error_code(response).await;
        assert_eq!(
            (status, code.as_str()),
            (502, "stripe_unavailable"),
            "{}",
            db.engine
        );
        assert_eq!(
            crate::helpers::count(&app.db, "SELECT COUNT(*) FROM customers").await,
            0
        );

        stripe.set_delay(Some(Duration::from_secs(3)));
        let started = Instant::now();
        let response = app
            .checkout("u8", json!({"price_id": "billing_monthly"}))
            .await;
        assert_eq!(error_code(response).await.0, 502);
        // 1 s timeout per attempt, a bounded number of attempts with short backoff.
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            crate::helpers::count(&app.db, "SELECT COUNT(*) FROM customers").await,
            0
        );
        stripe.set_delay(None);
        stripe.assert_no_violations();
        app.stop().await;
    }
}

#[tokio::test]
async fn the_browser_comes_back_to_the_frontend_confirmation_page() {
    let db = TestDb::sqlite();
    let stripe = StripeDouble::start().await;
    seed(&stripe);
    let app = app_with_stripe(&db, &stripe).await;
    let reply: Value = app
        .checkout("u9", json!({"price_id": "billing_monthly"}))
        .await
        .json()
        .await
        .unwrap();
    let session = reply["sessionId"].as_str().unwrap();
    stripe.patch(
        Kind::CheckoutSession,
        session,
        json!({"payment_status": "paid", "status": "complete"}),
    );
    let customer = stripe.objects(Kind::Customer)[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Anyone with the session id (it is in browser histories and logs) learns only the outcome.
    let (status, location) = app
        .redirect(&format!("/billing/success?session_id={session}"))
        .await;
    assert_eq!(status, 302);
    assert_eq!(
        location,
        format!("{FRONTEND}/billing/confirmation?payment_status=paid&amount=5499&currency=cad")
    );
    // The user the session belongs to also gets their customer and reference; another user not.
    let owner = app
        .redirect_as(&format!("/billing/success?session_id={session}"), "u9")
        .await;
    assert_eq!(
        owner,
        format!(
            "{FRONTEND}/billing/confirmation?payment_status=paid&amount=5499&currency=cad&customer={customer}&reference=u9"
        )
    );
    let other = app
        .redirect_as(&format!("/billing/success?session_id={session}"), "u10")
        .await;
    assert!(
        !other.contains("customer=") && !other.contains("reference="),
        "{other}"
    );

    let unknown = app
        .redirect("/billing/success?session_id=cs_test_nope")
        .await;
    assert_eq!(
        unknown.1,
        format!("{FRONTEND}/billing/confirmation?payment_status=unknown")
    );
    let reads = stripe.requests().len();
    for hostile in [
        "",
        "?session_id=https://evil.example",
        "?session_id=..%2F..%2Fx",
    ] {
        let (_, location) = app.redirect(&format!("/billing/success{hostile}")).await;
        assert_eq!(
            location,
            format!("{FRONTEND}/billing/confirmation?payment_status=unknown")
        );
    }
    assert_eq!(
        stripe.requests().len(),
        reads,
        "malformed ids never reach Stripe"
    );

    stripe.fail_next("GET", &format!("/v1/checkout/sessions/{session}"), 500, 10);
    let down = app
        .redirect(&format!("/billing/success?session_id={session}"))
        .await;
    assert_eq!(
        down.1,
        format!("{FRONTEND}/billing/confirmation?payment_status=unknown")
    );

    let (status, location) = app
        .redirect(&format!("/billing/cancel?session_id={session}"))
        .await;
    assert_eq!(status, 302);
    assert_eq!(
        location,
        format!("{FRONTEND}/billing/confirmation?payment_status=canceled&session_id={session}")
    );
    stripe.assert_no_violations();
    app.stop().await;
}

#[tokio::test]
async fn cors_lets_the_frontend_call_with_credentials() {
    let db = TestDb::sqlite();
    let stripe = StripeDouble::start().await;
    let app = app_with_stripe(&db, &stripe).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/billing/checkout", app.address),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight(FRONTEND).await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], FRONTEND);
    assert_eq!(
        allowed.headers()["access-control-allow-credentials"],
        "true"
    );
    let other = preflight("https://evil.example").await.unwrap();
    // The allowed origin is fixed, so a browser on another origin sees a mismatch and refuses.
    let echoed = other.headers().get("access-control-allow-origin");
    assert!(echoed.is_none_or(|o| o == FRONTEND), "{echoed:?}");
    app.stop().await;
}
