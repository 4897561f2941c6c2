//! Entitlements in the double: features and their attachment to products, as async-stripe sends
//! and parses them, and the customer's active entitlements following its subscriptions, with
//! the summary events Stripe sends.

mod common;

use std::collections::HashMap;

use common::{Direct, get, id, parse, post, types};
use serde_json::{Value, json};
use stripe_misc::EntitlementsActiveEntitlement;
use stripe_misc::EntitlementsActiveEntitlementSummary;
use stripe_misc::entitlements_active_entitlement::ListEntitlementsActiveEntitlement;
use stripe_misc::entitlements_feature::{
    CreateEntitlementsFeature, ListEntitlementsFeature, RetrieveEntitlementsFeature,
    UpdateEntitlementsFeature,
};
use stripe_product::product_feature::{
    CreateProductProductFeature, DeleteProductFeature, ListProductProductFeature,
    RetrieveProductFeature,
};
use stripe_wiremock::store::{ENTITLING_STATUSES, SUMMARY_ENTITLEMENTS_LIMIT};
use stripe_wiremock::{Api, Kind};

fn direct() -> (Api, Direct) {
    let api = Api::new();
    (api.clone(), Direct(api))
}

fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A feature made through async-stripe; returns its id.
fn feature(direct: &Direct, lookup_key: &str) -> String {
    CreateEntitlementsFeature::new(lookup_key, format!("Feature {lookup_key}"))
        .send_blocking(direct)
        .unwrap()
        .id
        .to_string()
}

/// Attaches the features to the product through async-stripe.
fn attach(direct: &Direct, product: &str, features: &[&str]) {
    for feature in features {
        CreateProductProductFeature::new(product, *feature)
            .send_blocking(direct)
            .unwrap();
    }
}

/// A product with a monthly CAD price; returns `(product, price)`.
fn product_with_price(api: &Api, name: &str, amount: i64) -> (String, String) {
    let product = id(&post(api, "/v1/products", &format!("name={name}")));
    let price = id(&post(
        api,
        "/v1/prices",
        &format!("product={product}&currency=cad&unit_amount={amount}&recurring[interval]=month"),
    ));
    (product, price)
}

/// A customer subscribed to `price` through Checkout; returns `(customer, subscription,
/// events of the payment)`.
fn subscribe(api: &Api, price: &str) -> (String, String, Vec<Value>) {
    let customer = id(&post(api, "/v1/customers", "email=e@x.test"));
    let session = id(&post(
        api,
        "/v1/checkout/sessions",
        &format!(
            "mode=subscription&customer={customer}&line_items[0][price]={price}\
             &line_items[0][quantity]=1&success_url=http://x.test/s"
        ),
    ));
    let events = api.complete_checkout(&session, "4242424242424242").unwrap();
    let subscription = api.retrieve(Kind::CheckoutSession, &session).unwrap()["subscription"]
        .as_str()
        .unwrap()
        .to_owned();
    (customer, subscription, events)
}

/// The summary of an `entitlements.active_entitlement_summary.updated` event, checked to parse
/// as async-stripe's type, and its entitlements' lookup keys.
fn summary(event: &Value) -> (EntitlementsActiveEntitlementSummary, Vec<String>) {
    assert_eq!(
        event["type"],
        "entitlements.active_entitlement_summary.updated"
    );
    let object = &event["data"]["object"];
    assert_eq!(object["object"], "entitlements.active_entitlement_summary");
    assert_eq!(object["entitlements"]["object"], "list");
    let parsed: EntitlementsActiveEntitlementSummary = parse(object);
    let keys = parsed
        .entitlements
        .data
        .iter()
        .map(|e| e.lookup_key.clone())
        .collect();
    (parsed, keys)
}

/// Every active entitlement of the customer through async-stripe, page by page.
fn active_entitlements(
    direct: &Direct,
    customer: &str,
    page: i64,
) -> Vec<EntitlementsActiveEntitlement> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut request = ListEntitlementsActiveEntitlement::new(customer).limit(page);
        if let Some(after) = &after {
            request = request.starting_after(after.as_str());
        }
        let list = request.send_blocking(direct).unwrap();
        assert_eq!(list.url, "/v1/entitlements/active_entitlements");
        after = list.data.last().map(|e| e.id.to_string());
        all.extend(list.data);
        if !list.has_more {
            return all;
        }
    }
}

