//! Test support: a stateful Stripe double on wiremock that checks every request against Stripe's
//! own schemas.
//!
//! A plain mock answers what a test told it to, so code that sends a parameter Stripe would
//! refuse, or that creates the same object twice, still passes. This double instead keeps the
//! objects it is sent (a list returns what a create made), replays idempotent requests the way
//! Stripe does, and records a *violation* for anything the real API would not accept. Tests end
//! with [`StripeDouble::assert_no_violations`].
//!
//! The double itself is [`Api`], which answers one request at a time without any transport:
//! [`StripeDouble`] serves it over wiremock for tests, and a local Stripe can serve it over any
//! HTTP server. [`Api`] also does what Stripe does on its own pages (paying a Checkout Session,
//! the customer portal's changes), returning the events Stripe would send.
//!
//! # Layout
//! - [`form`]: Stripe's bracket notation (`a[b][0]=x`) decoded into JSON, coerced by schema.
//! - [`schema`]: the request schemas from `shared/stripe-openapi/requests.json`.
//! - [`store`]: the objects and Stripe's behaviour on them (filters, pagination, lookup keys).
//! - [`flows`]: Checkout and the portal, as the customer drives them, and the events they send;
//!   the customer's active entitlements following every change of its subscriptions.
//!
//! ```no_run
//! # async fn demo() {
//! let stripe = stripe_wiremock::StripeDouble::start().await;
//! // point the code under test at stripe.uri(), run it, then:
//! assert_eq!(stripe.posts().len(), 0);
//! stripe.assert_no_violations();
//! # }
//! ```

pub mod flows;
pub mod form;
pub mod schema;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub use store::Kind;

/// The API version the double answers in and stamps on the events it makes: the one
/// `billing_stripe::API_VERSION` pins (the first of [`schema::NEWER_API_VERSIONS`]).
pub const API_VERSION: &str = schema::NEWER_API_VERSIONS[0];

/// One request the double received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The form body (POST) or query string (GET), decoded and coerced to the schema's types.
    pub params: Value,
    /// Header names in lower case.
    pub headers: BTreeMap<String, String>,
    /// The status the double answered with.
    pub status: u16,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    pub fn idempotency_key(&self) -> Option<&str> {
        self.header("idempotency-key")
    }
}

/// The double's answer to one API request, for any transport to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    /// Stripe's JSON body: the object, the list, or `{"error": ...}`.
    pub body: Value,
    /// Headers Stripe sends besides the content type: `request-id` always,
    /// `idempotent-replayed: true` on a replay.
    pub headers: Vec<(String, String)>,
}

/// Why Stripe did not take a payment: a card error (`code` `card_declined`, `incorrect_number`,
/// ...; `decline_code` for a decline), or a session that cannot be paid (`session_not_open`,
/// `resource_missing`, `unsupported_mode`, `unsupported`). `message` is the text Stripe shows the
/// customer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Declined {
    pub code: String,
    pub decline_code: Option<String>,
    pub message: String,
}

struct Fault {
    method: String,
    path: String,
    status: u16,
    remaining: usize,
}

struct Replay {
    fingerprint: (String, String, Vec<u8>),
    reply: store::Reply,
}

#[derive(Default)]
struct State {
    store: store::Store,
    requests: Vec<RecordedRequest>,
    violations: Vec<String>,
    faults: Vec<Fault>,
    /// Applied by [`StripeDouble`]'s HTTP responses only.
    delay: Option<Duration>,
    idempotency: HashMap<String, Replay>,
}

/// The Stripe double, without a transport: its objects, what it was sent, and how it answers.
/// Clones share one state.
#[derive(Clone, Default)]
pub struct Api {
    state: Arc<Mutex<State>>,
}

