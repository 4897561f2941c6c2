//! The difference between the catalog and the account, as a list of actions.
//!
//! A pure function of what is wanted and what exists, so it is tested without HTTP, and so
//! `status`, `init --dry-run` and `init` cannot disagree: they print or apply the same plan.
//! Nothing is ever deleted: a price whose amount or interval changed is replaced (the new one takes
//! the lookup key, the old one is archived), because Stripe prices are immutable and existing
//! subscriptions keep pointing at the old one. The same goes for a price that moves to another
//! product because the features it grants changed: Stripe prices cannot change product.
//!
//! Features are found by lookup key and shared by every environment of the account; a feature the
//! catalog no longer lists is detached from our products (their subscribers lose it) but not
//! archived, since another environment, or another product, may still grant it.
//!
//! The order of the actions is the order they are applied in: features, the product and its
//! features, the plan products and theirs, the prices, the webhook endpoint, then the portal
//! configuration, which names the products and prices. An object created by the plan is referred
//! to by its catalog key ([`ObjectRef`] without an id) and resolved when it exists.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use billing_stripe::catalog::{Catalog, FeatureSpec, PriceSpec, ProductSpec, ProrationBehavior};

/// A feature attached to a product, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedFeature {
    /// The attachment's id (`prodft_...`), what detaching deletes.
    pub id: String,
    /// The feature's id (`feat_...`).
    pub feature_id: String,
    pub lookup_key: String,
}

/// A product as found in the account (the main product, or a plan product).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentProduct {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub features: Vec<AttachedFeature>,
}

/// An active feature holding one of the catalog's lookup keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentFeature {
    pub id: String,
    pub lookup_key: String,
    pub name: String,
}

/// An active price holding one of the catalog's lookup keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentPrice {
    pub id: String,
    pub lookup_key: String,
    pub product: String,
    pub unit_amount: Option<i64>,
    pub currency: String,
    /// `None` for a one-time price, which never matches a catalog (recurring) price.
    pub interval: Option<String>,
    pub interval_count: u64,
    pub nickname: Option<String>,
}

impl CurrentPrice {
    fn describe(&self) -> String {
        let amount = self
            .unit_amount
            .map_or_else(|| "?".to_owned(), |a| a.to_string());
        match &self.interval {
            Some(i) if self.interval_count == 1 => format!("{amount} {}/{i}", self.currency),
            Some(i) => format!("{amount} {}/{} {i}s", self.currency, self.interval_count),
            None => format!("{amount} {} one-time", self.currency),
        }
    }
}

/// Our webhook endpoint as found in the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentEndpoint {
    pub id: String,
    pub url: String,
    pub enabled_events: Vec<String>,
    /// `enabled` or `disabled`.
    pub status: String,
    /// The version Stripe renders this endpoint's events in; `None`: the account's default.
    pub api_version: Option<String>,
}

/// Our customer-portal configuration as found in the account: the fields the plan sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentPortal {
    pub id: String,
    /// When it was last changed (Unix seconds), so that putting back a second edit is not taken
    /// for a retry of the first.
    pub updated: i64,
    pub subscription_update: bool,
    /// Sorted.
    pub allowed_updates: Vec<String>,
    /// Product id, and its price ids (sorted), sorted by product.
    pub products: Vec<(String, Vec<String>)>,
    pub proration_behavior: String,
    pub subscription_cancel: bool,
    pub cancel_mode: String,
    pub payment_method_update: bool,
    pub invoice_history: bool,
    pub default_return_url: Option<String>,
    pub headline: Option<String>,
    pub privacy_policy_url: Option<String>,
    pub terms_of_service_url: Option<String>,
}

/// What exists in the account, for one environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Current {
    pub product: Option<CurrentProduct>,
    /// The plan products found, by catalog key (`<product key>.<price key>`).
    pub plan_products: BTreeMap<String, CurrentProduct>,
    pub prices: Vec<CurrentPrice>,
    pub features: Vec<CurrentFeature>,
    pub endpoint: Option<CurrentEndpoint>,
    pub portal: Option<CurrentPortal>,
}

/// An object an action refers to: found in the account (`id`), or created by an earlier action of
/// the same plan (`id` is `None`; `key`, its catalog key or lookup key, finds it once created).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub key: String,
    pub id: Option<String>,
}

impl ObjectRef {
    fn describe(&self) -> String {
        match &self.id {
            Some(id) => format!("{} ({id})", self.key),
            None => format!("{} (new)", self.key),
        }
    }
}

/// One product the portal lets subscribers switch among, with the catalog's prices on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalProduct {
    pub product: ObjectRef,
    pub prices: Vec<ObjectRef>,
}

/// The customer-portal configuration wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalWanted {
    /// Every catalog product that has catalog prices: the main product, then the plan products.
    pub products: Vec<PortalProduct>,
    pub proration_behavior: ProrationBehavior,
    /// `None`: none was given (`--return-url`, `FRONTEND_URL`); the configuration's is left as it
    /// is, and a new one has none (billing-service gives a return URL with each session).
    pub return_url: Option<String>,
    pub headline: Option<String>,
    pub privacy_policy_url: Option<String>,
    pub terms_of_service_url: Option<String>,
}

impl PortalWanted {
    fn price_count(&self) -> usize {
        self.products.iter().map(|p| p.prices.len()).sum()
    }

