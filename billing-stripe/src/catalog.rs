//! The catalog: what we sell (one product, its recurring prices) and which events our webhook
//! endpoint wants, as a TOML file with a built-in default.
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

/// The product everything is sold under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductSpec {
    /// Stable identity, stored in the product's metadata: renaming the product keeps it.
    pub key: String,
    pub name: String,
    pub description: Option<String>,
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
    pub webhook: WebhookSpec,
}

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
    webhook: RawWebhook,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProduct {
    key: Spanned<String>,
    name: Spanned<String>,
    description: Option<String>,
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
        let product = ProductSpec {
            key,
            name: name.to_owned(),
            description: raw.product.description,
        };

        if raw.prices.is_empty() {
            return Err(at(None, "the catalog has no [[prices]]".into()));
        }
        let mut keys = HashSet::new();
        let mut lookup_keys = HashSet::new();
        let mut prices = Vec::new();
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
            prices.push(PriceSpec {
                key,
                nickname,
                lookup_key,
                unit_amount,
                currency,
                interval,
                interval_count,
            });
        }

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
            webhook: WebhookSpec { enabled_events },
        })
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
        assert_eq!(c.webhook.enabled_events.len(), 18);
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