impl Api {
    /// An empty account.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has already failed; its state is still the
        // best evidence for the next assertion.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// [`answer`](Self::answer) for a request as an HTTP server hands it over (wiremock's, or
    /// the local Stripe's axum): the query is what a GET carries (and a DELETE without a body),
    /// the body what others do.
    pub fn answer_http(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Answer {
        let headers: BTreeMap<String, String> = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        // A GET carries its parameters in the query, and so does a DELETE (Stripe's clients send
        // a DELETE's few parameters there, async-stripe none at all); others in the body.
        let in_query = method.eq_ignore_ascii_case("GET")
            || (method.eq_ignore_ascii_case("DELETE") && body.is_empty());
        let raw = match in_query {
            true => query.unwrap_or_default().as_bytes(),
            false => body,
        };
        self.answer(method, path, raw, &headers)
    }

    /// Answers one Stripe API request as the double does over HTTP: the request is checked
    /// against Stripe's schema (what Stripe would refuse is refused, and recorded as a
    /// violation), recorded, failed if a fault is pending ([`fail_next`](Self::fail_next)),
    /// replayed if its `Idempotency-Key` was seen, and otherwise answered by the store.
    ///
    /// `raw` is the query string for GET (without `?`) and the form body otherwise; header names
    /// are lower case.
    pub fn answer(
        &self,
        method: &str,
        path: &str,
        raw: &[u8],
        headers: &BTreeMap<String, String>,
    ) -> Answer {
        let mut state = self.lock();
        let method = method.to_ascii_uppercase();
        let path = path.to_owned();

        let mut violations = Vec::new();
        let op = schema::find(&method, &path);
        let params = match op {
            Some(op) => {
                let (params, errors) = op.check(raw);
                violations.extend(errors.into_iter().map(|e| format!("{method} {path}: {e}")));
                params
            }
            None => {
                violations.push(format!(
                    "{method} {path}: not an operation in Stripe's API spec"
                ));
                form::decode(raw).unwrap_or_default()
            }
        };
        // What the real API would refuse is answered as it would answer; a create without an
        // Idempotency-Key is accepted (Stripe would) but still recorded, as our contract forbids it.
        let refusal = violations.first().cloned().map(|message| (400, message));
        let authorized = headers
            .get("authorization")
            .is_some_and(|a| a.starts_with("Bearer sk_"));
        if !authorized {
            violations.push(format!(
                "{method} {path}: no `Authorization: Bearer sk_...` header"
            ));
        }
        let refusal = if authorized {
            refusal
        } else {
            Some((401, "You did not provide an API key.".to_owned()))
        };
        let key = headers.get("idempotency-key").cloned();
        if op.is_some_and(schema::Operation::creates) && key.is_none() {
            violations.push(format!(
                "{method} {path}: a create without an Idempotency-Key"
            ));
        }

        let fault = state
            .faults
            .iter_mut()
            .find(|f| f.remaining > 0 && f.method == method && f.path == path)
            .map(|f| {
                f.remaining -= 1;
                f.status
            });
        let (status, body, replayed) = if let Some(status) = fault {
            let (s, b) = store::error(status, "Injected fault from the Stripe double.", None, None);
            (s, b, false)
        } else if let Some((status, message)) = refusal {
            let (s, b) = store::error(status, &message, None, None);
            (s, b, false)
        } else {
            let fingerprint = (method.clone(), path.clone(), raw.to_vec());
            match key
                .as_ref()
                .filter(|_| method == "POST")
                .and_then(|k| state.idempotency.get(k))
            {
                Some(replay) if replay.fingerprint == fingerprint => {
                    (replay.reply.0, replay.reply.1.clone(), true)
                }
                Some(_) => {
                    let (s, b) = store::error(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters \
                         they were first used with.",
                        None,
                        Some("idempotency_key_in_use"),
                    );
                    (s, b, false)
                }
                None => {
                    let (s, b) = state.store.handle(&method, &path, &params);
                    if let (Some(k), "POST") = (&key, method.as_str()) {
                        state.idempotency.insert(
                            k.clone(),
                            Replay {
                                fingerprint,
                                reply: (s, b.clone()),
                            },
                        );
                    }
                    (s, b, false)
                }
            }
        };

        state.violations.extend(violations);
        state.requests.push(RecordedRequest {
            method,
            path,
            params,
            headers: headers.clone(),
            status,
        });
        let mut answer_headers = vec![(
            "request-id".to_owned(),
            format!("req_dbl{}", state.requests.len()),
        )];
        if replayed {
            answer_headers.push(("idempotent-replayed".to_owned(), "true".to_owned()));
        }
        Answer {
            status,
            body,
            headers: answer_headers,
        }
    }

    /// From now on a new Checkout Session's `url` is `{base}/checkout/{id}` and a portal
    /// session's `{base}/portal/{id}` (a trailing `/` on `base` is dropped), where a local
    /// Stripe serves those pages. Until then they are Stripe's own (unreachable) URLs.
    pub fn set_public_url(&self, base: &str) {
        self.lock().store.public_url = Some(base.trim_end_matches('/').to_owned());
    }

    /// Webhook endpoints created from now on get the signing secret `secret`, so that a service
    /// can be given it before the endpoint exists; `None` makes up one per endpoint again.
    pub fn set_webhook_secret(&self, secret: Option<String>) {
        self.lock().store.webhook_secret = secret;
    }

    /// Stripe's side of a customer paying the Checkout Session `session_id` with the test card
    /// `card_number` (spaces ignored). Returns the events Stripe sends, in order, each also
    /// stored for `GET /v1/events`.
    ///
    /// Cards: Stripe's test numbers that pay (`4242 4242 4242 4242`, `4000 0566 5566 5556`, ...)
    /// pay; `4000000000000002` is declined (`card_declined`/`generic_decline`),
    /// `4000000000009995` too (`insufficient_funds`), as are Stripe's other documented declining
    /// numbers (lost, stolen, expired, incorrect CVC, processing error); any other number is
    /// `incorrect_number`. A declined payment changes nothing and the session stays open.
    ///
    /// In `subscription` mode a payment makes, with real-time `created`: the customer (unless
    /// the session names one; email from `customer_email`, nothing else copied), an `active`
    /// subscription of the session's recurring prices with `subscription_data[metadata]`, its
    /// paid invoice and the charge, and completes the session. Events: `customer.created` (for
    /// a new customer), `charge.succeeded`, `invoice.paid`, `customer.subscription.created`,
    /// `checkout.session.completed`, then `entitlements.active_entitlement_summary.updated` if
    /// the prices' products have features attached (the customer's entitlements changed).
    ///
    /// `payment` mode is paid minimally: a charge (no invoice), a customer only if the session
    /// names one or was created with `customer_creation=always`; events `customer.created` (if
    /// new), `charge.succeeded`, `checkout.session.completed`.
    ///
    /// Refused (as [`Declined`], before the card is looked at): an unknown session
    /// (`resource_missing`), one not `open` (`session_not_open`), `setup` mode
    /// (`unsupported_mode`), and what the double does not model (`unsupported`): trials,
    /// `price_data` line items, sessions it does not know the line items of (inserted ones).
    pub fn complete_checkout(
        &self,
        session_id: &str,
        card_number: &str,
    ) -> Result<Vec<Value>, Declined> {
        flows::complete_checkout(&mut self.lock().store, session_id, card_number)
    }

    /// The customer portal's "cancel plan" (`cancel = true`) or "renew plan" (`false`) for the
    /// portal session's customer: sets `cancel_at_period_end` (and `cancel_at` to the period's
    /// end, `canceled_at`, `cancellation_details.reason`) and returns
    /// `[customer.subscription.updated]` with `data.previous_attributes`; no event if nothing
    /// changes. The subscription stays `active`, and so do its entitlements, until the period
    /// ends. Errors: an unknown portal session or subscription, another customer's
    /// subscription, one that has ended.
    ///
    /// The session's portal configuration is followed: cancelling is refused unless its
    /// `features.subscription_cancel.enabled`, and with `mode: immediately` the subscription ends
    /// at once instead (`[customer.subscription.deleted]`, then the entitlements summary if the
    /// customer's entitlements changed; see [`set_subscription_status`](Self::set_subscription_status)).
    pub fn portal_cancel_at_period_end(
        &self,
        portal_session_id: &str,
        subscription_id: &str,
        cancel: bool,
    ) -> Result<Vec<Value>, String> {
        flows::portal_cancel_at_period_end(
            &mut self.lock().store,
            portal_session_id,
            subscription_id,
            cancel,
        )
    }

    /// The customer portal's "update plan": the subscription's (single) item gets `price_id`,
    /// which must exist, be active, recurring and in the subscription's currency. A different
    /// interval starts a new period now; no proration invoice is made. Returns
    /// `[customer.subscription.updated]` with the old `items` as `previous_attributes`, then
    /// `entitlements.active_entitlement_summary.updated` if the new price's product grants other
    /// features; no event if the subscription already has that price. Errors as
    /// [`portal_cancel_at_period_end`](Self::portal_cancel_at_period_end), and for the price.
    ///
    /// The session's portal configuration (the `configuration` it was created with) is
    /// followed: the switch is refused unless `features.subscription_update` is enabled with
    /// `price` among its `default_allowed_updates` and, where it lists `products`, the price is
    /// listed under its product (the double's default configuration lists none: any price).
    /// Its `billing_cycle_anchor: now` starts a new period at every switch; its
    /// `proration_behavior` has no effect, as the double makes no proration items.
    pub fn portal_switch_price(
        &self,
        portal_session_id: &str,
        subscription_id: &str,
        price_id: &str,
    ) -> Result<Vec<Value>, String> {
        flows::portal_switch_price(
            &mut self.lock().store,
            portal_session_id,
            subscription_id,
            price_id,
        )
    }

    /// Stripe's billing moving a subscription on its own: `past_due` (a renewal payment
    /// failed), `unpaid` (retries exhausted, the subscription kept), `canceled` (ended now:
    /// `ended_at`, `cancellation_details.reason` `payment_failed` from `past_due`/`unpaid`,
    /// else `cancellation_requested`), or `active` again (paid). Returns
    /// `[customer.subscription.updated]` (with `previous_attributes.status`), or
    /// `[customer.subscription.deleted]` for `canceled`, then
    /// `entitlements.active_entitlement_summary.updated` when the customer's entitlements
    /// change (see [`store::ENTITLING_STATUSES`]: `past_due` keeps them, `unpaid` and
    /// `canceled` lose them); no event if the status is already `status`. Errors: an unknown or
    /// ended subscription, another status. No invoice or charge is made.
    pub fn set_subscription_status(
        &self,
        subscription_id: &str,
        status: &str,
    ) -> Result<Vec<Value>, String> {
        flows::set_subscription_status(&mut self.lock().store, subscription_id, status)
    }

    /// Recomputes the customer's active entitlements from its subscriptions now, as Stripe does
    /// whenever one of them changes: for subscriptions a test [`insert`](Self::insert)ed or
    /// [`patch`](Self::patch)ed, which change nothing else. Returns the
    /// `entitlements.active_entitlement_summary.updated` event if the entitlements changed.
    pub fn recompute_entitlements(&self, customer_id: &str) -> Vec<Value> {
        flows::recompute_entitlements(&mut self.lock().store, customer_id)
    }

    /// How many entitlements an `entitlements.active_entitlement_summary.updated` event carries
    /// from now on (Stripe's is [`store::SUMMARY_ENTITLEMENTS_LIMIT`]): a customer with more has
    /// `has_more: true` in the summary, and the rest only through
    /// `GET /v1/entitlements/active_entitlements`.
    pub fn set_summary_entitlements_limit(&self, limit: usize) {
        self.lock().store.summary_entitlements_limit = Some(limit);
    }

    /// The stored objects of a kind, oldest first, as the API would return them (endpoint
    /// secrets included, so tests can check what was handed out).
    pub fn objects(&self, kind: Kind) -> Vec<Value> {
        self.lock().store.all(kind)
    }

    /// One stored object (an endpoint with its secret), or `None`.
    pub fn retrieve(&self, kind: Kind, id: &str) -> Option<Value> {
        self.lock().store.get(kind, id).cloned()
    }

    /// `(url, secret)` of each enabled webhook endpoint that takes `event_type` (it is in the
    /// endpoint's `enabled_events`, or `*` is), oldest endpoint first.
    pub fn webhook_endpoints_for(&self, event_type: &str) -> Vec<(String, String)> {
        self.lock()
            .store
            .all(Kind::WebhookEndpoint)
            .into_iter()
            .filter(|e| e["status"] == "enabled")
            .filter(|e| {
                e["enabled_events"]
                    .as_array()
                    .is_some_and(|types| types.iter().any(|t| t == event_type || t == "*"))
            })
            .filter_map(|e| {
                Some((
                    e["url"].as_str()?.to_owned(),
                    e["secret"].as_str().unwrap_or_default().to_owned(),
                ))
            })
            .collect()
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Everything the real API would have refused, or that the contract forbids (a create without
    /// an `Idempotency-Key`), one line each.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// Creates an object directly, as set-up (not recorded, not checked). `params` are the
    /// decoded form parameters the API would take, e.g. `{"name": "billing"}` for a product.
    /// Returns the object, or Stripe's error body.
    ///
    /// A product feature names its product in `params["product"]` (the path parameter):
    /// `{"product": "prod_...", "entitlement_feature": "feat_..."}`.
    pub fn create(&self, kind: Kind, params: Value) -> Result<Value, Value> {
        let path = match kind {
            Kind::Product => "/v1/products".to_owned(),
            Kind::Price => "/v1/prices".to_owned(),
            Kind::WebhookEndpoint => "/v1/webhook_endpoints".to_owned(),
            Kind::Customer => "/v1/customers".to_owned(),
            Kind::CheckoutSession => "/v1/checkout/sessions".to_owned(),
            Kind::BillingPortalSession => "/v1/billing_portal/sessions".to_owned(),
            Kind::Feature => "/v1/entitlements/features".to_owned(),
            Kind::BillingPortalConfiguration => "/v1/billing_portal/configurations".to_owned(),
            Kind::ProductFeature => format!(
                "/v1/products/{}/features",
                params["product"].as_str().unwrap_or_default()
            ),
            // Made by Stripe (events, entitlements) or by Checkout and billing (subscriptions,
            // their schedules, charges, invoices) here: tests insert them.
            Kind::Event
            | Kind::Subscription
            | Kind::Charge
            | Kind::Invoice
            | Kind::SubscriptionSchedule
            | Kind::ActiveEntitlement => {
                return Err(store::error(400, "use insert for this kind", None, None).1);
            }
        };
        let mut params = params;
        if let (Kind::ProductFeature, Value::Object(map)) = (kind, &mut params) {
            map.remove("product");
        }
        match self.lock().store.handle("POST", &path, &params) {
            (200, object) => Ok(object),
            (_, error) => Err(error),
        }
    }

    /// Changes fields of a stored object, as set-up (e.g. a Checkout Session becoming `complete`).
    pub fn patch(&self, kind: Kind, id: &str, patch: Value) -> Option<Value> {
        self.lock().store.patch(kind, id, &patch)
    }

    /// Stores `object` as Stripe has it, id and `created` as given.
    pub fn insert(&self, kind: Kind, object: Value) {
        self.lock().store.insert(kind, object);
    }

    /// [`insert`](Self::insert) for many objects under one lock. The objects are collected
    /// before the lock is taken, so an iterator that reads the double itself does not deadlock.
    pub fn insert_many(&self, kind: Kind, objects: impl IntoIterator<Item = Value>) {
        let objects: Vec<Value> = objects.into_iter().collect();
        self.lock().store.insert_many(kind, objects);
    }

    /// The next `times` requests to `method path` get `status` (429 or 5xx, say) with a Stripe
    /// error body, and change nothing.
    pub fn fail_next(&self, method: &str, path: &str, status: u16, times: usize) {
        self.lock().faults.push(Fault {
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
            status,
            remaining: times,
        });
    }

    /// Seeds the account as `stripe-setup init` leaves it with the built-in catalog: the
    /// `billing` product and its Monthly (5499), Daily (299) and Annual (50000) CAD prices under
    /// the lookup keys `billing_monthly`, `billing_daily`, `billing_annual`.
    pub fn seed_default_catalog(&self) -> SeededCatalog {
        let created = |kind, params| {
            let object = self.create(kind, params).expect("seeding a fresh double");
            object["id"].as_str().unwrap_or_default().to_owned()
        };
        let product = created(
            Kind::Product,
            serde_json::json!({"name": "billing", "metadata": {"catalog_key": "billing"}}),
        );
        let price = |amount: i64, interval: &str, key: &str, nickname: &str| {
            created(
                Kind::Price,
                serde_json::json!({
                    "product": product, "currency": "cad", "unit_amount": amount,
                    "recurring": {"interval": interval}, "lookup_key": key, "nickname": nickname
                }),
            )
        };
        let annual = price(50000, "year", "billing_annual", "Annual Plan");
        let monthly = price(5499, "month", "billing_monthly", "Monthly Plan");
        let daily = price(299, "day", "billing_daily", "Daily Plan");
        SeededCatalog {
            product,
            monthly,
            daily,
            annual,
        }
    }
}

/// A running Stripe double. Point the code under test at [`uri`](Self::uri).
pub struct StripeDouble {
    server: MockServer,
    api: Api,
}

impl StripeDouble {
    pub async fn start() -> Self {
        let server = MockServer::start().await;
        let api = Api::new();
        Mock::given(any())
            .respond_with(Handler { api: api.clone() })
            .mount(&server)
            .await;
        Self { server, api }
    }

    /// The base URL, e.g. `http://127.0.0.1:41234` (no trailing slash, no `/v1`).
    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// The double behind the server (sharing its state), for what Stripe does without an API
    /// request: [`Api::complete_checkout`], the portal's changes.
    pub fn api(&self) -> Api {
        self.api.clone()
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.api.requests()
    }

    /// The POST requests received, in order: Stripe's writes.
    pub fn posts(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect()
    }

    /// Everything the real API would have refused, or that the contract forbids (a create without
    /// an `Idempotency-Key`), one line each.
    pub fn violations(&self) -> Vec<String> {
        self.api.violations()
    }

    /// Panics, listing them, if any request broke Stripe's schemas or the contract.
    #[track_caller]
    pub fn assert_no_violations(&self) {
        let violations = self.violations();
        assert!(
            violations.is_empty(),
            "requests Stripe would refuse:\n{}",
            violations.join("\n")
        );
    }

    /// The stored objects of a kind, oldest first, as the API would return them (endpoint
    /// secrets included, so tests can check what was handed out).
    pub fn objects(&self, kind: Kind) -> Vec<Value> {
        self.api.objects(kind)
    }

    /// Creates an object directly, as set-up (not recorded, not checked). `params` are the
    /// decoded form parameters the API would take, e.g. `{"name": "billing"}` for a product.
    /// Returns the object, or Stripe's error body.
    pub fn create(&self, kind: Kind, params: Value) -> Result<Value, Value> {
        self.api.create(kind, params)
    }

    /// Changes fields of a stored object, as set-up (e.g. a Checkout Session becoming `complete`).
    pub fn patch(&self, kind: Kind, id: &str, patch: Value) -> Option<Value> {
        self.api.patch(kind, id, patch)
    }

    /// Stores `object` as Stripe has it, id and `created` as given: events a test says Stripe
    /// sent (or that were lost on the way), for `GET /v1/events` to list.
    pub fn insert(&self, kind: Kind, object: Value) {
        self.api.insert(kind, object);
    }

    /// [`insert`](Self::insert) for many objects under one lock, to seed a backfill test with
    /// 100,000 of them. The objects are collected before the lock is taken, so an iterator that
    /// reads the double itself does not deadlock.
    pub fn insert_many(&self, kind: Kind, objects: impl IntoIterator<Item = Value>) {
        self.api.insert_many(kind, objects);
    }

    /// The next `times` requests to `method path` get `status` (429 or 5xx, say) with a Stripe
    /// error body, and change nothing.
    pub fn fail_next(&self, method: &str, path: &str, status: u16, times: usize) {
        self.api.fail_next(method, path, status, times);
    }

    /// Delays every response by `delay` (`None` to stop), to exercise timeouts.
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.api.lock().delay = delay;
    }

    /// See [`Api::set_summary_entitlements_limit`].
    pub fn set_summary_entitlements_limit(&self, limit: usize) {
        self.api.set_summary_entitlements_limit(limit);
    }

    /// See [`Api::set_subscription_status`].
    pub fn set_subscription_status(
        &self,
        subscription_id: &str,
        status: &str,
    ) -> Result<Vec<Value>, String> {
        self.api.set_subscription_status(subscription_id, status)
    }

    /// Seeds the account as `stripe-setup init` leaves it with the built-in catalog: the
    /// `billing` product and its Monthly (5499), Daily (299) and Annual (50000) CAD prices under
    /// the lookup keys `billing_monthly`, `billing_daily`, `billing_annual`.
    pub fn seed_default_catalog(&self) -> SeededCatalog {
        self.api.seed_default_catalog()
    }
}

/// The ids [`StripeDouble::seed_default_catalog`] created.
#[derive(Debug, Clone)]
pub struct SeededCatalog {
    pub product: String,
    pub monthly: String,
    pub daily: String,
    pub annual: String,
}

/// Serves the [`Api`] over wiremock.
struct Handler {
    api: Api,
}

impl Respond for Handler {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let answer = self.api.answer_http(
            request.method.as_str(),
            request.url.path(),
            request.url.query(),
            &request.headers,
            &request.body,
        );
        let mut response = ResponseTemplate::new(answer.status).set_body_json(answer.body);
        for (name, value) in answer.headers {
            response = response.insert_header(name.as_str(), value.as_str());
        }
        if let Some(delay) = self.api.lock().delay {
            response = response.set_delay(delay);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;

    /// Sends one authorized HTTP/1.1 GET and returns the response's head and body. Plain `std` is
    /// enough: the server runs on wiremock's own thread.
    fn get(uri: &str, path: &str) -> (String, String) {
        let address = uri.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).expect("the double listens");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer sk_test_1\r\n\
             Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        (head.to_owned(), body.to_owned())
    }

    /// Seconds since the epoch of an IMF-fixdate (`Tue, 01 Dec 2026 10:00:00 GMT`), or `None` if
    /// the text is not one (its weekday included).
    fn imf_fixdate_seconds(text: &str) -> Option<i64> {
        const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let (weekday, rest) = text.strip_suffix(" GMT")?.split_once(", ")?;
        let fields: Vec<&str> = rest.split([' ', ':']).collect();
        let [day, month, year, h, m, s] = fields.as_slice() else {
            return None;
        };
        if text.len() != 29 {
            return None;
        }
        let number = |s: &str| s.parse::<i64>().ok();
        let month = MONTHS.iter().position(|m| m == month)? as i64 + 1;
        // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
        let y = number(year)? - i64::from(month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * ((month + 9) % 12) + 2) / 5 + number(day)? - 1;
        let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
        let seconds = number(h)? * 3600 + number(m)? * 60 + number(s)?;
        (WEEKDAYS[days.rem_euclid(7) as usize] == weekday).then_some(days * 86_400 + seconds)
    }

    #[test]
    fn the_date_parser_knows_a_date() {
        assert_eq!(
            imf_fixdate_seconds("Tue, 01 Dec 2026 10:00:00 GMT"),
            Some(1_796_119_200)
        );
        assert_eq!(imf_fixdate_seconds("Wed, 01 Dec 2026 10:00:00 GMT"), None);
    }

    /// Stripe sends a `Date` header, and a client may read the server's clock from it. hyper,
    /// under wiremock, adds one to every response, so the double need not.
    #[tokio::test]
    async fn responses_carry_the_real_date() {
        let stripe = StripeDouble::start().await;
        let (head, _) = get(&stripe.uri(), "/v1/customers?limit=1");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let date = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .starts_with("date:")
                    .then(|| l[5..].trim())
            })
            .unwrap_or_else(|| panic!("no Date header in\n{head}"));
        let sent =
            imf_fixdate_seconds(date).unwrap_or_else(|| panic!("not an IMF-fixdate: {date}"));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((now - sent).abs() <= 5, "{date} is not now");
        stripe.assert_no_violations();
    }