fn lookup_keys(entitlements: &[EntitlementsActiveEntitlement]) -> Vec<String> {
    let mut keys: Vec<String> = entitlements.iter().map(|e| e.lookup_key.clone()).collect();
    keys.sort();
    keys
}

#[test]
fn features_round_trip_and_lookup_keys_are_unique_among_active_ones() {
    let (api, direct) = direct();
    let created = CreateEntitlementsFeature::new("api_access", "API access")
        .metadata(meta(&[("tier", "pro")]))
        .send_blocking(&direct)
        .unwrap();
    assert!(created.id.as_str().starts_with("feat_"));
    assert!(created.active);
    assert_eq!(created.lookup_key, "api_access");
    assert_eq!(created.metadata, meta(&[("tier", "pro")]));
    let raw = api.retrieve(Kind::Feature, created.id.as_str()).unwrap();
    assert_eq!(raw["object"], "entitlements.feature");
    assert_eq!(raw["livemode"], false);

    // A second active feature cannot take the key.
    let taken = CreateEntitlementsFeature::new("api_access", "Again")
        .send_blocking(&direct)
        .unwrap_err();
    assert_eq!(taken.status(), 400);
    assert_eq!(taken.error()["param"], "lookup_key");
    assert_eq!(taken.error()["type"], "invalid_request_error");

    let updated = UpdateEntitlementsFeature::new(created.id.clone())
        .name("API")
        .metadata(meta(&[("tier", ""), ("owner", "api-team")]))
        .send_blocking(&direct)
        .unwrap();
    assert_eq!(updated.name, "API");
    assert_eq!(updated.lookup_key, "api_access");
    assert_eq!(updated.metadata, meta(&[("owner", "api-team")]));
    let again = RetrieveEntitlementsFeature::new(created.id.clone())
        .send_blocking(&direct)
        .unwrap();
    assert_eq!(again.name, "API");

    let other = feature(&direct, "seats");
    let by_key = ListEntitlementsFeature::new()
        .lookup_key("seats")
        .send_blocking(&direct)
        .unwrap();
    assert_eq!(by_key.url, "/v1/entitlements/features");
    assert_eq!(
        by_key
            .data
            .iter()
            .map(|f| f.id.to_string())
            .collect::<Vec<_>>(),
        [other.as_str()]
    );

    // Archived: out of the default list, in `archived=true`'s, and its key free again.
    UpdateEntitlementsFeature::new(created.id.clone())
        .active(false)
        .send_blocking(&direct)
        .unwrap();
    let listed = ListEntitlementsFeature::new()
        .send_blocking(&direct)
        .unwrap();
    assert_eq!(
        listed
            .data
            .iter()
            .map(|f| f.id.to_string())
            .collect::<Vec<_>>(),
        [other.as_str()]
    );
    let archived = ListEntitlementsFeature::new()
        .archived(true)
        .send_blocking(&direct)
        .unwrap();
    assert_eq!(archived.data.len(), 1);
    assert!(!archived.data[0].active);
    let successor = feature(&direct, "api_access");
    assert_ne!(successor, created.id.to_string());
    // Now the archived one cannot come back under the key its successor holds.
    let revived = UpdateEntitlementsFeature::new(created.id.clone())
        .active(true)
        .send_blocking(&direct)
        .unwrap_err();
    assert_eq!(revived.status(), 400);
    let (status, _) = get(&api, "/v1/entitlements/features/feat_nope", "");
    assert_eq!(status, 404);
    assert!(api.violations().is_empty(), "{:?}", api.violations());
}

