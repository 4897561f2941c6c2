//! The double's memory: the Stripe objects created so far, and the handlers that read and change
//! them the way Stripe does.
//!
//! Being stateful is the point: provisioning code is only idempotent if what it creates is what it
//! later finds, so a list must return what a create made, with Stripe's filters, ordering (newest
//! first) and pagination.
//!
//! Entitlements are kept here as Stripe keeps them: features, their attachments to products
//! (`product_feature`), and each customer's active entitlements, which only
//! [`crate::flows::recompute_entitlements`] writes, from the customer's subscriptions. Stripe's
//! objects for these do not name their product or customer, so the store keeps those links
//! beside them.
//!
//! It also has to stay fast with the 100,000 objects a backfill test seeds: lookups go through an
//! id index, and a list walks a cached order from the cursor's position instead of sorting and
//! scanning the whole kind for every page.

use std::cmp::Reverse;
use std::collections::HashMap;

use serde_json::{Map, Value, json};

/// The kinds of object the double keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Product,
    Price,
    WebhookEndpoint,
    Customer,
    CheckoutSession,
    BillingPortalSession,
    Event,
    Subscription,
    Charge,
    Invoice,
    SubscriptionSchedule,
    /// `entitlements.feature`: what a product can grant (`feat_`).
    Feature,
    /// `product_feature`: a feature attached to a product (`prodft_`).
    ProductFeature,
    /// `entitlements.active_entitlement`: a feature a customer has now (`ent_`), made by the
    /// double from the customer's subscriptions, never by a request.
    ActiveEntitlement,
    /// `billing_portal.configuration` (`bpc_`).
    BillingPortalConfiguration,
}

impl Kind {
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Kind::Product => "prod_",
            Kind::Price => "price_",
            Kind::WebhookEndpoint => "we_",
            Kind::Customer => "cus_",
            Kind::CheckoutSession => "cs_test_",
            Kind::BillingPortalSession => "bps_",
            Kind::Event => "evt_",
            Kind::Subscription => "sub_",
            Kind::Charge => "ch_",
            Kind::Invoice => "in_",
            Kind::SubscriptionSchedule => "sub_sched_",
            Kind::Feature => "feat_",
            Kind::ProductFeature => "prodft_",
            Kind::ActiveEntitlement => "ent_",
            Kind::BillingPortalConfiguration => "bpc_",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Product => "product",
            Kind::Price => "price",
            Kind::WebhookEndpoint => "webhook endpoint",
            Kind::Customer => "customer",
            Kind::CheckoutSession => "checkout session",
            Kind::BillingPortalSession => "billing portal session",
            Kind::Event => "event",
            Kind::Subscription => "subscription",
            Kind::Charge => "charge",
            Kind::Invoice => "invoice",
            Kind::SubscriptionSchedule => "subscription schedule",
            Kind::Feature => "feature",
            Kind::ProductFeature => "product feature",
            Kind::ActiveEntitlement => "active entitlement",
            Kind::BillingPortalConfiguration => "configuration",
        }
    }
}

/// A reply: HTTP status and JSON body.
pub type Reply = (u16, Value);

/// Stripe's error shape.
pub fn error(status: u16, message: &str, param: Option<&str>, code: Option<&str>) -> Reply {
    let kind = if status == 429 {
        "rate_limit_error"
    } else if status >= 500 {
        "api_error"
    } else if code == Some("idempotency_key_in_use") {
        "idempotency_error"
    } else {
        "invalid_request_error"
    };
    let mut e = json!({ "type": kind, "message": message });
    if let Some(param) = param {
        e["param"] = json!(param);
    }
    if let Some(code) = code {
        e["code"] = json!(code);
    }
    (status, json!({ "error": e }))
}

fn missing(kind: Kind, id: &str, param: &str) -> Reply {
    error(
        if param == "id" { 404 } else { 400 },
        &format!("No such {}: '{id}'", kind.name()),
        Some(param),
        Some("resource_missing"),
    )
}

/// The objects of one kind, with the indexes that keep a lookup and a page cheap however many
/// objects a test seeds.
#[derive(Default)]
struct Objects {
    /// In the order stored: what [`Store::all`] returns.
    stored: Vec<Value>,
    /// Id → index in `stored`. Of two objects with one id the first stored wins, as the linear
    /// search this replaces found it.
    by_id: HashMap<String, usize>,
    /// The list order, built by the first list after a change and dropped by the next change:
    /// a backfill pages through a kind nothing writes to, so it is sorted once, not per page.
    order: Option<ListOrder>,
}

/// Stripe's list order of one kind: newest first and, of one second, the later stored first.
struct ListOrder {
    /// Indices into `stored`, in list order.
    indices: Vec<usize>,
    /// For each index into `stored`, its place in `indices`: where a page after it starts.
    position: Vec<usize>,
}

impl ListOrder {
    fn of(stored: &[Value]) -> Self {
        let mut indices: Vec<usize> = (0..stored.len()).collect();
        indices.sort_unstable_by_key(|&i| {
            (
                Reverse(stored[i]["created"].as_i64().unwrap_or(0)),
                Reverse(i),
            )
        });
        let mut position = vec![0; stored.len()];
        for (at, &i) in indices.iter().enumerate() {
            position[i] = at;
        }
        Self { indices, position }
    }
}

impl Objects {
    fn push(&mut self, object: Value) {
        if let Some(id) = object["id"].as_str() {
            self.by_id.entry(id.to_owned()).or_insert(self.stored.len());
        }
        self.stored.push(object);
        self.order = None;
    }

    fn get(&self, id: &str) -> Option<&Value> {
        self.stored.get(*self.by_id.get(id)?)
    }

    /// Any write may move an object (a new `created`), so handing one out for writing drops the
    /// cached order.
    fn get_mut(&mut self, id: &str) -> Option<&mut Value> {
        let at = *self.by_id.get(id)?;
        self.order = None;
        self.stored.get_mut(at)
    }

    /// Takes the object `id` out (a deleted product feature, a lost entitlement).
    fn remove(&mut self, id: &str) -> Option<Value> {
        let at = *self.by_id.get(id)?;
        let removed = self.stored.remove(at);
        self.order = None;
        self.reindex();
        Some(removed)
    }

    /// Rebuilds the id index, after a write that changed an id.
    fn reindex(&mut self) {
        self.by_id.clear();
        for (at, object) in self.stored.iter().enumerate() {
            if let Some(id) = object["id"].as_str() {
                self.by_id.entry(id.to_owned()).or_insert(at);
            }
        }
    }

    /// The list order (built first if a change dropped it) and the objects it indexes.
    fn ordered(&mut self) -> (&ListOrder, &[Value]) {
        let stored = &self.stored;
        (
            self.order.get_or_insert_with(|| ListOrder::of(stored)),
            stored,
        )
    }

    /// Where the object `id` stands in the list order.
    fn position(&mut self, id: &str) -> Option<usize> {
        let at = *self.by_id.get(id)?;
        Some(self.ordered().0.position[at])
    }

    /// Up to `limit` objects that `keep` accepts, in list order from position `start`, and
    /// whether another follows them. Only the objects up to the one after the page are looked at.
    fn page(
        &mut self,
        start: usize,
        limit: usize,
        keep: impl Fn(&Value) -> bool,
    ) -> (Vec<Value>, bool) {
        let (order, stored) = self.ordered();
        let mut matching = order
            .indices
            .get(start..)
            .unwrap_or_default()
            .iter()
            .map(|&i| &stored[i])
            .filter(|o| keep(o));
        let page = matching.by_ref().take(limit).cloned().collect();
        (page, matching.next().is_some())
    }
}

#[derive(Default)]
pub struct Store {
    objects: HashMap<Kind, Objects>,
    next_id: u64,
    /// A fake clock, so that `created` orders objects deterministically.
    clock: i64,
    /// Where the Checkout and portal pages are served (`Api::set_public_url`), without a trailing
    /// slash; `None` gives sessions Stripe's own URLs.
    pub(crate) public_url: Option<String>,
    /// The signing secret new webhook endpoints get (`Api::set_webhook_secret`); `None` makes
    /// one up per endpoint.
    pub(crate) webhook_secret: Option<String>,
    /// The parameters each Checkout Session was created with, by session id. Stripe keeps them
    /// (line items, `subscription_data`) without returning them on the session, and paying the
    /// session needs them.
    pub(crate) session_params: HashMap<String, Value>,
    /// The product each product feature is attached to, by product feature id: Stripe's
    /// `product_feature` object does not name it.
    pub(crate) product_feature_products: HashMap<String, String>,
    /// The customer each active entitlement belongs to, by entitlement id: Stripe's object does
    /// not name it either.
    pub(crate) entitlement_customers: HashMap<String, String>,
    /// How many entitlements an `entitlements.active_entitlement_summary.updated` event carries
    /// (`Api::set_summary_entitlements_limit`); `None` is Stripe's [`SUMMARY_ENTITLEMENTS_LIMIT`].
    pub(crate) summary_entitlements_limit: Option<usize>,
}

