//! The catalog: what we sell (one product, its recurring prices, the features each plan grants),
//! how the customer portal lets subscribers change plan, and which events our webhook endpoint
//! wants, as a TOML file with a built-in default.
//!
//! Features (Stripe's entitlements) are granted by products, never by prices, so a price that
//! grants features of its own beyond the product's is sold under a product of its own, a *plan
//! product* ([`Catalog::plan_products`]), which grants the product's features and the price's.
//!
//! `stripe-setup` provisions it and billing-service sells from it, so both read it here. A
//! mistake in the file is reported with its line before anything talks to Stripe, because a
//! half-applied catalog is worse than none.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;
use toml::Spanned;

/// The built-in catalog (the original example: Monthly, Daily and Annual plans in CAD).
pub const DEFAULT_TOML: &str = include_str!("../catalog.default.toml");

/// How a recurring price repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interval {
    Day,
    Week,
    Month,
    Year,
}

impl Interval {
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::Day => "day",
            Interval::Week => "week",
            Interval::Month => "month",
            Interval::Year => "year",
        }
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Interval {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "day" => Ok(Interval::Day),
            "week" => Ok(Interval::Week),
            "month" => Ok(Interval::Month),
            "year" => Ok(Interval::Year),
            _ => Err(()),
        }
    }
}

/// The product everything is sold under (or, from [`Catalog::plan_products`], one plan's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductSpec {
    /// Stable identity, stored in the product's metadata: renaming the product keeps it. A plan
    /// product's is `<product key>.<price key>`.
    pub key: String,
    pub name: String,
    pub description: Option<String>,
    /// The lookup keys of the features this product grants, in catalog order.
    pub features: Vec<String>,
}

/// A feature (Stripe's `entitlements.feature`): something a plan entitles its subscriber to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureSpec {
    /// How Stripe, our entitlements table and the frontend name it; unique among active features.
    pub lookup_key: String,
    /// For people (the Dashboard); not shown to customers.
    pub name: String,
}

/// How switching plan in the customer portal is billed (Stripe's `proration_behavior`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ProrationBehavior {
    /// Credit the unused time and charge the new plan's, on the next invoice.
    #[default]
    CreateProrations,
    /// No proration: the new price applies from the next period.
    None,
    /// Prorate and invoice at once.
    AlwaysInvoice,
}

impl ProrationBehavior {
    pub fn as_str(self) -> &'static str {
        match self {
            ProrationBehavior::CreateProrations => "create_prorations",
            ProrationBehavior::None => "none",
            ProrationBehavior::AlwaysInvoice => "always_invoice",
        }
    }
}

impl fmt::Display for ProrationBehavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProrationBehavior {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "create_prorations" => Ok(ProrationBehavior::CreateProrations),
            "none" => Ok(ProrationBehavior::None),
            "always_invoice" => Ok(ProrationBehavior::AlwaysInvoice),
            _ => Err(()),
        }
    }
}

/// The customer-portal configuration's settings that the catalog chooses. The rest is fixed:
/// switching among the catalog's prices, cancelling at the period's end, updating the payment
/// method, the invoice history.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortalSpec {
    pub proration_behavior: ProrationBehavior,
    /// The line shown at the portal's top (Stripe: at most 60 characters).
    pub headline: Option<String>,
    pub privacy_policy_url: Option<String>,
    pub terms_of_service_url: Option<String>,
}

/// One recurring price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceSpec {
    /// Stable identity within the catalog, stored in the price's metadata.
    pub key: String,
    pub nickname: String,
    /// How billing-service and Stripe find the current price: a changed amount makes a new price
    /// that takes over this key.
    pub lookup_key: String,
    /// Minor units (cents), always positive.
    pub unit_amount: i64,
    /// ISO 4217, lower case as Stripe stores it.
    pub currency: String,
    pub interval: Interval,
    pub interval_count: u32,
    /// The lookup keys of the features this plan grants beyond the product's, in catalog order.
    /// Not empty: the price is sold under a plan product of its own.
    pub features: Vec<String>,
}