    fn authorized(key: Option<&str>) -> BTreeMap<String, String> {
        let mut headers =
            BTreeMap::from([("authorization".to_owned(), "Bearer sk_test_1".to_owned())]);
        if let Some(key) = key {
            headers.insert("idempotency-key".to_owned(), key.to_owned());
        }
        headers
    }

    fn header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
        answer
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `answer` is the whole double: it checks, records, injects faults and replays as the HTTP
    /// path always did.
    #[test]
    fn answer_checks_records_fails_and_replays() {
        let api = Api::new();
        let created = api.answer(
            "POST",
            "/v1/customers",
            b"email=a@x.test&metadata[user_id]=u1",
            &authorized(Some("k1")),
        );
        assert_eq!(created.status, 200, "{}", created.body);
        assert_eq!(created.body["metadata"]["user_id"], "u1");
        assert_eq!(header(&created, "request-id"), Some("req_dbl1"));
        assert_eq!(header(&created, "idempotent-replayed"), None);

        // The same key and body: Stripe's first answer again, and nothing new.
        let replayed = api.answer(
            "POST",
            "/v1/customers",
            b"email=a@x.test&metadata[user_id]=u1",
            &authorized(Some("k1")),
        );
        assert_eq!(replayed.body, created.body);
        assert_eq!(header(&replayed, "idempotent-replayed"), Some("true"));
        assert_eq!(header(&replayed, "request-id"), Some("req_dbl2"));
        assert_eq!(api.objects(Kind::Customer).len(), 1);
        let reused = api.answer(
            "POST",
            "/v1/customers",
            b"email=b@x.test",
            &authorized(Some("k1")),
        );
        assert_eq!(reused.status, 400);
        assert_eq!(reused.body["error"]["code"], "idempotency_key_in_use");
        assert!(api.violations().is_empty(), "{:?}", api.violations());

        // What Stripe would refuse, refused and recorded.
        let unknown = api.answer(
            "POST",
            "/v1/customers",
            b"colour=red",
            &authorized(Some("k2")),
        );
        assert_eq!(unknown.status, 400);
        let anonymous = api.answer("GET", "/v1/customers", b"", &BTreeMap::new());
        assert_eq!(anonymous.status, 401);
        let keyless = api.answer("POST", "/v1/customers", b"", &authorized(None));
        assert_eq!(keyless.status, 200);
        let violations = api.violations();
        assert_eq!(violations.len(), 3, "{violations:?}");
        assert!(violations[0].contains("colour"), "{violations:?}");
        assert!(violations[1].contains("Authorization"), "{violations:?}");
        assert!(violations[2].contains("Idempotency-Key"), "{violations:?}");

        // An injected fault, once.
        api.fail_next("get", "/v1/customers", 503, 1);
        let failed = api.answer("GET", "/v1/customers", b"limit=1", &authorized(None));
        assert_eq!(failed.status, 503);
        assert_eq!(failed.body["error"]["type"], "api_error");
        let listed = api.answer("GET", "/v1/customers", b"limit=1", &authorized(None));
        assert_eq!(listed.status, 200);
        assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);