const EPOCH: i64 = 1_767_225_600;

/// How many entitlements Stripe puts in the summary of an
/// `entitlements.active_entitlement_summary.updated` event: the first 10, with `has_more` when
/// the customer has more (then the list endpoint has them all). Stripe's reference does not state
/// the number; 10 is what integrations observe (stripe/sync-engine#197) and the default page size
/// of every Stripe list.
pub const SUMMARY_ENTITLEMENTS_LIMIT: usize = 10;

/// The subscription statuses whose items' product features are active entitlements: Stripe
/// entitles a customer "as long as [they maintain] an active subscription" (Stripe's
/// Entitlements guide), which the double reads as `active`, `trialing` and `past_due` (a failed
/// renewal is still being retried, so access continues). `unpaid`, `paused`, `incomplete`,
/// `incomplete_expired` and `canceled` grant nothing. A subscription set to cancel at the
/// period's end is still `active`, so it keeps its entitlements until it ends.
pub const ENTITLING_STATUSES: &[&str] = &["active", "trialing", "past_due"];

/// The id of the account's default portal configuration, which a portal session created
/// without `configuration` uses. The double makes it on first use: it allows cancelling at the
/// period's end and switching to any price (`subscription_update.products` is `null`).
pub const DEFAULT_PORTAL_CONFIGURATION: &str = "bpc_DblDefault";

impl Store {
    /// The objects of a kind in the order stored.
    pub fn all(&self, kind: Kind) -> Vec<Value> {
        self.objects
            .get(&kind)
            .map(|o| o.stored.clone())
            .unwrap_or_default()
    }

    fn kind_mut(&mut self, kind: Kind) -> &mut Objects {
        self.objects.entry(kind).or_default()
    }

    /// The stored object of a kind with this id.
    pub fn get(&self, kind: Kind, id: &str) -> Option<&Value> {
        self.objects.get(&kind)?.get(id)
    }

    pub(crate) fn get_mut(&mut self, kind: Kind, id: &str) -> Option<&mut Value> {
        self.objects.get_mut(&kind)?.get_mut(id)
    }

