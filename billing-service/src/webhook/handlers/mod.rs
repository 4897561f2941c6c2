//! What each event type does to our tables, and the place to add behaviour of your own.
//!
//! A handler gets the worker's transaction and the event; the worker marks the event processed
//! in that same transaction, so a handler's writes and "processed" commit together or not at
//! all. Handlers must be idempotent (an event may be delivered, or replayed, more than once) and
//! order-safe: every table keeps the `created` of the newest event applied to a row, and an
//! older event never overwrites it. A handler can also run more than once in one attempt: the
//! worker runs a batch of events under one savepoint, and when one of them fails, the writes of
//! the others are rolled back with it and they run again.
//!
//! # Adding behaviour
//! ```no_run
//! use billing_service::webhook::handlers::{Event, EventHandler, HandlerError, Handlers};
//! use sqlx::AnyConnection;
//!
//! struct WelcomeEmail;
//!
//! #[async_trait::async_trait]
//! impl EventHandler for WelcomeEmail {
//!     async fn handle(&self, conn: &mut AnyConnection, event: &Event) -> Result<(), HandlerError> {
//!         // e.g. insert into an outbox table in the same transaction; a mailer sends it later.
//!         Ok(())
//!     }
//! }
//!
//! let handlers = Handlers::builtin().on("customer.subscription.created", WelcomeEmail);
//! ```
//! Added handlers run after the built-in one for the same type, in the same transaction, and by
//! the worker, after the delivery is acknowledged (unless they say they may run before, with
//! [`EventHandler::on_receipt`]). Keep slow calls (HTTP, SMTP) out of them: write an outbox row
//! instead, so the row lock is short.
//! A handler that panics, or runs past `WEBHOOK_HANDLER_TIMEOUT_SECS`, fails that event's
//! attempt like an error would; the worker and the other events go on.

mod charges;
mod checkout_session;
mod customers;
mod entitlements;
mod invoices;
mod schedules;
mod subscriptions;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde::de::DeserializeOwned;

use crate::metrics::Metrics;
use crate::stripe_reader::StripeReader;
use serde::{Deserialize, Deserializer};
use sqlx::AnyConnection;

/// A stored event, as handlers see it.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub event_type: String,
    pub created: i64,
    pub payload: Payload,
    /// Which attempt at this event this is, from 1.
    pub attempt: u32,
    /// How to settle a tie with the stored state, when the service can read Stripe.
    pub ties: Option<TieResolver>,
    /// Not an event but an object `sync` read from Stripe's lists, as of `created` (the second
    /// Stripe read it): written only where it changes a row.
    pub listed: bool,
    /// Handled as its delivery is stored, before it is acknowledged
    /// ([`EventHandler::on_receipt`]): nothing may be asked of Stripe then. A handler that
    /// would need to (a same-second tie, a partial list) returns [`HandlerError::Deferred`], and
    /// the event goes to the worker, which asks.
    pub on_receipt: bool,
}

/// The objects `sync` reads from Stripe's lists, each written by the built-in handler of the
/// event that would carry it, so that one piece of code reads each kind of object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    Customer,
    Subscription,
    SubscriptionSchedule,
    Charge,
    Invoice,
}

impl Listed {
    /// The event type whose handler writes `object`; `None` when it has nothing to write (an
    /// invoice that was neither paid nor failed a payment: a draft, a void one, one not tried).
    fn event_type(self, object: &serde_json::Value) -> Option<&'static str> {
        Some(match self {
            Self::Customer => "customer.updated",
            Self::Subscription => "customer.subscription.updated",
            Self::SubscriptionSchedule => "subscription_schedule.updated",
            Self::Charge => "charge.updated",
            Self::Invoice => {
                let attempted = object["attempted"].as_bool().unwrap_or(false);
                match object["status"].as_str() {
                    Some("paid") => "invoice.paid",
                    Some("open" | "uncollectible") if attempted => "invoice.payment_failed",
                    _ => return None,
                }
            }
        })
    }

    /// Writes `object`, read by Stripe at `read_at`, where it changes something; returns the
    /// rows written, or `None` when the object has nothing to store.
    pub async fn write(
        self,
        conn: &mut AnyConnection,
        object: serde_json::Value,
        read_at: i64,
        ties: Option<TieResolver>,
    ) -> Result<Option<u64>, HandlerError> {
        let Some(event_type) = self.event_type(&object) else {
            return Ok(None);
        };
        let id = object["id"].as_str().unwrap_or_default();
        let event = Event {
            id: format!("listed {id}"),
            event_type: event_type.to_owned(),
            created: read_at,
            payload: serde_json::json!({ "data": { "object": object } }).into(),
            attempt: 1,
            ties,
            listed: true,
            on_receipt: false,
        };
        let written = match self {
            Self::Customer => customers::write(conn, &event).await,
            Self::Subscription => subscriptions::write(conn, &event).await,
            Self::SubscriptionSchedule => schedules::write(conn, &event).await,
            Self::Charge => charges::write(conn, &event).await,
            Self::Invoice => invoices::write(conn, &event).await,
        };
        written.map(Some)
    }
}