    fn return_url_note(&self, found: Option<&CurrentPortal>) -> String {
        match (
            &self.return_url,
            found.and_then(|f| f.default_return_url.as_deref()),
        ) {
            (Some(url), _) => format!("default return URL {url}"),
            (None, Some(kept)) => format!(
                "default return URL {kept} left as it is (give --return-url or FRONTEND_URL to \
                 manage it)"
            ),
            (None, None) => "no default return URL (give --return-url or FRONTEND_URL; \
                             billing-service passes its return URL with each session anyway)"
                .to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A catalog feature no active feature holds the lookup key of.
    CreateFeature {
        spec: FeatureSpec,
    },
    /// Only the name can differ: the lookup key is what found it.
    UpdateFeature {
        id: String,
        spec: FeatureSpec,
        changes: Vec<String>,
    },
    KeepFeature {
        id: String,
        spec: FeatureSpec,
    },
    CreateProduct {
        spec: ProductSpec,
    },
    UpdateProduct {
        id: String,
        spec: ProductSpec,
        changes: Vec<String>,
    },
    KeepProduct {
        id: String,
        spec: ProductSpec,
    },
    /// The product of a price that grants features of its own (see `Catalog::plan_products`).
    CreatePlanProduct {
        spec: ProductSpec,
        /// The lookup key of the price sold under it.
        price: String,
    },
    UpdatePlanProduct {
        id: String,
        spec: ProductSpec,
        changes: Vec<String>,
    },
    KeepPlanProduct {
        id: String,
        spec: ProductSpec,
    },
    /// Attach a feature to a product (main or plan) whose catalog entry grants it.
    AttachFeature {
        product: ObjectRef,
        feature: ObjectRef,
    },
    /// The product has a feature attached that its catalog entry does not grant (or an archived
    /// feature of a lookup key it grants): detach it. The feature itself is left alone.
    DetachFeature {
        product: ObjectRef,
        attached: AttachedFeature,
    },
    KeepProductFeature {
        product: ObjectRef,
        attached: AttachedFeature,
    },
    /// `replaces` is the price now holding the lookup key; creating this one takes it over.
    CreatePrice {
        spec: PriceSpec,
        /// The product it is sold under: the main product or its plan product.
        product: ObjectRef,
        replaces: Option<CurrentPrice>,
    },
    /// Only the nickname differs: prices are otherwise immutable.
    UpdatePrice {
        id: String,
        spec: PriceSpec,
        changes: Vec<String>,
    },
    ArchivePrice {
        price: CurrentPrice,
    },
    KeepPrice {
        id: String,
        spec: PriceSpec,
    },
    CreateEndpoint {
        url: String,
        events: Vec<String>,
    },
    UpdateEndpoint {
        id: String,
        url: String,
        events: Vec<String>,
        added: Vec<String>,
        removed: Vec<String>,
        enable: bool,
    },
    KeepEndpoint {
        id: String,
        url: String,
    },
    /// `status` without `--webhook-url` cannot create an endpoint; it can only say one is missing.
    MissingEndpoint,
    /// Stripe renders the endpoint's events in another API version than the service reads, and
    /// cannot change an endpoint's version: it takes a new endpoint (and a new signing secret).
    EndpointApiVersion {
        id: String,
        has: String,
        wants: String,
    },
    CreatePortal {
        wanted: PortalWanted,
    },
    /// Puts every field the plan sets back as wanted; `changes` says which differed.
    UpdatePortal {
        id: String,
        /// The configuration's `updated` as read, part of the update's idempotency key.
        updated: i64,
        wanted: PortalWanted,
        /// Whether the headline and links are set now (so that clearing one is sent).
        had_business_profile: [bool; 3],
        changes: Vec<String>,
    },
    KeepPortal {
        id: String,
        note: String,
    },
}

impl Action {
    pub fn is_change(&self) -> bool {
        !matches!(
            self,
            Action::KeepFeature { .. }
                | Action::KeepProduct { .. }
                | Action::KeepPlanProduct { .. }
                | Action::KeepProductFeature { .. }
                | Action::KeepPrice { .. }
                | Action::KeepEndpoint { .. }
                | Action::KeepPortal { .. }
        )
    }

    /// One line, like `terraform plan`.
    pub fn describe(&self) -> String {
        match self {
            Action::CreateFeature { spec } => {
                format!("+ create feature {} (\"{}\")", spec.lookup_key, spec.name)
            }
            Action::UpdateFeature { id, spec, changes } => {
                format!("~ update feature {} ({id}): {}", spec.lookup_key, changes.join(", "))
            }
            Action::KeepFeature { id, spec } => {
                format!("= unchanged feature {} ({id})", spec.lookup_key)
            }
            Action::CreateProduct { spec } => format!("+ create product {} (\"{}\")", spec.key, spec.name),
            Action::UpdateProduct { id, spec, changes } => {
                format!("~ update product {} ({id}): {}", spec.key, changes.join(", "))
            }
            Action::KeepProduct { id, spec } => format!("= unchanged product {} ({id})", spec.key),
            Action::CreatePlanProduct { spec, price } => format!(
                "+ create plan product {} (\"{}\", for price {price})",
                spec.key, spec.name
            ),
            Action::UpdatePlanProduct { id, spec, changes } => {
                format!("~ update plan product {} ({id}): {}", spec.key, changes.join(", "))
            }
            Action::KeepPlanProduct { id, spec } => {
                format!("= unchanged plan product {} ({id})", spec.key)
            }
            Action::AttachFeature { product, feature } => format!(
                "+ attach feature {} to product {}",
                feature.describe(),
                product.describe()
            ),
            Action::DetachFeature { product, attached } => format!(
                "- detach feature {} ({}) from product {}",
                attached.lookup_key,
                attached.feature_id,
                product.describe()
            ),
            Action::KeepProductFeature { product, attached } => format!(
                "= unchanged feature {} on product {}",
                attached.lookup_key,
                product.describe()
            ),
            Action::CreatePrice { spec, product, replaces } => {
                let mut line = format!(
                    "+ create price {} ({}, \"{}\") on product {}",
                    spec.lookup_key,
                    spec.describe(),
                    spec.nickname,
                    product.describe()
                );
                if let Some(old) = replaces {
                    let _ = write!(line, ", taking the lookup key from {}", old.id);
                }
                line
            }
            Action::UpdatePrice { id, spec, changes } => {
                format!("~ update price {} ({id}): {}", spec.lookup_key, changes.join(", "))
            }
            Action::ArchivePrice { price } => {
                format!("- archive price {} (was {}, {})", price.id, price.lookup_key, price.describe())
            }
            Action::KeepPrice { id, spec } => {
                format!("= unchanged price {} ({id}, {})", spec.lookup_key, spec.describe())
            }
            Action::CreateEndpoint { url, events } => {
                format!("+ create webhook endpoint {url} ({} events)", events.len())
            }
            Action::UpdateEndpoint { id, url, added, removed, enable, .. } => {
                let mut changes: Vec<String> = added.iter().map(|e| format!("+{e}")).collect();
                changes.extend(removed.iter().map(|e| format!("-{e}")));
                if *enable {
                    changes.push("enable it (it is disabled)".into());
                }
                format!("~ update webhook endpoint {id} ({url}): {}", changes.join(", "))
            }
            Action::KeepEndpoint { id, url } => format!("= unchanged webhook endpoint {id} ({url})"),
            Action::MissingEndpoint => {
                "+ create webhook endpoint (none found for this environment; `init --webhook-url` creates it)"
                    .to_owned()
            }
            Action::EndpointApiVersion { id, has, wants } => format!(
                "! webhook endpoint {id} sends events in API version {has}; the service reads {wants}. \
                 Stripe cannot change an endpoint's version: delete the endpoint in the Dashboard and \
                 run `init --webhook-url ...` again, then deploy the new signing secret"
            ),
            Action::CreatePortal { wanted } => format!(
                "+ create portal configuration (switching among {} prices of {} products, \
                 proration {}; cancel at period end; payment method update; invoice history; {})",
                wanted.price_count(),
                wanted.products.len(),
                wanted.proration_behavior,
                wanted.return_url_note(None)
            ),
            Action::UpdatePortal { id, changes, .. } => {
                format!("~ update portal configuration {id}: {}", changes.join(", "))
            }
            Action::KeepPortal { id, note } => {
                format!("= unchanged portal configuration {id} ({note})")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
}

/// Counts by kind of change, for the summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Objects created, features attached included.
    pub create: usize,
    pub update: usize,
    pub archive: usize,
    /// Features detached from our products.
    pub detach: usize,
    /// What only a person can do (see [`Action::EndpointApiVersion`]).
    pub by_hand: usize,
}

/// Ids of what exists, by catalog key or lookup key (`None`: created by the plan).
type Ids = HashMap<String, Option<String>>;

impl Plan {
    /// Compares `catalog` with `current`. `webhook_url` is `None` for `status` without a URL: an
    /// endpoint found by metadata alone is then compared on its events only. The portal
    /// configuration's default return URL is left as it is (see [`Plan::with_return_url`]).
    pub fn new(catalog: &Catalog, webhook_url: Option<&str>, current: &Current) -> Self {
        Self::with_return_url(catalog, webhook_url, None, current)
    }

    /// As [`Plan::new`], with the portal configuration's default return URL (the frontend's
    /// URL) wanted as `return_url` when given.
    pub fn with_return_url(
        catalog: &Catalog,
        webhook_url: Option<&str>,
        return_url: Option<&str>,
        current: &Current,
    ) -> Self {
        let mut actions = Vec::new();

        let mut feature_ids: Ids = HashMap::new();
        for spec in &catalog.features {
            let found = current
                .features
                .iter()
                .find(|f| f.lookup_key == spec.lookup_key);
            let id = found.map(|f| f.id.clone());
            actions.push(match found {
                None => Action::CreateFeature { spec: spec.clone() },
                Some(f) if f.name != spec.name => Action::UpdateFeature {
                    id: f.id.clone(),
                    spec: spec.clone(),
                    changes: vec![format!("name \"{}\" → \"{}\"", f.name, spec.name)],
                },
                Some(f) => Action::KeepFeature {
                    id: f.id.clone(),
                    spec: spec.clone(),
                },
            });
            feature_ids.insert(spec.lookup_key.clone(), id);
        }

        let mut product_ids: Ids = HashMap::new();
        let main = &catalog.product;
        let found = current.product.as_ref();
        actions.push(match found {
            None => Action::CreateProduct { spec: main.clone() },
            Some(found) => {
                let changes = product_changes(main, found);
                if changes.is_empty() {
                    Action::KeepProduct {
                        id: found.id.clone(),
                        spec: main.clone(),
                    }
                } else {
                    Action::UpdateProduct {
                        id: found.id.clone(),
                        spec: main.clone(),
                        changes,
                    }
                }
            }
        });
        product_ids.insert(main.key.clone(), found.map(|p| p.id.clone()));
        product_features(&mut actions, main, found, &feature_ids);

        for price in &catalog.prices {
            let Some(spec) = catalog.plan_product(price) else {
                continue;
            };
            let found = current.plan_products.get(&spec.key);
            actions.push(match found {
                None => Action::CreatePlanProduct {
                    spec: spec.clone(),
                    price: price.lookup_key.clone(),
                },
                Some(found) => {
                    let changes = product_changes(&spec, found);
                    if changes.is_empty() {
                        Action::KeepPlanProduct {
                            id: found.id.clone(),
                            spec: spec.clone(),
                        }
                    } else {
                        Action::UpdatePlanProduct {
                            id: found.id.clone(),
                            spec: spec.clone(),
                            changes,
                        }
                    }
                }
            });
            product_ids.insert(spec.key.clone(), found.map(|p| p.id.clone()));
            product_features(&mut actions, &spec, found, &feature_ids);
        }

        let mut price_ids: Ids = HashMap::new();
        for spec in &catalog.prices {
            let product_key = catalog.product_key_of(spec);
            let product = ObjectRef {
                id: product_ids.get(&product_key).cloned().flatten(),
                key: product_key,
            };
            let found = current
                .prices
                .iter()
                .find(|p| p.lookup_key == spec.lookup_key);
            match found {
                Some(price)
                    if product.id.as_deref() == Some(&price.product) && same_terms(spec, price) =>
                {
                    if price.nickname.as_deref() == Some(spec.nickname.as_str()) {
                        actions.push(Action::KeepPrice {
                            id: price.id.clone(),
                            spec: spec.clone(),
                        });
                    } else {
                        let was = price.nickname.clone().unwrap_or_default();
                        actions.push(Action::UpdatePrice {
                            id: price.id.clone(),
                            spec: spec.clone(),
                            changes: vec![format!("nickname \"{was}\" → \"{}\"", spec.nickname)],
                        });
                    }
                    price_ids.insert(spec.lookup_key.clone(), Some(price.id.clone()));
                }
                Some(price) => {
                    actions.push(Action::CreatePrice {
                        spec: spec.clone(),
                        product,
                        replaces: Some(price.clone()),
                    });
                    actions.push(Action::ArchivePrice {
                        price: price.clone(),
                    });
                    price_ids.insert(spec.lookup_key.clone(), None);
                }
                None => {
                    actions.push(Action::CreatePrice {
                        spec: spec.clone(),
                        product,
                        replaces: None,
                    });
                    price_ids.insert(spec.lookup_key.clone(), None);
                }
            }
        }

        let wanted = &catalog.webhook.enabled_events;
        match (&current.endpoint, webhook_url) {
            (None, Some(url)) => actions.push(Action::CreateEndpoint {
                url: url.to_owned(),
                events: wanted.clone(),
            }),
            (None, None) => actions.push(Action::MissingEndpoint),
            (Some(endpoint), _) => {
                let added: Vec<String> = wanted
                    .iter()
                    .filter(|e| !endpoint.enabled_events.contains(e))
                    .cloned()
                    .collect();
                let removed: Vec<String> = endpoint
                    .enabled_events
                    .iter()
                    .filter(|e| !wanted.contains(e))
                    .cloned()
                    .collect();
                let enable = endpoint.status == "disabled";
                actions.push(if added.is_empty() && removed.is_empty() && !enable {
                    Action::KeepEndpoint {
                        id: endpoint.id.clone(),
                        url: endpoint.url.clone(),
                    }
                } else {
                    Action::UpdateEndpoint {
                        id: endpoint.id.clone(),
                        url: endpoint.url.clone(),
                        events: wanted.clone(),
                        added,
                        removed,
                        enable,
                    }
                });
                if let Some(has) = endpoint
                    .api_version
                    .as_deref()
                    .filter(|v| *v != billing_stripe::API_VERSION)
                {
                    actions.push(Action::EndpointApiVersion {
                        id: endpoint.id.clone(),
                        has: has.to_owned(),
                        wants: billing_stripe::API_VERSION.to_owned(),
                    });
                }
            }
        }

        let wanted = portal_wanted(catalog, return_url, &product_ids, &price_ids);
        actions.push(match &current.portal {
            None => Action::CreatePortal { wanted },
            Some(found) => {
                let changes = portal_changes(&wanted, found);
                if changes.is_empty() {
                    Action::KeepPortal {
                        id: found.id.clone(),
                        note: wanted.return_url_note(Some(found)),
                    }
                } else {
                    Action::UpdatePortal {
                        id: found.id.clone(),
                        updated: found.updated,
                        had_business_profile: [
                            found.headline.is_some(),
                            found.privacy_policy_url.is_some(),
                            found.terms_of_service_url.is_some(),
                        ],
                        wanted,
                        changes,
                    }
                }
            }
        });
        Plan { actions }
    }

    pub fn has_changes(&self) -> bool {
        self.actions.iter().any(Action::is_change)
    }

    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for action in &self.actions {
            match action {
                Action::CreateFeature { .. }
                | Action::CreateProduct { .. }
                | Action::CreatePlanProduct { .. }
                | Action::AttachFeature { .. }
                | Action::CreatePrice { .. }
                | Action::CreateEndpoint { .. }
                | Action::MissingEndpoint
                | Action::CreatePortal { .. } => counts.create += 1,
                Action::UpdateFeature { .. }
                | Action::UpdateProduct { .. }
                | Action::UpdatePlanProduct { .. }
                | Action::UpdatePrice { .. }
                | Action::UpdateEndpoint { .. }
                | Action::UpdatePortal { .. } => counts.update += 1,
                Action::ArchivePrice { .. } => counts.archive += 1,
                Action::DetachFeature { .. } => counts.detach += 1,
                Action::EndpointApiVersion { .. } => counts.by_hand += 1,
                Action::KeepFeature { .. }
                | Action::KeepProduct { .. }
                | Action::KeepPlanProduct { .. }
                | Action::KeepProductFeature { .. }
                | Action::KeepPrice { .. }
                | Action::KeepEndpoint { .. }
                | Action::KeepPortal { .. } => {}
            }
        }
        counts
    }

    /// The plan as printed: one line per object, then the summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for action in &self.actions {
            out.push_str(&action.describe());
            out.push('\n');
        }
        out.push('\n');
        if self.has_changes() {
            let c = self.counts();
            let _ = writeln!(
                out,
                "Plan: {} to create, {} to update, {} to archive{}{}.",
                c.create,
                c.update,
                c.archive,
                match c.detach {
                    0 => String::new(),
                    n => format!(", {n} to detach"),
                },
                match c.by_hand {
                    0 => String::new(),
                    n => format!(", {n} to do by hand (marked !)"),
                }
            );
        } else {
            out.push_str("No changes. The Stripe account matches the catalog.\n");
        }
        out
    }
}

fn same_terms(spec: &PriceSpec, price: &CurrentPrice) -> bool {
    price.unit_amount == Some(spec.unit_amount)
        && price.currency == spec.currency
        && price.interval.as_deref() == Some(spec.interval.as_str())
        && price.interval_count == u64::from(spec.interval_count)
}

fn product_changes(spec: &ProductSpec, found: &CurrentProduct) -> Vec<String> {
    let mut changes = Vec::new();
    if found.name != spec.name {
        changes.push(format!("name \"{}\" → \"{}\"", found.name, spec.name));
    }
    if spec.description.is_some() && found.description != spec.description {
        changes.push("description".to_owned());
    }
    changes
}

/// Attach, keep or detach the features of one product. An attachment is kept when it is of the
/// active feature holding a lookup key the product grants; any other is detached (a feature the
/// catalog no longer grants there, or an archived one whose lookup key a new feature holds).
fn product_features(
    actions: &mut Vec<Action>,
    spec: &ProductSpec,
    found: Option<&CurrentProduct>,
    feature_ids: &Ids,
) {
    let product = ObjectRef {
        key: spec.key.clone(),
        id: found.map(|p| p.id.clone()),
    };
    let attached = found.map_or(&[][..], |p| &p.features[..]);
    let mut kept: Vec<&str> = Vec::new();
    for lookup_key in &spec.features {
        let feature_id = feature_ids.get(lookup_key).cloned().flatten();
        let existing = feature_id
            .as_deref()
            .and_then(|id| attached.iter().find(|a| a.feature_id == id));
        match existing {
            Some(a) => {
                kept.push(&a.id);
                actions.push(Action::KeepProductFeature {
                    product: product.clone(),
                    attached: a.clone(),
                });
            }
            None => actions.push(Action::AttachFeature {
                product: product.clone(),
                feature: ObjectRef {
                    key: lookup_key.clone(),
                    id: feature_id,
                },
            }),
        }
    }
    for a in attached {
        if !kept.contains(&a.id.as_str()) {
            actions.push(Action::DetachFeature {
                product: product.clone(),
                attached: a.clone(),
            });
        }
    }
}

fn portal_wanted(
    catalog: &Catalog,
    return_url: Option<&str>,
    product_ids: &Ids,
    price_ids: &Ids,
) -> PortalWanted {
    let mut products: Vec<PortalProduct> = Vec::new();
    for key in catalog.product_keys() {
        let prices: Vec<ObjectRef> = catalog
            .prices
            .iter()
            .filter(|p| catalog.product_key_of(p) == key)
            .map(|p| ObjectRef {
                key: p.lookup_key.clone(),
                id: price_ids.get(&p.lookup_key).cloned().flatten(),
            })
            .collect();
        if prices.is_empty() {
            continue;
        }
        products.push(PortalProduct {
            product: ObjectRef {
                id: product_ids.get(&key).cloned().flatten(),
                key,
            },
            prices,
        });
    }
    let portal = &catalog.portal;
    PortalWanted {
        products,
        proration_behavior: portal.proration_behavior,
        return_url: return_url.map(str::to_owned),
        headline: portal.headline.clone(),
        privacy_policy_url: portal.privacy_policy_url.clone(),
        terms_of_service_url: portal.terms_of_service_url.clone(),
    }
}

/// What differs between the configuration found and the one wanted, field by field.
fn portal_changes(wanted: &PortalWanted, found: &CurrentPortal) -> Vec<String> {
    let mut changes = Vec::new();
    let on_off = |on: bool| if on { "on" } else { "off" };
    if !found.subscription_update {
        changes.push("plan switching off → on".to_owned());
    }
    if found.allowed_updates != ["price"] {
        changes.push(format!(
            "allowed updates [{}] → [price]",
            found.allowed_updates.join(", ")
        ));
    }
    // Pairs of (product, price), as shown and as compared: an object still to be created never
    // matches, since the configuration cannot name it yet.
    let wanted_pairs: Vec<(String, Option<(String, String)>)> = wanted
        .products
        .iter()
        .flat_map(|p| {
            p.prices.iter().map(|price| {
                let shown = format!("{} on {}", price.describe(), p.product.describe());
                let ids = p.product.id.clone().zip(price.id.clone());
                (shown, ids)
            })
        })
        .collect();
    let found_pairs: Vec<(String, String)> = found
        .products
        .iter()
        .flat_map(|(product, prices)| prices.iter().map(|p| (product.clone(), p.clone())))
        .collect();
    let mut price_changes: Vec<String> = wanted_pairs
        .iter()
        .filter(|(_, ids)| ids.as_ref().is_none_or(|ids| !found_pairs.contains(ids)))
        .map(|(shown, _)| format!("+{shown}"))
        .collect();
    price_changes.extend(
        found_pairs
            .iter()
            .filter(|pair| {
                !wanted_pairs
                    .iter()
                    .any(|(_, ids)| ids.as_ref() == Some(*pair))
            })
            .map(|(product, price)| format!("-{price} on {product}")),
    );
    if !price_changes.is_empty() {
        changes.push(format!("prices {}", price_changes.join(" ")));
    }
    if found.proration_behavior != wanted.proration_behavior.as_str() {
        changes.push(format!(
            "proration_behavior {} → {}",
            found.proration_behavior, wanted.proration_behavior
        ));
    }
    if !found.subscription_cancel || found.cancel_mode != "at_period_end" {
        changes.push(format!(
            "cancellation {} ({}) → on (at_period_end)",
            on_off(found.subscription_cancel),
            found.cancel_mode
        ));
    }
    if !found.payment_method_update {
        changes.push("payment method update off → on".to_owned());
    }
    if !found.invoice_history {
        changes.push("invoice history off → on".to_owned());
    }
    if let Some(url) = &wanted.return_url
        && found.default_return_url.as_ref() != Some(url)
    {
        changes.push(format!(
            "default_return_url {} → {url}",
            found.default_return_url.as_deref().unwrap_or("none")
        ));
    }
    for (name, has, wants) in [
        ("headline", &found.headline, &wanted.headline),
        (
            "privacy_policy_url",
            &found.privacy_policy_url,
            &wanted.privacy_policy_url,
        ),
        (
            "terms_of_service_url",
            &found.terms_of_service_url,
            &wanted.terms_of_service_url,
        ),
    ] {
        if has != wants {
            let show =
                |v: &Option<String>| v.as_ref().map_or("none".to_owned(), |v| format!("\"{v}\""));
            changes.push(format!("{name} {} → {}", show(has), show(wants)));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://billing.example.com/webhook/stripe";
    const FRONTEND: &str = "https://app.example.com";

    fn attached(i: usize, feature: &CurrentFeature) -> AttachedFeature {
        AttachedFeature {
            id: format!("prodft_{i}_{}", feature.id),
            feature_id: feature.id.clone(),
            lookup_key: feature.lookup_key.clone(),
        }
    }

    /// The account as `init` leaves it for `catalog`: product `prod_0`, plan products `prod_1`..,
    /// prices `price_0`.., features `feat_0`.., endpoint `we_1`, portal `bpc_1`.
    fn in_sync(catalog: &Catalog) -> Current {
        let features: Vec<CurrentFeature> = catalog
            .features
            .iter()
            .enumerate()
            .map(|(i, f)| CurrentFeature {
                id: format!("feat_{i}"),
                lookup_key: f.lookup_key.clone(),
                name: f.name.clone(),
            })
            .collect();
        let product = |i: usize, spec: &ProductSpec| CurrentProduct {
            id: format!("prod_{i}"),
            name: spec.name.clone(),
            description: None,
            features: spec
                .features
                .iter()
                .map(|k| attached(i, features.iter().find(|f| &f.lookup_key == k).unwrap()))
                .collect(),
        };
        let plan_products: BTreeMap<String, CurrentProduct> = catalog
            .plan_products()
            .iter()
            .enumerate()
            .map(|(i, spec)| (spec.key.clone(), product(i + 1, spec)))
            .collect();
        let main = product(0, &catalog.product);
        let product_of = |p: &PriceSpec| {
            let key = catalog.product_key_of(p);
            plan_products.get(&key).unwrap_or(&main).id.clone()
        };
        let prices: Vec<CurrentPrice> = catalog
            .prices
            .iter()
            .enumerate()
            .map(|(i, p)| CurrentPrice {
                id: format!("price_{i}"),
                lookup_key: p.lookup_key.clone(),
                product: product_of(p),
                unit_amount: Some(p.unit_amount),
                currency: p.currency.clone(),
                interval: Some(p.interval.as_str().into()),
                interval_count: 1,
                nickname: Some(p.nickname.clone()),
            })
            .collect();
        let mut portal_products: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for price in &prices {
            portal_products
                .entry(price.product.clone())
                .or_default()
                .push(price.id.clone());
        }
        Current {
            product: Some(main.clone()),
            plan_products: plan_products.clone(),
            prices,
            features,
            endpoint: Some(CurrentEndpoint {
                id: "we_1".into(),
                url: URL.into(),
                enabled_events: catalog.webhook.enabled_events.clone(),
                status: "enabled".into(),
                api_version: Some(billing_stripe::API_VERSION.into()),
            }),
            portal: Some(CurrentPortal {
                id: "bpc_1".into(),
                updated: 1,
                subscription_update: true,
                allowed_updates: vec!["price".into()],
                products: portal_products.into_iter().collect(),
                proration_behavior: "create_prorations".into(),
                subscription_cancel: true,
                cancel_mode: "at_period_end".into(),
                payment_method_update: true,
                invoice_history: true,
                default_return_url: Some(FRONTEND.into()),
                headline: None,
                privacy_policy_url: None,
                terms_of_service_url: None,
            }),
        }
    }

    fn events() -> usize {
        Catalog::builtin().webhook.enabled_events.len()
    }

    fn counts(create: usize, update: usize, archive: usize, detach: usize) -> Counts {
        Counts {
            create,
            update,
            archive,
            detach,
            by_hand: 0,
        }
    }

    fn catalog_with(from: &str, to: &str) -> Catalog {
        let text = billing_stripe::catalog::DEFAULT_TOML;
        assert!(text.contains(from), "{from}");
        Catalog::parse("c.toml", &text.replacen(from, to, 1)).unwrap()
    }

    #[test]
    fn an_empty_account_gets_everything_created() {
        let catalog = Catalog::builtin();
        let plan = Plan::with_return_url(&catalog, Some(URL), Some(FRONTEND), &Current::default());
        // 2 features, the product, its feature, the plan product, its 2 features, 3 prices, the
        // endpoint, the portal.
        assert_eq!(plan.counts(), counts(12, 0, 0, 0));
        let text = plan.render();
        for line in [
            "+ create feature billing_basic (\"Billing basics\")\n",
            "+ create feature priority_support (\"Priority support\")\n",
            "+ create product billing (\"billing\")\n",
            "+ attach feature billing_basic (new) to product billing (new)\n",
            "+ create plan product billing.annual (\"billing Annual Plan\", for price billing_annual)\n",
            "+ attach feature billing_basic (new) to product billing.annual (new)\n",
            "+ attach feature priority_support (new) to product billing.annual (new)\n",
            "+ create price billing_monthly (5499 cad/month, \"Monthly Plan\") on product billing (new)\n",
            "+ create price billing_annual (50000 cad/year, \"Annual Plan\") on product billing.annual (new)\n",
            "+ create portal configuration (switching among 3 prices of 2 products, proration \
             create_prorations; cancel at period end; payment method update; invoice history; \
             default return URL https://app.example.com)\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(text.contains(&format!(
            "+ create webhook endpoint https://billing.example.com/webhook/stripe ({} events)",
            events()
        )));
        assert!(
            text.ends_with("Plan: 12 to create, 0 to update, 0 to archive.\n"),
            "{text}"
        );
        // Features first, the portal last (it names the prices).
        assert!(matches!(plan.actions[0], Action::CreateFeature { .. }));
        let Some(Action::CreatePortal { wanted }) = plan.actions.last() else {
            panic!("{text}")
        };
        assert_eq!(wanted.products.len(), 2);
        assert_eq!(
            wanted.products[0]
                .prices
                .iter()
                .map(|p| p.key.as_str())
                .collect::<Vec<_>>(),
            ["billing_monthly", "billing_daily"]
        );
        assert_eq!(wanted.products[1].product.key, "billing.annual");
    }

    #[test]
    fn without_a_return_url_the_plan_says_so() {
        let catalog = Catalog::builtin();
        let text = Plan::new(&catalog, Some(URL), &Current::default()).render();
        assert!(
            text.contains("no default return URL (give --return-url or FRONTEND_URL"),
            "{text}"
        );
        // An existing one is left alone and named.
        let plan = Plan::new(&catalog, Some(URL), &in_sync(&catalog));
        assert!(!plan.has_changes(), "{}", plan.render());
        assert!(plan.render().contains(
            "= unchanged portal configuration bpc_1 (default return URL https://app.example.com \
             left as it is"
        ));
    }

    #[test]
    fn a_matching_account_needs_nothing() {
        let catalog = Catalog::builtin();
        let plan = Plan::with_return_url(&catalog, Some(URL), Some(FRONTEND), &in_sync(&catalog));
        assert!(!plan.has_changes(), "{}", plan.render());
        assert_eq!(plan.actions.len(), 12);
        let text = plan.render();
        for line in [
            "= unchanged feature billing_basic (feat_0)",
            "= unchanged feature billing_basic on product billing (prod_0)",
            "= unchanged plan product billing.annual (prod_1)",
            "= unchanged feature priority_support on product billing.annual (prod_1)",
            "= unchanged price billing_annual (price_2, 50000 cad/year)",
            "= unchanged portal configuration bpc_1 (default return URL https://app.example.com)",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(text.ends_with("No changes. The Stripe account matches the catalog.\n"));
    }

    #[test]
    fn a_changed_amount_replaces_and_archives() {
        let catalog = Catalog::builtin();
        let mut current = in_sync(&catalog);
        current.prices[0].unit_amount = Some(4999);
        let plan = Plan::with_return_url(&catalog, Some(URL), Some(FRONTEND), &current);
        // The new price, and the portal that must list it instead of the old one.
        assert_eq!(plan.counts(), counts(1, 1, 1, 0));
        let old = current.prices[0].clone();
        assert!(plan.actions.contains(&Action::CreatePrice {
            spec: catalog.prices[0].clone(),
            product: ObjectRef {
                key: "billing".into(),
                id: Some("prod_0".into())
            },
            replaces: Some(old.clone())
        }));
        assert!(plan.actions.contains(&Action::ArchivePrice { price: old }));
        let text = plan.render();
        assert!(
            text.contains("- archive price price_0 (was billing_monthly, 4999 cad/month)"),
            "{text}"
        );
        assert!(
            text.contains(
                "~ update portal configuration bpc_1: prices +billing_monthly (new) on billing \
                 (prod_0) -price_0 on prod_0"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_changed_interval_or_product_also_replaces() {
        let catalog = Catalog::builtin();
        let mut current = in_sync(&catalog);
        current.prices[1].interval = Some("week".into());
        current.prices[2].product = "prod_other".into();
        let plan = Plan::with_return_url(&catalog, Some(URL), Some(FRONTEND), &current);
        assert_eq!(plan.counts(), counts(2, 1, 2, 0));
    }

    #[test]
    fn a_new_product_takes_over_existing_lookup_keys() {
        let catalog = Catalog::builtin();
        let mut current = in_sync(&catalog);
        current.product = None;
        let plan = Plan::with_return_url(&catalog, Some(URL), Some(FRONTEND), &current);
        // The product, its feature, the two prices on it; the portal.
        assert_eq!(plan.counts(), counts(4, 1, 2, 0));
    }

    #[test]
    fn a_feature_added_to_a_price_moves_it_to_a_plan_product() {
        let catalog = Catalog::builtin();
        let current = in_sync(&catalog);
        let moved = catalog_with(
            "interval = \"month\"\n",
            "interval = \"month\"\nfeatures = [\"priority_support\"]\n",
        );
        let plan = Plan::with_return_url(&moved, Some(URL), Some(FRONTEND), &current);
        // The plan product billing.monthly and its two features, the new price on it; the old
        // price archived; the portal updated.
        assert_eq!(plan.counts(), counts(4, 1, 1, 0), "{}", plan.render());
        let text = plan.render();
        assert!(
            text.contains(
                "+ create plan product billing.monthly (\"billing Monthly Plan\", for price \
                 billing_monthly)"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "+ create price billing_monthly (5499 cad/month, \"Monthly Plan\") on product \
                 billing.monthly (new), taking the lookup key from price_0"
            ),
            "{text}"
        );
        assert!(text.contains("- archive price price_0"), "{text}");

        // And back: the price returns to the product, the plan product is left as it is.
        let mut current = in_sync(&moved);
        current.product.as_mut().unwrap().id = "prod_0".into();
        let plan = Plan::with_return_url(&catalog, Some(URL), Some(FRONTEND), &current);
        let text = plan.render();
        assert!(
            text.contains(
                "+ create price billing_monthly (5499 cad/month, \"Monthly Plan\") on product \
                 billing (prod_0), taking the lookup key from price_0"
            ),
            "{text}"
        );
        assert!(!text.contains("billing.monthly"), "{text}");
    }

    #[test]
    fn feature_names_and_attachments_follow_the_catalog() {
        let catalog = Catalog::builtin();
        let mut current = in_sync(&catalog);
        current.features[0].name = "Old name".into();
        // Attached by hand, and a feature the catalog does not grant there.
        let stray = AttachedFeature {
            id: "prodft_stray".into(),
            feature_id: "feat_stray".into(),
            lookup_key: "legacy".into(),
        };
        current
            .product
            .as_mut()
            .unwrap()
            .features
            .push(stray.clone());
        // The plan product lost its own feature.
        current
            .plan_products
            .get_mut("billing.annual")
            .unwrap()
            .features
            .retain(|f| f.lookup_key != "priority_support");
        let plan = Plan::with_return_url(&catalog, Some(URL), Some(FRONTEND), &current);
        assert_eq!(plan.counts(), counts(1, 1, 0, 1), "{}", plan.render());
        let text = plan.render();
        assert!(
            text.contains(
                "~ update feature billing_basic (feat_0): name \"Old name\" → \"Billing basics\""
            ),
            "{text}"
        );
        assert!(
            text.contains("- detach feature legacy (feat_stray) from product billing (prod_0)"),
            "{text}"
        );
        assert!(
            text.contains(
                "+ attach feature priority_support (feat_1) to product billing.annual (prod_1)"
            ),
            "{text}"
        );
        assert!(text.ends_with("Plan: 1 to create, 1 to update, 0 to archive, 1 to detach.\n"));
    }

    #[test]
    fn a_feature_made_anew_replaces_the_archived_one_on_products() {
        let catalog = Catalog::builtin();
        let mut current = in_sync(&catalog);
        // priority_support was archived: no active feature holds the key, the product still has
        // the old one attached.
        current
            .features
            .retain(|f| f.lookup_key != "priority_support");
        let plan = Plan::with_return_url(&catalog, Some(URL), Some(FRONTEND), &current);
        let text = plan.render();
        assert!(text.contains("+ create feature priority_support"), "{text}");
        assert!(
            text.contains(
                "+ attach feature priority_support (new) to product billing.annual (prod_1)"
            ),
            "{text}"
        );
        assert!(
            text.contains("- detach feature priority_support (feat_1) from product billing.annual"),
            "{text}"
        );
    }

    #[test]
    fn every_portal_field_that_drifted_is_put_back_and_named() {
        let catalog = Catalog::builtin();
        let mut current = in_sync(&catalog);
        let portal = current.portal.as_mut().unwrap();
        portal.proration_behavior = "none".into();
        portal.cancel_mode = "immediately".into();
        portal.invoice_history = false;
        portal.payment_method_update = false;
        portal.subscription_update = false;
        portal.allowed_updates = vec!["price".into(), "quantity".into()];
        portal.default_return_url = None;
        portal.headline = Some("Hi".into());
        portal.products[0].1.push("price_9".into());
        let plan = Plan::with_return_url(&catalog, Some(URL), Some(FRONTEND), &current);
        assert_eq!(plan.counts(), counts(0, 1, 0, 0));
        let Some(Action::UpdatePortal {
            changes,
            had_business_profile,
            ..
        }) = plan.actions.last()
        else {
            panic!("{}", plan.render())
        };
        assert_eq!(
            changes,
            &[
                "plan switching off → on",
                "allowed updates [price, quantity] → [price]",
                "prices -price_9 on prod_0",
                "proration_behavior none → create_prorations",
                "cancellation on (immediately) → on (at_period_end)",
                "payment method update off → on",
                "invoice history off → on",
                "default_return_url none → https://app.example.com",
                "headline \"Hi\" → none",
            ]
        );
        assert_eq!(had_business_profile, &[true, false, false]);

        // Without a return URL, the one found is not compared.
        let mut current = in_sync(&catalog);
        current.portal.as_mut().unwrap().default_return_url =
            Some("https://old.example.com".into());
        assert!(!Plan::new(&catalog, Some(URL), &current).has_changes());
        assert!(Plan::with_return_url(&catalog, Some(URL), Some(FRONTEND), &current).has_changes());
    }

    #[test]
    fn the_catalogs_portal_settings_are_wanted() {
        let catalog = catalog_with(
            "proration_behavior = \"create_prorations\"",
            "proration_behavior = \"always_invoice\"\nheadline = \"Plans\"",
        );
        let current = in_sync(&Catalog::builtin());
        let plan = Plan::with_return_url(&catalog, Some(URL), Some(FRONTEND), &current);
        assert!(
            plan.render().contains(
                "~ update portal configuration bpc_1: proration_behavior create_prorations → \
                 always_invoice, headline none → \"Plans\""
            ),
            "{}",
            plan.render()
        );
    }

    #[test]
    fn a_changed_event_list_or_disabled_endpoint_updates() {
        let catalog = Catalog::builtin();
        let mut current = in_sync(&catalog);
        let endpoint = current.endpoint.as_mut().unwrap();
        endpoint.enabled_events.retain(|e| e != "invoice.paid");
        endpoint.enabled_events.push("payout.paid".into());
        let plan = Plan::new(&catalog, Some(URL), &current);
        assert_eq!(plan.counts(), counts(0, 1, 0, 0));
        let text = plan.render();
        assert!(text.contains("~ update webhook endpoint we_1 (https://billing.example.com/webhook/stripe): +invoice.paid, -payout.paid"), "{text}");

        let mut current = in_sync(&catalog);
        current.endpoint.as_mut().unwrap().status = "disabled".into();
        assert!(
            Plan::new(&catalog, Some(URL), &current)
                .render()
                .contains("enable it")
        );
    }

    #[test]
    fn an_endpoint_on_another_api_version_is_drift_only_a_person_can_fix() {
        let catalog = Catalog::builtin();
        let mut current = in_sync(&catalog);
        current.endpoint.as_mut().unwrap().api_version = Some("2024-06-20".into());
        let plan = Plan::new(&catalog, Some(URL), &current);
        assert!(plan.has_changes());
        assert_eq!(plan.counts().by_hand, 1);
        let text = plan.render();
        assert!(
            text.contains(&format!(
                "! webhook endpoint we_1 sends events in API version 2024-06-20; the service reads {}",
                billing_stripe::API_VERSION
            )),
            "{text}"
        );
        assert!(text.contains("1 to do by hand"), "{text}");
        // The account's default version (no version on the endpoint) is not known here.
        current.endpoint.as_mut().unwrap().api_version = None;
        assert!(!Plan::new(&catalog, Some(URL), &current).has_changes());
    }

    #[test]
    fn nickname_and_name_changes_are_updates() {
        let catalog = Catalog::builtin();
        let mut current = in_sync(&catalog);
        current.prices[0].nickname = None;
        current.product.as_mut().unwrap().name = "old".into();
        current
            .plan_products
            .get_mut("billing.annual")
            .unwrap()
            .name = "old".into();
        let plan = Plan::new(&catalog, Some(URL), &current);
        assert_eq!(plan.counts(), counts(0, 3, 0, 0));
        assert!(plan.render().contains(
            "~ update plan product billing.annual (prod_1): name \"old\" → \"billing Annual Plan\""
        ));
    }

    #[test]
    fn status_without_a_url_reports_a_missing_endpoint() {
        let catalog = Catalog::builtin();
        let mut current = in_sync(&catalog);
        assert!(!Plan::new(&catalog, None, &current).has_changes());
        current.endpoint = None;
        let plan = Plan::new(&catalog, None, &current);
        assert!(plan.actions.contains(&Action::MissingEndpoint));
        assert!(plan.has_changes());
    }
}
