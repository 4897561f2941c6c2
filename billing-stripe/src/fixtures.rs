//! Realistic Stripe events, built in code.
//!
//! Webhook handlers, their tests, `stripe-setup trigger` and the benchmarks all need events that
//! look like what Stripe really sends (the envelope, and a `data.object` with the fields a handler
//! reads), without a Stripe account. One builder here keeps them all honest about the same shape:
//! the shape of [`API_VERSION`](crate::API_VERSION), where `current_period_end` lives on
//! subscription items and an invoice names its subscription under
//! `parent.subscription_details`. The older top-level fields are kept too, because handlers written
//! against either shape should find what they look for.

use serde_json::{Value, json};

/// The event types [`event`] can build, hence what `stripe-setup trigger` can send: exactly
/// the types billing-service's handlers take (its tests compare the two lists).
pub const SUPPORTED: &[&str] = &[
    "charge.succeeded",
    "charge.failed",
    "charge.refunded",
    "charge.updated",
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "subscription_schedule.created",
    "subscription_schedule.updated",
    "subscription_schedule.canceled",
    "subscription_schedule.released",
    "subscription_schedule.completed",
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
    "entitlements.active_entitlement_summary.updated",
];

/// An event type [`event`] does not know how to build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no fixture for event type '{0}' (known: {known})", known = SUPPORTED.join(", "))]
pub struct UnknownEventType(pub String);

/// What varies between events. Every field has a sensible default, so a test names only what it
/// cares about: `EventSpec { event_type: "invoice.paid".into(), ..Default::default() }`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSpec {
    pub event_type: String,
    /// The event id; deliveries are deduplicated on it, so load tests give each event its own.
    pub id: String,
    /// Unix seconds. Handlers order events by it, so tests of ordering set it explicitly.
    pub created: i64,
    pub customer: String,
    pub subscription: String,
    /// Our user id, carried as `metadata.user_id` on customers and subscriptions, and as the
    /// Checkout Session's `client_reference_id`.
    pub user_id: String,
    pub email: String,
    pub price_id: String,
    /// The price's lookup key (the plan as the catalog names it).
    pub lookup_key: Option<String>,
    /// The lookup keys of the features an entitlement summary lists.
    pub features: Vec<String>,
    /// Overrides the object's status, which otherwise follows from the event type (for example
    /// `failed` for `charge.failed`, `canceled` for `customer.subscription.deleted`).
    pub status: Option<String>,
    /// Minor units (cents).
    pub amount: i64,
    pub currency: String,
    pub current_period_end: i64,
    pub cancel_at_period_end: bool,
    /// `data.previous_attributes` for `*.updated` events; a plausible default is used when `None`.
    pub previous_attributes: Option<Value>,
}

impl Default for EventSpec {
    fn default() -> Self {
        Self {
            event_type: "customer.created".into(),
            id: "evt_1TestFixture0000000001".into(),
            created: 1_767_225_600,
            customer: "cus_TestFixture0001".into(),
            subscription: "sub_1TestFixture00000001".into(),
            user_id: "user-1".into(),
            email: "user-1@example.com".into(),
            price_id: "price_1TestFixtureMonthly".into(),
            lookup_key: Some("billing_monthly".into()),
            features: vec!["billing_basic".into()],
            status: None,
            amount: 5499,
            currency: "cad".into(),
            current_period_end: 1_767_225_600 + 30 * 86_400,
            cancel_at_period_end: false,
            previous_attributes: None,
        }
    }
}

impl EventSpec {
    /// The defaults, with this type and id.
    pub fn new(event_type: &str, id: &str) -> Self {
        Self {
            event_type: event_type.into(),
            id: id.into(),
            ..Self::default()
        }
    }

    /// The id suffix shared by the objects this event creates, so that one event's charge,
    /// invoice and payment intent belong together and differ from another event's.
    fn suffix(&self) -> &str {
        self.id.strip_prefix("evt_").unwrap_or(&self.id)
    }