#[test]
fn product_features_attach_once_page_and_delete() {
    let (api, direct) = direct();
    let (product, _) = product_with_price(&api, "pro", 1000);
    let (other_product, _) = product_with_price(&api, "basic", 500);
    let features: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|k| feature(&direct, k))
        .collect();

    let first = CreateProductProductFeature::new(product.as_str(), features[0].as_str())
        .send_blocking(&direct)
        .unwrap();
    assert!(first.id.as_str().starts_with("prodft_"));
    assert_eq!(first.entitlement_feature.id.as_str(), features[0]);
    assert_eq!(first.entitlement_feature.lookup_key, "a");
    assert!(!first.livemode);
    // The same feature twice on one product is refused; on another product it is fine.
    let twice = CreateProductProductFeature::new(product.as_str(), features[0].as_str())
        .send_blocking(&direct)
        .unwrap_err();
    assert_eq!(twice.status(), 400);
    assert_eq!(twice.error()["param"], "entitlement_feature");
    attach(&direct, &other_product, &[features[0].as_str()]);
    attach(
        &direct,
        &product,
        &[features[1].as_str(), features[2].as_str()],
    );
    // Unknown features and products, and archived features, are refused.
    let unknown = CreateProductProductFeature::new(product.as_str(), "feat_nope")
        .send_blocking(&direct)
        .unwrap_err();
    assert_eq!(unknown.status(), 400);
    assert_eq!(unknown.error()["code"], "resource_missing");
    let no_product = CreateProductProductFeature::new("prod_nope", features[1].as_str())
        .send_blocking(&direct)
        .unwrap_err();
    assert_eq!(no_product.status(), 404);
    let archived = feature(&direct, "old");
    UpdateEntitlementsFeature::new(archived.as_str())
        .active(false)
        .send_blocking(&direct)
        .unwrap();
    let inactive = CreateProductProductFeature::new(product.as_str(), archived.as_str())
        .send_blocking(&direct)
        .unwrap_err();
    assert_eq!(inactive.status(), 400);

    // Listed per product, newest first, two at a time.
    let page = ListProductProductFeature::new(product.as_str())
        .limit(2)
        .send_blocking(&direct)
        .unwrap();
    assert!(page.has_more);
    assert_eq!(page.url, format!("/v1/products/{product}/features"));
    let keys: Vec<&str> = page
        .data
        .iter()
        .map(|a| a.entitlement_feature.lookup_key.as_str())
        .collect();
    assert_eq!(keys, ["c", "b"]);
    let rest = ListProductProductFeature::new(product.as_str())
        .limit(2)
        .starting_after(page.data[1].id.as_str())
        .send_blocking(&direct)
        .unwrap();
    assert!(!rest.has_more);
    assert_eq!(rest.data.len(), 1);
    assert_eq!(rest.data[0].id, first.id);
    let others = ListProductProductFeature::new(other_product.as_str())
        .send_blocking(&direct)
        .unwrap();
    assert_eq!(others.data.len(), 1);

    // A renamed feature shows renamed in its attachments.
    UpdateEntitlementsFeature::new(features[0].as_str())
        .name("Renamed")
        .send_blocking(&direct)
        .unwrap();
    let one = RetrieveProductFeature::new(first.id.as_str(), product.as_str())
        .send_blocking(&direct)
        .unwrap();
    assert_eq!(one.entitlement_feature.name, "Renamed");
    let elsewhere = RetrieveProductFeature::new(first.id.as_str(), other_product.as_str())
        .send_blocking(&direct)
        .unwrap_err();
    assert_eq!(elsewhere.status(), 404);

    let deleted = DeleteProductFeature::new(first.id.as_str(), product.as_str())
        .send_blocking(&direct)
        .unwrap();
    assert_eq!(deleted.id, first.id);
    let raw = api.requests().last().unwrap().clone();
    assert_eq!((raw.method.as_str(), raw.status), ("DELETE", 200));
    // Stripe's deleted object, exactly.
    let newest = page.data[0].id.to_string();
    let answer = api.answer(
        "DELETE",
        &format!("/v1/products/{product}/features/{newest}"),
        b"",
        &common::headers(None),
    );
    assert_eq!(
        answer.body,
        json!({"id": newest, "object": "product_feature", "deleted": true})
    );
    let listed = ListProductProductFeature::new(product.as_str())
        .send_blocking(&direct)
        .unwrap();
    assert_eq!(listed.data.len(), 1);
    let gone = DeleteProductFeature::new(first.id.as_str(), product.as_str())
        .send_blocking(&direct)
        .unwrap_err();
    assert_eq!(gone.status(), 404);
    assert!(api.violations().is_empty(), "{:?}", api.violations());
}

