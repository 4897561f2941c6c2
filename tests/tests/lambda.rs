//! The `billing-service` binary as AWS Lambda runs it: started with `AWS_LAMBDA_RUNTIME_API`
//! pointing at a stand-in of the Runtime API (`test_support::lambda`), which hands it the events
//! API Gateway's HTTP API, a function URL, EventBridge and CloudFormation send, one at a time, as
//! Lambda does. The Stripe keys come through the stand-in of the secrets extension; users are
//! identified by JWTs; Stripe is the project's double. On PostgreSQL and MariaDB.
//!
//! Proves, in the order a first deploy meets them: before the migrations the API answers 503
//! (JSON) rather than running on an old schema; CloudFormation's custom resource migrates and
//! reports SUCCESS; a signed webhook with a base64 body is stored and processed before its 200,
//! a repeat is a duplicate, a bad signature a 400 (stored nothing); checkout works for a user
//! through a function URL, and the success redirect on a named stage is the same 302 as over
//! plain HTTP; the scheduled run processes stored events still pending and the events Stripe has
//! that never arrived; an unknown event is an invocation error; Delete keeps the database.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use billing_service::clock::unix_now;
use billing_service::configuration::DatabaseSettings;
use billing_service::db::{Db, sql};
use billing_service::tables::events;
use billing_service::webhook::envelope::Envelope;
use billing_stripe::signature;
use e2e::WEBHOOK_SECRET;
use e2e::binaries::{BILLING_SERVICE, binary};
use e2e::store::{count, stored_events};
use e2e::webhook::{event_body, unique_prefix};
use serde_json::{Value, json};
use stripe_wiremock::{Kind, StripeDouble};
use test_support::db::{TestDb, servers_or_skip};
use test_support::jwt::{TestKey, key_set};
use test_support::lambda::events::{self as lambda_events, Front};
use test_support::lambda::{Answer, RuntimeApi};
use test_support::process::{Launch, Process};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ISSUER: &str = "https://auth.example.com/";
const AUDIENCE: &str = "billing";
const FRONTEND: &str = "https://app.example.com";
const STRIPE_SECRET_ID: &str =
    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:billing/stripe";

#[tokio::test]
async fn the_binary_serves_lambda_invocations_end_to_end() {
    for db in servers_or_skip("the_binary_serves_lambda_invocations_end_to_end").await {
        scenario(&db).await;
    }
}

/// An HTTP event's answer: status, headers, body as text (decoded if base64).
struct HttpAnswer {
    status: u16,
    headers: Value,
    body: String,
}

impl HttpAnswer {
    fn of(answer: Answer) -> Self {
        let value = answer.response();
        let raw = value["body"].as_str().unwrap_or_default();
        let body = match value["isBase64Encoded"].as_bool() {
            Some(true) => String::from_utf8(STANDARD.decode(raw).expect("base64")).expect("text"),
            _ => raw.to_owned(),
        };
        Self {
            status: value["statusCode"].as_u64().expect("a status") as u16,
            headers: value["headers"].clone(),
            body,
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {}", self.status, self.body))
    }
}

struct Harness {
    runtime: RuntimeApi,
    process: Process,
}

impl Harness {
    async fn http(&self, event: Value) -> HttpAnswer {
        HttpAnswer::of(self.runtime.invoke(event).await)
    }