    fn status_or(&self, default: &str) -> String {
        self.status.clone().unwrap_or_else(|| default.to_owned())
    }
}

/// A whole Stripe event (the JSON Stripe posts to a webhook endpoint) for `spec`.
pub fn event(spec: &EventSpec) -> Result<Value, UnknownEventType> {
    let (object, previous) = match spec.event_type.as_str() {
        "charge.succeeded" => (charge(spec, "succeeded", false), None),
        "charge.failed" => (charge(spec, "failed", false), None),
        "charge.refunded" => (
            charge(spec, "succeeded", true),
            Some(json!({"refunded": false, "amount_refunded": 0})),
        ),
        "charge.updated" => (
            charge(spec, "succeeded", false),
            Some(json!({"description": null})),
        ),
        "customer.created" => (customer(spec), None),
        "customer.updated" => (customer(spec), Some(json!({"email": "old@example.com"}))),
        "customer.deleted" => {
            let mut c = customer(spec);
            c["deleted"] = json!(true);
            (c, None)
        }
        "subscription_schedule.created" => (schedule(spec, "not_started"), None),
        "subscription_schedule.updated" => (
            schedule(spec, "active"),
            Some(json!({"status": "not_started"})),
        ),
        "subscription_schedule.canceled" => (
            schedule(spec, "canceled"),
            Some(json!({"status": "active"})),
        ),
        "subscription_schedule.released" => (
            schedule(spec, "released"),
            Some(json!({"status": "active"})),
        ),
        "subscription_schedule.completed" => (
            schedule(spec, "completed"),
            Some(json!({"status": "active"})),
        ),
        "checkout.session.completed" => (checkout_session(spec), None),
        "customer.subscription.created" => (subscription(spec, "active"), None),
        "customer.subscription.updated" => (
            subscription(spec, "active"),
            Some(json!({"cancel_at_period_end": !spec.cancel_at_period_end})),
        ),
        "customer.subscription.deleted" => (subscription(spec, "canceled"), None),
        "invoice.paid" => (invoice(spec, true), None),
        "invoice.payment_failed" => (invoice(spec, false), None),
        "entitlements.active_entitlement_summary.updated" => (
            entitlement_summary(spec),
            Some(json!({"entitlements": entitlement_list(spec, &[])})),
        ),
        other => return Err(UnknownEventType(other.to_owned())),
    };
    let mut data = json!({ "object": object });
    if let Some(previous) = spec.previous_attributes.clone().or(previous) {
        data["previous_attributes"] = previous;
    }
    Ok(json!({
        "id": spec.id,
        "object": "event",
        "api_version": crate::API_VERSION,
        "created": spec.created,
        "data": data,
        "livemode": false,
        "pending_webhooks": 1,
        "request": {
            "id": format!("req_{}", spec.suffix()),
            "idempotency_key": format!("fixture-{}", spec.suffix()),
        },
        "type": spec.event_type,
    }))
}

fn customer(spec: &EventSpec) -> Value {
    json!({
        "id": spec.customer,
        "object": "customer",
        "address": null,
        "balance": 0,
        "created": spec.created,
        "currency": spec.currency,
        "default_source": null,
        "delinquent": false,
        "description": null,
        "email": spec.email,
        "invoice_prefix": "A1B2C3D4",
        "invoice_settings": {
            "custom_fields": null,
            "default_payment_method": null,
            "footer": null,
            "rendering_options": null
        },
        "livemode": false,
        "metadata": { "user_id": spec.user_id },
        "name": format!("Test User {}", spec.user_id),
        "phone": null,
        "preferred_locales": [],
        "shipping": null,
        "tax_exempt": "none",
        "test_clock": null
    })
}