    /// A fresh id with `prefix` (`si_`, `pi_`, ...), from the counter the stored kinds use, for
    /// objects the double does not keep as a kind of their own.
    pub(crate) fn mint(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}Dbl{:08}", self.next_id)
    }

    fn new_id(&mut self, kind: Kind) -> (String, i64) {
        self.next_id += 1;
        self.clock += 1;
        (
            format!("{}Dbl{:08}", kind.prefix(), self.next_id),
            EPOCH + self.clock,
        )
    }

    fn push(&mut self, kind: Kind, object: Value) -> Reply {
        self.kind_mut(kind).push(object.clone());
        (200, object)
    }

    /// Stores an object as given, its id and `created` included (test set-up: events Stripe
    /// has, made by the fixtures).
    pub fn insert(&mut self, kind: Kind, object: Value) {
        self.kind_mut(kind).push(object);
    }

    /// [`insert`](Self::insert) for many objects at once (seeding a backfill test).
    pub fn insert_many(&mut self, kind: Kind, objects: impl IntoIterator<Item = Value>) {
        let stored = self.kind_mut(kind);
        let objects = objects.into_iter();
        stored.stored.reserve(objects.size_hint().0);
        objects.for_each(|o| stored.push(o));
    }

    /// Applies a change to a stored object (test set-up, e.g. completing a Checkout Session).
    pub fn patch(&mut self, kind: Kind, id: &str, patch: &Value) -> Option<Value> {
        let objects = self.objects.get_mut(&kind)?;
        let object = objects.get_mut(id)?;
        if let (Value::Object(target), Value::Object(changes)) = (&mut *object, patch) {
            for (k, v) in changes {
                target.insert(k.clone(), v.clone());
            }
        }
        let patched = object.clone();
        if patched["id"] != id {
            objects.reindex();
        }
        Some(patched)
    }

    /// Takes a stored object out, returning it.
    pub(crate) fn remove(&mut self, kind: Kind, id: &str) -> Option<Value> {
        self.objects.get_mut(&kind)?.remove(id)
    }

    /// How many entitlements a summary event carries.
    pub(crate) fn summary_limit(&self) -> usize {
        self.summary_entitlements_limit
            .unwrap_or(SUMMARY_ENTITLEMENTS_LIMIT)
    }

    /// The ids of the features the customer's subscriptions entitle it to now: those attached to
    /// the products of the items of its subscriptions in an [`ENTITLING_STATUSES`] status, each
    /// once, oldest subscription, first item and first attachment first.
    pub(crate) fn entitled_features(&self, customer: &str) -> Vec<String> {
        let mut features: Vec<String> = Vec::new();
        let Some(subscriptions) = self.objects.get(&Kind::Subscription) else {
            return features;
        };
        let attachments = self.all(Kind::ProductFeature);
        for subscription in &subscriptions.stored {
            if id_of(&subscription["customer"]) != Some(customer)
                || !ENTITLING_STATUSES.contains(&subscription["status"].as_str().unwrap_or(""))
            {
                continue;
            }
            let items = subscription
                .pointer("/items/data")
                .and_then(Value::as_array);
            for item in items.into_iter().flatten() {
                let Some(product) = id_of(&item["price"]["product"]) else {
                    continue;
                };
                for attachment in &attachments {
                    let id = attachment["id"].as_str().unwrap_or_default();
                    if self.product_feature_products.get(id).map(String::as_str) != Some(product) {
                        continue;
                    }
                    if let Some(feature) = attachment["entitlement_feature"]["id"].as_str()
                        && !features.iter().any(|f| f == feature)
                    {
                        features.push(feature.to_owned());
                    }
                }
            }
        }
        features
    }

    /// The customer's active entitlements, in list order (newest first).
    pub(crate) fn entitlements_of(&self, customer: &str) -> Vec<Value> {
        let owned = |o: &Value| {
            o["id"]
                .as_str()
                .and_then(|id| self.entitlement_customers.get(id))
                .is_some_and(|c| c == customer)
        };
        let mut entitlements: Vec<Value> = self
            .all(Kind::ActiveEntitlement)
            .into_iter()
            .filter(|o| owned(o))
            .collect();
        entitlements.reverse();
        entitlements
    }

    /// Routes a request whose parameters have already been decoded and checked.
    pub fn handle(&mut self, method: &str, path: &str, params: &Value) -> Reply {
        let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
        match (method, segments.as_slice()) {
            ("GET", ["products"]) => self.list(Kind::Product, params, "/v1/products", |p, o| {
                exact_filter(p, o, "active")
                    && p.get("ids")
                        .and_then(Value::as_array)
                        .is_none_or(|ids| ids.contains(&o["id"]))
            }),
            ("POST", ["products"]) => self.create_product(params),
            ("GET", ["products", id]) => self.retrieve(Kind::Product, id),
            ("POST", ["products", id]) => self.update(
                Kind::Product,
                id,
                params,
                &["active", "name", "description"],
            ),
            ("GET", ["prices"]) => self.list(Kind::Price, params, "/v1/prices", price_filter),
            ("POST", ["prices"]) => self.create_price(params),
            ("GET", ["prices", id]) => self.retrieve(Kind::Price, id),
            ("POST", ["prices", id]) => self.update_price(id, params),
            ("GET", ["webhook_endpoints"]) => {
                let (status, mut list) = self.list(
                    Kind::WebhookEndpoint,
                    params,
                    "/v1/webhook_endpoints",
                    |_, _| true,
                );
                // Stripe shows the signing secret only in the response that creates an endpoint.
                if let Some(items) = list["data"].as_array_mut() {
                    items.iter_mut().for_each(strip_secret);
                }
                (status, list)
            }
            ("POST", ["webhook_endpoints"]) => self.create_webhook_endpoint(params),
            ("GET", ["webhook_endpoints", id]) => {
                let (status, mut e) = self.retrieve(Kind::WebhookEndpoint, id);
                strip_secret(&mut e);
                (status, e)
            }
            ("POST", ["webhook_endpoints", id]) => {
                let (status, mut e) = self.update_webhook_endpoint(id, params);
                strip_secret(&mut e);
                (status, e)
            }
            ("GET", ["customers"]) => self.list(Kind::Customer, params, "/v1/customers", |p, o| {
                exact_filter(p, o, "email") && range_filter(p, o, "created")
            }),
            ("POST", ["customers"]) => self.create_customer(params),
            ("GET", ["customers", id]) => self.retrieve(Kind::Customer, id),
            ("POST", ["checkout", "sessions"]) => self.create_checkout_session(params),
            ("GET", ["checkout", "sessions", id]) => self.retrieve(Kind::CheckoutSession, id),
            ("POST", ["billing_portal", "sessions"]) => self.create_portal_session(params),
            ("GET", ["events"]) => self.list(Kind::Event, params, "/v1/events", event_filter),
            ("GET", ["events", id]) => self.retrieve(Kind::Event, id),
            ("GET", ["subscriptions"]) => self.list(
                Kind::Subscription,
                params,
                "/v1/subscriptions",
                subscription_filter,
            ),
            ("GET", ["subscriptions", id]) => self.retrieve(Kind::Subscription, id),
            ("GET", ["subscription_schedules"]) => self.list(
                Kind::SubscriptionSchedule,
                params,
                "/v1/subscription_schedules",
                // Stripe lists schedules of every status; its other filters are not served.
                |p, o| reference_filter(p, o, "customer") && range_filter(p, o, "created"),
            ),
            ("GET", ["subscription_schedules", id]) => {
                self.retrieve(Kind::SubscriptionSchedule, id)
            }
            ("GET", ["charges"]) => self.list(Kind::Charge, params, "/v1/charges", |p, o| {
                reference_filter(p, o, "customer")
                    && reference_filter(p, o, "payment_intent")
                    && range_filter(p, o, "created")
            }),
            ("GET", ["charges", id]) => self.retrieve(Kind::Charge, id),
            ("GET", ["invoices"]) => {
                self.list(Kind::Invoice, params, "/v1/invoices", invoice_filter)
            }
            ("GET", ["invoices", id]) => self.retrieve(Kind::Invoice, id),
            ("GET", ["entitlements", "features"]) => self.list(
                Kind::Feature,
                params,
                "/v1/entitlements/features",
                feature_filter,
            ),
            ("POST", ["entitlements", "features"]) => self.create_feature(params),
            ("GET", ["entitlements", "features", id]) => self.retrieve(Kind::Feature, id),
            ("POST", ["entitlements", "features", id]) => self.update_feature(id, params),
            ("GET", ["entitlements", "active_entitlements"]) => {
                self.list_active_entitlements(params)
            }
            ("GET", ["entitlements", "active_entitlements", id]) => {
                self.retrieve(Kind::ActiveEntitlement, id)
            }
            ("GET", ["products", product, "features"]) => {
                self.list_product_features(product, params)
            }
            ("POST", ["products", product, "features"]) => {
                self.create_product_feature(product, params)
            }
            ("GET", ["products", product, "features", id]) => {
                match self.product_feature_of(product, id) {
                    Ok(attachment) => (200, attachment),
                    Err(reply) => reply,
                }
            }
            ("DELETE", ["products", product, "features", id]) => {
                self.delete_product_feature(product, id)
            }
            ("GET", ["billing_portal", "configurations"]) => {
                self.ensure_default_portal_configuration();
                self.list(
                    Kind::BillingPortalConfiguration,
                    params,
                    "/v1/billing_portal/configurations",
                    |p, o| exact_filter(p, o, "active") && exact_filter(p, o, "is_default"),
                )
            }
            ("POST", ["billing_portal", "configurations"]) => {
                self.create_portal_configuration(params)
            }
            ("GET", ["billing_portal", "configurations", id]) => {
                if *id == DEFAULT_PORTAL_CONFIGURATION {
                    self.ensure_default_portal_configuration();
                }
                self.retrieve(Kind::BillingPortalConfiguration, id)
            }
            ("POST", ["billing_portal", "configurations", id]) => {
                if *id == DEFAULT_PORTAL_CONFIGURATION {
                    self.ensure_default_portal_configuration();
                }
                self.update_portal_configuration(id, params)
            }
            _ => error(
                404,
                &format!("Unrecognized request URL ({method}: {path})."),
                None,
                None,
            ),
        }
    }

    fn retrieve(&self, kind: Kind, id: &str) -> Reply {
        match self.get(kind, id) {
            Some(o) => (200, o.clone()),
            None => missing(kind, id, "id"),
        }
    }

    fn list(
        &mut self,
        kind: Kind,
        params: &Value,
        url: &str,
        keep: impl Fn(&Value, &Value) -> bool,
    ) -> Reply {
        let limit = params.get("limit").and_then(Value::as_i64).unwrap_or(10);
        if !(1..=100).contains(&limit) {
            return error(
                400,
                "Invalid integer: limit must be between 1 and 100",
                Some("limit"),
                Some("parameter_invalid_integer"),
            );
        }
        // Newest first, as Stripe lists (see `ListOrder`). A cursor is a position in that order,
        // not a time: many objects share a second.
        let objects = self.kind_mut(kind);
        let start = match params.get("starting_after").and_then(Value::as_str) {
            Some(after) => match objects.position(after) {
                None => return missing(kind, after, "starting_after"),
                Some(at) => at + 1,
            },
            None => 0,
        };
        let (page, has_more) = objects.page(start, limit as usize, |o| keep(params, o));
        (
            200,
            json!({ "object": "list", "data": page, "has_more": has_more, "url": url }),
        )
    }

    fn update(&mut self, kind: Kind, id: &str, params: &Value, fields: &[&str]) -> Reply {
        let Some(object) = self.get_mut(kind, id) else {
            return missing(kind, id, "id");
        };
        for field in fields {
            if let Some(v) = params.get(*field) {
                object[*field] = v.clone();
            }
        }
        merge_metadata(object, params);
        if object.get("updated").is_some() {
            object["updated"] = object["created"].clone();
        }
        (200, object.clone())
    }

    pub fn create_product(&mut self, params: &Value) -> Reply {
        let (id, created) = self.new_id(Kind::Product);
        let product = json!({
            "id": id,
            "object": "product",
            "active": params.get("active").cloned().unwrap_or(json!(true)),
            "created": created,
            "default_price": null,
            "description": params.get("description").cloned().unwrap_or(Value::Null),
            "images": [],
            "livemode": false,
            "marketing_features": [],
            "metadata": metadata(params),
            "name": params.get("name").cloned().unwrap_or(Value::Null),
            "package_dimensions": null,
            "shippable": null,
            "statement_descriptor": null,
            "tax_code": null,
            "type": "service",
            "unit_label": null,
            "updated": created,
            "url": null
        });
        self.push(Kind::Product, product)
    }

    /// The price already holding `lookup_key`, other than `except`.
    fn lookup_key_holder(&self, lookup_key: &str, except: Option<&str>) -> Option<String> {
        self.objects
            .get(&Kind::Price)?
            .stored
            .iter()
            .find(|p| {
                p["lookup_key"] == lookup_key && Some(p["id"].as_str().unwrap_or("")) != except
            })
            .and_then(|p| p["id"].as_str().map(str::to_owned))
    }

    /// Stripe's rule: a lookup key names one price; taking it from another needs
    /// `transfer_lookup_key=true`.
    fn claim_lookup_key(&mut self, params: &Value, except: Option<&str>) -> Result<(), Reply> {
        let Some(key) = params.get("lookup_key").and_then(Value::as_str) else {
            return Ok(());
        };
        let Some(holder) = self.lookup_key_holder(key, except) else {
            return Ok(());
        };
        if params.get("transfer_lookup_key") != Some(&json!(true)) {
            return Err(error(
                400,
                &format!("A price (`{holder}`) already uses that lookup key."),
                Some("lookup_key"),
                None,
            ));
        }
        if let Some(old) = self.get_mut(Kind::Price, &holder) {
            old["lookup_key"] = Value::Null;
        }
        Ok(())
    }

    pub fn create_price(&mut self, params: &Value) -> Reply {
        let product = match (params.get("product"), params.get("product_data")) {
            (Some(Value::String(p)), _) => {
                if self.get(Kind::Product, p).is_none() {
                    return missing(Kind::Product, p, "product");
                }
                p.clone()
            }
            (None, Some(data)) => match self.create_product(data) {
                (200, product) => product["id"].as_str().unwrap_or_default().to_owned(),
                other => return other,
            },
            _ => {
                return error(
                    400,
                    "Missing required param: product.",
                    Some("product"),
                    None,
                );
            }
        };
        if let Err(reply) = self.claim_lookup_key(params, None) {
            return reply;
        }
        let recurring = params.get("recurring").map(|r| {
            json!({
                "interval": r["interval"],
                "interval_count": r.get("interval_count").cloned().unwrap_or(json!(1)),
                "meter": null,
                "trial_period_days": null,
                "usage_type": r.get("usage_type").cloned().unwrap_or(json!("licensed")),
            })
        });
        let unit_amount = params.get("unit_amount").cloned().unwrap_or(Value::Null);
        let (id, created) = self.new_id(Kind::Price);
        let price = json!({
            "id": id,
            "object": "price",
            "active": params.get("active").cloned().unwrap_or(json!(true)),
            "billing_scheme": "per_unit",
            "created": created,
            "currency": params["currency"],
            "custom_unit_amount": null,
            "livemode": false,
            "lookup_key": params.get("lookup_key").cloned().unwrap_or(Value::Null),
            "metadata": metadata(params),
            "nickname": params.get("nickname").cloned().unwrap_or(Value::Null),
            "product": product,
            "recurring": recurring.clone().unwrap_or(Value::Null),
            "tax_behavior": params.get("tax_behavior").cloned().unwrap_or(json!("unspecified")),
            "tiers_mode": null,
            "transform_quantity": null,
            "type": if recurring.is_some() { "recurring" } else { "one_time" },
            "unit_amount": unit_amount,
            "unit_amount_decimal": unit_amount.as_i64().map(|a| json!(a.to_string())).unwrap_or(Value::Null),
        });
        self.push(Kind::Price, price)
    }

    fn update_price(&mut self, id: &str, params: &Value) -> Reply {
        if self.get(Kind::Price, id).is_none() {
            return missing(Kind::Price, id, "id");
        }
        if let Err(reply) = self.claim_lookup_key(params, Some(id)) {
            return reply;
        }
        self.update(
            Kind::Price,
            id,
            params,
            &["active", "nickname", "lookup_key", "tax_behavior"],
        )
    }

    fn create_webhook_endpoint(&mut self, params: &Value) -> Reply {
        let (id, created) = self.new_id(Kind::WebhookEndpoint);
        let endpoint = json!({
            "id": id,
            "object": "webhook_endpoint",
            "api_version": params.get("api_version").cloned().unwrap_or(Value::Null),
            "application": null,
            "created": created,
            "description": params.get("description").cloned().unwrap_or(Value::Null),
            "enabled_events": params["enabled_events"],
            "livemode": false,
            "metadata": metadata(params),
            "secret": self.webhook_secret.clone().unwrap_or_else(|| {
                format!("whsec_dbl{:016x}{:08}", created.wrapping_mul(0x9E37_79B9), self.next_id)
            }),
            "status": "enabled",
            "url": params["url"],
        });
        self.push(Kind::WebhookEndpoint, endpoint)
    }

    fn update_webhook_endpoint(&mut self, id: &str, params: &Value) -> Reply {
        let (status, mut endpoint) = self.update(
            Kind::WebhookEndpoint,
            id,
            params,
            &["enabled_events", "url", "description"],
        );
        if status == 200
            && let Some(disabled) = params.get("disabled").and_then(Value::as_bool)
        {
            endpoint["status"] = json!(if disabled { "disabled" } else { "enabled" });
            if let Some(stored) = self.get_mut(Kind::WebhookEndpoint, id) {
                stored["status"] = endpoint["status"].clone();
            }
        }
        (status, endpoint)
    }

    pub fn create_customer(&mut self, params: &Value) -> Reply {
        let (id, created) = self.new_id(Kind::Customer);
        let customer = json!({
            "id": id,
            "object": "customer",
            "balance": 0,
            "created": created,
            "currency": null,
            "delinquent": false,
            "description": params.get("description").cloned().unwrap_or(Value::Null),
            "email": params.get("email").cloned().unwrap_or(Value::Null),
            "livemode": false,
            "metadata": metadata(params),
            "name": params.get("name").cloned().unwrap_or(Value::Null),
            "phone": params.get("phone").cloned().unwrap_or(Value::Null),
            "preferred_locales": [],
            "tax_exempt": "none",
        });
        self.push(Kind::Customer, customer)
    }

    fn create_checkout_session(&mut self, params: &Value) -> Reply {
        if let Some(customer) = params.get("customer").and_then(Value::as_str)
            && self.get(Kind::Customer, customer).is_none()
        {
            return missing(Kind::Customer, customer, "customer");
        }
        let mut amount_total = 0;
        let mut currency = params.get("currency").cloned().unwrap_or(Value::Null);
        let items = params
            .get("line_items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, item) in items.iter().enumerate() {
            let Some(price_id) = item.get("price").and_then(Value::as_str) else {
                continue;
            };
            let param = format!("line_items[{i}][price]");
            let Some(price) = self.get(Kind::Price, price_id) else {
                return missing(Kind::Price, price_id, &param);
            };
            if price["active"] != true {
                return error(
                    400,
                    &format!("The price specified ({price_id}) is inactive."),
                    Some(&param),
                    None,
                );
            }
            let quantity = item.get("quantity").and_then(Value::as_i64).unwrap_or(1);
            amount_total += price["unit_amount"].as_i64().unwrap_or(0) * quantity;
            currency = price["currency"].clone();
        }
        let (id, created) = self.new_id(Kind::CheckoutSession);
        let session = json!({
            "id": id,
            "object": "checkout.session",
            "amount_subtotal": amount_total,
            "amount_total": amount_total,
            "automatic_tax": { "enabled": false, "liability": null, "provider": null, "status": null },
            "cancel_url": params.get("cancel_url").cloned().unwrap_or(Value::Null),
            "client_reference_id": params.get("client_reference_id").cloned().unwrap_or(Value::Null),
            "created": created,
            "currency": currency,
            "custom_fields": [],
            "custom_text": {
                "after_submit": null, "shipping_address": null, "submit": null,
                "terms_of_service_acceptance": null
            },
            "customer": params.get("customer").cloned().unwrap_or(Value::Null),
            "customer_email": params.get("customer_email").cloned().unwrap_or(Value::Null),
            "expires_at": created + 86_400,
            "livemode": false,
            "metadata": metadata(params),
            "mode": params.get("mode").cloned().unwrap_or(json!("payment")),
            "payment_method_types": ["card"],
            "payment_status": "unpaid",
            "shipping_options": [],
            "status": "open",
            "subscription": null,
            "success_url": params.get("success_url").cloned().unwrap_or(Value::Null),
            "url": match &self.public_url {
                Some(base) => format!("{base}/checkout/{id}"),
                None => format!("https://checkout.stripe.com/c/pay/{id}"),
            },
        });
        self.session_params.insert(id, params.clone());
        self.push(Kind::CheckoutSession, session)
    }

    fn create_portal_session(&mut self, params: &Value) -> Reply {
        let customer = params
            .get("customer")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if self.get(Kind::Customer, &customer).is_none() {
            return missing(Kind::Customer, &customer, "customer");
        }
        // The session runs under the configuration it names, which must exist and be active, or
        // under the account's default one.
        let configuration = match params.get("configuration").and_then(Value::as_str) {
            Some(id) => {
                let Some(configuration) = self.get(Kind::BillingPortalConfiguration, id) else {
                    return missing(Kind::BillingPortalConfiguration, id, "configuration");
                };
                if configuration["active"] != true {
                    return error(
                        400,
                        &format!(
                            "The configuration `{id}` is not active: activate it, or create the \
                             session with an active configuration."
                        ),
                        Some("configuration"),
                        None,
                    );
                }
                configuration.clone()
            }
            None => self.ensure_default_portal_configuration(),
        };
        let return_url = params
            .get("return_url")
            .cloned()
            .unwrap_or_else(|| configuration["default_return_url"].clone());
        let (id, created) = self.new_id(Kind::BillingPortalSession);
        let session = json!({
            "id": id,
            "object": "billing_portal.session",
            "configuration": configuration["id"],
            "created": created,
            "customer": customer,
            "flow": null,
            "livemode": false,
            "locale": params.get("locale").cloned().unwrap_or(Value::Null),
            "on_behalf_of": null,
            "return_url": return_url,
            "url": match &self.public_url {
                Some(base) => format!("{base}/portal/{id}"),
                None => format!("https://billing.stripe.com/p/session/test_{id}"),
            },
        });
        self.push(Kind::BillingPortalSession, session)
    }

    /// The active feature holding `lookup_key`, other than `except`.
    fn active_feature_with(&self, lookup_key: &str, except: Option<&str>) -> Option<String> {
        self.objects
            .get(&Kind::Feature)?
            .stored
            .iter()
            .find(|f| {
                f["active"] == true && f["lookup_key"] == lookup_key && f["id"].as_str() != except
            })
            .and_then(|f| f["id"].as_str().map(str::to_owned))
    }

    fn lookup_key_taken(lookup_key: &str, holder: &str) -> Reply {
        error(
            400,
            &format!(
                "A feature with the lookup_key `{lookup_key}` already exists (`{holder}`). \
                 Lookup keys are unique among active features: archive that feature first, or use \
                 another lookup key."
            ),
            Some("lookup_key"),
            None,
        )
    }

    /// `POST /v1/entitlements/features`: a lookup key names one active feature.
    pub fn create_feature(&mut self, params: &Value) -> Reply {
        for required in ["lookup_key", "name"] {
            if params.get(required).and_then(Value::as_str).is_none() {
                return error(
                    400,
                    &format!("Missing required param: {required}."),
                    Some(required),
                    None,
                );
            }
        }
        let lookup_key = params["lookup_key"].as_str().unwrap_or_default();
        if let Some(holder) = self.active_feature_with(lookup_key, None) {
            return Self::lookup_key_taken(lookup_key, &holder);
        }
        let (id, _) = self.new_id(Kind::Feature);
        let feature = json!({
            "id": id,
            "object": "entitlements.feature",
            "active": true,
            "livemode": false,
            "lookup_key": lookup_key,
            "metadata": metadata(params),
            "name": params["name"],
        });
        self.push(Kind::Feature, feature)
    }

    /// `POST /v1/entitlements/features/{id}`: `name`, `metadata` and `active` (archiving, and
    /// reactivating if no active feature took the lookup key meanwhile); the lookup key is fixed.
    /// The attachments show the feature as it is now.
    fn update_feature(&mut self, id: &str, params: &Value) -> Reply {
        let Some(feature) = self.get(Kind::Feature, id) else {
            return missing(Kind::Feature, id, "id");
        };
        if params.get("active") == Some(&json!(true)) && feature["active"] != true {
            let lookup_key = feature["lookup_key"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if let Some(holder) = self.active_feature_with(&lookup_key, Some(id)) {
                return Self::lookup_key_taken(&lookup_key, &holder);
            }
        }
        let reply = self.update(Kind::Feature, id, params, &["name", "active"]);
        let attachments: Vec<String> = self
            .all(Kind::ProductFeature)
            .iter()
            .filter(|a| a["entitlement_feature"]["id"] == id)
            .filter_map(|a| a["id"].as_str().map(str::to_owned))
            .collect();
        for attachment in attachments {
            if let Some(a) = self.get_mut(Kind::ProductFeature, &attachment) {
                a["entitlement_feature"] = reply.1.clone();
            }
        }
        reply
    }

    fn missing_product(product: &str) -> Reply {
        error(
            404,
            &format!("No such product: '{product}'"),
            Some("product"),
            Some("resource_missing"),
        )
    }

    /// The ids of the product's features, attached in this order.
    fn attachments_of(&self, product: &str) -> Vec<String> {
        self.all(Kind::ProductFeature)
            .iter()
            .filter_map(|a| a["id"].as_str())
            .filter(|id| {
                self.product_feature_products.get(*id).map(String::as_str) == Some(product)
            })
            .map(str::to_owned)
            .collect()
    }

    /// `POST /v1/products/{product}/features`: an active feature, once per product.
    fn create_product_feature(&mut self, product: &str, params: &Value) -> Reply {
        if self.get(Kind::Product, product).is_none() {
            return Self::missing_product(product);
        }
        let Some(feature_id) = params.get("entitlement_feature").and_then(Value::as_str) else {
            return error(
                400,
                "Missing required param: entitlement_feature.",
                Some("entitlement_feature"),
                None,
            );
        };
        let Some(feature) = self.get(Kind::Feature, feature_id).cloned() else {
            return missing(Kind::Feature, feature_id, "entitlement_feature");
        };
        if feature["active"] != true {
            return error(
                400,
                &format!(
                    "The feature `{feature_id}` is archived: inactive features cannot be attached \
                     to new products."
                ),
                Some("entitlement_feature"),
                None,
            );
        }
        let attached = self.attachments_of(product).iter().any(|a| {
            self.get(Kind::ProductFeature, a)
                .is_some_and(|a| a["entitlement_feature"]["id"] == feature_id)
        });
        if attached {
            return error(
                400,
                &format!(
                    "The feature `{feature_id}` is already attached to the product `{product}`."
                ),
                Some("entitlement_feature"),
                None,
            );
        }
        let (id, _) = self.new_id(Kind::ProductFeature);
        let attachment = json!({
            "id": id,
            "object": "product_feature",
            "entitlement_feature": feature,
            "livemode": false,
        });
        self.product_feature_products.insert(id, product.to_owned());
        self.push(Kind::ProductFeature, attachment)
    }

    /// The product feature `id`, if it is attached to `product`.
    fn product_feature_of(&self, product: &str, id: &str) -> Result<Value, Reply> {
        if self.get(Kind::Product, product).is_none() {
            return Err(Self::missing_product(product));
        }
        match self.get(Kind::ProductFeature, id) {
            Some(attachment)
                if self.product_feature_products.get(id).map(String::as_str) == Some(product) =>
            {
                Ok(attachment.clone())
            }
            _ => Err(missing(Kind::ProductFeature, id, "id")),
        }
    }

    fn list_product_features(&mut self, product: &str, params: &Value) -> Reply {
        if self.get(Kind::Product, product).is_none() {
            return Self::missing_product(product);
        }
        let ids = self.attachments_of(product);
        let url = format!("/v1/products/{product}/features");
        self.list(Kind::ProductFeature, params, &url, move |_, o| {
            ids.iter().any(|id| o["id"] == id.as_str())
        })
    }

    /// `DELETE /v1/products/{product}/features/{id}`. Customers keep what they are entitled to
    /// until their subscriptions next change (Stripe applies feature changes to existing
    /// subscriptions at their next period).
    fn delete_product_feature(&mut self, product: &str, id: &str) -> Reply {
        if let Err(reply) = self.product_feature_of(product, id) {
            return reply;
        }
        self.remove(Kind::ProductFeature, id);
        self.product_feature_products.remove(id);
        (
            200,
            json!({ "id": id, "object": "product_feature", "deleted": true }),
        )
    }

    /// `GET /v1/entitlements/active_entitlements?customer=...`: `customer` is required.
    fn list_active_entitlements(&mut self, params: &Value) -> Reply {
        let Some(customer) = params.get("customer").and_then(Value::as_str) else {
            return error(
                400,
                "Missing required param: customer.",
                Some("customer"),
                None,
            );
        };
        if self.get(Kind::Customer, customer).is_none() {
            return missing(Kind::Customer, customer, "customer");
        }
        let owned: Vec<String> = self
            .entitlement_customers
            .iter()
            .filter(|(_, c)| c.as_str() == customer)
            .map(|(id, _)| id.clone())
            .collect();
        self.list(
            Kind::ActiveEntitlement,
            params,
            "/v1/entitlements/active_entitlements",
            move |_, o| owned.iter().any(|id| o["id"] == id.as_str()),
        )
    }

    /// A configuration as Stripe makes one from `POST /v1/billing_portal/configurations` without
    /// any optional parameter: every feature off, Stripe's defaults for their settings.
    fn portal_configuration(id: &str, created: i64) -> Value {
        json!({
            "id": id,
            "object": "billing_portal.configuration",
            "active": true,
            "application": null,
            "business_profile": {
                "headline": null, "privacy_policy_url": null, "terms_of_service_url": null
            },
            "created": created,
            "default_return_url": null,
            "features": {
                "customer_update": { "allowed_updates": [], "enabled": false },
                "invoice_history": { "enabled": false },
                "payment_method_update": { "enabled": false, "payment_method_configuration": null },
                "subscription_cancel": {
                    "cancellation_reason": { "enabled": false, "options": [] },
                    "enabled": false,
                    "mode": "at_period_end",
                    "proration_behavior": "none"
                },
                "subscription_update": {
                    "billing_cycle_anchor": null,
                    "default_allowed_updates": [],
                    "enabled": false,
                    "products": [],
                    "proration_behavior": "none",
                    "schedule_at_period_end": { "conditions": [] },
                    "trial_update_behavior": "end_trial"
                }
            },
            "is_default": false,
            "livemode": false,
            "login_page": { "enabled": false, "url": null },
            "metadata": {},
            "name": null,
            "updated": created,
        })
    }

    /// The default configuration ([`DEFAULT_PORTAL_CONFIGURATION`]), made the first time it is
    /// needed, as the oldest configuration.
    pub(crate) fn ensure_default_portal_configuration(&mut self) -> Value {
        if let Some(existing) = self.get(
            Kind::BillingPortalConfiguration,
            DEFAULT_PORTAL_CONFIGURATION,
        ) {
            return existing.clone();
        }
        let mut configuration = Self::portal_configuration(DEFAULT_PORTAL_CONFIGURATION, EPOCH);
        configuration["is_default"] = json!(true);
        let features = &mut configuration["features"];
        features["invoice_history"]["enabled"] = json!(true);
        features["payment_method_update"]["enabled"] = json!(true);
        features["subscription_cancel"]["enabled"] = json!(true);
        features["subscription_update"]["enabled"] = json!(true);
        features["subscription_update"]["default_allowed_updates"] = json!(["price"]);
        features["subscription_update"]["products"] = Value::Null;
        self.insert(Kind::BillingPortalConfiguration, configuration.clone());
        configuration
    }

    /// What Stripe refuses in a configuration's parameters: products and prices that do not
    /// exist, and prices of another product.
    fn check_portal_products(&self, params: &Value) -> Result<(), Reply> {
        let products = params
            .pointer("/features/subscription_update/products")
            .and_then(Value::as_array);
        for (i, entry) in products.into_iter().flatten().enumerate() {
            let product = entry["product"].as_str().unwrap_or_default();
            let param = format!("features[subscription_update][products][{i}][product]");
            if self.get(Kind::Product, product).is_none() {
                return Err(missing(Kind::Product, product, &param));
            }
            let prices = entry["prices"].as_array();
            for (j, price_id) in prices.into_iter().flatten().enumerate() {
                let price_id = price_id.as_str().unwrap_or_default();
                let param = format!("features[subscription_update][products][{i}][prices][{j}]");
                let Some(price) = self.get(Kind::Price, price_id) else {
                    return Err(missing(Kind::Price, price_id, &param));
                };
                if id_of(&price["product"]) != Some(product) {
                    return Err(error(
                        400,
                        &format!(
                            "The price `{price_id}` does not belong to the product `{product}`."
                        ),
                        Some(&param),
                        None,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Writes a create's or update's parameters into a configuration the way Stripe merges
    /// them: nested objects key by key, lists replaced whole, `""` unsetting (a list becomes
    /// empty, a value `null`), metadata merged key by key.
    fn apply_portal_params(&mut self, configuration: &mut Value, params: &Value) {
        let mut changes = params.clone();
        if let Value::Object(map) = &mut changes {
            map.remove("metadata");
            map.remove("expand");
        }
        merge_params(configuration, &changes);
        merge_metadata(configuration, params);
        if let Some(products) = configuration
            .pointer_mut("/features/subscription_update/products")
            .and_then(Value::as_array_mut)
        {
            for product in products {
                let mut quantity = json!({ "enabled": false, "maximum": null, "minimum": 1 });
                merge_params(&mut quantity, &product["adjustable_quantity"]);
                product["adjustable_quantity"] = quantity;
            }
        }
        let login_page = &mut configuration["login_page"];
        if login_page["enabled"] == true {
            if login_page["url"].is_null() {
                self.next_id += 1;
                login_page["url"] = json!(format!(
                    "https://billing.stripe.com/p/login/test_Dbl{:08}",
                    self.next_id
                ));
            }
        } else {
            login_page["url"] = Value::Null;
        }
    }

    fn create_portal_configuration(&mut self, params: &Value) -> Reply {
        if let Err(reply) = self.check_portal_products(params) {
            return reply;
        }
        let (id, created) = self.new_id(Kind::BillingPortalConfiguration);
        let mut configuration = Self::portal_configuration(&id, created);
        self.apply_portal_params(&mut configuration, params);
        self.push(Kind::BillingPortalConfiguration, configuration)
    }

    fn update_portal_configuration(&mut self, id: &str, params: &Value) -> Reply {
        let Some(mut configuration) = self.get(Kind::BillingPortalConfiguration, id).cloned()
        else {
            return missing(Kind::BillingPortalConfiguration, id, "id");
        };
        if let Err(reply) = self.check_portal_products(params) {
            return reply;
        }
        self.apply_portal_params(&mut configuration, params);
        self.clock += 1;
        configuration["updated"] = json!(EPOCH + self.clock);
        if let Some(stored) = self.get_mut(Kind::BillingPortalConfiguration, id) {
            *stored = configuration.clone();
        }
        (200, configuration)
    }
}

fn strip_secret(endpoint: &mut Value) {
    if let Value::Object(map) = endpoint {
        map.remove("secret");
    }
}

/// A filter by a field's exact value (`active=true`, `email=...`, `status=paid`).
fn exact_filter(params: &Value, object: &Value, field: &str) -> bool {
    params.get(field).is_none_or(|want| *want == object[field])
}

fn price_filter(params: &Value, price: &Value) -> bool {
    exact_filter(params, price, "active")
        && exact_filter(params, price, "product")
        && exact_filter(params, price, "type")
        && exact_filter(params, price, "currency")
        && params
            .get("lookup_keys")
            .and_then(Value::as_array)
            .is_none_or(|keys| keys.contains(&price["lookup_key"]))
        && params
            .pointer("/recurring/interval")
            .is_none_or(|i| price.pointer("/recurring/interval") == Some(i))
}

fn metadata(params: &Value) -> Value {
    match params.get("metadata") {
        Some(Value::Object(m)) => Value::Object(
            m.iter()
                .filter(|(_, v)| *v != "")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        _ => json!({}),
    }
}

/// Stripe merges metadata on update; an empty value deletes a key, an empty `metadata` clears it.
fn merge_metadata(object: &mut Value, params: &Value) {
    match params.get("metadata") {
        Some(Value::Object(changes)) => {
            let mut merged: Map<String, Value> =
                object["metadata"].as_object().cloned().unwrap_or_default();
            for (k, v) in changes {
                if *v == "" {
                    merged.remove(k);
                } else {
                    merged.insert(k.clone(), v.clone());
                }
            }
            object["metadata"] = Value::Object(merged);
        }
        Some(Value::String(s)) if s.is_empty() => object["metadata"] = json!({}),
        _ => {}
    }
}

/// Merges decoded form parameters into an object: nested objects key by key, anything else
/// (lists included) replaced, and `""` unsetting: a list becomes `[]`, an object `{}`, a value
/// `null`.
fn merge_params(target: &mut Value, changes: &Value) {
    let Value::Object(changes) = changes else {
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (key, change) in changes {
        let current = &mut target[key.as_str()];
        match change {
            Value::Object(_) => merge_params(current, change),
            Value::String(s) if s.is_empty() => {
                *current = match current {
                    Value::Array(_) => json!([]),
                    Value::Object(_) => json!({}),
                    _ => Value::Null,
                };
            }
            other => *current = other.clone(),
        }
    }
}

/// `GET /v1/entitlements/features`: archived features are listed only when `archived=true`
/// asks for them (Stripe: inactive features "will not be returned from the features list
/// endpoint"); `lookup_key` is exact.
fn feature_filter(params: &Value, feature: &Value) -> bool {
    let archived = params.get("archived").and_then(Value::as_bool) == Some(true);
    (feature["active"] == true) != archived && exact_filter(params, feature, "lookup_key")
}

/// A range parameter on an integer field, as Stripe takes `created`: an exact integer, or any of
/// `gt`/`gte`/`lt`/`lte`.
fn range_filter(params: &Value, object: &Value, field: &str) -> bool {
    let value = object[field].as_i64().unwrap_or(0);
    match params.get(field) {
        None => true,
        Some(Value::Object(range)) => range.iter().all(|(op, bound)| {
            let bound = bound.as_i64().unwrap_or(0);
            match op.as_str() {
                "gt" => value > bound,
                "gte" => value >= bound,
                "lt" => value < bound,
                "lte" => value <= bound,
                _ => true,
            }
        }),
        Some(exact) => exact.as_i64() == Some(value),
    }
}

/// The id a reference field holds: Stripe returns it as the id, or as the object when expanded.
fn id_of(reference: &Value) -> Option<&str> {
    reference.as_str().or_else(|| reference["id"].as_str())
}

/// A filter by a referenced object's id (`customer=cus_...`), whichever shape the field has.
fn reference_filter(params: &Value, object: &Value, field: &str) -> bool {
    params
        .get(field)
        .is_none_or(|want| id_of(&object[field]).is_some_and(|id| want == id))
}

/// `GET /v1/events`: `type`, `types[]` and `created`.
fn event_filter(params: &Value, event: &Value) -> bool {
    params.get("type").is_none_or(|t| *t == event["type"])
        && params
            .get("types")
            .and_then(Value::as_array)
            .is_none_or(|types| types.contains(&event["type"]))
        && range_filter(params, event, "created")
}

/// `GET /v1/subscriptions`: `customer`, `price` (any item's), `created` and `status`.
fn subscription_filter(params: &Value, subscription: &Value) -> bool {
    reference_filter(params, subscription, "customer")
        && range_filter(params, subscription, "created")
        && subscription_status_filter(params, subscription)
        && params.get("price").is_none_or(|want| {
            subscription
                .pointer("/items/data")
                .and_then(Value::as_array)
                .is_some_and(|items| {
                    items
                        .iter()
                        .any(|item| id_of(&item["price"]).is_some_and(|id| want == id))
                })
        })
}

/// Stripe's `status` on a subscription list. Without one it lists the subscriptions that have not
/// ended, so a backfill that wants the canceled ones too must ask for `all`; `ended` is the
/// canceled and the expired incomplete ones; any other value is that status.
fn subscription_status_filter(params: &Value, subscription: &Value) -> bool {
    let status = subscription["status"].as_str().unwrap_or_default();
    let ended = matches!(status, "canceled" | "incomplete_expired");
    match params.get("status").and_then(Value::as_str) {
        None => !ended,
        Some("all") => true,
        Some("ended") => ended,
        Some(wanted) => wanted == status,
    }
}

/// `GET /v1/invoices`: `customer`, `subscription`, `status` and `created`. An invoice names its
/// subscription in `subscription` before API version 2025-03-31 and in
/// `parent.subscription_details.subscription` since; either is matched.
fn invoice_filter(params: &Value, invoice: &Value) -> bool {
    reference_filter(params, invoice, "customer")
        && exact_filter(params, invoice, "status")
        && range_filter(params, invoice, "created")
        && params.get("subscription").is_none_or(|want| {
            [
                invoice.get("subscription"),
                invoice.pointer("/parent/subscription_details/subscription"),
            ]
            .into_iter()
            .flatten()
            .any(|s| id_of(s).is_some_and(|id| want == id))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(reply: Reply) -> Value {
        assert_eq!(reply.0, 200, "{}", reply.1);
        reply.1
    }

    #[test]
    fn lists_newest_first_with_pagination() {
        let mut store = Store::default();
        for i in 0..5 {
            ok(store.create_product(&json!({"name": format!("p{i}")})));
        }
        let page = ok(store.handle("GET", "/v1/products", &json!({"limit": 2})));
        assert_eq!(page["data"][0]["name"], "p4");
        assert_eq!(page["has_more"], true);
        let last = page["data"][1]["id"].as_str().unwrap().to_owned();
        let page = ok(store.handle(
            "GET",
            "/v1/products",
            &json!({"limit": 10, "starting_after": last}),
        ));
        let names: Vec<_> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].clone())
            .collect();
        assert_eq!(names, vec![json!("p2"), json!("p1"), json!("p0")]);
        assert_eq!(page["has_more"], false);
        let bad = store.handle(
            "GET",
            "/v1/products",
            &json!({"starting_after": "prod_nope"}),
        );
        assert_eq!(bad.0, 400);
    }

    #[test]
    fn events_of_one_second_page_by_position_and_filter_by_type_and_time() {
        let mut store = Store::default();
        for i in 0..7 {
            let event_type = if i == 3 {
                "product.created"
            } else {
                "customer.created"
            };
            let created = if i < 5 { 100 } else { 200 };
            store.insert(
                Kind::Event,
                json!({"id": format!("evt_{i}"), "type": event_type, "created": created}),
            );
        }
        let params = |after: Option<&str>| {
            let mut p = json!({"limit": 2, "types": ["customer.created"], "created": {"gte": 100}});
            if let Some(after) = after {
                p["starting_after"] = json!(after);
            }
            p
        };
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = ok(store.handle("GET", "/v1/events", &params(after.as_deref())));
            let ids: Vec<String> = page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned())
                .collect();
            seen.extend(ids.clone());
            if page["has_more"] != true {
                break;
            }
            after = ids.last().cloned();
        }
        // Newest first; five events share second 100 and none is skipped or repeated.
        assert_eq!(seen, ["evt_6", "evt_5", "evt_4", "evt_2", "evt_1", "evt_0"]);
        let later = ok(store.handle("GET", "/v1/events", &json!({"created": {"gt": 100}})));
        assert_eq!(later["data"].as_array().unwrap().len(), 2);
    }

    /// The ids of a list reply's page.
    fn ids(page: &Value) -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Every page of `GET path` with `params`, by `starting_after`, concatenated.
    fn every_page(store: &mut Store, path: &str, params: &Value) -> Vec<String> {
        let mut seen = Vec::new();
        let mut params = params.clone();
        loop {
            let page = ok(store.handle("GET", path, &params));
            let ids = ids(&page);
            seen.extend(ids.iter().cloned());
            if page["has_more"] != true {
                return seen;
            }
            params["starting_after"] = json!(ids.last().unwrap());
        }
    }

    #[test]
    fn subscriptions_list_stripes_status_default_all_and_ended() {
        let mut store = Store::default();
        let statuses = [
            "active",
            "trialing",
            "past_due",
            "canceled",
            "incomplete",
            "incomplete_expired",
            "unpaid",
            "paused",
        ];
        store.insert_many(
            Kind::Subscription,
            statuses.iter().enumerate().map(|(i, status)| {
                json!({
                    "id": format!("sub_{status}"), "status": status, "created": 100 + i,
                    "customer": if i % 2 == 0 { "cus_even" } else { "cus_odd" },
                    "items": {"data": [{"price": {"id": format!("price_{}", i % 3)}}]},
                })
            }),
        );
        let listed = |store: &mut Store, params: Value| {
            let mut ids = every_page(store, "/v1/subscriptions", &params);
            ids.sort();
            ids
        };
        let not_ended = [
            "sub_active",
            "sub_incomplete",
            "sub_past_due",
            "sub_paused",
            "sub_trialing",
            "sub_unpaid",
        ];
        assert_eq!(listed(&mut store, json!({})), not_ended);
        assert_eq!(listed(&mut store, json!({"status": "all"})).len(), 8);
        assert_eq!(
            listed(&mut store, json!({"status": "ended"})),
            ["sub_canceled", "sub_incomplete_expired"]
        );
        assert_eq!(
            listed(&mut store, json!({"status": "canceled"})),
            ["sub_canceled"]
        );
        // The other filters combine with the default status.
        assert_eq!(
            listed(
                &mut store,
                json!({"customer": "cus_even", "price": "price_0"})
            ),
            ["sub_active", "sub_unpaid"]
        );
        assert_eq!(
            listed(
                &mut store,
                json!({"status": "all", "created": {"gte": 105}})
            ),
            ["sub_incomplete_expired", "sub_paused", "sub_unpaid"]
        );
    }

    #[test]
    fn invoices_filter_by_subscription_in_either_shape() {
        let mut store = Store::default();
        store.insert_many(
            Kind::Invoice,
            [
                // Before API version 2025-03-31: a top-level `subscription`.
                json!({"id": "in_old", "created": 1, "customer": "cus_1", "status": "paid",
                       "subscription": "sub_1"}),
                // Since: under `parent`, and here expanded.
                json!({"id": "in_new", "created": 2, "customer": "cus_1", "status": "open",
                       "parent": {"type": "subscription_details",
                                  "subscription_details": {"subscription": {"id": "sub_1"}}}}),
                json!({"id": "in_other", "created": 3, "customer": "cus_2", "status": "paid",
                       "subscription": null,
                       "parent": {"subscription_details": {"subscription": "sub_2"}}}),
                json!({"id": "in_none", "created": 4, "customer": "cus_1", "status": "paid",
                       "parent": null}),
            ],
        );
        let listed = |store: &mut Store, params: Value| {
            ids(&ok(store.handle("GET", "/v1/invoices", &params)))
        };
        assert_eq!(
            listed(&mut store, json!({"subscription": "sub_1"})),
            ["in_new", "in_old"]
        );
        assert_eq!(
            listed(&mut store, json!({"subscription": "sub_2"})),
            ["in_other"]
        );
        assert_eq!(
            listed(
                &mut store,
                json!({"subscription": "sub_1", "status": "paid"})
            ),
            ["in_old"]
        );
        assert_eq!(
            listed(
                &mut store,
                json!({"customer": "cus_1", "created": {"gt": 1}})
            ),
            ["in_none", "in_new"]
        );
        assert_eq!(listed(&mut store, json!({})).len(), 4);
        let one = ok(store.handle("GET", "/v1/invoices/in_new", &json!({})));
        assert_eq!(one["status"], "open");
        assert_eq!(
            store.handle("GET", "/v1/invoices/in_nope", &json!({})).0,
            404
        );
    }

    #[test]
    fn charges_schedules_and_customers_filter_and_are_retrieved() {
        let mut store = Store::default();
        store.insert_many(
            Kind::Charge,
            (0..4).map(|i| {
                json!({"id": format!("ch_{i}"), "created": 10 * i, "customer": format!("cus_{}", i % 2),
                       "payment_intent": format!("pi_{i}")})
            }),
        );
        store.insert_many(
            Kind::SubscriptionSchedule,
            ["active", "released", "canceled"]
                .iter()
                .enumerate()
                .map(|(i, status)| {
                    json!({"id": format!("sub_sched_{i}"), "created": i, "status": status,
                       "customer": "cus_1"})
                }),
        );
        let charges = |store: &mut Store, params: Value| {
            ids(&ok(store.handle("GET", "/v1/charges", &params)))
        };
        assert_eq!(
            charges(&mut store, json!({"customer": "cus_1"})),
            ["ch_3", "ch_1"]
        );
        assert_eq!(
            charges(&mut store, json!({"payment_intent": "pi_2"})),
            ["ch_2"]
        );
        assert_eq!(charges(&mut store, json!({"created": 10})), ["ch_1"]);
        assert_eq!(
            ok(store.handle("GET", "/v1/charges/ch_2", &json!({})))["id"],
            "ch_2"
        );
        // Schedules of every status are listed.
        let schedules = ok(store.handle(
            "GET",
            "/v1/subscription_schedules",
            &json!({"customer": "cus_1"}),
        ));
        assert_eq!(
            ids(&schedules),
            ["sub_sched_2", "sub_sched_1", "sub_sched_0"]
        );
        let schedule = store.handle("GET", "/v1/subscription_schedules/sub_sched_1", &json!({}));
        assert_eq!(schedule.1["status"], "released");

        for name in ["a", "b", "c"] {
            ok(store.create_customer(&json!({"name": name, "email": format!("{name}@x.test")})));
        }
        let created = |name: &str, store: &Store| {
            store
                .all(Kind::Customer)
                .into_iter()
                .find(|c| c["name"] == name)
                .unwrap()["created"]
                .clone()
        };
        let after_a = json!({"created": {"gt": created("a", &store)}});
        let customers = ok(store.handle("GET", "/v1/customers", &after_a));
        assert_eq!(customers["data"][0]["name"], "c");
        assert_eq!(customers["data"].as_array().unwrap().len(), 2);
        let by_email = ok(store.handle("GET", "/v1/customers", &json!({"email": "b@x.test"})));
        assert_eq!(ids(&by_email).len(), 1);
    }

    #[test]
    fn pages_through_many_objects_once_each_in_order() {
        let mut store = Store::default();
        // Seven objects a second, so most pages start and end inside one second.
        store.insert_many(
            Kind::Charge,
            (0..1050).map(|i| json!({"id": format!("ch_{i:04}"), "created": 1000 + i / 7})),
        );
        let mut expected: Vec<(i64, usize)> = (0..1050).map(|i| (1000 + i as i64 / 7, i)).collect();
        expected.sort_by(|a, b| b.cmp(a));
        let expected: Vec<String> = expected.iter().map(|(_, i)| format!("ch_{i:04}")).collect();

        let mut pages = 0;
        let mut seen = Vec::new();
        let mut params = json!({"limit": 100});
        loop {
            let page = ok(store.handle("GET", "/v1/charges", &params));
            pages += 1;
            let ids = ids(&page);
            assert!(ids.len() == 100 || page["has_more"] == false);
            seen.extend(ids.iter().cloned());
            if page["has_more"] != true {
                break;
            }
            params["starting_after"] = json!(ids.last().unwrap());
        }
        assert_eq!(pages, 11);
        assert_eq!(seen, expected);
    }

    /// The size a backfill test seeds. Sorting the kind for every page made this minutes long in
    /// a debug build; with the cached order it is well under a second.
    #[test]
    fn pages_through_a_hundred_thousand_objects() {
        let mut store = Store::default();
        store.insert_many(
            Kind::Subscription,
            (0..100_000)
                .map(|i| json!({"id": format!("sub_{i}"), "created": i / 10, "status": "active"})),
        );
        let seen = every_page(&mut store, "/v1/subscriptions", &json!({"limit": 100}));
        assert_eq!(seen.len(), 100_000);
        assert_eq!(
            (seen[0].as_str(), seen[99_999].as_str()),
            ("sub_99999", "sub_0")
        );
    }

    #[test]
    fn a_patch_after_a_listing_moves_the_object() {
        let mut store = Store::default();
        store.insert_many(
            Kind::Invoice,
            (0..5).map(|i| json!({"id": format!("in_{i}"), "created": 100 + i})),
        );
        let first = ok(store.handle("GET", "/v1/invoices", &json!({"limit": 2})));
        assert_eq!(ids(&first), ["in_4", "in_3"]);
        // The oldest becomes the newest; the order cached by the listing must not hide that.
        store.patch(Kind::Invoice, "in_0", &json!({"created": 200}));
        assert_eq!(
            every_page(&mut store, "/v1/invoices", &json!({"limit": 2})),
            ["in_0", "in_4", "in_3", "in_2", "in_1"]
        );
        // And the cursor resumes from the object's new place.
        let after = ok(store.handle(
            "GET",
            "/v1/invoices",
            &json!({"limit": 1, "starting_after": "in_0"}),
        ));
        assert_eq!(ids(&after), ["in_4"]);
        // A new id is found under it, and the old one is gone.
        store.patch(Kind::Invoice, "in_2", &json!({"id": "in_2b"}));
        assert_eq!(
            ok(store.handle("GET", "/v1/invoices/in_2b", &json!({})))["created"],
            102
        );
        assert_eq!(store.handle("GET", "/v1/invoices/in_2", &json!({})).0, 404);
    }

    #[test]
    fn lookup_keys_move_only_when_transferred() {
        let mut store = Store::default();
        let product = ok(store.create_product(&json!({"name": "p"})));
        let price = |amount: i64, transfer: bool| {
            json!({
                "currency": "cad", "unit_amount": amount, "product": product["id"],
                "recurring": {"interval": "month"}, "lookup_key": "k", "transfer_lookup_key": transfer
            })
        };
        let first = ok(store.create_price(&price(100, false)));
        let refused = store.create_price(&price(200, false));
        assert_eq!(refused.0, 400);
        assert!(
            refused.1["error"]["message"]
                .as_str()
                .unwrap()
                .contains(first["id"].as_str().unwrap())
        );
        let second = ok(store.create_price(&price(200, true)));
        assert_eq!(second["lookup_key"], "k");
        let found = ok(store.handle("GET", "/v1/prices", &json!({"lookup_keys": ["k"]})));
        assert_eq!(found["data"].as_array().unwrap().len(), 1);
        assert_eq!(found["data"][0]["id"], second["id"]);
    }

    #[test]
    fn endpoint_secret_is_only_in_the_create_response() {
        let mut store = Store::default();
        let created = ok(store.handle(
            "POST",
            "/v1/webhook_endpoints",
            &json!({"url": "https://x.test/w", "enabled_events": ["charge.failed"]}),
        ));
        assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
        let listed = ok(store.handle("GET", "/v1/webhook_endpoints", &json!({})));
        assert!(listed["data"][0].get("secret").is_none());
        let id = created["id"].as_str().unwrap();
        let updated = ok(store.handle(
            "POST",
            &format!("/v1/webhook_endpoints/{id}"),
            &json!({"metadata": {"a": "b"}}),
        ));
        assert!(updated.get("secret").is_none());
        assert_eq!(updated["metadata"], json!({"a": "b"}));
    }
}
