//! Drives the real async-stripe client, through our wrapper, against the Stripe double: proves
//! that the double's replies deserialise as Stripe's would, that what we send passes Stripe's
//! schemas, and that retries, timeouts and errors behave as billing-service relies on.

use std::collections::HashMap;
use std::time::Duration;

use billing_stripe::account;
use billing_stripe::stripe_billing::billing_portal_session::CreateBillingPortalSession;
use billing_stripe::stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, RetrieveCheckoutSession,
};
use billing_stripe::stripe_core::customer::{
    CreateCustomer, ListCustomer, RetrieveCustomer, RetrieveCustomerReturned,
};
use billing_stripe::stripe_misc::webhook_endpoint::{
    CreateWebhookEndpoint, CreateWebhookEndpointEnabledEvents,
};
use billing_stripe::stripe_product::price::{
    CreatePrice, CreatePriceRecurring, CreatePriceRecurringInterval,
};
use billing_stripe::stripe_product::product::CreateProduct;
use billing_stripe::stripe_shared::{ApiVersion, CheckoutSessionMode};
use billing_stripe::stripe_types::Currency;
use billing_stripe::{SecretKey, StripeClient, StripeConfig, StripeError};
use serde_json::json;
use stripe_wiremock::{Kind, StripeDouble};

fn client(base: &str) -> StripeClient {
    let mut config = StripeConfig::new(SecretKey::parse("sk_test_double").unwrap());
    config.api_base = base.to_owned();
    config.initial_backoff = Duration::from_millis(10);
    config.timeout = Duration::from_millis(500);
    StripeClient::new(&config).unwrap()
}

fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn catalog_objects_round_trip_and_are_found_again() {
    let stripe = StripeDouble::start().await;
    let client = client(&stripe.uri());

    let product = client
        .send_idempotent(
            &CreateProduct::new("billing").metadata(meta(&[
                ("catalog_key", "billing"),
                ("environment", "stage"),
            ])),
            "k-product",
        )
        .await
        .unwrap();
    let price = client
        .send_idempotent(
            &CreatePrice::new(Currency::CAD)
                .product(product.id.as_str())
                .unit_amount(5499)
                .nickname("Monthly Plan")
                .lookup_key("billing_monthly")
                .transfer_lookup_key(true)
                .recurring(CreatePriceRecurring::new(
                    CreatePriceRecurringInterval::Month,
                )),
            "k-price",
        )
        .await
        .unwrap();
    assert_eq!(price.unit_amount, Some(5499));
    assert_eq!(price.lookup_key.as_deref(), Some("billing_monthly"));

    let found = account::find_product(&client, "billing", "stage")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, product.id);
    assert!(
        account::find_product(&client, "billing", "prod")
            .await
            .unwrap()
            .is_none()
    );

    let by_key =
        account::prices_by_lookup_keys(&client, &["billing_monthly".into(), "nope".into()])
            .await
            .unwrap();
    assert_eq!(by_key.len(), 1);
    assert_eq!(by_key[0].id, price.id);

    let endpoint = client
        .send_idempotent(
            &CreateWebhookEndpoint::new(
                vec![
                    CreateWebhookEndpointEnabledEvents::ChargeFailed,
                    CreateWebhookEndpointEnabledEvents::InvoicePaid,
                ],
                "https://billing.example.com/webhook/stripe",
            )
            .api_version(billing_stripe::API_VERSION.parse::<ApiVersion>().unwrap()),
            "k-endpoint",
        )
        .await
        .unwrap();
    assert!(endpoint.secret.as_deref().unwrap().starts_with("whsec_"));
    let listed = account::webhook_endpoints(&client).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].secret, None);
    assert_eq!(
        listed[0].api_version.as_deref(),
        Some(billing_stripe::API_VERSION)
    );

    stripe.assert_no_violations();
}