#[test]
fn what_stripe_would_refuse_is_recorded() {
    let (api, direct) = direct();
    let (product, _) = product_with_price(&api, "pro", 1000);
    let feature = feature(&direct, "reports");
    let headers = common::headers(Some("k-1".to_owned()));

    let too_long = format!("name=x&lookup_key={}", "k".repeat(81));
    let refused = api.answer(
        "POST",
        "/v1/entitlements/features",
        too_long.as_bytes(),
        &headers,
    );
    assert_eq!(refused.status, 400);
    let unknown = api.answer(
        "POST",
        &format!("/v1/products/{product}/features"),
        format!("feature={feature}").as_bytes(),
        &common::headers(Some("k-2".to_owned())),
    );
    assert_eq!(unknown.status, 400);
    // Stripe would take it, but a create must carry an Idempotency-Key.
    let keyless = api.answer(
        "POST",
        &format!("/v1/products/{product}/features"),
        format!("entitlement_feature={feature}").as_bytes(),
        &common::headers(None),
    );
    assert_eq!(keyless.status, 200);
    let (status, body) = get(&api, "/v1/entitlements/active_entitlements", "limit=3");
    assert_eq!(status, 400, "{body}");
    let bad_mode = api.answer(
        "POST",
        "/v1/billing_portal/configurations",
        b"features[subscription_cancel][enabled]=true&features[subscription_cancel][mode]=later",
        &common::headers(Some("k-3".to_owned())),
    );
    assert_eq!(bad_mode.status, 400);

    // One line per problem: the long key; the unknown parameter and the missing required one;
    // the key; the missing customer; the unknown mode.
    let violations = api.violations();
    assert_eq!(violations.len(), 6, "{violations:?}");
    let has = |needle: &str| violations.iter().filter(|v| v.contains(needle)).count();
    assert_eq!(
        has("POST /v1/entitlements/features: /lookup_key"),
        1,
        "{violations:?}"
    );
    assert_eq!(
        has(&format!("POST /v1/products/{product}/features")),
        3,
        "{violations:?}"
    );
    assert_eq!(has("entitlement_feature"), 1, "{violations:?}");
    assert_eq!(has("Idempotency-Key"), 1, "{violations:?}");
    assert_eq!(
        has("GET /v1/entitlements/active_entitlements: \"customer\""),
        1,
        "{violations:?}"
    );
    assert_eq!(
        has("/features/subscription_cancel/mode"),
        1,
        "{violations:?}"
    );
    // Nothing refused was made.
    assert_eq!(api.objects(Kind::Feature).len(), 1);
    assert!(api.objects(Kind::BillingPortalConfiguration).is_empty());
}

/// Stripe's rule, as the double reads it (see `ENTITLING_STATUSES`).
#[test]
fn the_statuses_that_entitle() {
    assert_eq!(ENTITLING_STATUSES, ["active", "trialing", "past_due"]);
    assert_eq!(SUMMARY_ENTITLEMENTS_LIMIT, 10);
}

