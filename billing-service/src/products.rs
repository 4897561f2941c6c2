//! What is for sale: the active recurring prices of the catalog's product, read from Stripe and
//! cached briefly so that a traffic spike does not run into Stripe's rate limit.
//!
//! Concurrent requests on an expired cache share one Stripe read, and no lock is held while it
//! runs. A price the list does not hold makes the service read Stripe again (a price may have
//! been added since), but at most once per [`MISS_REFRESH`]: ids made up by a client cannot turn
//! each request into Stripe calls.
//!
//! The products are the ones whose prices hold the catalog's lookup keys (lookup keys are unique
//! in an account): the catalog's product, and the plan products of prices with features of their
//! own. So the service needs no product id in its configuration and finds exactly what
//! `stripe-setup init` provisioned. Every price of those products is listed, across all pages,
//! including ones added by hand in the Dashboard.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use billing_stripe::catalog::Catalog;
use billing_stripe::stripe_shared::{Price, PriceType, RecurringInterval};
use billing_stripe::{StripeClient, StripeError, account};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use serde::Serialize;

/// After a price reference the list does not hold, Stripe is read again only if the list is at
/// least this old.
pub const MISS_REFRESH: Duration = Duration::from_secs(10);

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
    /// The price's product: the main product or a plan product of the catalog.
    #[serde(skip)]
    pub product: String,
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
            product: price.product.id().to_string(),
            interval_rank,
        })
    }
}

type PriceList = Arc<Vec<ProductPrice>>;

/// One read of Stripe, awaited by every request that needs it.
type Refresh = Shared<BoxFuture<'static, Result<PriceList, Arc<StripeError>>>>;

/// The catalog's prices, with a short-lived cache.
pub struct Products {
    catalog: Arc<Catalog>,
    ttl: Duration,
    /// Never held across an await: only to read or swap what is cached and what is in flight.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    cached: Option<(Instant, PriceList)>,
    /// The read under way, with an id to tell it from a later one.
    refreshing: Option<(u64, Refresh)>,
    next_refresh_id: u64,
}

impl Products {
    pub fn new(catalog: Catalog, ttl: Duration) -> Self {
        Self {
            catalog: Arc::new(catalog),
            ttl,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two plain values, consistent after any panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The prices, from the cache when it is fresh.
    pub async fn list(&self, stripe: &StripeClient) -> Result<PriceList, Arc<StripeError>> {
        let refresh = {
            let mut state = self.state();
            if let Some((at, prices)) = &state.cached
                && at.elapsed() < self.ttl
            {
                return Ok(prices.clone());
            }
            self.refresh(&mut state, stripe)
        };
        self.finish(refresh).await
    }

    /// The price `reference` names (a `price_...` id or a lookup key), if it is one of ours.
    pub async fn find(
        &self,
        stripe: &StripeClient,
        reference: &str,
    ) -> Result<Option<ProductPrice>, Arc<StripeError>> {
        let matches =
            |p: &&ProductPrice| p.id == reference || p.lookup_key.as_deref() == Some(reference);
        if let Some(found) = self.list(stripe).await?.iter().find(matches) {
            return Ok(Some(found.clone()));
        }
        let refresh = {
            let mut state = self.state();
            match &state.cached {
                Some((at, _)) if at.elapsed() < MISS_REFRESH => return Ok(None),
                _ => self.refresh(&mut state, stripe),
            }
        };
        Ok(self.finish(refresh).await?.iter().find(matches).cloned())
    }

    /// The read under way, or a new one.
    fn refresh(&self, state: &mut State, stripe: &StripeClient) -> (u64, Refresh) {
        if let Some(refreshing) = &state.refreshing {
            return refreshing.clone();
        }
        let (catalog, stripe) = (self.catalog.clone(), stripe.clone());
        let read = async move {
            fetch(&catalog, &stripe)
                .await
                .map(Arc::new)
                .map_err(Arc::new)
        };
        let id = state.next_refresh_id;
        state.next_refresh_id += 1;
        let refreshing = (id, read.boxed().shared());
        state.refreshing = Some(refreshing.clone());
        refreshing
    }

    /// Awaits a read and records its result (the first of its waiters to finish does).
    async fn finish(&self, (id, refresh): (u64, Refresh)) -> Result<PriceList, Arc<StripeError>> {
        let result = refresh.await;
        let mut state = self.state();
        if state
            .refreshing
            .as_ref()
            .is_some_and(|(current, _)| *current == id)
        {
            state.refreshing = None;
            if let Ok(prices) = &result {
                state.cached = Some((Instant::now(), prices.clone()));
            }
        }
        result
    }
}

async fn fetch(catalog: &Catalog, stripe: &StripeClient) -> Result<Vec<ProductPrice>, StripeError> {
    let keyed = account::prices_by_lookup_keys(stripe, &catalog.lookup_keys()).await?;
    let mut products: Vec<String> = keyed.iter().map(|p| p.product.id().to_string()).collect();
    products.sort();
    products.dedup();
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

#[cfg(test)]
mod tests {
    use super::*;
    use billing_stripe::{SecretKey, StripeConfig};
    use serde_json::json;
    use stripe_wiremock::{Kind, StripeDouble};

    #[tokio::test]
    async fn a_price_added_later_is_found_once_the_list_is_older_than_the_miss_window() {
        let stripe = StripeDouble::start().await;
        let catalog = stripe.seed_default_catalog();
        let mut config = StripeConfig::new(SecretKey::parse("sk_test_products").unwrap());
        config.api_base = stripe.uri();
        let client = StripeClient::new(&config).unwrap();
        let products = Products::new(Catalog::builtin(), Duration::from_secs(3600));
        assert_eq!(products.list(&client).await.unwrap().len(), 3);

        let added = stripe
            .create(
                Kind::Price,
                json!({"product": catalog.product, "currency": "cad", "unit_amount": 1999,
                       "recurring": {"interval": "week"}}),
            )
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        // Within the window: the list was just read, so a miss is a miss.
        assert_eq!(products.find(&client, &added).await.unwrap(), None);
        // Once the list is older than the window, a miss reads Stripe again and finds it.
        if let Some((at, _)) = products.state().cached.as_mut() {
            *at -= MISS_REFRESH;
        }
        let found = products.find(&client, &added).await.unwrap();
        assert_eq!(found.map(|p| p.id), Some(added));
        stripe.assert_no_violations();
    }

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