/// Settles an event whose `created` is the same second as the state already stored for its
/// object: Stripe's `created` has no finer grain, so which of the two is newer is unknown (a
/// `customer.subscription.created` and its `.updated` often share a second), and the object as
/// Stripe has it now is the truth. Each tie is counted by type and outcome.
#[derive(Clone)]
pub struct TieResolver {
    stripe: Arc<StripeReader>,
    metrics: Metrics,
}

impl std::fmt::Debug for TieResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TieResolver")
    }
}

impl TieResolver {
    pub fn new(stripe: Arc<StripeReader>, metrics: Metrics) -> Self {
        Self { stripe, metrics }
    }

    /// The reader, for a handler that needs more of Stripe than one object (a list that an
    /// event carries only the first page of).
    pub fn reader(&self) -> &StripeReader {
        &self.stripe
    }

    /// Stripe's current copy of the object at `path` (e.g. `/v1/subscriptions/sub_...`), or
    /// `None` when it cannot be read: the caller then keeps its usual rule.
    pub async fn current(&self, event: &Event, path: &str) -> Option<serde_json::Value> {
        match self.stripe.object(path).await {
            Ok(object) => {
                self.metrics.tie(&event.event_type, "stripe");
                Some(object)
            }
            Err(e) => {
                self.metrics.tie(&event.event_type, "kept");
                tracing::warn!(event_id = %event.id, error = %e, "a same-second tie could not be settled with Stripe; the later-processed event wins");
                None
            }
        }
    }
}

impl Event {
    /// `data.object` read as `T`. Unknown fields are ignored; a missing field `T` needs is an
    /// error that names it, recorded on the event's row.
    pub fn object<T: DeserializeOwned>(&self) -> Result<T, HandlerError> {
        let missing = || HandlerError::Invalid("the event has no data.object".into());
        let invalid = |e: serde_json::Error| {
            HandlerError::Invalid(format!("data.object: {}", without_position(&e)))
        };
        match &self.payload.0 {
            Body::Tree(tree) => {
                let object = tree.pointer("/data/object").ok_or_else(missing)?;
                T::deserialize(object).map_err(invalid)
            }
            Body::Text { text, .. } => {
                #[derive(Deserialize)]
                struct Outer<'a> {
                    #[serde(borrow)]
                    data: Option<Data<'a>>,
                }
                #[derive(Deserialize)]
                struct Data<'a> {
                    #[serde(borrow)]
                    object: Option<&'a serde_json::value::RawValue>,
                }
                let object = serde_json::from_str::<Outer<'_>>(text)
                    .ok()
                    .and_then(|outer| outer.data?.object)
                    .ok_or_else(missing)?;
                serde_json::from_str(object.get()).map_err(invalid)
            }
        }
    }
}

/// serde_json's message without the " at line L column C" it adds when it reads text, so that
/// an error recorded on an event reads the same however its body was read.
fn without_position(e: &serde_json::Error) -> String {
    let message = e.to_string();
    if e.line() == 0 {
        return message;
    }
    let position = format!(" at line {} column {}", e.line(), e.column());
    match message.strip_suffix(&position) {
        Some(message) => message.to_owned(),
        None => message,
    }
}

/// An event's body, as handlers read it: the JSON text as it was stored, parsed into a tree
/// only for a handler that asks for one ([`Payload::value`]). The built-in handlers read just
/// their object ([`Event::object`]), which costs a fraction of building the tree of the whole
/// body (BENCHMARKS.md).
#[derive(Debug, Clone)]
pub struct Payload(Body);

#[derive(Debug, Clone)]
enum Body {
    /// Known to be JSON; the tree is built on first use.
    Text {
        text: String,
        tree: OnceLock<serde_json::Value>,
    },
    /// An object `sync` read from Stripe, already a tree.
    Tree(serde_json::Value),
}

