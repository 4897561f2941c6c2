//! What Stripe does on its own pages, where no API request of ours is involved: a customer paying
//! a Checkout Session, and changing a subscription in the customer portal. Each changes the
//! [`Store`] the way Stripe changes its objects and returns the events Stripe would send, in
//! order, already stored as [`Kind::Event`] so that `GET /v1/events` lists them.
//!
//! These objects and events carry the real time (not the store's fake clock), because the service
//! orders what webhooks tell it by `created`, against events and clocks of the real world.
//!
//! Entitlements follow subscriptions here, as in Stripe: every change of a subscription (paying
//! a session, the portal's switch and cancellation, [`set_subscription_status`]) recomputes its
//! customer's active entitlements ([`recompute_entitlements`]) and, if they changed, adds an
//! `entitlements.active_entitlement_summary.updated` event after the subscription's. The portal's
//! actions follow the configuration their session runs under.
//!
//! Not modelled: trials (a session created with `subscription_data[trial_period_days]` or
//! `[trial_end]` is refused at payment), inline `price_data` line items, `setup` mode, taxes,
//! discounts, proration invoices, payment intents and payment methods as objects (their ids
//! appear on charges and sessions only), and `charge.failed` events for a declined card (a
//! declined payment creates nothing).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::store::{Kind, Store};
use crate::{API_VERSION, Declined};

/// Unix seconds now, by the real clock.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Stripe's test card numbers that pay.
/// <https://docs.stripe.com/testing#cards>
const PAYING_CARDS: &[&str] = &[
    "4242424242424242", // Visa
    "4000056655665556", // Visa (debit)
    "4000001240000000", // Visa (Canada)
    "5555555555554444", // Mastercard
    "2223003122003222", // Mastercard (2-series)
    "5200828282828210", // Mastercard (debit)
    "5105105105105100", // Mastercard (prepaid)
    "378282246310005",  // American Express
    "371449635398431",  // American Express
    "6011111111111117", // Discover
    "6011000990139424", // Discover
    "3056930009020004", // Diners Club
    "36227206271667",   // Diners Club (14 digits)
    "3566002020360505", // JCB
    "6200000000000005", // UnionPay
];

/// What Stripe answers a test card number with: `Ok` if it pays, else the decline. Spaces are
/// ignored. Stripe's documented declining numbers decline as documented; any other number is
/// `incorrect_number`.
pub fn card_outcome(card_number: &str) -> Result<(), Declined> {
    let digits: String = card_number.chars().filter(|c| !c.is_whitespace()).collect();
    if PAYING_CARDS.contains(&digits.as_str()) {
        return Ok(());
    }
    let (code, decline_code, message) = match digits.as_str() {
        "4000000000000002" => (
            "card_declined",
            Some("generic_decline"),
            "Your card was declined.",
        ),
        "4000000000009995" => (
            "card_declined",
            Some("insufficient_funds"),
            "Your card has insufficient funds.",
        ),
        "4000000000009987" => (
            "card_declined",
            Some("lost_card"),
            "Your card was declined.",
        ),
        "4000000000009979" => (
            "card_declined",
            Some("stolen_card"),
            "Your card was declined.",
        ),
        "4000000000000069" => (
            "expired_card",
            Some("expired_card"),
            "Your card has expired.",
        ),
        "4000000000000127" => (
            "incorrect_cvc",
            Some("incorrect_cvc"),
            "Your card's security code is incorrect.",
        ),
        "4000000000000119" => (
            "processing_error",
            Some("processing_error"),
            "An error occurred while processing your card. Try again in a little bit.",
        ),
        _ => ("incorrect_number", None, "Your card number is incorrect."),
    };
    Err(Declined {
        code: code.to_owned(),
        decline_code: decline_code.map(str::to_owned),
        message: message.to_owned(),
    })
}

fn refused(code: &str, message: String) -> Declined {
    Declined {
        code: code.to_owned(),
        decline_code: None,
        message,
    }
}

/// The card brand Stripe reports for a test number.
fn brand(digits: &str) -> &'static str {
    match digits.as_bytes() {
        [b'4', ..] => "visa",
        [b'5', ..] | [b'2', ..] => "mastercard",
        [b'3', b'4' | b'7', ..] => "amex",
        [b'3', b'5', ..] => "jcb",
        [b'3', ..] => "diners",
        [b'6', b'2', ..] => "unionpay",
        [b'6', ..] => "discover",
        _ => "unknown",
    }
}

/// The id a reference field holds, whether Stripe returned it as an id or expanded.
fn id_of(reference: &Value) -> Option<&str> {
    reference.as_str().or_else(|| reference["id"].as_str())
}

/// Seconds in `interval_count` of the price's recurring interval (a month is 30 days, a year
/// 365), or `None` for a one-time price.
fn period_seconds(price: &Value) -> Option<i64> {
    let recurring = price.get("recurring").filter(|r| r.is_object())?;
    let unit = match recurring["interval"].as_str()? {
        "day" => 86_400,
        "week" => 7 * 86_400,
        "month" => 30 * 86_400,
        "year" => 365 * 86_400,
        _ => return None,
    };
    Some(unit * recurring["interval_count"].as_i64().unwrap_or(1).max(1))
}

/// The legacy `plan` Stripe still shows beside an item's `price`, built from the price.
fn plan(price: &Value) -> Value {
    json!({
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": price["recurring"]["interval"],
        "interval_count": price["recurring"]["interval_count"],
        "livemode": false,
        "metadata": price["metadata"],
        "meter": null,
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": null,
        "transform_usage": null,
        "trial_period_days": null,
        "usage_type": price["recurring"]["usage_type"],
    })
}

/// Stores and returns an event of `event_type` about a snapshot of `object`.
fn emit(
    store: &mut Store,
    event_type: &str,
    object: &Value,
    previous_attributes: Option<Value>,
    created: i64,
) -> Value {
    let mut data = json!({ "object": object });
    if let Some(previous) = previous_attributes {
        data["previous_attributes"] = previous;
    }
    let event = json!({
        "id": store.mint(Kind::Event.prefix()),
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": data,
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": event_type,
    });
    store.insert(Kind::Event, event.clone());
    event
}

/// One line item of a session, resolved: the price object and the quantity.
struct Line {
    price: Value,
    quantity: i64,
}

impl Line {
    fn amount(&self) -> i64 {
        self.price["unit_amount"].as_i64().unwrap_or(0) * self.quantity
    }

    fn price_id(&self) -> &str {
        self.price["id"].as_str().unwrap_or_default()
    }
}

