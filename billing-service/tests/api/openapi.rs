//! The OpenAPI document against the router it describes.
//!
//! The routes come from `routes::api().table()`, the list the router records as routes are
//! added (axum cannot list a router's routes itself), so a route added to the router without
//! its place in the document fails here. Every check goes both ways: the document lists exactly
//! those operations, each of them is really routed (a request never gets the "no such route"
//! 404 or 405), and no other method is served on a documented path. What the bodies look like
//! is checked by `.ci/schemathesis` against the running binary.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use stripe_wiremock::StripeDouble;

use crate::helpers::{TestApp, spawn_app_with, test_settings};
use test_support::db::TestDb;

/// The methods probed for "not served here". HEAD is left out: axum answers it for every GET.
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

const FILE: &str = include_str!("../../openapi.json");

fn document() -> Value {
    serde_json::from_str(FILE).expect("billing-service/openapi.json is valid JSON")
}

/// The (METHOD, path) pairs the document describes.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    const OPERATIONS: &[&str] = &[
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let paths = doc["paths"].as_object().expect("`paths` is an object");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("a path item is an object");
            item.keys()
                .filter(|k| OPERATIONS.contains(&k.as_str()))
                .map(|method| (method.to_ascii_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The (METHOD, path) pairs the router serves.
fn routes() -> BTreeSet<(String, String)> {
    billing_service::routes::api()
        .table()
        .iter()
        .map(|(m, p)| (m.to_string(), (*p).to_owned()))
        .collect()
}

/// The app, talking to an (empty) Stripe double so that no request leaves the machine or waits
/// on a timeout.
async fn app(db: &TestDb, stripe: &StripeDouble) -> TestApp {
    let mut settings = test_settings(&db.url);
    settings.stripe.api_base = url::Url::parse(&stripe.uri()).unwrap();
    settings.stripe.timeout = Duration::from_secs(2);
    spawn_app_with(settings).await
}

/// A request as a signed-in user would send it, body included, so that only routing (never a
/// missing input) decides between "served" and "not served". Redirects are not followed: the
/// frontend they point at is not running.
async fn probe(app: &TestApp, method: &str, path: &str) -> (StatusCode, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let response = client
        .request(method, format!("{}{path}", app.address))
        .header("x-user-id", "openapi-probe")
        .header("x-user-email", "openapi-probe@example.com")
        .header("stripe-signature", "t=1,v1=00")
        .header("content-type", "application/json")
        .body(r#"{"price_id": "billing_monthly"}"#)
        .send()
        .await
        .expect("request");
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

/// The answer for a path no route matches: 404 `no_route` (or 405 for a wrong method). A
/// route's own 404s (`ApiError::NotFound`) carry `{"error": {"code": "not_found", ...}}`.
fn is_unrouted(status: StatusCode, body: &str) -> bool {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => true,
        StatusCode::NOT_FOUND => serde_json::from_str::<Value>(body)
            .map(|v| v["error"]["code"] != "not_found")
            .unwrap_or(true),
        _ => false,
    }
}

#[tokio::test]
async fn the_served_document_is_the_file() {
    let db = TestDb::sqlite();
    let stripe = StripeDouble::start().await;
    let app = app(&db, &stripe).await;

    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let served = response.text().await.unwrap();
    assert_eq!(served, FILE, "served byte for byte as stored");

    let doc = document();
    let version = doc["openapi"].as_str().expect("`openapi` is a string");
    assert!(
        version.starts_with("3.0.") || version.starts_with("3.1."),
        "an OpenAPI 3.0/3.1 document, not {version}"
    );
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    app.stop().await;
}

#[test]
fn the_document_describes_exactly_the_routes() {
    let documented = documented(&document());
    let routes = routes();
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routes).collect();
    assert!(
        undocumented.is_empty() && unrouted.is_empty(),
        "served but not in openapi.json: {undocumented:?}\nin openapi.json but not routed: {unrouted:?}"
    );
}

#[test]
fn every_operation_documents_its_responses() {
    let doc = document();
    for (method, path) in documented(&doc) {
        let operation = &doc["paths"][&path][method.to_ascii_lowercase()];
        let responses = operation["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path}: no responses"));
        assert!(!responses.is_empty(), "{method} {path}: no responses");
        assert!(
            operation["operationId"].is_string(),
            "{method} {path}: no operationId"
        );
        for status in responses.keys() {
            assert!(
                status.len() == 3 && status.bytes().all(|b| b.is_ascii_digit()),
                "{method} {path}: status {status} is not an explicit code"
            );
        }
    }
}

#[tokio::test]
async fn every_route_is_served_with_a_documented_status() {
    let db = TestDb::sqlite();
    let stripe = StripeDouble::start().await;
    let app = app(&db, &stripe).await;
    let doc = document();

    // The probe tells the two 404s apart: first check that it does, on a path nobody serves
    // and on the user-facing 404 of a user without a subscription.
    let (status, body) = probe(&app, "GET", "/no/such/route").await;
    assert!(is_unrouted(status, &body), "{status} {body}");
    let (status, body) = probe(&app, "GET", "/billing/subscription").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(!is_unrouted(status, &body), "{status} {body}");

    for (method, path) in routes() {
        let (status, body) = probe(&app, &method, &path).await;
        assert!(
            !is_unrouted(status, &body),
            "{method} {path} is documented but not routed: {status} {body:?}"
        );
        let operation = &doc["paths"][&path][method.to_ascii_lowercase()];
        assert!(
            operation["responses"][status.as_str()].is_object(),
            "{method} {path} answered {status}, which the document does not list: {body}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn no_other_method_is_served_on_a_documented_path() {
    let db = TestDb::sqlite();
    let stripe = StripeDouble::start().await;
    let app = app(&db, &stripe).await;
    let documented = documented(&document());
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();

    for path in paths {
        for method in METHODS {
            if documented.contains(&((*method).to_owned(), path.clone())) {
                continue;
            }
            let (status, body) = probe(&app, method, path).await;
            assert_eq!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is served ({body:?}) but not in openapi.json"
            );
        }
    }
    app.stop().await;
}