#[test]
fn entitlements_follow_checkout_plan_switches_and_status() {
    let (api, direct) = direct();
    let (basic, basic_price) = product_with_price(&api, "basic", 500);
    let (pro, pro_price) = product_with_price(&api, "pro", 2000);
    let [reports, exports, seats] = ["reports", "exports", "seats"].map(|k| feature(&direct, k));
    attach(&direct, &basic, &[reports.as_str()]);
    attach(
        &direct,
        &pro,
        &[reports.as_str(), exports.as_str(), seats.as_str()],
    );

    // Checkout: the subscription's events, then the summary.
    let (customer, subscription, events) = subscribe(&api, &basic_price);
    assert_eq!(
        types(&events)[types(&events).len() - 3..],
        [
            "customer.subscription.created",
            "checkout.session.completed",
            "entitlements.active_entitlement_summary.updated"
        ]
    );
    let (parsed, keys) = summary(events.last().unwrap());
    assert_eq!(parsed.customer, customer);
    assert!(!parsed.livemode);
    assert!(!parsed.entitlements.has_more);
    assert_eq!(
        parsed.entitlements.url,
        format!("/v1/customer/{customer}/entitlements")
    );
    assert_eq!(keys, ["reports"]);
    let listed = active_entitlements(&direct, &customer, 10);
    assert_eq!(lookup_keys(&listed), ["reports"]);
    let reports_entitlement = listed[0].id.clone();
    assert!(reports_entitlement.as_str().starts_with("ent_"));
    assert_eq!(listed[0].feature.id().as_str(), reports);
    let raw = api
        .retrieve(Kind::ActiveEntitlement, reports_entitlement.as_str())
        .unwrap();
    assert_eq!(raw["object"], "entitlements.active_entitlement");
    assert_eq!(raw["feature"], reports.as_str());
    let (status, one) = get(
        &api,
        &format!("/v1/entitlements/active_entitlements/{reports_entitlement}"),
        "",
    );
    assert_eq!(status, 200);
    let _: EntitlementsActiveEntitlement = parse(&one);

    // Up to pro: three entitlements; the one kept keeps its id.
    let portal = id(&post(
        &api,
        "/v1/billing_portal/sessions",
        &format!("customer={customer}"),
    ));
    let events = api
        .portal_switch_price(&portal, &subscription, &pro_price)
        .unwrap();
    assert_eq!(
        types(&events),
        [
            "customer.subscription.updated",
            "entitlements.active_entitlement_summary.updated"
        ]
    );
    let (_, mut keys) = summary(&events[1]);
    keys.sort();
    assert_eq!(keys, ["exports", "reports", "seats"]);
    let listed = active_entitlements(&direct, &customer, 2);
    assert_eq!(lookup_keys(&listed), ["exports", "reports", "seats"]);
    assert!(listed.iter().any(|e| e.id == reports_entitlement));

    // Back down: the extra ones are gone.
    let events = api
        .portal_switch_price(&portal, &subscription, &basic_price)
        .unwrap();
    assert_eq!(summary(&events[1]).1, ["reports"]);
    assert_eq!(
        lookup_keys(&active_entitlements(&direct, &customer, 10)),
        ["reports"]
    );
    assert_eq!(api.objects(Kind::ActiveEntitlement).len(), 1);

    // Cancelling at the period's end changes no entitlement: the subscription is still active.
    let events = api
        .portal_cancel_at_period_end(&portal, &subscription, true)
        .unwrap();
    assert_eq!(types(&events), ["customer.subscription.updated"]);
    // A failed renewal (`past_due`) keeps access; `unpaid` loses it; paid again, it is back.
    let events = api
        .set_subscription_status(&subscription, "past_due")
        .unwrap();
    assert_eq!(types(&events), ["customer.subscription.updated"]);
    assert_eq!(events[0]["data"]["previous_attributes"]["status"], "active");
    assert_eq!(events[0]["data"]["object"]["status"], "past_due");
    let events = api
        .set_subscription_status(&subscription, "unpaid")
        .unwrap();
    assert_eq!(
        types(&events),
        [
            "customer.subscription.updated",
            "entitlements.active_entitlement_summary.updated"
        ]
    );
    let (parsed, keys) = summary(&events[1]);
    assert!(keys.is_empty());
    assert!(!parsed.entitlements.has_more);
    assert!(active_entitlements(&direct, &customer, 10).is_empty());
    let events = api
        .set_subscription_status(&subscription, "active")
        .unwrap();
    assert_eq!(summary(&events[1]).1, ["reports"]);
    assert!(
        api.set_subscription_status(&subscription, "active")
            .unwrap()
            .is_empty()
    );

    // Ended: deleted, and nothing left.
    let events = api
        .set_subscription_status(&subscription, "canceled")
        .unwrap();
    assert_eq!(
        types(&events),
        [
            "customer.subscription.deleted",
            "entitlements.active_entitlement_summary.updated"
        ]
    );
    let ended = &events[0]["data"]["object"];
    assert_eq!(ended["status"], "canceled");
    assert!(ended["ended_at"].is_i64());
    assert!(summary(&events[1]).1.is_empty());
    assert!(
        api.set_subscription_status(&subscription, "active")
            .unwrap_err()
            .contains("ended")
    );
    assert!(
        api.set_subscription_status(&subscription, "paused")
            .is_err()
    );

    // Every summary was stored as an event too.
    let (_, listed) = get(
        &api,
        "/v1/events",
        "type=entitlements.active_entitlement_summary.updated&limit=100",
    );
    assert_eq!(listed["data"].as_array().unwrap().len(), 6);
    assert!(api.violations().is_empty(), "{:?}", api.violations());
}