/// Pays the Checkout Session `session_id` with `card_number`, as Stripe does when the customer
/// submits the Checkout page. See [`crate::Api::complete_checkout`].
pub fn complete_checkout(
    store: &mut Store,
    session_id: &str,
    card_number: &str,
) -> Result<Vec<Value>, Declined> {
    let Some(session) = store.get(Kind::CheckoutSession, session_id).cloned() else {
        return Err(refused(
            "resource_missing",
            format!("No such checkout session: '{session_id}'"),
        ));
    };
    let status = session["status"].as_str().unwrap_or_default();
    if status != "open" {
        return Err(refused(
            "session_not_open",
            format!("This Checkout Session is no longer open (its status is `{status}`)."),
        ));
    }
    let mode = session["mode"].as_str().unwrap_or_default().to_owned();
    if mode != "subscription" && mode != "payment" {
        return Err(refused(
            "unsupported_mode",
            format!(
                "The Stripe double pays Checkout Sessions in `subscription` and `payment` mode \
                 only, not `{mode}`."
            ),
        ));
    }
    let params = store
        .session_params
        .get(session_id)
        .cloned()
        .unwrap_or_default();
    let subscription_data = params.get("subscription_data").cloned().unwrap_or_default();
    if mode == "subscription"
        && (subscription_data.get("trial_period_days").is_some()
            || subscription_data.get("trial_end").is_some())
    {
        return Err(refused(
            "unsupported",
            "The Stripe double does not model trials (subscription_data[trial_period_days], \
             subscription_data[trial_end])."
                .to_owned(),
        ));
    }
    let mut lines = Vec::new();
    for item in params
        .get("line_items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(price_id) = item.get("price").and_then(Value::as_str) else {
            return Err(refused(
                "unsupported",
                "The Stripe double pays line items given by `price` only, not `price_data`."
                    .to_owned(),
            ));
        };
        let Some(price) = store.get(Kind::Price, price_id).cloned() else {
            return Err(refused(
                "resource_missing",
                format!("No such price: '{price_id}'"),
            ));
        };
        let quantity = item.get("quantity").and_then(Value::as_i64).unwrap_or(1);
        lines.push(Line { price, quantity });
    }
    if lines.is_empty() {
        return Err(refused(
            "unsupported",
            "The Stripe double knows no line items for this Checkout Session: only a session \
             created through the API with `line_items[][price]` can be paid."
                .to_owned(),
        ));
    }
    let period = lines.iter().find_map(|l| period_seconds(&l.price));
    if mode == "subscription" && period.is_none() {
        return Err(refused(
            "unsupported",
            "A Checkout Session in `subscription` mode needs a recurring price.".to_owned(),
        ));
    }
    let customer_id = id_of(&session["customer"]).map(str::to_owned);
    if let Some(customer) = &customer_id
        && store.get(Kind::Customer, customer).is_none()
    {
        return Err(refused(
            "resource_missing",
            format!("No such customer: '{customer}'"),
        ));
    }
    let digits: String = card_number.chars().filter(|c| !c.is_whitespace()).collect();
    card_outcome(&digits)?;

    // Paid: from here on nothing can fail.
    let now = now();
    let mut events = Vec::new();
    let customer_id = match customer_id {
        Some(customer) => Some(customer),
        None if mode == "subscription" || params["customer_creation"] == "always" => {
            let (_, customer) = store.create_customer(&json!({
                "email": session["customer_email"],
            }));
            let id = customer["id"].as_str().unwrap_or_default().to_owned();
            store.patch(Kind::Customer, &id, &json!({ "created": now }));
            events.push(("customer.created", Kind::Customer, id.clone()));
            Some(id)
        }
        None => None,
    };
    let email = customer_id
        .as_deref()
        .and_then(|c| store.get(Kind::Customer, c))
        .and_then(|c| c["email"].as_str())
        .map(str::to_owned)
        .or_else(|| session["customer_email"].as_str().map(str::to_owned));
    let currency = session["currency"].clone();
    let total: i64 = lines.iter().map(Line::amount).sum();
    let payment_intent = store.mint("pi_");
    let payment_method = store.mint("pm_");

    let mut session_changes = json!({
        "status": "complete",
        "payment_status": "paid",
        "customer": customer_id,
        "customer_details": {
            "address": null, "email": email, "name": null, "phone": null,
            "tax_exempt": "none", "tax_ids": []
        },
        "url": null,
    });
    let (invoice_id, subscription_id) = if mode == "subscription" {
        let subscription_id = store.mint(Kind::Subscription.prefix());
        let invoice_id = store.mint(Kind::Invoice.prefix());
        let end = now + period.unwrap_or_default();
        let metadata = subscription_data
            .get("metadata")
            .filter(|m| m.is_object())
            .cloned()
            .unwrap_or_else(|| json!({}));
        let recurring: Vec<&Line> = lines
            .iter()
            .filter(|l| period_seconds(&l.price).is_some())
            .collect();
        let items: Vec<Value> = recurring
            .iter()
            .map(|line| {
                json!({
                    "id": store.mint("si_"),
                    "object": "subscription_item",
                    "billing_thresholds": null,
                    "created": now,
                    "current_period_end": end,
                    "current_period_start": now,
                    "discounts": [],
                    "metadata": {},
                    "plan": plan(&line.price),
                    "price": line.price,
                    "quantity": line.quantity,
                    "subscription": subscription_id,
                    "tax_rates": []
                })
            })
            .collect();
        let invoice_lines: Vec<Value> = lines
            .iter()
            .map(|line| {
                let item = items
                    .iter()
                    .find(|i| i["price"]["id"] == line.price_id())
                    .map(|i| i["id"].clone());
                let line_id = store.mint("il_");
                // A recurring price is billed through its subscription item, a one-time one
                // through an invoice item.
                let parent = match item {
                    Some(item) => json!({
                        "type": "subscription_item_details",
                        "invoice_item_details": null,
                        "subscription_item_details": {
                            "invoice_item": null,
                            "proration": false,
                            "proration_details": { "credited_items": null },
                            "subscription": subscription_id,
                            "subscription_item": item,
                        }
                    }),
                    None => json!({
                        "type": "invoice_item_details",
                        "invoice_item_details": {
                            "invoice_item": store.mint("ii_"),
                            "proration": false,
                            "proration_details": { "credited_items": null },
                            "subscription": subscription_id,
                        },
                        "subscription_item_details": null
                    }),
                };
                json!({
                    "id": line_id,
                    "object": "line_item",
                    "amount": line.amount(),
                    "currency": currency,
                    "description": null,
                    "discount_amounts": [],
                    "discountable": true,
                    "discounts": [],
                    "invoice": invoice_id,
                    "livemode": false,
                    "metadata": {},
                    "parent": parent,
                    "period": { "start": now, "end": end },
                    "pricing": {
                        "price_details": { "price": line.price_id(), "product": line.price["product"] },
                        "type": "price_details",
                        "unit_amount_decimal": line.price["unit_amount_decimal"],
                    },
                    "quantity": line.quantity,
                    "subscription": subscription_id,
                    "subtotal": line.amount(),
                })
            })
            .collect();
        let invoice_number = format!("DBL-{:04}", store.all(Kind::Invoice).len() + 1);
        let invoice = json!({
            "id": invoice_id,
            "object": "invoice",
            "account_country": "CA",
            "amount_due": total,
            "amount_overpaid": 0,
            "amount_paid": total,
            "amount_remaining": 0,
            "amount_shipping": 0,
            "attempt_count": 1,
            "attempted": true,
            "auto_advance": false,
            "automatic_tax": { "enabled": false, "liability": null, "provider": null, "status": null },
            "billing_reason": "subscription_create",
            "collection_method": "charge_automatically",
            "created": now,
            "currency": currency,
            "customer": customer_id,
            "customer_email": email,
            "default_tax_rates": [],
            "description": null,
            "discounts": [],
            "hosted_invoice_url": null,
            "issuer": { "type": "self" },
            "lines": {
                "object": "list",
                "data": invoice_lines,
                "has_more": false,
                "total_count": lines.len(),
                "url": format!("/v1/invoices/{invoice_id}/lines"),
            },
            "livemode": false,
            "metadata": {},
            "number": invoice_number,
            "parent": {
                "quote_details": null,
                "subscription_details": { "metadata": metadata, "subscription": subscription_id },
                "type": "subscription_details"
            },
            "payment_settings": {
                "default_mandate": null, "payment_method_options": null, "payment_method_types": null
            },
            "period_end": now,
            "period_start": now,
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "starting_balance": 0,
            "status": "paid",
            "status_transitions": {
                "finalized_at": now, "marked_uncollectible_at": null, "paid_at": now, "voided_at": null
            },
            "subtotal": total,
            "total": total,
        });
        let subscription = json!({
            "id": subscription_id,
            "object": "subscription",
            "application": null,
            "automatic_tax": { "disabled_reason": null, "enabled": false, "liability": null },
            "billing_cycle_anchor": now,
            "billing_mode": { "flexible": null, "type": "classic" },
            "billing_schedules": [],
            "cancel_at": null,
            "cancel_at_period_end": false,
            "canceled_at": null,
            "cancellation_details": { "comment": null, "feedback": null, "reason": null },
            "collection_method": "charge_automatically",
            "created": now,
            "currency": currency,
            "customer": customer_id,
            "days_until_due": null,
            "default_payment_method": payment_method,
            "description": null,
            "discounts": [],
            "ended_at": null,
            "invoice_settings": { "account_tax_ids": null, "issuer": { "type": "self" } },
            "items": {
                "object": "list",
                "data": items,
                "has_more": false,
                "total_count": recurring.len(),
                "url": format!("/v1/subscription_items?subscription={subscription_id}"),
            },
            "latest_invoice": invoice_id,
            "livemode": false,
            "metadata": metadata,
            "pause_collection": null,
            "pending_update": null,
            "schedule": null,
            "start_date": now,
            "status": "active",
            "trial_end": null,
            "trial_start": null,
        });
        store.insert(Kind::Invoice, invoice);
        store.insert(Kind::Subscription, subscription);
        session_changes["subscription"] = json!(subscription_id);
        session_changes["invoice"] = json!(invoice_id);
        (Some(invoice_id), Some(subscription_id))
    } else {
        session_changes["payment_intent"] = json!(payment_intent);
        (None, None)
    };

    let charge_id = store.mint(Kind::Charge.prefix());
    let balance_transaction = store.mint("txn_");
    let last4 = digits
        .get(digits.len().saturating_sub(4)..)
        .unwrap_or_default();
    let charge = json!({
        "id": charge_id,
        "object": "charge",
        "amount": total,
        "amount_captured": total,
        "amount_refunded": 0,
        "balance_transaction": balance_transaction,
        "billing_details": { "address": null, "email": email, "name": null, "phone": null },
        "captured": true,
        "created": now,
        "currency": currency,
        "customer": customer_id,
        "description": if invoice_id.is_some() { json!("Subscription creation") } else { Value::Null },
        "disputed": false,
        "failure_code": null,
        "failure_message": null,
        "invoice": invoice_id,
        "livemode": false,
        "metadata": {},
        "outcome": {
            "network_status": "approved_by_network",
            "reason": null,
            "risk_level": "normal",
            "seller_message": "Payment complete.",
            "type": "authorized"
        },
        "paid": true,
        "payment_intent": payment_intent,
        "payment_method": payment_method,
        "payment_method_details": {
            "type": "card",
            "card": { "brand": brand(&digits), "last4": last4, "exp_month": 12, "exp_year": 2034, "funding": "credit" }
        },
        "receipt_email": email,
        "refunded": false,
        "status": "succeeded",
    });
    store.insert(Kind::Charge, charge);
    store.patch(Kind::CheckoutSession, session_id, &session_changes);

    events.push(("charge.succeeded", Kind::Charge, charge_id));
    if let (Some(invoice), Some(subscription)) = (invoice_id, subscription_id) {
        events.push(("invoice.paid", Kind::Invoice, invoice));
        events.push((
            "customer.subscription.created",
            Kind::Subscription,
            subscription,
        ));
    }
    events.push((
        "checkout.session.completed",
        Kind::CheckoutSession,
        session_id.to_owned(),
    ));
    let mut events: Vec<Value> = events
        .into_iter()
        .map(|(event_type, kind, id)| {
            let object = store.get(kind, &id).cloned().unwrap_or_default();
            emit(store, event_type, &object, None, now)
        })
        .collect();
    if mode == "subscription"
        && let Some(customer) = &customer_id
    {
        events.extend(recompute_entitlements(store, customer));
    }
    Ok(events)
}