impl Payload {
    /// A stored body, when it is JSON.
    pub fn parse(text: impl Into<String>) -> Result<Self, serde_json::Error> {
        let text = text.into();
        serde_json::from_str::<serde::de::IgnoredAny>(&text)?;
        Ok(Self::read_already(text))
    }

    /// A body the caller has just read as JSON (a delivery's, whose envelope was parsed from
    /// it), which is not read again here.
    pub(crate) fn read_already(text: impl Into<String>) -> Self {
        Self(Body::Text {
            text: text.into(),
            tree: OnceLock::new(),
        })
    }

    /// The whole body as a tree, built on the first call.
    pub fn value(&self) -> Result<&serde_json::Value, HandlerError> {
        match &self.0 {
            Body::Tree(tree) => Ok(tree),
            Body::Text { text, tree } => {
                if let Some(tree) = tree.get() {
                    return Ok(tree);
                }
                let parsed = serde_json::from_str(text)
                    .map_err(|e| HandlerError::Invalid(format!("the body is not JSON ({e})")))?;
                Ok(tree.get_or_init(|| parsed))
            }
        }
    }
}

impl From<serde_json::Value> for Payload {
    fn from(tree: serde_json::Value) -> Self {
        Self(Body::Tree(tree))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event cannot be handled as it is: retrying will not help, so it is parked as
    /// `failed` at once (an operator can replay it after a fix).
    #[error("{0}")]
    Invalid(String),
    /// Worth retrying with backoff.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A custom handler's failure; retried with backoff.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
    /// The handler panicked. Counted as a failed attempt of that event alone (retried, then
    /// parked), so a bug in one handler never stops the others; replay the event after the fix.
    #[error("the handler panicked: {0}")]
    Panicked(String),
    /// The handler ran past `WEBHOOK_HANDLER_TIMEOUT_SECS`; retried with backoff.
    #[error("the handler did not finish within {0:?}")]
    TimedOut(std::time::Duration),
    /// On receipt ([`Event::on_receipt`]), the event needs what only the worker has (Stripe):
    /// not a failure; the event is stored for the worker. The worker never gets it (its
    /// events are not on receipt), and would retry it with backoff.
    #[error("left to the worker: {0}")]
    Deferred(&'static str),
}

#[async_trait::async_trait]
pub trait EventHandler: Send + Sync + 'static {
    async fn handle(&self, conn: &mut AnyConnection, event: &Event) -> Result<(), HandlerError>;

    /// Handles events that follow one another in the worker's batch, in queue order, when this
    /// is the only handler of their types: a handler that writes a row per event can write them
    /// all with one statement, one round trip instead of one per event. It must leave the tables
    /// as handling them in turn would. `None` (the default) means one at a time. When it fails,
    /// the worker runs the events one at a time to find which one failed, so the error need not
    /// say; the time limit is one event's.
    async fn handle_batch(
        &self,
        _conn: &mut AnyConnection,
        _events: &[&Event],
    ) -> Option<Result<(), HandlerError>> {
        None
    }

    /// Whether this handler may run as its event is stored, in the transaction that stores it,
    /// before the delivery is acknowledged: so the event costs one transaction instead of a
    /// stored row the worker then claims and rewrites (`webhook::batch`). Only for a handler that
    /// does nothing then but write our tables through `conn`, briefly: the delivery waits for
    /// it, so it gets at most a second, and no Stripe ([`Event::ties`] is `None`; when it would
    /// need Stripe it returns [`HandlerError::Deferred`]). If it fails, its batch is stored for
    /// the worker, which runs it as usual. On MySQL every handler runs in the worker. `false`
    /// (the default): the worker runs it.
    fn on_receipt(&self) -> bool {
        false
    }
}

/// Event type → the handlers to run, in order.
#[derive(Clone, Default)]
pub struct Handlers {
    by_type: HashMap<String, Vec<Arc<dyn EventHandler>>>,
}

impl Handlers {
    /// The handlers this service ships with.
    pub fn builtin() -> Self {
        Self::default()
            .on_each(
                &["customer.created", "customer.updated", "customer.deleted"],
                customers::Customers,
            )
            .on_each(
                &[
                    "charge.succeeded",
                    "charge.failed",
                    "charge.refunded",
                    "charge.updated",
                ],
                charges::Charges,
            )
            .on_each(
                &[
                    "customer.subscription.created",
                    "customer.subscription.updated",
                    "customer.subscription.deleted",
                ],
                subscriptions::Subscriptions,
            )
            .on_each(
                &[
                    "subscription_schedule.created",
                    "subscription_schedule.updated",
                    "subscription_schedule.canceled",
                    "subscription_schedule.released",
                    "subscription_schedule.completed",
                ],
                schedules::Schedules,
            )
            .on_each(
                &["invoice.paid", "invoice.payment_failed"],
                invoices::Invoices,
            )
            .on(
                "checkout.session.completed",
                checkout_session::CheckoutCompleted,
            )
            .on(
                "entitlements.active_entitlement_summary.updated",
                entitlements::Entitlements,
            )
    }