#[test]
fn a_summary_carries_the_first_entitlements_and_says_there_are_more() {
    let (api, direct) = direct();
    let (product, price) = product_with_price(&api, "big", 1000);
    let keys: Vec<String> = (0..12).map(|i| format!("f{i:02}")).collect();
    let features: Vec<String> = keys.iter().map(|k| feature(&direct, k)).collect();
    attach(
        &direct,
        &product,
        &features.iter().map(String::as_str).collect::<Vec<_>>(),
    );

    // Stripe's limit: the first 10 of 12.
    let (customer, _, events) = subscribe(&api, &price);
    let (parsed, _) = summary(events.last().unwrap());
    assert_eq!(parsed.entitlements.data.len(), SUMMARY_ENTITLEMENTS_LIMIT);
    assert!(parsed.entitlements.has_more);
    // The summary's are the first of the list, in its order.
    let listed = active_entitlements(&direct, &customer, 5);
    assert_eq!(listed.len(), 12);
    let first: Vec<String> = listed.iter().take(10).map(|e| e.id.to_string()).collect();
    let summarized: Vec<String> = parsed
        .entitlements
        .data
        .iter()
        .map(|e| e.id.to_string())
        .collect();
    assert_eq!(summarized, first);
    let mut all_keys = lookup_keys(&listed);
    all_keys.dedup();
    assert_eq!(all_keys, keys);

    // A test's own limit: two, and the service must list the rest.
    api.set_summary_entitlements_limit(2);
    let (customer, _, events) = subscribe(&api, &price);
    let (parsed, _) = summary(events.last().unwrap());
    assert_eq!(parsed.entitlements.data.len(), 2);
    assert!(parsed.entitlements.has_more);
    assert_eq!(active_entitlements(&direct, &customer, 100).len(), 12);
    // Exactly as many as the limit: no more to fetch.
    api.set_summary_entitlements_limit(12);
    let (_, _, events) = subscribe(&api, &price);
    let (parsed, _) = summary(events.last().unwrap());
    assert_eq!(parsed.entitlements.data.len(), 12);
    assert!(!parsed.entitlements.has_more);
    assert!(api.violations().is_empty(), "{:?}", api.violations());
}

#[test]
fn inserted_subscriptions_entitle_once_recomputed_and_customers_are_apart() {
    let (api, direct) = direct();
    let (product, price) = product_with_price(&api, "pro", 1000);
    let reports = feature(&direct, "reports");
    attach(&direct, &product, &[reports.as_str()]);
    let (subscribed, _, _) = subscribe(&api, &price);
    let other = id(&post(&api, "/v1/customers", "email=o@x.test"));
    assert!(active_entitlements(&direct, &other, 10).is_empty());

    // Set-up inserts change nothing until recomputed, as Stripe would on the change.
    api.insert(
        Kind::Subscription,
        json!({
            "id": "sub_inserted", "object": "subscription", "customer": other, "status": "trialing",
            "items": {"data": [{"price": {"id": price, "product": product}}]},
        }),
    );
    assert!(active_entitlements(&direct, &other, 10).is_empty());
    let events = api.recompute_entitlements(&other);
    assert_eq!(summary(&events[0]).1, ["reports"]);
    assert!(api.recompute_entitlements(&other).is_empty());
    assert_eq!(
        lookup_keys(&active_entitlements(&direct, &subscribed, 10)),
        ["reports"]
    );
    assert_eq!(api.objects(Kind::ActiveEntitlement).len(), 2);

    // Detaching a feature reaches a subscriber at its next change, not at once.
    let attachment = api.objects(Kind::ProductFeature)[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    DeleteProductFeature::new(attachment, product.as_str())
        .send_blocking(&direct)
        .unwrap();
    assert_eq!(
        lookup_keys(&active_entitlements(&direct, &other, 10)),
        ["reports"]
    );
    assert!(summary(&api.recompute_entitlements(&other)[0]).1.is_empty());

    // An unknown customer is Stripe's resource_missing.
    let (status, body) = get(
        &api,
        "/v1/entitlements/active_entitlements",
        "customer=cus_nope",
    );
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "resource_missing");
    assert!(api.violations().is_empty(), "{:?}", api.violations());
}
