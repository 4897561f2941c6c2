//! The Lambda mode through the library: `lambda::Function::handle` given the events Lambda
//! would pass, with handlers of the test's own, on PostgreSQL and MariaDB (Lambda refuses
//! SQLite). The binary under a stand-in Runtime API is `tests/tests/lambda.rs`.
//!
//! Proves: a webhook whose processing fails is answered 500 with the event stored (pending
//! with its error, or parked when retrying cannot help), and Stripe's next delivery of it
//! processes it; what the deployment gets wrong (SQLite, trusted headers, a secret that cannot
//! be read) is answered with a JSON error of the right status, never a panic, and a transient
//! failure is retried by the next invocation.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use billing_service::clock::unix_now;
use billing_service::lambda::{Function, Variables};
use billing_service::webhook::handlers::{Event, EventHandler, HandlerError, Handlers};
use billing_stripe::fixtures::EventSpec;
use billing_stripe::signature;
use lambda_http::Context;
use serde_json::{Value, json};
use sqlx::AnyConnection;
use test_support::db::{TestDb, servers_or_skip};
use test_support::lambda::events::{self, Front};

use crate::helpers::{WEBHOOK_SECRET, connect_migrated, event_json, event_state};

/// Fails the first `failures` attempts of every event, with `Invalid` when `invalid`.
struct Failing {
    failures: u32,
    invalid: bool,
    calls: Arc<AtomicU32>,
}

#[async_trait::async_trait]
impl EventHandler for Failing {
    async fn handle(&self, _: &mut AnyConnection, event: &Event) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if event.attempt > self.failures {
            return Ok(());
        }
        match self.invalid {
            true => Err(HandlerError::Invalid(
                "this event can never be handled".into(),
            )),
            false => Err(HandlerError::Other(anyhow::anyhow!("the ledger is busy"))),
        }
    }
}

fn variables(pairs: &[(&str, &str)]) -> Variables {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Box::new(move |key: &str| map.get(key).cloned())
}

fn settings(db: &TestDb) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", db.url.clone()),
        ("STRIPE_API_SECRET_KEY", "sk_test_lambda".into()),
        ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET.into()),
        ("STRIPE_API_BASE", "http://127.0.0.1:9".into()),
        ("AUTH_MODE", "jwt".into()),
        ("AUTH_JWKS_URL", "http://127.0.0.1:9/jwks.json".into()),
        ("AUTH_ISSUER", "https://auth.example.com/".into()),
        ("AUTH_AUDIENCE", "billing".into()),
    ]
}