    /// Adds a handler for `event_type`, after those already there.
    pub fn on(self, event_type: &str, handler: impl EventHandler) -> Self {
        self.on_each(&[event_type], handler)
    }

    /// Adds one handler for several event types (one instance, shared), after those already
    /// there.
    pub fn on_each(mut self, event_types: &[&str], handler: impl EventHandler) -> Self {
        let handler: Arc<dyn EventHandler> = Arc::new(handler);
        for event_type in event_types {
            self.by_type
                .entry((*event_type).to_owned())
                .or_default()
                .push(handler.clone());
        }
        self
    }

    /// Every event type that has a handler, sorted: what a Stripe endpoint should be subscribed
    /// to. For the built-in handlers, the default catalog's `enabled_events`, the types
    /// `stripe-setup trigger` can send and the README's table follow this list (a test checks).
    pub fn event_types(&self) -> Vec<&str> {
        let mut types: Vec<&str> = self.by_type.keys().map(String::as_str).collect();
        types.sort_unstable();
        types
    }

    /// The handlers for a type; empty means the type is ignored.
    pub fn for_type(&self, event_type: &str) -> &[Arc<dyn EventHandler>] {
        self.by_type
            .get(event_type)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// A reference to another Stripe object: its id, or the object itself when expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectId(pub String);

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Id(String),
            Expanded { id: String },
        }
        Ok(match Either::deserialize(deserializer)? {
            Either::Id(id) | Either::Expanded { id } => Self(id),
        })
    }
}

fn id(object: &Option<ObjectId>) -> Option<&str> {
    object.as_ref().map(|o| o.0.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(payload: Payload) -> Event {
        Event {
            id: "evt_1".into(),
            event_type: "charge.succeeded".into(),
            created: 1,
            payload,
            attempt: 1,
            ties: None,
            listed: false,
            on_receipt: false,
        }
    }

    #[derive(Debug, PartialEq, Deserialize)]
    struct Object {
        id: String,
        amount: i64,
    }

    /// A body read as stored text and the same body as a tree give the same object, and the
    /// same error, without the text's line and column.
    #[test]
    fn an_object_reads_the_same_from_text_and_from_a_tree() {
        let bodies = [
            (
                r#"{"id":"evt_1","data":{"object":{"id":"ch_1","amount":5,"x":[1,{"y":null}]}},"z":"\u00e9"}"#,
                Ok(Object {
                    id: "ch_1".into(),
                    amount: 5,
                }),
            ),
            (
                r#"{"data":{"object":{"id":"ch_1"}}}"#,
                Err("data.object: missing field `amount`"),
            ),
            (
                r#"{"data":{"object":{"id":"ch_1","amount":"5"}}}"#,
                Err("data.object: invalid type: string \"5\", expected i64"),
            ),
            (r#"{"data":{}}"#, Err("the event has no data.object")),
            (r#"{"data":7}"#, Err("the event has no data.object")),
            (r#"{"id":"evt_1"}"#, Err("the event has no data.object")),
        ];
        for (body, expected) in bodies {
            let expected = expected.map_err(str::to_owned);
            let from_text = Payload::parse(body).unwrap();
            let from_tree = Payload::from(serde_json::from_str::<serde_json::Value>(body).unwrap());
            for payload in [from_text, from_tree] {
                let read = event(payload).object::<Object>().map_err(|e| e.to_string());
                assert_eq!(read, expected, "{body}");
            }
        }
        let payload = Payload::parse(r#"{"data":{"object":{"amount":5}}}"#).unwrap();
        assert_eq!(payload.value().unwrap()["data"]["object"]["amount"], 5);
        assert!(Payload::parse("{\"id\": ").is_err());
        assert!(Payload::parse("{} x").is_err());
    }
}