#[tokio::test]
async fn all_pages_of_prices_are_read() {
    let stripe = StripeDouble::start().await;
    let product = stripe
        .create(Kind::Product, json!({"name": "billing"}))
        .unwrap();
    for i in 0..105 {
        stripe
            .create(
                Kind::Price,
                json!({"currency": "cad", "unit_amount": 100 + i, "product": product["id"],
                       "recurring": {"interval": "month"}}),
            )
            .unwrap();
    }
    stripe
        .create(
            Kind::Price,
            json!({"currency": "cad", "unit_amount": 1, "product": product["id"]}),
        )
        .unwrap();
    let client = client(&stripe.uri());
    let prices = account::active_recurring_prices(&client, product["id"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(prices.len(), 105);
    let gets = stripe
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/prices")
        .count();
    assert_eq!(gets, 2, "100 per page");
    stripe.assert_no_violations();
}

#[tokio::test]
async fn what_billing_service_sends_is_accepted_and_read_back() {
    let stripe = StripeDouble::start().await;
    let product = stripe
        .create(Kind::Product, json!({"name": "billing"}))
        .unwrap();
    let price = stripe
        .create(
            Kind::Price,
            json!({"currency": "cad", "unit_amount": 5499, "product": product["id"],
                   "recurring": {"interval": "month"}}),
        )
        .unwrap();
    let client = client(&stripe.uri());

    let customer = client
        .send_idempotent(
            &CreateCustomer::new()
                .email("a@example.com")
                .metadata(meta(&[("user_id", "u1")])),
            "k-customer",
        )
        .await
        .unwrap();
    let listed = client
        .send(&ListCustomer::new().email("a@example.com"))
        .await
        .unwrap();
    assert_eq!(listed.data[0].id, customer.id);
    let again = client
        .send(&RetrieveCustomer::new(customer.id.clone()))
        .await
        .unwrap();
    match again {
        RetrieveCustomerReturned::Customer(c) => {
            assert_eq!(c.email.as_deref(), Some("a@example.com"))
        }
        RetrieveCustomerReturned::DeletedCustomer(_) => panic!("the customer reads as deleted"),
    }

    let line = CreateCheckoutSessionLineItems {
        price: Some(price["id"].as_str().unwrap().to_owned()),
        quantity: Some(1),
        ..CreateCheckoutSessionLineItems::new()
    };
    let session = client
        .send_idempotent(
            &CreateCheckoutSession::new()
                .mode(CheckoutSessionMode::Subscription)
                .customer(customer.id.as_str())
                .client_reference_id("u1")
                .line_items(vec![line])
                .success_url(
                    "http://localhost:8080/billing/success?session_id={CHECKOUT_SESSION_ID}",
                )
                .cancel_url(
                    "http://localhost:8080/billing/cancel?session_id={CHECKOUT_SESSION_ID}",
                ),
            "k-session",
        )
        .await
        .unwrap();
    assert!(
        session
            .url
            .as_deref()
            .unwrap()
            .starts_with("https://checkout.stripe.com/")
    );
    assert_eq!(session.amount_total, Some(5499));
    let read = client
        .send(&RetrieveCheckoutSession::new(session.id.clone()))
        .await
        .unwrap();
    assert_eq!(read.client_reference_id.as_deref(), Some("u1"));

    let portal = client
        .send_idempotent(
            &CreateBillingPortalSession::new()
                .customer(customer.id.as_str())
                .return_url("http://localhost:3000/account"),
            "k-portal",
        )
        .await
        .unwrap();
    assert!(portal.url.starts_with("https://billing.stripe.com/"));

    let session_post = stripe
        .posts()
        .into_iter()
        .find(|r| r.path == "/v1/checkout/sessions")
        .unwrap();
    assert_eq!(session_post.idempotency_key(), Some("k-session"));
    assert_eq!(session_post.params["line_items"][0]["quantity"], 1);
    stripe.assert_no_violations();
}

#[tokio::test]
async fn transient_failures_are_retried_with_the_same_key() {
    let stripe = StripeDouble::start().await;
    let client = client(&stripe.uri());
    stripe.fail_next("POST", "/v1/customers", 500, 1);
    stripe.fail_next("POST", "/v1/customers", 429, 1);
    client
        .send_idempotent(&CreateCustomer::new().email("r@example.com"), "k-retry")
        .await
        .unwrap();
    let posts = stripe.posts();
    assert_eq!(
        posts.iter().map(|p| p.status).collect::<Vec<_>>(),
        [500, 429, 200]
    );
    assert!(posts.iter().all(|p| p.idempotency_key() == Some("k-retry")));
    assert_eq!(stripe.objects(Kind::Customer).len(), 1);

    // The same key again (an interrupted run, re-run) is replayed, not repeated.
    client
        .send_idempotent(&CreateCustomer::new().email("r@example.com"), "k-retry")
        .await
        .unwrap();
    assert_eq!(stripe.objects(Kind::Customer).len(), 1);
    stripe.assert_no_violations();
}

#[tokio::test]
async fn errors_are_sorted_by_whose_fault_they_are() {
    let stripe = StripeDouble::start().await;
    let client = client(&stripe.uri());

    let err = client
        .send(&RetrieveCustomer::new("cus_missing"))
        .await
        .unwrap_err();
    match &err {
        StripeError::Rejected {
            status,
            message,
            code,
            param,
            ..
        } => {
            assert_eq!(*status, 404);
            assert!(message.contains("cus_missing"));
            assert_eq!(code.as_deref(), Some("resource_missing"));
            assert_eq!(param.as_deref(), Some("id"));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.is_caller_fault());

    stripe.fail_next("GET", "/v1/customers", 503, 10);
    let err = client.send(&ListCustomer::new()).await.unwrap_err();
    assert!(
        matches!(
            err,
            StripeError::Unavailable {
                status: 503,
                attempts: 4,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_caller_fault());

    // A write without a key is never retried: Stripe may have acted on a lost attempt.
    stripe.fail_next("POST", "/v1/customers", 500, 1);
    let err = client.send(&CreateCustomer::new()).await.unwrap_err();
    assert!(
        matches!(err, StripeError::Unavailable { attempts: 1, .. }),
        "{err:?}"
    );

    stripe.set_delay(Some(Duration::from_secs(2)));
    let err = client
        .send(&RetrieveCustomer::new("cus_x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StripeError::Timeout { attempts: 4, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unreachable_stripe_is_a_connection_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let err = client(&base).send(&ListCustomer::new()).await.unwrap_err();
    assert!(
        matches!(err, StripeError::Connection { attempts: 4, .. }),
        "{err:?}"
    );
}