fn function(pairs: &[(&'static str, String)], handlers: Handlers) -> Function {
    let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Function::new(variables(&borrowed), handlers)
}

fn delivery(body: &str) -> String {
    signed_delivery(body, WEBHOOK_SECRET)
}

fn signed_delivery(body: &str, secret: &str) -> String {
    let header = signature::header_value(secret, unix_now(), body.as_bytes());
    events::webhook(body.as_bytes(), &header).to_string()
}

/// Status and JSON body of an HTTP event's answer.
async fn http(function: &Function, event: &str) -> (u16, Value) {
    let answer = function
        .handle(event, Context::default())
        .await
        .expect("an HTTP event is always answered");
    let body = answer["body"].as_str().unwrap_or_default();
    let body = match answer["isBase64Encoded"].as_bool() {
        Some(true) => String::from_utf8(STANDARD.decode(body).unwrap()).unwrap(),
        _ => body.to_owned(),
    };
    let status = answer["statusCode"].as_u64().unwrap() as u16;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_failed_processing_is_a_500_with_the_event_stored_and_the_next_delivery_processes_it() {
    for test_db in servers_or_skip("lambda_processing_failures").await {
        let db = connect_migrated(&test_db.url).await;
        let calls = Arc::new(AtomicU32::new(0));
        let handlers = Handlers::builtin().on(
            "customer.created",
            Failing {
                failures: 1,
                invalid: false,
                calls: calls.clone(),
            },
        );
        let function = function(&settings(&test_db), handlers);
        let body = event_json(&EventSpec::new("customer.created", "evt_lambda_retry"));

        let (status, answer) = http(&function, &delivery(&body)).await;
        assert_eq!(status, 500, "{:?}: {answer}", test_db.engine);
        assert_eq!(answer["error"]["code"], "processing_failed");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("retried")
        );
        let stored = event_state(&db, "evt_lambda_retry").await.expect("stored");
        assert_eq!((stored.status.as_str(), stored.attempts), ("pending", 1));
        assert!(stored.last_error.unwrap().contains("the ledger is busy"));
        // The built-in handler's writes were rolled back with the failed attempt.
        let customers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM customers")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(customers, 0);

        // Stripe's retry: a duplicate, processed now (the backoff is the scheduled run's).
        let (status, answer) = http(&function, &delivery(&body)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["duplicate"], true);
        assert_eq!(answer["outcome"], "processed");
        let stored = event_state(&db, "evt_lambda_retry").await.unwrap();
        assert_eq!((stored.status.as_str(), stored.attempts), ("processed", 2));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        db.pool.close().await;
    }
}

#[tokio::test]
async fn an_event_that_can_never_be_handled_is_parked_and_answered_500_once() {
    for test_db in servers_or_skip("lambda_parked").await {
        let db = connect_migrated(&test_db.url).await;
        let handlers = Handlers::builtin().on(
            "customer.created",
            Failing {
                failures: u32::MAX,
                invalid: true,
                calls: Arc::default(),
            },
        );
        let function = function(&settings(&test_db), handlers);
        let body = event_json(&EventSpec::new("customer.created", "evt_lambda_parked"));
        let (status, answer) = http(&function, &delivery(&body)).await;
        assert_eq!(status, 500, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("parked")
        );
        let stored = event_state(&db, "evt_lambda_parked").await.unwrap();
        assert_eq!(stored.status, "failed");
        // Parked: retrying cannot help, so Stripe's next delivery is acknowledged.
        let (status, answer) = http(&function, &delivery(&body)).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["outcome"], "not_pending");
        db.pool.close().await;
    }
}

#[tokio::test]
async fn what_the_deployment_gets_wrong_is_a_json_error_and_transient_failures_are_retried() {
    for test_db in servers_or_skip("lambda_misconfigured").await {
        connect_migrated(&test_db.url).await.pool.close().await;
        let alive = events::get(Front::FunctionUrl, "/status/alive", "").to_string();
        let scheduled = events::scheduled().to_string();

        let mut trusting = settings(&test_db);
        trusting.retain(|(k, _)| !k.starts_with("AUTH_"));
        trusting.push(("AUTH_MODE", "trusted-headers".into()));
        let mut sqlite = settings(&test_db);
        sqlite.retain(|(k, _)| *k != "DATABASE_URL");
        sqlite.push(("DATABASE_URL", "sqlite://billing-lambda.db".into()));
        let mut no_token = settings(&test_db);
        no_token.push(("SECRETS_MANAGER_SECRET_IDS", "billing/stripe".into()));
        for (pairs, why) in [
            (
                trusting,
                "AUTH_MODE=trusted-headers cannot be used in Lambda",
            ),
            (sqlite, "a SQLite file would be lost"),
            (no_token, "AWS_SESSION_TOKEN is unset"),
        ] {
            let function = function(&pairs, Handlers::builtin());
            let (status, answer) = http(&function, &alive).await;
            assert_eq!(status, 500, "{why}: {answer}");
            assert_eq!(answer["error"]["code"], "internal");
            let error = function
                .handle(&scheduled, Context::default())
                .await
                .expect_err("the scheduled run fails");
            assert!(error.to_string().contains(why), "{error}");
        }

        // The secrets extension not listening (yet): 503, and the next invocation tries again.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port().to_string();
        drop(closed);
        let mut unreachable = settings(&test_db);
        unreachable.retain(|(k, _)| !k.starts_with("STRIPE_"));
        unreachable.extend([
            ("SECRETS_MANAGER_SECRET_IDS", "billing/stripe".to_owned()),
            ("AWS_SESSION_TOKEN", "token".to_owned()),
            ("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", port.clone()),
        ]);
        let function = function(&unreachable, Handlers::builtin());
        let (status, answer) = http(&function, &alive).await;
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["error"]["code"], "database_unavailable");
        // The extension comes up on that port: the next invocation builds the function.
        let runtime = test_support::lambda::RuntimeApi::start_on(&port, "token").await;
        runtime.put_secret(
            "billing/stripe",
            &json!({"STRIPE_API_SECRET_KEY": "sk_test_1", "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}),
        );
        let (status, answer) = http(&function, &alive).await;
        assert_eq!((status, answer), (200, json!({"alive": "OK"})));
    }
}

#[tokio::test]
async fn a_rotated_secret_reaches_the_running_instance_and_a_bad_one_leaves_the_old_in_use() {
    for test_db in servers_or_skip("lambda_secret_rotation").await {
        connect_migrated(&test_db.url).await.pool.close().await;
        let runtime = test_support::lambda::RuntimeApi::start().await;
        let stripe_secret = |webhook: &str| json!({"STRIPE_API_SECRET_KEY": "sk_test_1", "STRIPE_WEBHOOK_SECRET": webhook});
        runtime.put_secret("billing/stripe", &stripe_secret(WEBHOOK_SECRET));
        let mut pairs = settings(&test_db);
        pairs.retain(|(k, _)| !k.starts_with("STRIPE_WEBHOOK"));
        pairs.push(("SECRETS_MANAGER_SECRET_IDS", "billing/stripe".into()));
        for (key, value) in runtime.env() {
            if key == "AWS_SESSION_TOKEN" {
                pairs.push(("AWS_SESSION_TOKEN", value));
            } else if key == "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT" {
                pairs.push(("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", value));
            }
        }
        // Read again at every invocation instead of every five minutes.
        let function =
            function(&pairs, Handlers::builtin()).reading_secrets_every(std::time::Duration::ZERO);
        let event = |n: u32| {
            event_json(&EventSpec::new(
                "customer.created",
                &format!("evt_lambda_rotation{n}"),
            ))
        };
        let (status, answer) = http(&function, &signed_delivery(&event(1), WEBHOOK_SECRET)).await;
        assert_eq!(status, 200, "{answer}");

        // Rotated in Secrets Manager: the next invocation uses the new secret only.
        runtime.put_secret("billing/stripe", &stripe_secret("whsec_rotated"));
        let (status, answer) = http(&function, &signed_delivery(&event(2), "whsec_rotated")).await;
        assert_eq!(status, 200, "{answer}");
        let (status, answer) = http(&function, &signed_delivery(&event(3), WEBHOOK_SECRET)).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"], "bad_signature");

        // A broken value: the function keeps serving with the last good secrets.
        runtime.put_secret("billing/stripe", &stripe_secret("not-a-webhook-secret"));
        let (status, answer) = http(&function, &signed_delivery(&event(4), "whsec_rotated")).await;
        assert_eq!(status, 200, "{answer}");
    }
}
