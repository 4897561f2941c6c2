//! `AUTH_MODE=jwt` end to end: tokens signed with keys made here (by `openssl`, signed with
//! `ring`, independently of the service's verification through `jsonwebtoken`), the issuer's key
//! set served by a local JWKS endpoint, requests through the real router. Each way a token can
//! be wrong gets a 401 JSON error naming it; the key set is fetched on rotation and never
//! hammered.

use std::time::Duration;

use billing_service::clock::unix_now;
use billing_service::configuration::{AuthSettings, JwtSettings};
use billing_stripe::fixtures::EventSpec;
use serde_json::{Value, json};
use test_support::db::TestDb;
use test_support::jwt::{TestKey, b64, key_set, signing_input};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{TestApp, event_json, spawn_app_with, test_settings};

const ISSUER: &str = "https://auth.example.com/";
const AUDIENCE: &str = "billing";

fn claims(user: &str) -> Value {
    let now = unix_now();
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": user, "email": format!("{user}@example.com"),
        "iat": now, "exp": now + 300,
    })
}

async fn serve_keys(jwks: &MockServer, keys: &[&TestKey]) {
    jwks.reset().await;
    Mock::given(method("GET"))
        .and(path("/jwks.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(key_set(keys)))
        .mount(jwks)
        .await;
}

async fn jwks_fetches(jwks: &MockServer) -> usize {
    jwks.received_requests().await.unwrap_or_default().len()
}

/// `AUTH_MODE=jwt` with the key set at `jwks_url`.
fn jwt(jwks_url: &str, user_claim: &str, min_refresh: Duration) -> AuthSettings {
    AuthSettings::Jwt(JwtSettings {
        jwks_url: format!("{jwks_url}/jwks.json").parse().unwrap(),
        issuer: ISSUER.to_owned(),
        audience: AUDIENCE.to_owned(),
        user_claim: user_claim.to_owned(),
        jwks_min_refresh: min_refresh,
    })
}

async fn app_with(db: &TestDb, auth: AuthSettings) -> TestApp {
    let mut settings = test_settings(&db.url);
    settings.auth = auth;
    spawn_app_with(settings).await
}

async fn app(db: &TestDb, jwks: &MockServer, min_refresh: Duration) -> TestApp {
    app_with(db, jwt(&jwks.uri(), "sub", min_refresh)).await
}

impl TestApp {
    /// `GET /billing/subscription` with `token`: 404 (no subscription) means the user was let in.
    async fn as_bearer(&self, token: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}/billing/subscription", self.address))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn each_wrong_token_is_refused_with_its_reason() {
    let db = TestDb::sqlite();
    let jwks = MockServer::start().await;
    let rsa = TestKey::rsa("rsa-1");
    let ec = TestKey::ec("ec-1");
    serve_keys(&jwks, &[&rsa, &ec]).await;
    let app = app(&db, &jwks, Duration::from_secs(60)).await;
    let now = unix_now();

    for key in [&rsa, &ec] {
        let (status, body) = app.as_bearer(&key.sign(&claims("u-1"))).await;
        assert_eq!(status, 404, "{} token let in: {body}", key.alg());
    }
    // Inside the leeway still counts as valid: clocks differ by a few seconds.
    let mut skewed = claims("u-1");
    skewed["exp"] = json!(now - 5);
    assert_eq!(app.as_bearer(&rsa.sign(&skewed)).await.0, 404);

    let mut cases: Vec<(&str, String, &str)> = Vec::new();
    let mut expired = claims("u-1");
    expired["exp"] = json!(now - 3600);
    cases.push(("expired", rsa.sign(&expired), "ExpiredSignature"));
    let mut early = claims("u-1");
    early["nbf"] = json!(now + 3600);
    cases.push(("not yet valid", rsa.sign(&early), "ImmatureSignature"));
    let mut issuer = claims("u-1");
    issuer["iss"] = json!("https://evil.example.com/");
    cases.push(("wrong issuer", ec.sign(&issuer), "InvalidIssuer"));
    let mut audience = claims("u-1");
    audience["aud"] = json!("another-service");
    cases.push(("wrong audience", rsa.sign(&audience), "InvalidAudience"));
    let mut no_aud = claims("u-1");
    no_aud.as_object_mut().unwrap().remove("aud");
    cases.push(("no audience", rsa.sign(&no_aud), "aud"));
    let mut no_email = claims("u-1");
    no_email.as_object_mut().unwrap().remove("email");
    cases.push(("no email", rsa.sign(&no_email), "no email claim"));
    let unknown = TestKey::ec("not-published");
    cases.push((
        "unknown kid",
        unknown.sign(&claims("u-1")),
        "not among the issuer's keys",
    ));
    // Another user's id in the payload, the signature left as it was.
    let genuine = rsa.sign(&claims("u-1"));
    let parts: Vec<&str> = genuine.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims("u-2").to_string()),
        parts[2]
    );
    cases.push(("tampered payload", tampered, "InvalidSignature"));
    // `alg: none`, no signature at all.
    let none = format!(
        "{}.",
        signing_input(
            &json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"}),
            &claims("u-1")
        )
    );
    cases.push(("alg none", none, "malformed"));
    // HS256 keyed with the RSA key's public JWK: valid HMAC, forged identity.
    let input = signing_input(
        &json!({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}),
        &claims("u-1"),
    );
    let secret = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, rsa.jwk.to_string().as_bytes());
    let forged = format!(
        "{input}.{}",
        b64(ring::hmac::sign(&secret, input.as_bytes()))
    );
    cases.push(("HS256 with the public key", forged, "HS256"));
    // An ES256 token naming the RSA key.
    let crossed = ec.sign_as("ES256", "rsa-1", &claims("u-1"));
    cases.push(("key of another type", crossed, "is not for ES256"));
    cases.push(("not a JWT", "abc".to_owned(), "malformed"));

    for (case, token, reason) in &cases {
        let (status, body) = app.as_bearer(token).await;
        assert_eq!(status, 401, "{case}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{case}: {body}");
        assert!(message(&body).contains(reason), "{case}: {body}");
    }

    // No token, another scheme, and the trusted-headers mode's headers: none of them is a user.
    let headers_only = app
        .client
        .get(format!("{}/billing/subscription", app.address))
        .header("x-user-id", "u-1")
        .header("x-user-email", "u-1@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(headers_only.status(), 401);
    let body: Value = headers_only.json().await.unwrap();
    assert!(
        message(&body).contains("Authorization header is missing"),
        "{body}"
    );
    let basic = app
        .client
        .get(format!("{}/billing/subscription", app.address))
        .basic_auth("u-1", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);

    // Made-up key ids did not make the service refetch: one fetch for the whole test.
    assert_eq!(jwks_fetches(&jwks).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_rotated_key_is_fetched_once_the_minimum_interval_has_passed() {
    let db = TestDb::sqlite();
    let jwks = MockServer::start().await;
    let old = TestKey::ec("2026-01");
    let new = TestKey::ec("2026-02");
    serve_keys(&jwks, &[&old]).await;
    let app = app(&db, &jwks, Duration::from_secs(1)).await;

    assert_eq!(app.as_bearer(&old.sign(&claims("u-1"))).await.0, 404);
    assert_eq!(jwks_fetches(&jwks).await, 1);

    // The issuer publishes a new key and signs with it straight away.
    serve_keys(&jwks, &[&old, &new]).await;
    let (status, body) = app.as_bearer(&new.sign(&claims("u-1"))).await;
    assert_eq!(status, 401, "refetched within the minimum interval: {body}");
    assert!(
        message(&body).contains("not among the issuer's keys"),
        "{body}"
    );
    assert_eq!(jwks_fetches(&jwks).await, 0, "fetched again too soon");

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.as_bearer(&new.sign(&claims("u-1"))).await.0, 404);
    assert_eq!(app.as_bearer(&old.sign(&claims("u-1"))).await.0, 404);
    assert_eq!(jwks_fetches(&jwks).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn an_unreachable_key_set_is_a_401_and_is_not_hammered() {
    let db = TestDb::sqlite();
    let jwks = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&jwks)
        .await;
    let app = app(&db, &jwks, Duration::from_secs(60)).await;
    let key = TestKey::ec("k");

    let requests = (0..50).map(|i| {
        let token = key.sign(&claims(&format!("u-{i}")));
        let app = &app;
        async move { app.as_bearer(&token).await }
    });
    for (status, body) in futures_util::future::join_all(requests).await {
        assert_eq!(status, 401, "{body}");
        assert!(
            message(&body).contains("could not be fetched: it answered 503"),
            "{body}"
        );
    }
    assert_eq!(
        jwks_fetches(&jwks).await,
        1,
        "50 requests fetched the key set more than once"
    );

    // Nothing listens there at all: still a 401 saying so, not a 500.
    // (Not a dropped MockServer: wiremock pools them, and another test may be using it.)
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let app2 = app_with(&db, jwt(&url, "sub", Duration::from_secs(60))).await;
    let (status, body) = app2.as_bearer(&key.sign(&claims("u-1"))).await;
    assert_eq!(status, 401, "{body}");
    assert!(message(&body).contains("cannot reach it"), "{body}");
    app2.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn the_user_claim_is_configurable() {
    let db = TestDb::sqlite();
    let jwks = MockServer::start().await;
    let key = TestKey::rsa("k");
    serve_keys(&jwks, &[&key]).await;
    let app = app_with(&db, jwt(&jwks.uri(), "uid", Duration::from_secs(60))).await;
    let mut with_uid = claims("ignored-sub");
    with_uid["uid"] = json!("u-42");
    assert_eq!(app.as_bearer(&key.sign(&with_uid)).await.0, 404);
    let (status, body) = app.as_bearer(&key.sign(&claims("u-1"))).await;
    assert_eq!(status, 401);
    assert!(message(&body).contains("no uid claim"), "{body}");
    app.stop().await;
}

#[tokio::test]
async fn the_token_s_user_is_the_one_served_and_headers_cannot_claim_another() {
    let db = TestDb::sqlite();
    let jwks = MockServer::start().await;
    let key = TestKey::ec("k");
    serve_keys(&jwks, &[&key]).await;
    let app = app(&db, &jwks, Duration::from_secs(60)).await;
    let event = event_json(&EventSpec {
        customer: "cus_jwt".into(),
        user_id: "u-7".into(),
        status: Some("active".into()),
        price_id: "price_x".into(),
        current_period_end: 1_900_000_000,
        created: unix_now(),
        ..EventSpec::new("customer.subscription.created", "evt_sub_jwt")
    });
    assert_eq!(app.deliver(&event).await.status(), 200);
    app.wait_processed("evt_sub_jwt").await;

    let (status, body) = app.as_bearer(&key.sign(&claims("u-7"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "active");
    assert_eq!(app.as_bearer(&key.sign(&claims("u-8"))).await.0, 404);
    // Another user's token plus u-7's headers: the headers count for nothing.
    let spoofed = app
        .client
        .get(format!("{}/billing/subscription", app.address))
        .bearer_auth(key.sign(&claims("u-8")))
        .header("x-user-id", "u-7")
        .header("x-user-email", "u-7@example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), 404);
    app.stop().await;
}