/// The subscription `subscription_id`, if the portal session `portal_session_id` may change it:
/// both exist, it belongs to the session's customer, and it has not ended.
fn portal_subscription(
    store: &Store,
    portal_session_id: &str,
    subscription_id: &str,
) -> Result<Value, String> {
    let session = store
        .get(Kind::BillingPortalSession, portal_session_id)
        .ok_or_else(|| format!("No such billing portal session: '{portal_session_id}'"))?;
    let subscription = store
        .get(Kind::Subscription, subscription_id)
        .ok_or_else(|| format!("No such subscription: '{subscription_id}'"))?;
    let customer = id_of(&session["customer"]).unwrap_or_default();
    if id_of(&subscription["customer"]) != Some(customer) {
        return Err(format!(
            "The subscription '{subscription_id}' does not belong to the portal session's \
             customer '{customer}'."
        ));
    }
    let status = subscription["status"].as_str().unwrap_or_default();
    if matches!(status, "canceled" | "incomplete_expired") {
        return Err(format!(
            "The subscription '{subscription_id}' has ended (its status is `{status}`)."
        ));
    }
    Ok(subscription.clone())
}

/// The configuration the portal session runs under, if the double knows it (a session made
/// through the API always names one: its `configuration`, or the default one).
fn session_configuration(store: &Store, portal_session_id: &str) -> Option<Value> {
    let session = store.get(Kind::BillingPortalSession, portal_session_id)?;
    let id = id_of(&session["configuration"])?;
    store.get(Kind::BillingPortalConfiguration, id).cloned()
}