fn charge(spec: &EventSpec, default_status: &str, refunded: bool) -> Value {
    let status = spec.status_or(default_status);
    let failed = status == "failed";
    let suffix = spec.suffix();
    json!({
        "id": format!("ch_{suffix}"),
        "object": "charge",
        "amount": spec.amount,
        "amount_captured": if failed { 0 } else { spec.amount },
        "amount_refunded": if refunded { spec.amount } else { 0 },
        "balance_transaction": if failed { Value::Null } else { json!(format!("txn_{suffix}")) },
        "billing_details": {
            "address": null,
            "email": spec.email,
            "name": null,
            "phone": null
        },
        "captured": !failed,
        "created": spec.created,
        "currency": spec.currency,
        "customer": spec.customer,
        "description": "Subscription update",
        "failure_code": if failed { json!("card_declined") } else { Value::Null },
        "failure_message": if failed { json!("Your card was declined.") } else { Value::Null },
        "invoice": format!("in_{suffix}"),
        "livemode": false,
        "metadata": {},
        "outcome": {
            "network_status": if failed { "declined_by_network" } else { "approved_by_network" },
            "reason": if failed { json!("generic_decline") } else { Value::Null },
            "risk_level": "normal",
            "seller_message": if failed {
                "The bank did not return any further details with this decline."
            } else {
                "Payment complete."
            },
            "type": if failed { "issuer_declined" } else { "authorized" }
        },
        "paid": !failed,
        "payment_intent": format!("pi_{suffix}"),
        "payment_method": format!("pm_{suffix}"),
        "receipt_email": spec.email,
        "refunded": refunded,
        "status": status
    })
}

fn subscription_item(spec: &EventSpec) -> Value {
    json!({
        "id": format!("si_{}", spec.subscription.trim_start_matches("sub_")),
        "object": "subscription_item",
        "created": spec.created,
        "current_period_end": spec.current_period_end,
        "current_period_start": spec.created,
        "metadata": {},
        "price": price(spec),
        "quantity": 1,
        "subscription": spec.subscription
    })
}

fn price(spec: &EventSpec) -> Value {
    json!({
        "id": spec.price_id,
        "object": "price",
        "active": true,
        "billing_scheme": "per_unit",
        "created": spec.created,
        "currency": spec.currency,
        "livemode": false,
        "lookup_key": spec.lookup_key,
        "metadata": {},
        "nickname": null,
        "product": "prod_TestFixture0001",
        "recurring": {
            "interval": "month",
            "interval_count": 1,
            "usage_type": "licensed"
        },
        "tax_behavior": "unspecified",
        "type": "recurring",
        "unit_amount": spec.amount,
        "unit_amount_decimal": spec.amount.to_string()
    })
}

fn entitlement_summary(spec: &EventSpec) -> Value {
    json!({
        "object": "entitlements.active_entitlement_summary",
        "customer": spec.customer,
        "entitlements": entitlement_list(spec, &spec.features),
        "livemode": false
    })
}

/// The first page of a customer's active entitlements, as a summary carries it.
fn entitlement_list(spec: &EventSpec, features: &[String]) -> Value {
    let data: Vec<Value> = features
        .iter()
        .map(|key| {
            json!({
                "id": format!("ent_{}_{key}", spec.suffix()),
                "object": "entitlements.active_entitlement",
                "feature": format!("feat_{key}"),
                "livemode": false,
                "lookup_key": key
            })
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "has_more": false,
        "url": format!("/v1/customer/{}/entitlements", spec.customer)
    })
}

fn subscription(spec: &EventSpec, default_status: &str) -> Value {
    let status = spec.status_or(default_status);
    let canceled = status == "canceled";
    let trial_end = match status.as_str() {
        "trialing" => json!(spec.current_period_end),
        _ => Value::Null,
    };
    json!({
        "id": spec.subscription,
        "object": "subscription",
        "billing_cycle_anchor": spec.created,
        "cancel_at": if spec.cancel_at_period_end { json!(spec.current_period_end) } else { Value::Null },
        "cancel_at_period_end": spec.cancel_at_period_end,
        "canceled_at": if canceled { json!(spec.created) } else { Value::Null },
        "collection_method": "charge_automatically",
        "created": spec.created,
        "currency": spec.currency,
        "current_period_end": spec.current_period_end,
        "current_period_start": spec.created,
        "customer": spec.customer,
        "ended_at": if canceled { json!(spec.created) } else { Value::Null },
        "items": {
            "object": "list",
            "data": [subscription_item(spec)],
            "has_more": false,
            "total_count": 1,
            "url": format!("/v1/subscription_items?subscription={}", spec.subscription)
        },
        "latest_invoice": format!("in_{}", spec.suffix()),
        "livemode": false,
        "metadata": { "user_id": spec.user_id },
        "schedule": null,
        "start_date": spec.created,
        "status": status,
        "trial_end": trial_end
    })
}