impl PriceSpec {
    /// `5499 cad/month`, or `299 cad/3 months`.
    pub fn describe(&self) -> String {
        if self.interval_count == 1 {
            format!("{} {}/{}", self.unit_amount, self.currency, self.interval)
        } else {
            format!(
                "{} {}/{} {}s",
                self.unit_amount, self.currency, self.interval_count, self.interval
            )
        }
    }
}

/// The webhook endpoint's subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSpec {
    /// Sorted and without duplicates, so comparing with Stripe's list is order-insensitive.
    pub enabled_events: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    pub product: ProductSpec,
    pub prices: Vec<PriceSpec>,
    /// Every feature the product or a price grants, in catalog order.
    pub features: Vec<FeatureSpec>,
    pub portal: PortalSpec,
    pub webhook: WebhookSpec,
}

/// Stripe's customer portal lists at most this many products, and it lists the main product and
/// every plan product.
pub const MAX_PORTAL_PRODUCTS: usize = 10;
/// Stripe's limits on a feature's lookup key and name.
const FEATURE_KEY_MAX: usize = 80;
const FEATURE_NAME_MAX: usize = 80;
/// Stripe's limit on the portal's headline.
const HEADLINE_MAX: usize = 60;

/// A catalog that cannot be used, with where the problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogError {
    /// The file name (or `built-in catalog`).
    pub source: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.source, self.message),
            None => write!(f, "{}: {}", self.source, self.message),
        }
    }
}

