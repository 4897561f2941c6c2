//! What is for sale: the active recurring prices of the catalog's product, read from Stripe and
//! cached briefly so that a traffic spike does not run into Stripe's rate limit.
//!
//! The product is the one whose prices hold the catalog's lookup keys (lookup keys are unique in
//! an account), so the service needs no product id in its configuration and finds exactly what
//! `stripe-setup init` provisioned. Every price of that product is listed, across all pages,
//! including ones added by hand in the Dashboard.

use std::sync::Arc;
use std::time::{Duration, Instant};

use billing_stripe::catalog::Catalog;
use billing_stripe::stripe_shared::{Price, PriceType, RecurringInterval};
use billing_stripe::{StripeClient, StripeError, account};
use serde::Serialize;
use tokio::sync::Mutex;

/// One price, in the shape the frontend reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProductPrice {
    pub id: String,
    pub nickname: Option<String>,
    pub interval: String,
    #[serde(rename = "type")]
    pub price_type: String,
    /// For display, e.g. `CAD $54.99/month`.
    pub price: String,
    pub unit_amount: i64,
    pub currency: String,
    pub lookup_key: Option<String>,
    #[serde(skip)]
    interval_rank: u8,
}

/// Currencies without minor units: Stripe's amounts in them are whole units.
const ZERO_DECIMAL: &[&str] = &[
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// `CAD $54.99/month`, `JPY $500/year`, `USD $10.00/3 months`: the template's format.
pub fn format_price(
    unit_amount: i64,
    currency: &str,
    interval: &str,
    interval_count: u64,
) -> String {
    let currency_lower = currency.to_ascii_lowercase();
    let amount = if ZERO_DECIMAL.contains(&currency_lower.as_str()) {
        unit_amount.to_string()
    } else {
        let sign = if unit_amount < 0 { "-" } else { "" };
        let abs = unit_amount.unsigned_abs();
        format!("{sign}{}.{:02}", abs / 100, abs % 100)
    };
    let per = match interval_count {
        0 | 1 => interval.to_owned(),
        n => format!("{n} {interval}s"),
    };
    format!("{} ${amount}/{per}", currency.to_ascii_uppercase())
}

impl ProductPrice {
    /// `None` for what cannot be sold as a subscription here: one-time prices, prices without a
    /// fixed amount (tiered, customer-chosen).
    fn from_stripe(price: &Price) -> Option<Self> {
        if price.type_ != PriceType::Recurring || !price.active {
            return None;
        }
        let recurring = price.recurring.as_ref()?;
        let unit_amount = price.unit_amount?;
        let (interval, interval_rank) = match recurring.interval {
            RecurringInterval::Day => ("day", 0),
            RecurringInterval::Week => ("week", 1),
            RecurringInterval::Month => ("month", 2),
            RecurringInterval::Year => ("year", 3),
            _ => return None,
        };
        let currency = price.currency.to_string();
        Some(Self {
            id: price.id.to_string(),
            nickname: price.nickname.clone(),
            interval: interval.to_owned(),
            price_type: "recurring".to_owned(),
            price: format_price(unit_amount, &currency, interval, recurring.interval_count),
            unit_amount,
            currency,
            lookup_key: price.lookup_key.clone(),
            interval_rank,
        })
    }
}

/// The catalog's prices, with a short-lived cache.
pub struct Products {
    catalog: Catalog,
    ttl: Duration,
    /// Held while fetching, so concurrent requests on an expired cache make one Stripe call.
    cache: Mutex<Option<(Instant, Arc<Vec<ProductPrice>>)>>,
}

impl Products {
    pub fn new(catalog: Catalog, ttl: Duration) -> Self {
        Self {
            catalog,
            ttl,
            cache: Mutex::new(None),
        }
    }

    /// The prices, from the cache when it is fresh.
    pub async fn list(&self, stripe: &StripeClient) -> Result<Arc<Vec<ProductPrice>>, StripeError> {
        let mut cache = self.cache.lock().await;
        if let Some((at, prices)) = cache.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(prices.clone());
        }
        let prices = Arc::new(self.fetch(stripe).await?);
        *cache = Some((Instant::now(), prices.clone()));
        Ok(prices)
    }

    /// The price `reference` names (a `price_...` id or a lookup key), if it is one of ours.
    /// A miss re-reads Stripe once, so a price added since the cache filled is found.
    pub async fn find(
        &self,
        stripe: &StripeClient,
        reference: &str,
    ) -> Result<Option<ProductPrice>, StripeError> {
        let matches =
            |p: &&ProductPrice| p.id == reference || p.lookup_key.as_deref() == Some(reference);
        if let Some(found) = self.list(stripe).await?.iter().find(matches) {
            return Ok(Some(found.clone()));
        }
        self.cache.lock().await.take();
        Ok(self.list(stripe).await?.iter().find(matches).cloned())
    }

    async fn fetch(&self, stripe: &StripeClient) -> Result<Vec<ProductPrice>, StripeError> {
        let keyed = account::prices_by_lookup_keys(stripe, &self.catalog.lookup_keys()).await?;
        let mut products: Vec<String> = keyed.iter().map(|p| p.product.id().to_string()).collect();
        products.sort();
        products.dedup();
        if products.len() > 1 {
            tracing::warn!(
                ?products,
                "the catalog's lookup keys are spread over several products; listing all of them"
            );
        }
        let mut prices = Vec::new();
        for product in &products {
            let listed = account::active_recurring_prices(stripe, product).await?;
            prices.extend(listed.iter().filter_map(ProductPrice::from_stripe));
        }
        prices.sort_by(|a, b| {
            (a.interval_rank, a.unit_amount, &a.id).cmp(&(b.interval_rank, b.unit_amount, &b.id))
        });
        Ok(prices)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_formatted_like_the_template() {
        assert_eq!(format_price(5499, "cad", "month", 1), "CAD $54.99/month");
        assert_eq!(format_price(299, "cad", "day", 1), "CAD $2.99/day");
        assert_eq!(format_price(50000, "cad", "year", 1), "CAD $500.00/year");
        assert_eq!(format_price(5, "usd", "week", 1), "USD $0.05/week");
        assert_eq!(format_price(500, "jpy", "month", 1), "JPY $500/month");
        assert_eq!(format_price(1000, "eur", "month", 3), "EUR $10.00/3 months");
    }
}