    /// A webhook delivery signed with `secret`, its body base64-encoded as API Gateway sends
    /// anything it does not take for text.
    async fn deliver(&self, body: &str, secret: &str) -> HttpAnswer {
        let header = signature::header_value(secret, unix_now(), body.as_bytes());
        self.http(lambda_events::webhook(body.as_bytes(), &header))
            .await
    }
}

async fn scenario(db: &TestDb) {
    let engine = format!("{:?}", db.engine);
    let runtime = RuntimeApi::start().await;
    let stripe = StripeDouble::start().await;
    let catalog = stripe.seed_default_catalog();
    let key = TestKey::ec("lambda-key");
    let jwks = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jwks.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(key_set(&[&key])))
        .mount(&jwks)
        .await;
    runtime.put_secret(
        STRIPE_SECRET_ID,
        &json!({"STRIPE_API_SECRET_KEY": "sk_test_lambda", "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}),
    );

    let program = tokio::task::spawn_blocking(|| binary(BILLING_SERVICE))
        .await
        .expect("the binary is found");
    let jwks_url = format!("{}/jwks.json", jwks.uri());
    let stripe_base = stripe.uri();
    let mut launch = Launch {
        program,
        dir: &std::env::temp_dir(),
        env: runtime.env(),
    };
    for (key, value) in [
        ("DATABASE_URL", db.url.as_str()),
        ("SECRETS_MANAGER_SECRET_IDS", STRIPE_SECRET_ID),
        ("STRIPE_API_BASE", &stripe_base),
        ("AUTH_MODE", "jwt"),
        ("AUTH_JWKS_URL", &jwks_url),
        ("AUTH_ISSUER", ISSUER),
        ("AUTH_AUDIENCE", AUDIENCE),
        ("FRONTEND_URL", FRONTEND),
        (
            "BACKEND_URL",
            "https://abc123.execute-api.eu-west-1.amazonaws.com",
        ),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
    ] {
        launch = launch.env(key, value);
    }
    let process = Process::spawn(launch);
    runtime.wait_for_first_poll(Duration::from_secs(30)).await;
    let lambda = Harness { runtime, process };
    let logs = || lambda.process.logs();

    // Before the migrations: the API refuses to run on the old schema, with a JSON 503.
    let ready = lambda
        .http(lambda_events::get(Front::FunctionUrl, "/status/ready", ""))
        .await;
    assert_eq!(ready.status, 503, "{engine}: {}", ready.body);
    assert_eq!(ready.json()["error"]["code"], "database_unavailable");

    // Deploy: CloudFormation's custom resource migrates and reports to its response URL.
    let answer = lambda
        .runtime
        .invoke(lambda_events::custom_resource(
            "Create",
            &lambda.runtime.response_url("create"),
        ))
        .await;
    assert_eq!(answer, Answer::Response(json!({})), "{}", logs());
    let reported = lambda
        .runtime
        .cloudformation_response("create")
        .expect("a response was PUT");
    assert_eq!(reported["Status"], "SUCCESS", "{reported}");
    assert_eq!(
        reported["PhysicalResourceId"],
        "billing-database-migrations"
    );
    assert_eq!(reported["RequestId"], "cr-Create");
    assert!(
        reported["Data"]["Applied"].as_str().unwrap().contains("V1"),
        "{reported}"
    );
    let service_db = Db::connect(&DatabaseSettings::new(db.url.clone()))
        .await
        .expect("connect");
    let pool = service_db.pool.clone();

    // A signed webhook, base64 body: stored, processed, then answered.
    let prefix = unique_prefix("lambda");
    let id = format!("{prefix}1");
    let body = event_body("customer.created", &id);
    let delivered = lambda.deliver(&body, WEBHOOK_SECRET).await;
    assert_eq!(
        delivered.status,
        200,
        "{engine}: {}\n{}",
        delivered.body,
        logs()
    );
    let answer = delivered.json();
    assert_eq!(answer["duplicate"], false);
    assert_eq!(answer["outcome"], "processed", "{answer}");
    assert_eq!(status_of(&pool, &id).await.as_deref(), Some("processed"));
    let customer = format!("cus_{}", id.trim_start_matches("evt_"));
    let customers: i64 = sqlx::query_scalar(sql::text(
        service_db.engine,
        "SELECT COUNT(*) FROM customers WHERE stripe_customer_id = $1",
    ))
    .bind(&customer)
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!(customers, 1, "{engine}: the handler's row");
    // Stripe delivers it again: a duplicate, nothing to do.
    let again = lambda.deliver(&body, WEBHOOK_SECRET).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["duplicate"], true);
    assert_eq!(again.json()["outcome"], "not_pending");
    // Signed with another secret: refused, not stored.
    let forged_id = format!("{prefix}forged");
    let forged = lambda
        .deliver(
            &event_body("customer.created", &forged_id),
            "whsec_someone_else",
        )
        .await;
    assert_eq!(forged.status, 400, "{}", forged.body);
    assert_eq!(forged.json()["error"]["code"], "bad_signature");
    assert_eq!(status_of(&pool, &forged_id).await, None);

    // Checkout for a user, through a function URL.
    let token = key.sign(&json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": format!("user-{prefix}"),
        "email": "lambda@example.com", "iat": unix_now(), "exp": unix_now() + 300,
    }));
    let checkout = lambda
        .http(lambda_events::http(
            Front::FunctionUrl,
            "POST",
            "/billing/checkout",
            "",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("content-type", "application/json"),
                ("origin", FRONTEND),
            ],
            Some(json!({"price_id": catalog.monthly}).to_string().as_bytes()),
            false,
        ))
        .await;
    assert_eq!(
        checkout.status,
        200,
        "{engine}: {}\n{}",
        checkout.body,
        logs()
    );
    let session = checkout.json()["sessionId"]
        .as_str()
        .expect("a session")
        .to_owned();
    assert!(checkout.json()["url"].as_str().unwrap().starts_with("http"));
    assert_eq!(
        checkout.headers["access-control-allow-origin"], FRONTEND,
        "CORS as over plain HTTP"
    );
    // Without a token: 401, as JSON.
    let anonymous = lambda
        .http(lambda_events::http(
            Front::FunctionUrl,
            "POST",
            "/billing/checkout",
            "",
            &[("content-type", "application/json")],
            Some(b"{}"),
            false,
        ))
        .await;
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
    assert_eq!(anonymous.json()["error"]["code"], "unauthorized");

    // The success redirect, on a named stage (the path carries the stage).
    let success = lambda
        .http(lambda_events::get(
            Front::HttpApi { stage: "prod" },
            "/prod/billing/success",
            &format!("session_id={session}"),
        ))
        .await;
    assert_eq!(success.status, 302, "{}", success.body);
    let location = success.headers["location"].as_str().expect("a Location");
    assert!(
        location.starts_with(&format!("{FRONTEND}/billing/confirmation?payment_status=")),
        "{location}"
    );
    // An unknown path on a stage: the API's JSON 404.
    let missing = lambda
        .http(lambda_events::get(
            Front::HttpApi { stage: "prod" },
            "/prod/billing/nothing",
            "",
        ))
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"]["code"], "no_route");

    // The schedule: events stored but never processed (an invocation cut off after storing),
    // and events Stripe has that never arrived.
    let stored: Vec<(String, String)> = (0..20)
        .map(|i| {
            let id = format!("{prefix}backlog{i}");
            let body = event_body("charge.succeeded", &id);
            (id, body)
        })
        .collect();
    let envelopes: Vec<Envelope> = stored
        .iter()
        .map(|(_, body)| Envelope::parse(body.as_bytes()).expect("an event"))
        .collect();
    let rows: Vec<_> = envelopes
        .iter()
        .zip(&stored)
        .map(|(envelope, (_, body))| envelope.as_new_event(body))
        .collect();
    events::insert(&service_db, &rows).await.expect("stored");
    let missed: Vec<String> = (0..5).map(|i| format!("{prefix}missed{i}")).collect();
    for id in &missed {
        let event: Value = serde_json::from_str(&event_body("invoice.paid", id)).unwrap();
        stripe.insert(Kind::Event, event);
    }
    let summary = lambda
        .runtime
        .invoke(lambda_events::scheduled())
        .await
        .response();
    assert_eq!(summary["processed"], 25, "{engine}: {summary}\n{}", logs());
    assert_eq!(summary["recovered"]["stored"], 5, "{summary}");
    for (id, _) in &stored {
        assert_eq!(
            status_of(&pool, id).await.as_deref(),
            Some("processed"),
            "{id}"
        );
    }
    for id in &missed {
        assert_eq!(
            status_of(&pool, id).await.as_deref(),
            Some("processed"),
            "{id}"
        );
    }

    // Something else entirely: an invocation error, and the function goes on serving.
    let unknown = lambda.runtime.invoke(json!({"Records": []})).await;
    assert!(matches!(unknown, Answer::Error(_)), "{unknown:?}");
    let alive = lambda
        .http(lambda_events::get(
            Front::HttpApi { stage: "$default" },
            "/status/alive",
            "",
        ))
        .await;
    assert_eq!(alive.status, 200, "{}", alive.body);

    // The stack deleted: SUCCESS, and the data stays.
    lambda
        .runtime
        .invoke(lambda_events::custom_resource(
            "Delete",
            &lambda.runtime.response_url("delete"),
        ))
        .await
        .response();
    let reported = lambda.runtime.cloudformation_response("delete").unwrap();
    assert_eq!(reported["Status"], "SUCCESS", "{reported}");
    assert!(count(&pool, "SELECT COUNT(*) FROM stripe_events").await >= 26);
    assert!(lambda.runtime.init_errors().is_empty());
    stripe.assert_no_violations();
    pool.close().await;
}

async fn status_of(pool: &sqlx::AnyPool, id: &str) -> Option<String> {
    stored_events(pool)
        .await
        .into_iter()
        .find(|event| event.id == id)
        .map(|event| event.status)
}