impl std::error::Error for CatalogError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    product: RawProduct,
    #[serde(default)]
    prices: Vec<RawPrice>,
    #[serde(default)]
    features: Vec<RawFeature>,
    portal: Option<RawPortal>,
    webhook: RawWebhook,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProduct {
    key: Spanned<String>,
    name: Spanned<String>,
    description: Option<String>,
    features: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeature {
    lookup_key: Spanned<String>,
    name: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPortal {
    proration_behavior: Option<Spanned<String>>,
    headline: Option<Spanned<String>>,
    privacy_policy_url: Option<Spanned<String>>,
    terms_of_service_url: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    key: Spanned<String>,
    nickname: Spanned<String>,
    lookup_key: Spanned<String>,
    unit_amount: Spanned<i64>,
    currency: Spanned<String>,
    interval: Spanned<String>,
    interval_count: Option<Spanned<i64>>,
    features: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    enabled_events: Spanned<Vec<Spanned<String>>>,
}

impl Catalog {
    /// The built-in catalog.
    pub fn builtin() -> Self {
        // The embedded file is checked by this crate's tests; failing here is a build defect.
        Self::parse("built-in catalog", DEFAULT_TOML).expect("the built-in catalog is valid")
    }

    /// Reads a catalog file.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| CatalogError {
            source: source.clone(),
            line: None,
            message: format!("cannot read the catalog: {e}"),
        })?;
        Self::parse(&source, &text)
    }

    /// Parses and validates catalog TOML. `source` names it in errors.
    pub fn parse(source: &str, text: &str) -> Result<Self, CatalogError> {
        let at = |span: Option<Range<usize>>, message: String| CatalogError {
            source: source.to_owned(),
            line: span.map(|s| line_of(text, s.start)),
            message,
        };
        let raw: RawCatalog =
            toml::from_str(text).map_err(|e| at(e.span(), e.message().trim().to_owned()))?;

        let key = validate_key(&raw.product.key, "product key")
            .map_err(|m| at(Some(raw.product.key.span()), m))?;
        let name = raw.product.name.get_ref().trim();
        if name.is_empty() {
            return Err(at(
                Some(raw.product.name.span()),
                "the product name is empty".into(),
            ));
        }
        let mut features = Vec::new();
        for f in raw.features {
            let lookup_key = validate_key(&f.lookup_key, "feature lookup key")
                .map_err(|m| at(Some(f.lookup_key.span()), m))?;
            if lookup_key.len() > FEATURE_KEY_MAX {
                return Err(at(
                    Some(f.lookup_key.span()),
                    format!("a feature lookup key has at most {FEATURE_KEY_MAX} characters"),
                ));
            }
            if features
                .iter()
                .any(|known: &FeatureSpec| known.lookup_key == lookup_key)
            {
                return Err(at(
                    Some(f.lookup_key.span()),
                    format!("duplicate feature lookup key '{lookup_key}'"),
                ));
            }
            let name = f.name.get_ref().trim();
            if name.is_empty() || name.chars().count() > FEATURE_NAME_MAX {
                return Err(at(
                    Some(f.name.span()),
                    format!("a feature name has 1 to {FEATURE_NAME_MAX} characters"),
                ));
            }
            features.push(FeatureSpec {
                lookup_key,
                name: name.to_owned(),
            });
        }
        let granted = |list: Option<Spanned<Vec<Spanned<String>>>>,
                       whose: &str|
         -> Result<Vec<String>, CatalogError> {
            let mut keys: Vec<String> = Vec::new();
            for key in list.map(Spanned::into_inner).unwrap_or_default() {
                let name = key.get_ref().trim();
                if !features.iter().any(|f| f.lookup_key == name) {
                    return Err(at(
                        Some(key.span()),
                        format!(
                            "{whose} grants the feature '{name}', which no [[features]] entry defines"
                        ),
                    ));
                }
                if keys.iter().any(|k| k == name) {
                    return Err(at(
                        Some(key.span()),
                        format!("{whose} lists the feature '{name}' twice"),
                    ));
                }
                keys.push(name.to_owned());
            }
            Ok(keys)
        };
        let product = ProductSpec {
            key,
            name: name.to_owned(),
            description: raw.product.description,
            features: granted(raw.product.features, "the product")?,
        };

        if raw.prices.is_empty() {
            return Err(at(None, "the catalog has no [[prices]]".into()));
        }
        let mut keys = HashSet::new();
        let mut lookup_keys = HashSet::new();
        let mut prices = Vec::new();
        let mut plan_products = 0;
        for p in raw.prices {
            let key = validate_key(&p.key, "price key").map_err(|m| at(Some(p.key.span()), m))?;
            if !keys.insert(key.clone()) {
                return Err(at(
                    Some(p.key.span()),
                    format!("duplicate price key '{key}'"),
                ));
            }
            let lookup_key = validate_key(&p.lookup_key, "lookup key")
                .map_err(|m| at(Some(p.lookup_key.span()), m))?;
            if lookup_key.len() > 200 {
                return Err(at(
                    Some(p.lookup_key.span()),
                    "a lookup key has at most 200 characters".into(),
                ));
            }
            if !lookup_keys.insert(lookup_key.clone()) {
                return Err(at(
                    Some(p.lookup_key.span()),
                    format!("duplicate lookup key '{lookup_key}'"),
                ));
            }
            let unit_amount = *p.unit_amount.get_ref();
            if unit_amount <= 0 {
                return Err(at(
                    Some(p.unit_amount.span()),
                    format!(
                        "unit_amount must be a positive amount in minor units (cents), not {unit_amount}"
                    ),
                ));
            }
            let currency = p.currency.get_ref().trim().to_ascii_lowercase();
            if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
                return Err(at(
                    Some(p.currency.span()),
                    format!(
                        "currency '{}' is not a three-letter ISO code such as cad",
                        p.currency.get_ref()
                    ),
                ));
            }
            let interval = p.interval.get_ref().parse::<Interval>().map_err(|()| {
                at(
                    Some(p.interval.span()),
                    format!(
                        "unknown interval '{}' (expected day, week, month or year)",
                        p.interval.get_ref()
                    ),
                )
            })?;
            let interval_count = match &p.interval_count {
                None => 1,
                Some(count) => u32::try_from(*count.get_ref())
                    .ok()
                    .filter(|c| *c >= 1)
                    .ok_or_else(|| {
                        at(
                            Some(count.span()),
                            "interval_count must be 1 or more".into(),
                        )
                    })?,
            };
            let nickname = p.nickname.get_ref().trim().to_owned();
            if nickname.is_empty() {
                return Err(at(
                    Some(p.nickname.span()),
                    "the price nickname is empty".into(),
                ));
            }
            let features_span = p.features.as_ref().map(Spanned::span);
            let mut own = granted(p.features, &format!("the price '{key}'"))?;
            own.retain(|f| !product.features.contains(f));
            if !own.is_empty() {
                plan_products += 1;
                if plan_products + 1 > MAX_PORTAL_PRODUCTS {
                    return Err(at(
                        features_span,
                        format!(
                            "at most {} prices may grant features of their own: each is sold as \
                             a product of its own, and Stripe's customer portal lists at most \
                             {MAX_PORTAL_PRODUCTS} products",
                            MAX_PORTAL_PRODUCTS - 1
                        ),
                    ));
                }
            }
            prices.push(PriceSpec {
                key,
                nickname,
                lookup_key,
                unit_amount,
                currency,
                interval,
                interval_count,
                features: own,
            });
        }

        let portal = match raw.portal {
            None => PortalSpec::default(),
            Some(portal) => {
                let proration_behavior = match portal.proration_behavior {
                    None => ProrationBehavior::default(),
                    Some(value) => value.get_ref().trim().parse().map_err(|()| {
                        at(
                            Some(value.span()),
                            format!(
                                "unknown proration_behavior '{}' (expected create_prorations, none \
                                 or always_invoice)",
                                value.get_ref()
                            ),
                        )
                    })?,
                };
                let headline = match portal.headline {
                    None => None,
                    Some(h) => {
                        let text = h.get_ref().trim();
                        if text.is_empty() || text.chars().count() > HEADLINE_MAX {
                            return Err(at(
                                Some(h.span()),
                                format!("the portal headline has 1 to {HEADLINE_MAX} characters"),
                            ));
                        }
                        Some(text.to_owned())
                    }
                };
                let url = |value: Option<Spanned<String>>, what: &str| match value {
                    None => Ok(None),
                    Some(v) => validate_url(v.get_ref())
                        .map(Some)
                        .map_err(|m| at(Some(v.span()), format!("{what}: {m}"))),
                };
                PortalSpec {
                    proration_behavior,
                    headline,
                    privacy_policy_url: url(portal.privacy_policy_url, "privacy_policy_url")?,
                    terms_of_service_url: url(portal.terms_of_service_url, "terms_of_service_url")?,
                }
            }
        };

        let events_span = raw.webhook.enabled_events.span();
        let mut enabled_events = Vec::new();
        for event in raw.webhook.enabled_events.into_inner() {
            let name = event.get_ref().trim();
            let known = stripe_misc::webhook_endpoint::CreateWebhookEndpointEnabledEvents::from_str(name)
                .map(|e| !matches!(e, stripe_misc::webhook_endpoint::CreateWebhookEndpointEnabledEvents::Unknown(_)))
                .unwrap_or(false);
            if !known {
                return Err(at(
                    Some(event.span()),
                    format!("'{name}' is not a Stripe event type"),
                ));
            }
            enabled_events.push(name.to_owned());
        }
        if enabled_events.is_empty() {
            return Err(at(
                Some(events_span),
                "the webhook has no enabled_events".into(),
            ));
        }
        enabled_events.sort();
        enabled_events.dedup();

        Ok(Catalog {
            product,
            prices,
            features,
            portal,
            webhook: WebhookSpec { enabled_events },
        })
    }

    /// The catalog key of the product `price` is sold under: the product's, or for a price with
    /// features of its own, its plan product's (`<product key>.<price key>`).
    pub fn product_key_of(&self, price: &PriceSpec) -> String {
        if price.features.is_empty() {
            self.product.key.clone()
        } else {
            format!("{}.{}", self.product.key, price.key)
        }
    }

    /// The plan product of `price`, if it grants features of its own: named `<product name>
    /// <price nickname>`, granting the product's features and the price's.
    pub fn plan_product(&self, price: &PriceSpec) -> Option<ProductSpec> {
        if price.features.is_empty() {
            return None;
        }
        let mut features = self.product.features.clone();
        features.extend(price.features.iter().cloned());
        Some(ProductSpec {
            key: self.product_key_of(price),
            name: format!("{} {}", self.product.name, price.nickname),
            description: self.product.description.clone(),
            features,
        })
    }

    /// Every plan product, in the order of their prices.
    pub fn plan_products(&self) -> Vec<ProductSpec> {
        self.prices
            .iter()
            .filter_map(|p| self.plan_product(p))
            .collect()
    }

    /// The catalog keys of every product the catalog sells under: the product's, then the plan
    /// products'. (`account::find_products` finds them.)
    pub fn product_keys(&self) -> Vec<String> {
        let mut keys = vec![self.product.key.clone()];
        keys.extend(self.plan_products().into_iter().map(|p| p.key));
        keys
    }

    /// The lookup keys of the features a subscriber to the price with `lookup_key` is entitled
    /// to (the product's, then the price's own); `None` for a lookup key not in the catalog.
    pub fn features_of(&self, lookup_key: &str) -> Option<Vec<String>> {
        let price = self.price_by_lookup_key(lookup_key)?;
        let mut features = self.product.features.clone();
        features.extend(price.features.iter().cloned());
        Some(features)
    }

    pub fn feature(&self, lookup_key: &str) -> Option<&FeatureSpec> {
        self.features.iter().find(|f| f.lookup_key == lookup_key)
    }

    /// The lookup keys of every price, in catalog order.
    pub fn lookup_keys(&self) -> Vec<String> {
        self.prices.iter().map(|p| p.lookup_key.clone()).collect()
    }

    pub fn price_by_lookup_key(&self, lookup_key: &str) -> Option<&PriceSpec> {
        self.prices.iter().find(|p| p.lookup_key == lookup_key)
    }
}