/// The end of the subscription's current period: on its first item since API version
/// 2025-03-31, on the subscription before.
fn period_end(subscription: &Value) -> Value {
    subscription
        .pointer("/items/data/0/current_period_end")
        .or_else(|| subscription.get("current_period_end"))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Writes `changes` into the subscription and emits `customer.subscription.updated` with the
/// fields' values before as `previous_attributes`.
fn update_subscription(store: &mut Store, before: &Value, changes: &Value) -> Vec<Value> {
    let id = before["id"].as_str().unwrap_or_default();
    let previous: serde_json::Map<String, Value> = changes
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| (k.clone(), before.get(k).cloned().unwrap_or(Value::Null)))
        .collect();
    let Some(after) = store.patch(Kind::Subscription, id, changes) else {
        return Vec::new();
    };
    vec![emit(
        store,
        "customer.subscription.updated",
        &after,
        Some(Value::Object(previous)),
        now(),
    )]
}

/// The type of the event Stripe sends when a customer's active entitlements change.
pub const ENTITLEMENT_SUMMARY_UPDATED: &str = "entitlements.active_entitlement_summary.updated";

/// Brings the customer's active entitlements in line with its subscriptions, as Stripe does
/// whenever one of them changes: one [`Kind::ActiveEntitlement`] per feature attached to the
/// product of an item of a subscription in an [`ENTITLING_STATUSES`](crate::store::ENTITLING_STATUSES)
/// status. An entitlement that stays keeps its id. If the set changed, returns the
/// `entitlements.active_entitlement_summary.updated` event (stored, like every event), whose
/// summary carries the first entitlements in list order, up to the summary limit, and
/// `has_more`; otherwise nothing.
pub fn recompute_entitlements(store: &mut Store, customer: &str) -> Vec<Value> {
    let wanted = store.entitled_features(customer);
    let current: Vec<(String, String)> = store
        .entitlements_of(customer)
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap_or_default().to_owned(),
                e["feature"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let unchanged = wanted.len() == current.len()
        && current.iter().all(|(_, feature)| wanted.contains(feature));
    if unchanged {
        return Vec::new();
    }
    for (id, feature) in &current {
        if !wanted.contains(feature) {
            store.remove(Kind::ActiveEntitlement, id);
            store.entitlement_customers.remove(id);
        }
    }
    for feature in &wanted {
        if current.iter().any(|(_, f)| f == feature) {
            continue;
        }
        let lookup_key = store
            .get(Kind::Feature, feature)
            .map(|f| f["lookup_key"].clone())
            .unwrap_or_else(|| json!(""));
        let id = store.mint(Kind::ActiveEntitlement.prefix());
        store.insert(
            Kind::ActiveEntitlement,
            json!({
                "id": id,
                "object": "entitlements.active_entitlement",
                "feature": feature,
                "livemode": false,
                "lookup_key": lookup_key,
            }),
        );
        store.entitlement_customers.insert(id, customer.to_owned());
    }
    let entitlements = store.entitlements_of(customer);
    let limit = store.summary_limit();
    let summary = json!({
        "object": "entitlements.active_entitlement_summary",
        "customer": customer,
        "entitlements": {
            "object": "list",
            "data": entitlements.iter().take(limit).collect::<Vec<_>>(),
            "has_more": entitlements.len() > limit,
            "url": format!("/v1/customer/{customer}/entitlements"),
        },
        "livemode": false,
    });
    vec![emit(
        store,
        ENTITLEMENT_SUMMARY_UPDATED,
        &summary,
        None,
        now(),
    )]
}

/// Ends the subscription now (`canceled`, `ended_at`), with `customer.subscription.deleted`,
/// then the customer's entitlements follow.
fn end_subscription(store: &mut Store, subscription: &Value, reason: &str) -> Vec<Value> {
    let id = subscription["id"].as_str().unwrap_or_default();
    let now = now();
    let canceled_at = match &subscription["canceled_at"] {
        Value::Null => json!(now),
        at => at.clone(),
    };
    let changes = json!({
        "status": "canceled",
        "ended_at": now,
        "canceled_at": canceled_at,
        "cancellation_details": { "comment": null, "feedback": null, "reason": reason },
    });
    let Some(after) = store.patch(Kind::Subscription, id, &changes) else {
        return Vec::new();
    };
    let mut events = vec![emit(
        store,
        "customer.subscription.deleted",
        &after,
        None,
        now,
    )];
    if let Some(customer) = id_of(&after["customer"]) {
        events.extend(recompute_entitlements(store, customer));
    }
    events
}

/// [`update_subscription`], then the customer's entitlements follow.
fn update_and_entitle(store: &mut Store, before: &Value, changes: &Value) -> Vec<Value> {
    let mut events = update_subscription(store, before, changes);
    if let Some(customer) = id_of(&before["customer"]) {
        events.extend(recompute_entitlements(store, customer));
    }
    events
}

/// Moves a subscription to `status` as Stripe's billing does on its own (a renewal failing:
/// `past_due`; retries exhausted: `unpaid` or `canceled`; paid again: `active`). See
/// [`crate::Api::set_subscription_status`].
pub fn set_subscription_status(
    store: &mut Store,
    subscription_id: &str,
    status: &str,
) -> Result<Vec<Value>, String> {
    let subscription = store
        .get(Kind::Subscription, subscription_id)
        .cloned()
        .ok_or_else(|| format!("No such subscription: '{subscription_id}'"))?;
    let current = subscription["status"].as_str().unwrap_or_default();
    if matches!(current, "canceled" | "incomplete_expired") {
        return Err(format!(
            "The subscription '{subscription_id}' has ended (its status is `{current}`)."
        ));
    }
    if current == status {
        return Ok(Vec::new());
    }
    match status {
        "active" | "past_due" | "unpaid" => Ok(update_and_entitle(
            store,
            &subscription,
            &json!({ "status": status }),
        )),
        "canceled" => {
            let reason = match current {
                "past_due" | "unpaid" => "payment_failed",
                _ => "cancellation_requested",
            };
            Ok(end_subscription(store, &subscription, reason))
        }
        other => Err(format!(
            "The Stripe double moves subscriptions to `active`, `past_due`, `unpaid` or \
             `canceled`, not `{other}`."
        )),
    }
}

/// The portal's "cancel plan" (`cancel = true`) and "renew plan" (`false`). See
/// [`crate::Api::portal_cancel_at_period_end`].
pub fn portal_cancel_at_period_end(
    store: &mut Store,
    portal_session_id: &str,
    subscription_id: &str,
    cancel: bool,
) -> Result<Vec<Value>, String> {
    let subscription = portal_subscription(store, portal_session_id, subscription_id)?;
    if cancel && let Some(configuration) = session_configuration(store, portal_session_id) {
        let feature = &configuration["features"]["subscription_cancel"];
        if feature["enabled"] != true {
            return Err(format!(
                "The portal configuration '{}' does not let customers cancel \
                 (features.subscription_cancel.enabled is false).",
                configuration["id"].as_str().unwrap_or_default()
            ));
        }
        if feature["mode"] == "immediately" {
            return Ok(end_subscription(
                store,
                &subscription,
                "cancellation_requested",
            ));
        }
    }
    if subscription["cancel_at_period_end"] == cancel {
        return Ok(Vec::new());
    }
    let changes = if cancel {
        json!({
            "cancel_at_period_end": true,
            "cancel_at": period_end(&subscription),
            "canceled_at": now(),
            "cancellation_details": { "comment": null, "feedback": null, "reason": "cancellation_requested" },
        })
    } else {
        json!({
            "cancel_at_period_end": false,
            "cancel_at": null,
            "canceled_at": null,
            "cancellation_details": { "comment": null, "feedback": null, "reason": null },
        })
    };
    // Still `active` until the period ends, so the entitlements stay.
    Ok(update_and_entitle(store, &subscription, &changes))
}

/// Whether the portal configuration lets the customer switch to `price`: subscription updates
/// enabled, `price` among `default_allowed_updates`, and, where `products` lists them, the price
/// under its product (`null` products, the double's default configuration, allow any price).
fn configuration_allows(configuration: &Value, price: &Value) -> Result<(), String> {
    let id = configuration["id"].as_str().unwrap_or_default();
    let price_id = price["id"].as_str().unwrap_or_default();
    let update = &configuration["features"]["subscription_update"];
    if update["enabled"] != true {
        return Err(format!(
            "The portal configuration '{id}' does not let customers update subscriptions \
             (features.subscription_update.enabled is false)."
        ));
    }
    let prices_allowed = update["default_allowed_updates"]
        .as_array()
        .is_some_and(|updates| updates.iter().any(|u| u == "price"));
    if !prices_allowed {
        return Err(format!(
            "The portal configuration '{id}' does not let customers change prices \
             (`price` is not in features.subscription_update.default_allowed_updates)."
        ));
    }
    if let Some(products) = update["products"].as_array() {
        let product = id_of(&price["product"]);
        let offered = products.iter().any(|p| {
            p["product"].as_str() == product
                && p["prices"]
                    .as_array()
                    .is_some_and(|prices| prices.iter().any(|p| p == price_id))
        });
        if !offered {
            return Err(format!(
                "The portal configuration '{id}' does not offer the price '{price_id}' \
                 (features.subscription_update.products)."
            ));
        }
    }
    Ok(())
}

/// The portal's "update plan". See [`crate::Api::portal_switch_price`].
pub fn portal_switch_price(
    store: &mut Store,
    portal_session_id: &str,
    subscription_id: &str,
    price_id: &str,
) -> Result<Vec<Value>, String> {
    let subscription = portal_subscription(store, portal_session_id, subscription_id)?;
    let price = store
        .get(Kind::Price, price_id)
        .cloned()
        .ok_or_else(|| format!("No such price: '{price_id}'"))?;
    if price["active"] != true {
        return Err(format!("The price specified ({price_id}) is inactive."));
    }
    let Some(period) = period_seconds(&price) else {
        return Err(format!(
            "The price specified ({price_id}) is not recurring: a subscription needs a \
             recurring price."
        ));
    };
    let items = subscription
        .pointer("/items/data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let [item] = items.as_slice() else {
        return Err(format!(
            "The portal switches the price of a subscription with one item; \
             '{subscription_id}' has {}.",
            items.len()
        ));
    };
    let configuration = session_configuration(store, portal_session_id);
    if let Some(configuration) = &configuration {
        configuration_allows(configuration, &price)?;
    }
    if item["price"]["id"] == price_id {
        return Ok(Vec::new());
    }
    if price["currency"] != subscription["currency"] {
        return Err(format!(
            "The price specified ({price_id}) is in {}, the subscription in {}.",
            price["currency"], subscription["currency"]
        ));
    }
    let mut item = item.clone();
    // A change of interval starts a new period now (Stripe resets the billing cycle anchor and
    // invoices at once; that invoice is not modelled). Otherwise the period stays.
    let same_interval = item["price"]["recurring"]["interval"] == price["recurring"]["interval"]
        && item["price"]["recurring"]["interval_count"] == price["recurring"]["interval_count"];
    // A configuration's `billing_cycle_anchor: now` restarts the period on every switch. Its
    // `proration_behavior` changes nothing here: the double makes no proration items or
    // invoices, whichever it is.
    let anchor_now = configuration
        .as_ref()
        .is_some_and(|c| c["features"]["subscription_update"]["billing_cycle_anchor"] == "now");
    let mut changes = json!({});
    if !same_interval || anchor_now {
        let now = now();
        item["current_period_start"] = json!(now);
        item["current_period_end"] = json!(now + period);
        changes["billing_cycle_anchor"] = json!(now);
    }
    item["plan"] = plan(&price);
    item["price"] = price;
    let mut list = subscription["items"].clone();
    list["data"] = json!([item]);
    changes["items"] = list;
    Ok(update_and_entitle(store, &subscription, &changes))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{Answer, Api, SeededCatalog};

    fn headers(idempotency_key: Option<String>) -> BTreeMap<String, String> {
        let mut headers =
            BTreeMap::from([("authorization".to_owned(), "Bearer sk_test_1".to_owned())]);
        if let Some(key) = idempotency_key {
            headers.insert("idempotency-key".to_owned(), key);
        }
        headers
    }

    /// A POST as the service sends it: authorized, with a fresh Idempotency-Key. Panics unless
    /// Stripe would take it.
    fn post(api: &Api, path: &str, body: &str) -> Value {
        static KEYS: AtomicUsize = AtomicUsize::new(0);
        let key = format!("key-{}", KEYS.fetch_add(1, Ordering::Relaxed));
        let Answer { status, body, .. } =
            api.answer("POST", path, body.as_bytes(), &headers(Some(key)));
        assert_eq!(status, 200, "{body}");
        body
    }

    fn get(api: &Api, path: &str, query: &str) -> Value {
        let Answer { status, body, .. } = api.answer("GET", path, query.as_bytes(), &headers(None));
        assert_eq!(status, 200, "{body}");
        body
    }

    fn id(object: &Value) -> String {
        object["id"].as_str().unwrap().to_owned()
    }

    /// A Checkout Session for `price` as billing-service creates it, with `who` either
    /// `customer=cus_...` or `customer_email=...`.
    fn session(api: &Api, price: &str, who: &str) -> String {
        let body = format!(
            "mode=subscription&{who}&client_reference_id=user-1\
             &line_items[0][price]={price}&line_items[0][quantity]=1\
             &subscription_data[metadata][user_id]=user-1&metadata[user_id]=user-1\
             &success_url=http://localhost:8080/billing/success&cancel_url=http://localhost:8080/billing/cancel"
        );
        id(&post(api, "/v1/checkout/sessions", &body))
    }

    fn account() -> (Api, SeededCatalog) {
        let api = Api::new();
        let catalog = api.seed_default_catalog();
        (api, catalog)
    }

    fn types(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    #[test]
    fn test_cards_pay_decline_or_are_refused() {
        let (api, catalog) = account();
        for number in [
            "4242 4242 4242 4242",
            "4000056655665556",
            "5555555555554444",
        ] {
            let session = session(&api, &catalog.monthly, "customer_email=a@x.test");
            let events = api.complete_checkout(&session, number).unwrap();
            assert_eq!(events.len(), 5, "{number}");
        }
        let declined = |number: &str| {
            let session = session(&api, &catalog.monthly, "customer_email=b@x.test");
            let error = api.complete_checkout(&session, number).unwrap_err();
            assert_eq!(
                api.retrieve(Kind::CheckoutSession, &session).unwrap()["status"],
                "open"
            );
            error
        };
        let customers = api.objects(Kind::Customer).len();
        let subscriptions = api.objects(Kind::Subscription).len();
        let events = api.objects(Kind::Event).len();

        let generic = declined("4000 0000 0000 0002");
        assert_eq!(generic.code, "card_declined");
        assert_eq!(generic.decline_code.as_deref(), Some("generic_decline"));
        assert_eq!(generic.message, "Your card was declined.");
        assert_eq!(generic.to_string(), "Your card was declined.");
        let funds = declined("4000000000009995");
        assert_eq!(funds.code, "card_declined");
        assert_eq!(funds.decline_code.as_deref(), Some("insufficient_funds"));
        assert_eq!(funds.message, "Your card has insufficient funds.");
        for bad in ["4242424242424241", "1234", ""] {
            let error = declined(bad);
            assert_eq!(
                (
                    error.code.as_str(),
                    error.decline_code,
                    error.message.as_str()
                ),
                ("incorrect_number", None, "Your card number is incorrect."),
                "{bad}"
            );
        }
        // A decline creates nothing.
        assert_eq!(api.objects(Kind::Customer).len(), customers);
        assert_eq!(api.objects(Kind::Subscription).len(), subscriptions);
        assert_eq!(api.objects(Kind::Event).len(), events);
        assert!(api.objects(Kind::Charge).len() == 3);

        // A paid session cannot be paid again, nor an expired one at all.
        let session = session(&api, &catalog.monthly, "customer_email=c@x.test");
        api.complete_checkout(&session, "4242424242424242").unwrap();
        let again = api
            .complete_checkout(&session, "4242424242424242")
            .unwrap_err();
        assert_eq!(again.code, "session_not_open");
        assert!(again.message.contains("complete"), "{}", again.message);
        let expired = self::session(&api, &catalog.monthly, "customer_email=d@x.test");
        api.patch(
            Kind::CheckoutSession,
            &expired,
            json!({"status": "expired"}),
        );
        let error = api
            .complete_checkout(&expired, "4242424242424242")
            .unwrap_err();
        assert_eq!(error.code, "session_not_open");
        assert!(error.message.contains("expired"), "{}", error.message);
        assert_eq!(
            api.complete_checkout("cs_test_nope", "4242424242424242")
                .unwrap_err()
                .code,
            "resource_missing"
        );
    }

    #[test]
    fn a_paid_session_makes_linked_objects_and_stripes_events_in_order() {
        let (api, catalog) = account();
        let session_id = session(&api, &catalog.monthly, "customer_email=new@x.test");
        let before = now();
        let events = api
            .complete_checkout(&session_id, "4242424242424242")
            .unwrap();
        assert_eq!(
            types(&events),
            [
                "customer.created",
                "charge.succeeded",
                "invoice.paid",
                "customer.subscription.created",
                "checkout.session.completed"
            ]
        );
        for event in &events {
            assert!(event["id"].as_str().unwrap().starts_with("evt_"));
            assert_eq!(event["object"], "event");
            assert_eq!(event["api_version"], "2026-09-30.endive");
            assert_eq!(event["livemode"], false);
            assert_eq!(event["pending_webhooks"], 1);
            assert_eq!(
                event["request"],
                json!({"id": null, "idempotency_key": null})
            );
            let created = event["created"].as_i64().unwrap();
            assert!((before..=now()).contains(&created), "{created} is not now");
        }
        // What the payment made was made now (the session was made before, by the fake clock).
        for event in &events[..4] {
            assert_eq!(event["data"]["object"]["created"], event["created"]);
        }
        let object = |i: usize| events[i]["data"]["object"].clone();
        let (customer, charge, invoice, subscription, session) =
            (object(0), object(1), object(2), object(3), object(4));

        // The session, completed, names what it made.
        assert_eq!(session["id"], session_id);
        assert_eq!(session["status"], "complete");
        assert_eq!(session["payment_status"], "paid");
        assert_eq!(session["customer"], customer["id"]);
        assert_eq!(session["subscription"], subscription["id"]);
        assert_eq!(session["invoice"], invoice["id"]);
        assert_eq!(session["customer_details"]["email"], "new@x.test");
        assert_eq!(session["client_reference_id"], "user-1");
        assert_eq!(
            api.retrieve(Kind::CheckoutSession, &session_id).unwrap(),
            session
        );

        // A new customer: the email, and nothing copied from the session.
        assert!(customer["id"].as_str().unwrap().starts_with("cus_"));
        assert_eq!(customer["email"], "new@x.test");
        assert_eq!(customer["metadata"], json!({}));

        // The subscription, as API version 2026-09-30 has it.
        assert!(subscription["id"].as_str().unwrap().starts_with("sub_"));
        assert_eq!(subscription["status"], "active");
        assert_eq!(subscription["customer"], customer["id"]);
        assert_eq!(subscription["cancel_at_period_end"], false);
        assert_eq!(subscription["collection_method"], "charge_automatically");
        assert_eq!(subscription["currency"], "cad");
        assert_eq!(subscription["start_date"], subscription["created"]);
        assert_eq!(subscription["metadata"], json!({"user_id": "user-1"}));
        assert_eq!(subscription["latest_invoice"], invoice["id"]);
        let item = &subscription["items"]["data"][0];
        assert_eq!(item["price"]["id"], catalog.monthly.as_str());
        assert_eq!(item["price"]["unit_amount"], 5499);
        assert_eq!(item["quantity"], 1);
        assert_eq!(
            item["current_period_end"].as_i64().unwrap()
                - item["current_period_start"].as_i64().unwrap(),
            30 * 86_400
        );
        assert_eq!(item["current_period_start"], subscription["created"]);

        // The invoice, paid, under the subscription.
        assert!(invoice["id"].as_str().unwrap().starts_with("in_"));
        assert_eq!(invoice["status"], "paid");
        assert_eq!(invoice["amount_paid"], 5499);
        assert_eq!(invoice["customer"], customer["id"]);
        assert_eq!(
            invoice["parent"]["subscription_details"]["subscription"],
            subscription["id"]
        );
        assert_eq!(
            invoice["lines"]["data"][0]["pricing"]["price_details"]["price"],
            catalog.monthly.as_str()
        );

        // The charge, for the invoice.
        assert!(charge["id"].as_str().unwrap().starts_with("ch_"));
        assert_eq!(charge["status"], "succeeded");
        assert_eq!(charge["amount"], 5499);
        assert_eq!(charge["customer"], customer["id"]);
        assert_eq!(charge["invoice"], invoice["id"]);
        assert!(
            charge["payment_intent"]
                .as_str()
                .unwrap()
                .starts_with("pi_")
        );
        assert_eq!(charge["payment_method_details"]["card"]["last4"], "4242");

        // Each object is stored as the event shows it, and the events are listed, newest first.
        for (kind, object) in [
            (Kind::Customer, &customer),
            (Kind::Charge, &charge),
            (Kind::Invoice, &invoice),
            (Kind::Subscription, &subscription),
        ] {
            assert_eq!(api.retrieve(kind, &id(object)).as_ref(), Some(object));
        }
        let listed = get(&api, "/v1/events", "limit=10");
        let listed: Vec<Value> = listed["data"].as_array().unwrap().clone();
        assert_eq!(listed.iter().rev().cloned().collect::<Vec<_>>(), events);
        let one = get(&api, "/v1/events", "type=invoice.paid");
        assert_eq!(one["data"][0], events[2]);
        assert_eq!(
            get(
                &api,
                &format!("/v1/subscriptions/{}", id(&subscription)),
                ""
            ),
            subscription
        );
        let invoices = get(
            &api,
            "/v1/invoices",
            &format!("subscription={}", id(&subscription)),
        );
        assert_eq!(invoices["data"][0]["id"], invoice["id"]);
        assert!(api.violations().is_empty(), "{:?}", api.violations());
    }

    #[test]
    fn a_session_for_a_known_customer_makes_no_customer() {
        let (api, catalog) = account();
        let customer = id(&post(
            &api,
            "/v1/customers",
            "email=known@x.test&metadata[user_id]=user-1",
        ));
        let session_id = session(&api, &catalog.annual, &format!("customer={customer}"));
        let events = api
            .complete_checkout(&session_id, "4242424242424242")
            .unwrap();
        assert_eq!(
            types(&events),
            [
                "charge.succeeded",
                "invoice.paid",
                "customer.subscription.created",
                "checkout.session.completed"
            ]
        );
        assert_eq!(api.objects(Kind::Customer).len(), 1);
        let subscription = &events[2]["data"]["object"];
        assert_eq!(subscription["customer"], customer.as_str());
        let item = &subscription["items"]["data"][0];
        assert_eq!(
            item["current_period_end"].as_i64().unwrap()
                - item["current_period_start"].as_i64().unwrap(),
            365 * 86_400
        );
        assert_eq!(
            events[3]["data"]["object"]["customer_details"]["email"],
            "known@x.test"
        );
        assert_eq!(events[1]["data"]["object"]["amount_paid"], 50000);
    }

    #[test]
    fn payment_mode_is_paid_minimally_and_setup_mode_is_refused() {
        let (api, catalog) = account();
        let one_time = id(&post(
            &api,
            "/v1/prices",
            &format!("product={}&currency=cad&unit_amount=1000", catalog.product),
        ));
        let session_id = id(&post(
            &api,
            "/v1/checkout/sessions",
            &format!(
                "mode=payment&customer_email=guest@x.test&line_items[0][price]={one_time}\
                 &line_items[0][quantity]=2&success_url=http://x.test/s"
            ),
        ));
        let events = api
            .complete_checkout(&session_id, "4242424242424242")
            .unwrap();
        assert_eq!(
            types(&events),
            ["charge.succeeded", "checkout.session.completed"]
        );
        let (charge, session) = (&events[0]["data"]["object"], &events[1]["data"]["object"]);
        assert_eq!(charge["amount"], 2000);
        assert_eq!(charge["invoice"], Value::Null);
        assert_eq!(charge["customer"], Value::Null);
        assert_eq!(session["payment_intent"], charge["payment_intent"]);
        assert_eq!(session["subscription"], Value::Null);
        assert_eq!(session["status"], "complete");
        assert!(api.objects(Kind::Subscription).is_empty());
        assert!(api.objects(Kind::Customer).is_empty());

        let setup = id(&post(
            &api,
            "/v1/checkout/sessions",
            "mode=setup&currency=cad&success_url=http://x.test/s",
        ));
        let error = api
            .complete_checkout(&setup, "4242424242424242")
            .unwrap_err();
        assert_eq!(error.code, "unsupported_mode");
        assert!(error.message.contains("setup"));
    }

    /// A paid subscription of the monthly price and a portal session of its customer.
    fn subscribed(api: &Api, catalog: &SeededCatalog) -> (String, String, String) {
        let customer = id(&post(api, "/v1/customers", "email=p@x.test"));
        let session_id = session(api, &catalog.monthly, &format!("customer={customer}"));
        api.complete_checkout(&session_id, "4242424242424242")
            .unwrap();
        let subscription =
            api.retrieve(Kind::CheckoutSession, &session_id).unwrap()["subscription"]
                .as_str()
                .unwrap()
                .to_owned();
        let portal = id(&post(
            api,
            "/v1/billing_portal/sessions",
            &format!("customer={customer}&return_url=http://localhost:8080/"),
        ));
        (customer, subscription, portal)
    }

    #[test]
    fn the_portal_cancels_at_period_end_and_renews() {
        let (api, catalog) = account();
        let (_, subscription, portal) = subscribed(&api, &catalog);
        let period_end = api.retrieve(Kind::Subscription, &subscription).unwrap()["items"]["data"]
            [0]["current_period_end"]
            .clone();

        let events = api
            .portal_cancel_at_period_end(&portal, &subscription, true)
            .unwrap();
        assert_eq!(types(&events), ["customer.subscription.updated"]);
        let updated = &events[0]["data"]["object"];
        assert_eq!(updated["cancel_at_period_end"], true);
        assert_eq!(updated["cancel_at"], period_end);
        assert_eq!(updated["status"], "active");
        let previous = &events[0]["data"]["previous_attributes"];
        assert_eq!(previous["cancel_at_period_end"], false);
        assert_eq!(previous["cancel_at"], Value::Null);
        assert_eq!(
            api.retrieve(Kind::Subscription, &subscription).as_ref(),
            Some(updated)
        );
        assert_eq!(
            get(&api, "/v1/events", "type=customer.subscription.updated")["data"][0],
            events[0]
        );
        // Nothing to change, no event.
        assert!(
            api.portal_cancel_at_period_end(&portal, &subscription, true)
                .unwrap()
                .is_empty()
        );
        let renewed = api
            .portal_cancel_at_period_end(&portal, &subscription, false)
            .unwrap();
        assert_eq!(renewed[0]["data"]["object"]["cancel_at_period_end"], false);
        assert_eq!(renewed[0]["data"]["object"]["cancel_at"], Value::Null);
        assert_eq!(
            renewed[0]["data"]["previous_attributes"]["cancel_at_period_end"],
            true
        );

        // Only the portal session's customer's live subscriptions.
        let (_, other_subscription, _) = subscribed(&api, &catalog);
        let error = api
            .portal_cancel_at_period_end(&portal, &other_subscription, true)
            .unwrap_err();
        assert!(error.contains("does not belong"), "{error}");
        assert!(
            api.portal_cancel_at_period_end("bps_nope", &subscription, true)
                .unwrap_err()
                .contains("bps_nope")
        );
        assert!(
            api.portal_cancel_at_period_end(&portal, "sub_nope", true)
                .unwrap_err()
                .contains("sub_nope")
        );
        api.patch(
            Kind::Subscription,
            &subscription,
            json!({"status": "canceled"}),
        );
        assert!(
            api.portal_cancel_at_period_end(&portal, &subscription, true)
                .unwrap_err()
                .contains("ended")
        );
    }

    #[test]
    fn the_portal_switches_the_price() {
        let (api, catalog) = account();
        let (_, subscription, portal) = subscribed(&api, &catalog);
        let before = api.retrieve(Kind::Subscription, &subscription).unwrap();

        let events = api
            .portal_switch_price(&portal, &subscription, &catalog.annual)
            .unwrap();
        assert_eq!(types(&events), ["customer.subscription.updated"]);
        let item = &events[0]["data"]["object"]["items"]["data"][0];
        assert_eq!(item["price"]["id"], catalog.annual.as_str());
        assert_eq!(item["id"], before["items"]["data"][0]["id"]);
        // A new interval, a new period.
        assert_eq!(
            item["current_period_end"].as_i64().unwrap()
                - item["current_period_start"].as_i64().unwrap(),
            365 * 86_400
        );
        assert_eq!(
            events[0]["data"]["previous_attributes"]["items"]["data"][0]["price"]["id"],
            catalog.monthly.as_str()
        );
        assert_eq!(
            api.retrieve(Kind::Subscription, &subscription).unwrap()["items"]["data"][0]["price"]["id"],
            catalog.annual.as_str()
        );
        assert!(
            api.portal_switch_price(&portal, &subscription, &catalog.annual)
                .unwrap()
                .is_empty()
        );

        // Only an active, recurring price.
        api.patch(Kind::Price, &catalog.daily, json!({"active": false}));
        let inactive = api
            .portal_switch_price(&portal, &subscription, &catalog.daily)
            .unwrap_err();
        assert!(inactive.contains("inactive"), "{inactive}");
        let one_time = id(&post(
            &api,
            "/v1/prices",
            &format!("product={}&currency=cad&unit_amount=1000", catalog.product),
        ));
        let error = api
            .portal_switch_price(&portal, &subscription, &one_time)
            .unwrap_err();
        assert!(error.contains("not recurring"), "{error}");
        assert!(
            api.portal_switch_price(&portal, &subscription, "price_nope")
                .unwrap_err()
                .contains("price_nope")
        );
    }

    #[test]
    fn session_urls_follow_the_public_url() {
        let (api, catalog) = account();
        let customer = id(&post(&api, "/v1/customers", "email=u@x.test"));
        let portal_body = format!("customer={customer}");
        let session_url = |api: &Api| {
            let session = session(api, &catalog.monthly, &format!("customer={customer}"));
            (
                session.clone(),
                api.retrieve(Kind::CheckoutSession, &session).unwrap()["url"].clone(),
            )
        };
        let (stripe_session, url) = session_url(&api);
        assert_eq!(
            url,
            format!("https://checkout.stripe.com/c/pay/{stripe_session}")
        );
        let portal = post(&api, "/v1/billing_portal/sessions", &portal_body);
        assert!(
            portal["url"]
                .as_str()
                .unwrap()
                .starts_with("https://billing.stripe.com/")
        );

        api.set_public_url("http://localhost:12111/");
        let (session, url) = session_url(&api);
        assert_eq!(url, format!("http://localhost:12111/checkout/{session}"));
        let portal = post(&api, "/v1/billing_portal/sessions", &portal_body);
        assert_eq!(
            portal["url"],
            format!("http://localhost:12111/portal/{}", id(&portal))
        );
        // A paid session has no URL any more.
        let events = api.complete_checkout(&session, "4242424242424242").unwrap();
        assert_eq!(events.last().unwrap()["data"]["object"]["url"], Value::Null);
    }

    #[test]
    fn endpoints_get_the_set_secret_and_are_found_by_event_type() {
        let api = Api::new();
        let endpoint = |url: &str, events: &str| {
            post(
                &api,
                "/v1/webhook_endpoints",
                &format!("url={url}&{events}"),
            )
        };
        let generated = endpoint(
            "http://a.test/w",
            "enabled_events[]=checkout.session.completed",
        );
        assert!(generated["secret"].as_str().unwrap().starts_with("whsec_"));

        api.set_webhook_secret(Some("whsec_local".to_owned()));
        let every = endpoint("http://b.test/w", "enabled_events[]=*");
        assert_eq!(every["secret"], "whsec_local");
        let disabled = endpoint("http://c.test/w", "enabled_events[]=*");
        post(
            &api,
            &format!("/v1/webhook_endpoints/{}", id(&disabled)),
            "disabled=true",
        );
        api.set_webhook_secret(None);
        let again = endpoint(
            "http://d.test/w",
            "enabled_events[]=invoice.paid&enabled_events[]=charge.succeeded",
        );
        assert!(again["secret"].as_str().unwrap().starts_with("whsec_dbl"));
        assert_ne!(again["secret"], generated["secret"]);

        let urls = |event_type: &str| {
            api.webhook_endpoints_for(event_type)
                .into_iter()
                .map(|(url, _)| url)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            urls("checkout.session.completed"),
            ["http://a.test/w", "http://b.test/w"]
        );
        assert_eq!(urls("invoice.paid"), ["http://b.test/w", "http://d.test/w"]);
        assert_eq!(
            api.webhook_endpoints_for("customer.created"),
            [("http://b.test/w".to_owned(), "whsec_local".to_owned())]
        );
        assert!(api.violations().is_empty(), "{:?}", api.violations());
    }
}