fn schedule(spec: &EventSpec, default_status: &str) -> Value {
    let status = spec.status_or(default_status);
    json!({
        "id": format!("sub_sched_{}", spec.suffix()),
        "object": "subscription_schedule",
        "canceled_at": if status == "canceled" { json!(spec.created) } else { Value::Null },
        "completed_at": if status == "completed" { json!(spec.created) } else { Value::Null },
        "created": spec.created,
        "current_phase": if status == "active" {
            json!({"start_date": spec.created, "end_date": spec.current_period_end})
        } else {
            Value::Null
        },
        "customer": spec.customer,
        "end_behavior": "release",
        "livemode": false,
        "metadata": { "user_id": spec.user_id },
        "phases": [{
            "start_date": spec.created,
            "end_date": spec.current_period_end,
            "items": [{ "price": spec.price_id, "quantity": 1, "metadata": {} }],
            "metadata": {},
            "proration_behavior": "create_prorations"
        }],
        "released_at": if status == "released" { json!(spec.created) } else { Value::Null },
        "released_subscription": if status == "released" { json!(spec.subscription) } else { Value::Null },
        "status": status,
        "subscription": if status == "not_started" { Value::Null } else { json!(spec.subscription) }
    })
}

fn checkout_session(spec: &EventSpec) -> Value {
    json!({
        "id": format!("cs_test_{}", spec.suffix()),
        "object": "checkout.session",
        "amount_subtotal": spec.amount,
        "amount_total": spec.amount,
        "cancel_url": "http://localhost:8080/billing/cancel?session_id={CHECKOUT_SESSION_ID}",
        "client_reference_id": spec.user_id,
        "created": spec.created,
        "currency": spec.currency,
        "customer": spec.customer,
        "customer_details": { "email": spec.email, "name": null },
        "customer_email": null,
        "expires_at": spec.created + 86_400,
        "invoice": format!("in_{}", spec.suffix()),
        "livemode": false,
        "metadata": {},
        "mode": "subscription",
        "payment_status": spec.status_or("paid"),
        "status": "complete",
        "subscription": spec.subscription,
        "success_url": "http://localhost:8080/billing/success?session_id={CHECKOUT_SESSION_ID}",
        "url": null
    })
}