        let requests = api.requests();
        let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [200, 200, 400, 400, 401, 200, 503, 200]);
        assert_eq!(requests[0].params["email"], "a@x.test");
        assert_eq!(requests[0].idempotency_key(), Some("k1"));
        assert_eq!(requests[7].params["limit"], 1);
    }

    /// The HTTP double and its [`Api`] are one: what either is sent, both record, and what
    /// [`Api::complete_checkout`] makes is served over HTTP.
    #[tokio::test]
    async fn the_http_double_and_its_api_share_one_state() {
        let stripe = StripeDouble::start().await;
        let api = stripe.api();
        let catalog = stripe.seed_default_catalog();
        let (head, _) = get(&stripe.uri(), "/v1/customers?limit=1");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("request-id: req_dbl1"),
            "{head}"
        );
        let body = format!(
            "mode=subscription&customer_email=h@x.test&line_items[0][price]={}\
             &line_items[0][quantity]=1&success_url=http://x.test/s",
            catalog.monthly
        );
        let session = api.answer(
            "POST",
            "/v1/checkout/sessions",
            body.as_bytes(),
            &authorized(Some("cs-1")),
        );
        assert_eq!(session.status, 200, "{}", session.body);
        let paths: Vec<String> = stripe.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, ["/v1/customers", "/v1/checkout/sessions"]);

        let session_id = session.body["id"].as_str().unwrap();
        let events = api
            .complete_checkout(session_id, "4242424242424242")
            .unwrap();
        let (head, body) = get(&stripe.uri(), "/v1/events?limit=100");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
        let listed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(listed["data"].as_array().unwrap().len(), events.len());
        assert_eq!(listed["data"][0]["type"], "checkout.session.completed");
        let (_, body) = get(
            &stripe.uri(),
            &format!("/v1/checkout/sessions/{session_id}"),
        );
        let completed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(completed["status"], "complete");
        assert_eq!(stripe.objects(Kind::Subscription).len(), 1);
        stripe.assert_no_violations();
    }

    /// What a backfill does through HTTP: seeded objects, read back by a `created` range given in
    /// bracket notation.
    #[tokio::test]
    async fn inserted_customers_are_listed_by_created_range() {
        let stripe = StripeDouble::start().await;
        stripe.insert_many(
            Kind::Customer,
            (0..5).map(|i| serde_json::json!({"id": format!("cus_{i}"), "created": 100 + i})),
        );
        let (head, body) = get(
            &stripe.uri(),
            "/v1/customers?created[gte]=102&created[lt]=104",
        );
        assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
        let list: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(list["data"][0]["id"], "cus_3");
        assert_eq!(list["data"][1]["id"], "cus_2");
        assert_eq!(list["data"].as_array().unwrap().len(), 2);
        stripe.assert_no_violations();
    }

    /// A backfill's subscription listing over HTTP, checked against the list's request schema.
    #[tokio::test]
    async fn subscriptions_of_every_status_are_paged_over_http() {
        let stripe = StripeDouble::start().await;
        stripe.insert_many(
            Kind::Subscription,
            ["active", "canceled", "past_due"].iter().enumerate().map(|(i, status)| {
                serde_json::json!({"id": format!("sub_{i}"), "created": 100 + i, "status": status,
                                   "customer": "cus_1"})
            }),
        );
        let mut seen = Vec::new();
        let mut path = "/v1/subscriptions?customer=cus_1&status=all&limit=2".to_owned();
        loop {
            let (head, body) = get(&stripe.uri(), &path);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
            let page: Value = serde_json::from_str(&body).unwrap();
            let ids: Vec<String> = page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_owned())
                .collect();
            seen.extend(ids.iter().cloned());
            if page["has_more"] != true {
                break;
            }
            path = format!(
                "/v1/subscriptions?customer=cus_1&status=all&limit=2&starting_after={}",
                ids.last().unwrap()
            );
        }
        assert_eq!(seen, ["sub_2", "sub_1", "sub_0"]);
        stripe.assert_no_violations();
    }
}
