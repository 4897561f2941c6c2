//! The demo's whole flow over HTTP, as the browser does it (the browser test in
//! `tests/browser/` drives the same pages in Chromium): a declined card buys nothing; 4242 pays,
//! Stripe's events reach the service, which records the subscription; the portal cancels at the
//! period's end and switches the plan, and the service follows each change.

use std::time::Duration;

use billing_local::{Options, Running, start};
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::{Value, json};

const COOKIE: &str = "demo_user=u-local-1%7Cu-local-1%40example.com";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

async fn started() -> Running {
    start(&Options {
        demo_port: 0,
        service_port: 0,
        stripe_port: 0,
        ..Options::default()
    })
    .await
    .expect("billing-local starts")
}

/// A call from the demo page, through its proxy, as the picked user.
async fn call(
    running: &Running,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = client()
        .request(
            method.parse().unwrap(),
            format!("{}{path}", running.demo_url),
        )
        .header("cookie", COOKIE);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The user's subscription once `done` holds (Stripe's events arrive after the redirect).
async fn subscription_when(running: &Running, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        let (status, body) = call(running, "GET", "/billing/subscription", None).await;
        if status == StatusCode::OK && done(&body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the subscription never got there");
}

/// A form posted as the browser posts the local Stripe's pages.
async fn submit(
    http: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    http.post(url).form(fields).send().await.unwrap()
}

fn location(response: &reqwest::Response) -> String {
    response.headers()["location"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_purchase_a_declined_card_and_the_portal_work_end_to_end() {
    let running = started().await;
    let http = client();

    let (status, prices) = call(&running, "GET", "/billing/products", None).await;
    assert_eq!(status, StatusCode::OK, "{prices}");
    let monthly = prices
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["lookup_key"] == "billing_monthly")
        .expect("the built-in catalog was provisioned")
        .clone();
    let (status, session) = call(
        &running,
        "POST",
        "/billing/checkout",
        Some(json!({"price_id": monthly["id"]})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let checkout = session["url"].as_str().unwrap().to_owned();
    assert!(
        checkout.starts_with(&format!("{}/checkout/cs_", running.stripe_url)),
        "{checkout}"
    );
    let page = http
        .get(&checkout)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("CAD 54.99"), "{page}");
    assert!(page.contains("u-local-1@example.com"), "{page}");

    let declined = submit(&http, &checkout, &[("card", "4000 0000 0000 0002")]).await;
    assert_eq!(declined.status(), StatusCode::PAYMENT_REQUIRED);
    assert!(
        declined
            .text()
            .await
            .unwrap()
            .contains("Your card was declined.")
    );
    let (status, _) = call(&running, "GET", "/billing/subscription", None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a declined card buys nothing"
    );

    let paid = submit(&http, &checkout, &[("card", "4242 4242 4242 4242")]).await;
    assert_eq!(paid.status(), StatusCode::SEE_OTHER);
    let success = location(&paid);
    assert!(
        success.starts_with(&format!(
            "{}/billing/success?session_id=cs_",
            running.demo_url
        )),
        "{success}"
    );
    let back = http
        .get(&success)
        .header("cookie", COOKIE)
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), StatusCode::FOUND);
    let confirmation = location(&back);
    assert!(
        confirmation.starts_with(&format!(
            "{}/billing/confirmation?payment_status=paid",
            running.demo_url
        )),
        "{confirmation}"
    );
    let active = subscription_when(&running, |s| s["status"] == "active").await;
    assert_eq!(active["price_id"], monthly["id"]);
    assert_eq!(active["cancel_at_period_end"], false);

    let events: Value = http
        .get(format!("{}/demo/events", running.demo_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for expected in [
        "checkout.session.completed",
        "customer.subscription.created",
        "invoice.paid",
        "charge.succeeded",
    ] {
        assert!(types.contains(&expected), "{expected} not in {types:?}");
    }

    let (status, portal) = call(&running, "POST", "/billing/portal", Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{portal}");
    let portal = portal["url"].as_str().unwrap().to_owned();
    let portal_id = portal.rsplit('/').next().unwrap().to_owned();
    let page = http
        .get(&portal)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let subscription = page
        .split("id=\"sub-")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the portal lists the subscription")
        .to_owned();
    let canceled = submit(
        &http,
        format!("{}/portal/{portal_id}/cancel", running.stripe_url),
        &[("subscription", subscription.as_str()), ("cancel", "true")],
    )
    .await;
    assert_eq!(canceled.status(), StatusCode::SEE_OTHER);
    subscription_when(&running, |s| s["cancel_at_period_end"] == true).await;

    let annual = prices
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["lookup_key"] == "billing_annual")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let switched = submit(
        &http,
        format!("{}/portal/{portal_id}/switch", running.stripe_url),
        &[
            ("subscription", subscription.as_str()),
            ("price", annual.as_str()),
        ],
    )
    .await;
    assert_eq!(switched.status(), StatusCode::SEE_OTHER);
    subscription_when(&running, |s| s["price_id"] == annual.as_str()).await;

    let unknown = http
        .get(format!("{}/checkout/cs_nope", running.stripe_url))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    // Everything the service and stripe-setup asked of the local Stripe, the real API accepts.
    assert_eq!(running.stripe.violations(), Vec::<String>::new());
    running.stop().await;
}