fn invoice(spec: &EventSpec, paid: bool) -> Value {
    let status = spec.status_or(if paid { "paid" } else { "open" });
    json!({
        "id": format!("in_{}", spec.suffix()),
        "object": "invoice",
        "amount_due": spec.amount,
        "amount_paid": if paid { spec.amount } else { 0 },
        "amount_remaining": if paid { 0 } else { spec.amount },
        "attempt_count": 1,
        "attempted": true,
        "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically",
        "created": spec.created,
        "currency": spec.currency,
        "customer": spec.customer,
        "customer_email": spec.email,
        "hosted_invoice_url": format!("https://invoice.stripe.com/i/test_{}", spec.suffix()),
        "lines": {
            "object": "list",
            "data": [{
                "id": format!("il_{}", spec.suffix()),
                "object": "line_item",
                "amount": spec.amount,
                "currency": spec.currency,
                "period": { "start": spec.created, "end": spec.current_period_end },
                "pricing": {
                    "price_details": { "price": spec.price_id, "product": "prod_TestFixture0001" },
                    "type": "price_details"
                },
                "quantity": 1
            }],
            "has_more": false,
            "url": format!("/v1/invoices/in_{}/lines", spec.suffix())
        },
        "livemode": false,
        "metadata": {},
        "next_payment_attempt": if paid { Value::Null } else { json!(spec.created + 3 * 86_400) },
        "number": "A1B2C3D4-0001",
        "paid": paid,
        "parent": {
            "quote_details": null,
            "subscription_details": { "metadata": { "user_id": spec.user_id }, "subscription": spec.subscription },
            "type": "subscription_details"
        },
        "period_end": spec.current_period_end,
        "period_start": spec.created,
        "status": status,
        "subscription": spec.subscription,
        "total": spec.amount
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_type_builds_an_event_of_that_type() {
        for ty in SUPPORTED {
            let e = event(&EventSpec::new(ty, "evt_1")).unwrap();
            assert_eq!(e["type"], *ty);
            assert_eq!(e["object"], "event");
            assert_eq!(e["id"], "evt_1");
            assert_eq!(e["api_version"], crate::API_VERSION);
            let object = e["data"]["object"]["object"].as_str().unwrap();
            let expected = match ty.split('.').next().unwrap() {
                "customer" if ty.starts_with("customer.subscription") => "subscription",
                "checkout" => "checkout.session",
                "entitlements" => "entitlements.active_entitlement_summary",
                kind => kind,
            };
            assert_eq!(object, expected, "{ty}");
            if ty.ends_with(".updated") {
                assert!(e["data"]["previous_attributes"].is_object(), "{ty}");
            }
            if ty.ends_with(".created") {
                assert!(e["data"].get("previous_attributes").is_none(), "{ty}");
            }
        }
    }

    #[test]
    fn unknown_types_are_refused_by_name() {
        let err = event(&EventSpec::new("payout.paid", "evt_1")).unwrap_err();
        assert_eq!(err, UnknownEventType("payout.paid".into()));
        assert!(err.to_string().contains("charge.succeeded"));
    }

    #[test]
    fn objects_carry_what_handlers_read() {
        let spec = |ty: &str| EventSpec::new(ty, "evt_42");
        let failed = event(&spec("charge.failed")).unwrap();
        let charge = &failed["data"]["object"];
        assert_eq!(charge["status"], "failed");
        assert_eq!(charge["failure_code"], "card_declined");
        assert_eq!(charge["customer"], "cus_TestFixture0001");

        let sub = event(&spec("customer.subscription.deleted")).unwrap();
        let sub = &sub["data"]["object"];
        assert_eq!(sub["status"], "canceled");
        assert_eq!(
            sub["items"]["data"][0]["price"]["id"],
            "price_1TestFixtureMonthly"
        );
        assert_eq!(
            sub["items"]["data"][0]["current_period_end"],
            sub["current_period_end"]
        );
        assert_eq!(sub["metadata"]["user_id"], "user-1");

        let inv = event(&spec("invoice.payment_failed")).unwrap();
        let inv = &inv["data"]["object"];
        assert_eq!(
            inv["parent"]["subscription_details"]["subscription"],
            inv["subscription"]
        );
        assert_eq!(inv["amount_paid"], 0);

        let cs = event(&spec("checkout.session.completed")).unwrap();
        assert_eq!(cs["data"]["object"]["client_reference_id"], "user-1");
        assert_eq!(cs["data"]["object"]["mode"], "subscription");
    }

    #[test]
    fn the_spec_overrides_defaults() {
        let spec = EventSpec {
            status: Some("past_due".into()),
            previous_attributes: Some(json!({"status": "active"})),
            ..EventSpec::new("customer.subscription.updated", "evt_2")
        };
        let e = event(&spec).unwrap();
        assert_eq!(e["data"]["object"]["status"], "past_due");
        assert_eq!(
            e["data"]["previous_attributes"],
            json!({"status": "active"})
        );
    }
}
