//! The local Stripe over HTTP: Stripe's API at `/v1/...` (the double's, every request checked
//! against Stripe's request schemas), and the pages Stripe hosts: Checkout at `/checkout/{id}`
//! (a card field that takes Stripe's test numbers) and the customer portal at `/portal/{id}`.
//! What a payment or a portal action changes is sent to the webhook endpoints as Stripe would.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use serde::Deserialize;
use serde_json::Value;
use stripe_wiremock::{Api, Kind};

use crate::delivery::Deliverer;
use crate::pages;

#[derive(Clone)]
struct Local {
    api: Api,
    deliverer: Deliverer,
}

pub fn router(api: Api) -> Router {
    let deliverer = Deliverer::new(api.clone());
    Router::new()
        .route("/v1/{*path}", any(stripe_api))
        .route("/checkout/{id}", get(checkout_page).post(pay))
        .route("/portal/{id}", get(portal_page))
        .route("/portal/{id}/cancel", post(cancel))
        .route("/portal/{id}/switch", post(switch))
        .with_state(Local { api, deliverer })
}

async fn stripe_api(
    State(local): State<Local>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = local
        .api
        .answer_http(method.as_str(), uri.path(), uri.query(), &headers, &body);
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(answer.body)).into_response();
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::try_from(name),
            axum::http::HeaderValue::try_from(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

async fn checkout_page(State(local): State<Local>, Path(id): Path<String>) -> Response {
    match local.api.retrieve(Kind::CheckoutSession, &id) {
        Some(session) => Html(pages::checkout(
            &session,
            &email_of(&local.api, &session),
            None,
        ))
        .into_response(),
        None => not_found("checkout session", &id),
    }
}

#[derive(Deserialize)]
struct Pay {
    card: String,
}

async fn pay(
    State(local): State<Local>,
    Path(id): Path<String>,
    Form(form): Form<Pay>,
) -> Response {
    let Some(session) = local.api.retrieve(Kind::CheckoutSession, &id) else {
        return not_found("checkout session", &id);
    };
    match local.api.complete_checkout(&id, &form.card) {
        Ok(events) => {
            local.deliverer.send(events);
            Redirect::to(&pages::session_url(&session["success_url"], &id)).into_response()
        }
        Err(declined) => (
            StatusCode::PAYMENT_REQUIRED,
            Html(pages::checkout(
                &session,
                &email_of(&local.api, &session),
                Some(&declined.message),
            )),
        )
            .into_response(),
    }
}

fn email_of(api: &Api, session: &Value) -> String {
    session["customer"]
        .as_str()
        .and_then(|c| api.retrieve(Kind::Customer, c))
        .and_then(|c| c["email"].as_str().map(str::to_owned))
        .or_else(|| session["customer_email"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

async fn portal_page(
    State(local): State<Local>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(portal) = local.api.retrieve(Kind::BillingPortalSession, &id) else {
        return not_found("portal session", &id);
    };
    let customer = portal["customer"].as_str().unwrap_or_default();
    let subscriptions: Vec<Value> = local
        .api
        .objects(Kind::Subscription)
        .into_iter()
        .filter(|s| s["customer"] == customer)
        .collect();
    let prices: Vec<Value> = local
        .api
        .objects(Kind::Price)
        .into_iter()
        .filter(|p| p["active"] == true && p["recurring"].is_object())
        .collect();
    Html(pages::portal(
        &portal,
        &subscriptions,
        &prices,
        query.get("done").map(String::as_str),
    ))
    .into_response()
}

#[derive(Deserialize)]
struct Cancel {
    subscription: String,
    /// `true` to cancel at the period's end, `false` to undo that.
    cancel: bool,
}

async fn cancel(
    State(local): State<Local>,
    Path(id): Path<String>,
    Form(form): Form<Cancel>,
) -> Response {
    let outcome = local
        .api
        .portal_cancel_at_period_end(&id, &form.subscription, form.cancel);
    let done = match form.cancel {
        true => "canceled",
        false => "renewed",
    };
    after_portal_action(&local, &id, outcome, done)
}

#[derive(Deserialize)]
struct Switch {
    subscription: String,
    price: String,
}

async fn switch(
    State(local): State<Local>,
    Path(id): Path<String>,
    Form(form): Form<Switch>,
) -> Response {
    let outcome = local
        .api
        .portal_switch_price(&id, &form.subscription, &form.price);
    after_portal_action(&local, &id, outcome, "switched")
}

fn after_portal_action(
    local: &Local,
    id: &str,
    outcome: Result<Vec<Value>, String>,
    done: &str,
) -> Response {
    match outcome {
        Ok(events) => {
            local.deliverer.send(events);
            Redirect::to(&format!("/portal/{id}?done={done}")).into_response()
        }
        Err(message) => (StatusCode::BAD_REQUEST, Html(pages::error(&message))).into_response(),
    }
}

fn not_found(what: &str, id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(pages::error(&format!("No such {what}: {id}"))),
    )
        .into_response()
}
