//! The difference between the catalog and the account, as a list of actions.
//!
//! A pure function of what is wanted and what exists, so it is tested without HTTP, and so
//! `status`, `init --dry-run` and `init` cannot disagree: they print or apply the same plan.
//! Nothing is ever deleted: a price whose amount or interval changed is replaced (the new one takes
//! the lookup key, the old one is archived), because Stripe prices are immutable and existing
//! subscriptions keep pointing at the old one.

use std::fmt::Write as _;

use billing_stripe::catalog::{Catalog, PriceSpec, ProductSpec};

/// The product as found in the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentProduct {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
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

/// What exists in the account, for one environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Current {
    pub product: Option<CurrentProduct>,
    pub prices: Vec<CurrentPrice>,
    pub endpoint: Option<CurrentEndpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
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
    /// `replaces` is the price now holding the lookup key; creating this one takes it over.
    CreatePrice {
        spec: PriceSpec,
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
}

impl Action {
    pub fn is_change(&self) -> bool {
        !matches!(
            self,
            Action::KeepProduct { .. } | Action::KeepPrice { .. } | Action::KeepEndpoint { .. }
        )
    }

    /// One line, like `terraform plan`.
    pub fn describe(&self) -> String {
        match self {
            Action::CreateProduct { spec } => format!("+ create product {} (\"{}\")", spec.key, spec.name),
            Action::UpdateProduct { id, spec, changes } => {
                format!("~ update product {} ({id}): {}", spec.key, changes.join(", "))
            }
            Action::KeepProduct { id, spec } => format!("= unchanged product {} ({id})", spec.key),
            Action::CreatePrice { spec, replaces } => {
                let mut line = format!("+ create price {} ({}, \"{}\")", spec.lookup_key, spec.describe(), spec.nickname);
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
    pub create: usize,
    pub update: usize,
    pub archive: usize,
    /// What only a person can do (see [`Action::EndpointApiVersion`]).
    pub by_hand: usize,
}

impl Plan {
    /// Compares `catalog` with `current`. `webhook_url` is `None` for `status` without a URL: an
    /// endpoint found by metadata alone is then compared on its events only.
    pub fn new(catalog: &Catalog, webhook_url: Option<&str>, current: &Current) -> Self {
        let mut actions = Vec::new();

        let product_id = match &current.product {
            None => {
                actions.push(Action::CreateProduct {
                    spec: catalog.product.clone(),
                });
                None
            }
            Some(found) => {
                let mut changes = Vec::new();
                if found.name != catalog.product.name {
                    changes.push(format!(
                        "name \"{}\" → \"{}\"",
                        found.name, catalog.product.name
                    ));
                }
                if catalog.product.description.is_some()
                    && found.description != catalog.product.description
                {
                    changes.push("description".to_owned());
                }
                let id = found.id.clone();
                actions.push(if changes.is_empty() {
                    Action::KeepProduct {
                        id: id.clone(),
                        spec: catalog.product.clone(),
                    }
                } else {
                    Action::UpdateProduct {
                        id: id.clone(),
                        spec: catalog.product.clone(),
                        changes,
                    }
                });
                Some(id)
            }
        };

        for spec in &catalog.prices {
            let found = current
                .prices
                .iter()
                .find(|p| p.lookup_key == spec.lookup_key);
            match found {
                Some(price)
                    if product_id.as_deref() == Some(&price.product) && same_terms(spec, price) =>
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
                }
                Some(price) => {
                    actions.push(Action::CreatePrice {
                        spec: spec.clone(),
                        replaces: Some(price.clone()),
                    });
                    actions.push(Action::ArchivePrice {
                        price: price.clone(),
                    });
                }
                None => actions.push(Action::CreatePrice {
                    spec: spec.clone(),
                    replaces: None,
                }),
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
        Plan { actions }
    }

    pub fn has_changes(&self) -> bool {
        self.actions.iter().any(Action::is_change)
    }

    pub fn counts(&self) -> Counts {
        let mut counts = Counts::default();
        for action in &self.actions {
            match action {
                Action::CreateProduct { .. }
                | Action::CreatePrice { .. }
                | Action::CreateEndpoint { .. }
                | Action::MissingEndpoint => counts.create += 1,
                Action::UpdateProduct { .. }
                | Action::UpdatePrice { .. }
                | Action::UpdateEndpoint { .. } => counts.update += 1,
                Action::ArchivePrice { .. } => counts.archive += 1,
                Action::EndpointApiVersion { .. } => counts.by_hand += 1,
                Action::KeepProduct { .. }
                | Action::KeepPrice { .. }
                | Action::KeepEndpoint { .. } => {}
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
                "Plan: {} to create, {} to update, {} to archive{}.",
                c.create,
                c.update,
                c.archive,
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

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://billing.example.com/webhook/stripe";

    fn in_sync(catalog: &Catalog) -> Current {
        Current {
            product: Some(CurrentProduct {
                id: "prod_1".into(),
                name: catalog.product.name.clone(),
                description: None,
            }),
            prices: catalog
                .prices
                .iter()
                .enumerate()
                .map(|(i, p)| CurrentPrice {
                    id: format!("price_{i}"),
                    lookup_key: p.lookup_key.clone(),
                    product: "prod_1".into(),
                    unit_amount: Some(p.unit_amount),
                    currency: p.currency.clone(),
                    interval: Some(p.interval.as_str().into()),
                    interval_count: 1,
                    nickname: Some(p.nickname.clone()),
                })
                .collect(),
            endpoint: Some(CurrentEndpoint {
                id: "we_1".into(),
                url: URL.into(),
                enabled_events: catalog.webhook.enabled_events.clone(),
                status: "enabled".into(),
                api_version: Some(billing_stripe::API_VERSION.into()),
            }),
        }
    }

    #[test]
    fn an_empty_account_gets_everything_created() {
        let catalog = Catalog::builtin();
        let plan = Plan::new(&catalog, Some(URL), &Current::default());
        assert_eq!(
            plan.counts(),
            Counts {
                create: 5,
                update: 0,
                archive: 0,
                by_hand: 0
            }
        );
        let text = plan.render();
        assert!(
            text.contains("+ create price billing_monthly (5499 cad/month, \"Monthly Plan\")"),
            "{text}"
        );
        assert!(text.contains(
            "+ create webhook endpoint https://billing.example.com/webhook/stripe (18 events)"
        ));
        assert!(
            text.ends_with("Plan: 5 to create, 0 to update, 0 to archive.\n"),
            "{text}"
        );
    }

    #[test]
    fn a_matching_account_needs_nothing() {
        let catalog = Catalog::builtin();
        let plan = Plan::new(&catalog, Some(URL), &in_sync(&catalog));
        assert!(!plan.has_changes());
        assert_eq!(plan.actions.len(), 5);
        assert!(
            plan.render()
                .ends_with("No changes. The Stripe account matches the catalog.\n")
        );
    }

    #[test]
    fn a_changed_amount_replaces_and_archives() {
        let catalog = Catalog::builtin();
        let mut current = in_sync(&catalog);
        current.prices[0].unit_amount = Some(4999);
        let plan = Plan::new(&catalog, Some(URL), &current);
        assert_eq!(
            plan.counts(),
            Counts {
                create: 1,
                update: 0,
                archive: 1,
                by_hand: 0
            }
        );
        let old = current.prices[0].clone();
        assert!(plan.actions.contains(&Action::CreatePrice {
            spec: catalog.prices[0].clone(),
            replaces: Some(old.clone())
        }));
        assert!(plan.actions.contains(&Action::ArchivePrice { price: old }));
        assert!(
            plan.render()
                .contains("- archive price price_0 (was billing_monthly, 4999 cad/month)")
        );
    }

    #[test]
    fn a_changed_interval_or_product_also_replaces() {
        let catalog = Catalog::builtin();
        let mut current = in_sync(&catalog);
        current.prices[1].interval = Some("week".into());
        current.prices[2].product = "prod_other".into();
        let plan = Plan::new(&catalog, Some(URL), &current);
        assert_eq!(
            plan.counts(),
            Counts {
                create: 2,
                update: 0,
                archive: 2,
                by_hand: 0
            }
        );
    }

    #[test]
    fn a_new_product_takes_over_existing_lookup_keys() {
        let catalog = Catalog::builtin();
        let mut current = in_sync(&catalog);
        current.product = None;
        let plan = Plan::new(&catalog, Some(URL), &current);
        assert_eq!(
            plan.counts(),
            Counts {
                create: 4,
                update: 0,
                archive: 3,
                by_hand: 0
            }
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
        assert_eq!(
            plan.counts(),
            Counts {
                create: 0,
                update: 1,
                archive: 0,
                by_hand: 0
            }
        );
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
        let plan = Plan::new(&catalog, Some(URL), &current);
        assert_eq!(
            plan.counts(),
            Counts {
                create: 0,
                update: 2,
                archive: 0,
                by_hand: 0
            }
        );
    }

    #[test]
    fn status_without_a_url_reports_a_missing_endpoint() {
        let catalog = Catalog::builtin();
        let mut current = in_sync(&catalog);
        assert!(!Plan::new(&catalog, None, &current).has_changes());
        current.endpoint = None;
        let plan = Plan::new(&catalog, None, &current);
        assert_eq!(plan.actions.last(), Some(&Action::MissingEndpoint));
        assert!(plan.has_changes());
    }
}