fn validate_key(key: &Spanned<String>, what: &str) -> Result<String, String> {
    let key = key.get_ref().trim();
    if key.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err(format!(
            "the {what} '{key}' may only hold letters, digits, '_', '-' and '.'"
        ));
    }
    Ok(key.to_owned())
}

/// An absolute http(s) URL, as Stripe accepts for the portal's links.
fn validate_url(value: &str) -> Result<String, String> {
    let value = value.trim();
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .ok_or_else(|| format!("'{value}' is not an http(s) URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || host.contains('@') || value.chars().any(char::is_whitespace) {
        return Err(format!("'{value}' is not an http(s) URL with a host"));
    }
    Ok(value.to_owned())
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_catalog_is_the_original_example() {
        let c = Catalog::builtin();
        assert_eq!(c.product.key, "billing");
        let summary: Vec<_> = c
            .prices
            .iter()
            .map(|p| (p.nickname.as_str(), p.describe()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("Monthly Plan", "5499 cad/month".to_owned()),
                ("Daily Plan", "299 cad/day".to_owned()),
                ("Annual Plan", "50000 cad/year".to_owned()),
            ]
        );
        assert_eq!(
            c.lookup_keys(),
            ["billing_monthly", "billing_daily", "billing_annual"]
        );
        assert!(c.webhook.enabled_events.len() >= 18);
        for original in [
            "charge.failed",
            "charge.succeeded",
            "customer.created",
            "subscription_schedule.created",
        ] {
            assert!(c.webhook.enabled_events.iter().any(|e| e == original));
        }
        for supported in crate::fixtures::SUPPORTED {
            assert!(
                c.webhook.enabled_events.iter().any(|e| e == supported),
                "{supported}"
            );
        }
    }

    #[test]
    fn the_builtin_catalog_grants_features_and_sells_the_annual_plan_on_its_own_product() {
        let c = Catalog::builtin();
        let features: Vec<_> = c
            .features
            .iter()
            .map(|f| (f.lookup_key.as_str(), f.name.as_str()))
            .collect();
        assert_eq!(
            features,
            [
                ("billing_basic", "Billing basics"),
                ("priority_support", "Priority support")
            ]
        );
        assert_eq!(c.product.features, ["billing_basic"]);
        assert_eq!(c.product_keys(), ["billing", "billing.annual"]);
        let plan = c.plan_products().remove(0);
        assert_eq!(plan.name, "billing Annual Plan");
        assert_eq!(plan.features, ["billing_basic", "priority_support"]);
        assert_eq!(c.product_key_of(&c.prices[0]), "billing");
        assert_eq!(c.product_key_of(&c.prices[2]), "billing.annual");
        assert_eq!(c.features_of("billing_monthly").unwrap(), ["billing_basic"]);
        assert_eq!(
            c.features_of("billing_annual").unwrap(),
            ["billing_basic", "priority_support"]
        );
        assert_eq!(c.features_of("nope"), None);
        assert_eq!(
            c.portal.proration_behavior,
            ProrationBehavior::CreateProrations
        );
        assert_eq!(c.portal.headline, None);
    }

    fn replaced(from: &str, to: &str) -> String {
        assert!(DEFAULT_TOML.contains(from));
        DEFAULT_TOML.replacen(from, to, 1)
    }

    fn error(text: &str) -> String {
        Catalog::parse("catalog.toml", text)
            .unwrap_err()
            .to_string()
    }

    fn line_of_text(needle: &str, text: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).unwrap() + 1
    }

    #[test]
    fn errors_name_the_line() {
        let text = replaced("interval = \"day\"", "interval = \"weekly\"");
        let line = line_of_text("weekly", &text);
        assert_eq!(
            error(&text),
            format!(
                "catalog.toml:{line}: unknown interval 'weekly' (expected day, week, month or year)"
            )
        );

        let text = replaced("unit_amount = 299", "unit_amount = -299");
        let line = line_of_text("-299", &text);
        assert!(error(&text).starts_with(&format!(
            "catalog.toml:{line}: unit_amount must be a positive"
        )));

        let text = replaced(
            "lookup_key = \"billing_annual\"",
            "lookup_key = \"billing_monthly\"",
        );
        let line = line_of_text("key = \"annual\"", &text) + 2;
        assert_eq!(
            error(&text),
            format!("catalog.toml:{line}: duplicate lookup key 'billing_monthly'")
        );

        let text = replaced("key = \"daily\"", "key = \"monthly\"");
        let line = line_of_text("Daily Plan", &text) - 1;
        assert_eq!(
            error(&text),
            format!("catalog.toml:{line}: duplicate price key 'monthly'")
        );

        let text = replaced("currency = \"cad\"", "currency = \"dollars\"");
        assert!(error(&text).contains("not a three-letter ISO code"));

        let text = replaced("\"invoice.paid\"", "\"invoice.payed\"");
        let line = line_of_text("invoice.payed", &text);
        assert_eq!(
            error(&text),
            format!("catalog.toml:{line}: 'invoice.payed' is not a Stripe event type")
        );
    }

    #[test]
    fn feature_and_portal_errors_name_the_line() {
        let text = replaced(
            "features = [\"priority_support\"]",
            "features = [\"priority_support\", \"gold\"]",
        );
        let line = line_of_text("\"gold\"", &text);
        assert_eq!(
            error(&text),
            format!(
                "catalog.toml:{line}: the price 'annual' grants the feature 'gold', which no \
                 [[features]] entry defines"
            )
        );

        let text = replaced(
            "features = [\"billing_basic\"]",
            "features = [\"billing_basic\", \"nope\"]",
        );
        let line = line_of_text("\"nope\"", &text);
        assert_eq!(
            error(&text),
            format!(
                "catalog.toml:{line}: the product grants the feature 'nope', which no \
                 [[features]] entry defines"
            )
        );

        let text = replaced(
            "lookup_key = \"priority_support\"",
            "lookup_key = \"billing_basic\"",
        );
        let line = text
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains("lookup_key = \"billing_basic\""))
            .nth(1)
            .unwrap()
            .0
            + 1;
        assert_eq!(
            error(&text),
            format!("catalog.toml:{line}: duplicate feature lookup key 'billing_basic'")
        );

        let text = replaced(
            "proration_behavior = \"create_prorations\"",
            "proration_behavior = \"sometimes\"",
        );
        let line = line_of_text("sometimes", &text);
        assert_eq!(
            error(&text),
            format!(
                "catalog.toml:{line}: unknown proration_behavior 'sometimes' (expected \
                 create_prorations, none or always_invoice)"
            )
        );

        let text = replaced("name = \"Billing basics\"", "name = \" \"");
        let line = line_of_text("name = \" \"", &text);
        assert!(
            error(&text).starts_with(&format!("catalog.toml:{line}: a feature name has")),
            "{}",
            error(&text)
        );

        let text = replaced(
            "lookup_key = \"billing_basic\"",
            "lookup_key = \"billing basic\"",
        );
        let line = line_of_text("billing basic", &text);
        assert!(error(&text).starts_with(&format!("catalog.toml:{line}: the feature lookup key")));

        let text = replaced(
            "proration_behavior = \"create_prorations\"",
            "proration_behavior = \"none\"\nprivacy_policy_url = \"example.com/privacy\"",
        );
        let line = line_of_text("example.com/privacy", &text);
        assert_eq!(
            error(&text),
            format!(
                "catalog.toml:{line}: privacy_policy_url: 'example.com/privacy' is not an \
                 http(s) URL"
            )
        );

        let text = replaced("[portal]", "[portal]\nreturn_url = \"https://x\"");
        let e = Catalog::parse("c.toml", &text).unwrap_err();
        assert_eq!(e.line, Some(line_of_text("return_url", &text)), "{e}");
    }

    #[test]
    fn features_and_portal_are_optional() {
        let text = "[product]\nkey = \"p\"\nname = \"P\"\n\n[[prices]]\nkey = \"q\"\nnickname = \"Q\"\n\
                    lookup_key = \"p_q\"\nunit_amount = 1\ncurrency = \"EUR\"\ninterval = \"week\"\n\n\
                    [webhook]\nenabled_events = [\"invoice.paid\"]\n";
        let c = Catalog::parse("c.toml", text).unwrap();
        assert!(c.features.is_empty() && c.product.features.is_empty());
        assert_eq!(c.portal, PortalSpec::default());
        assert_eq!(c.product_keys(), ["p"]);

        let text = format!(
            "[[features]]\nlookup_key = \"f\"\nname = \"F\"\n\n[portal]\n\
             proration_behavior = \"always_invoice\"\nheadline = \" Plans \"\n\
             terms_of_service_url = \"https://example.com/terms\"\n\n{}",
            text.replace(
                "interval = \"week\"\n",
                "interval = \"week\"\nfeatures = [\"f\"]\n"
            )
        );
        let c = Catalog::parse("c.toml", &text).unwrap();
        assert_eq!(c.prices[0].features, ["f"]);
        assert_eq!(c.product_keys(), ["p", "p.q"]);
        assert_eq!(
            c.portal,
            PortalSpec {
                proration_behavior: ProrationBehavior::AlwaysInvoice,
                headline: Some("Plans".into()),
                privacy_policy_url: None,
                terms_of_service_url: Some("https://example.com/terms".into()),
            }
        );
        // A price listing a feature the product already grants needs no product of its own.
        let text = text.replace("name = \"P\"\n", "name = \"P\"\nfeatures = [\"f\"]\n");
        let c = Catalog::parse("c.toml", &text).unwrap();
        assert!(c.prices[0].features.is_empty());
        assert_eq!(c.product_keys(), ["p"]);
    }

    #[test]
    fn syntax_and_unknown_fields_are_errors_with_lines() {
        let text = replaced(
            "nickname = \"Daily Plan\"",
            "nickname = \"Daily Plan\"\ncolour = \"red\"",
        );
        let line = line_of_text("colour", &text);
        let e = Catalog::parse("c.toml", &text).unwrap_err();
        assert_eq!(e.line, Some(line), "{e}");
        assert!(e.message.contains("colour"), "{e}");

        let e = Catalog::parse("c.toml", "[product]\nkey = \n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");

        let text = replaced(
            "name = \"Priority support\"",
            "name = \"Priority support\"\ntier = 2",
        );
        let e = Catalog::parse("c.toml", &text).unwrap_err();
        assert_eq!(e.line, Some(line_of_text("tier = 2", &text)), "{e}");
        assert!(e.message.contains("tier"), "{e}");
    }

    #[test]
    fn defaults_and_normalisation() {
        let text = "[product]\nkey = \"p\"\nname = \"P\"\n\n[[prices]]\nkey = \"q\"\nnickname = \"Q\"\n\
                    lookup_key = \"p_q\"\nunit_amount = 1\ncurrency = \"EUR\"\ninterval = \"week\"\n\
                    interval_count = 2\n\n[webhook]\nenabled_events = [\"invoice.paid\", \"charge.failed\", \"invoice.paid\"]\n";
        let c = Catalog::parse("c.toml", text).unwrap();
        assert_eq!(c.prices[0].currency, "eur");
        assert_eq!(c.prices[0].describe(), "1 eur/2 weeks");
        assert_eq!(c.webhook.enabled_events, ["charge.failed", "invoice.paid"]);
        assert!(c.price_by_lookup_key("p_q").is_some());
    }
}
