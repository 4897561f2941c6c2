//! Reading Stripe's API as raw JSON: list pages (`sync`) and single objects (settling
//! same-second ties between events).
//!
//! Raw rather than async-stripe's typed objects: what is read here goes where webhook payloads
//! go (the events table, the handlers, which read JSON), and must not fail to parse over a field
//! the service never reads. Everything is asked for in the API version the service reads. A list
//! page is retried with backoff when Stripe limits the rate (429), fails (5xx) or cannot be
//! reached; any other refusal is returned with Stripe's message.
//!
//! A page also says when Stripe read it ([`Page::read_at`]), by Stripe's clock: `sync` writes
//! what it lists as of that second, so that an event Stripe creates later still wins.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::{ExponentialBuilder, Retryable};
use billing_stripe::SecretKey;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use url::Url;

use crate::configuration::StripeApiSettings;
use crate::error::chain;

/// Stripe's largest page.
pub const PAGE_SIZE: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("Stripe refused GET {path} ({status}): {message}")]
    Refused {
        path: String,
        status: u16,
        message: String,
    },
    #[error("Stripe still answered GET {path} with {status} after retrying")]
    Unavailable { path: String, status: u16 },
    #[error("cannot reach Stripe for GET {path}: {reason}")]
    Unreachable { path: String, reason: String },
    #[error("Stripe's answer to GET {path} is not what was asked for ({reason})")]
    Unexpected { path: String, reason: String },
}

impl ReadError {
    fn worth_retrying(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Unreachable { .. })
    }
}

/// How far Stripe's `Date` may run ahead of this machine's clock before it is not believed:
/// a page dated later would make its objects outrank events for that long.
const MAX_CLOCK_LEAD_SECS: i64 = 300;

/// One page: the objects and whether more follow.
#[derive(Debug, Deserialize)]
pub struct Page {
    pub data: Vec<Value>,
    pub has_more: bool,
    /// A second (unix, Stripe's clock) by which Stripe had read these objects: every event
    /// created before it is reflected in them.
    #[serde(skip)]
    pub read_at: i64,
}

impl Page {
    /// The id to continue after, when there is a next page.
    pub fn next_cursor(&self) -> Option<&str> {
        match self.has_more {
            true => self.data.last()?.get("id")?.as_str(),
            false => None,
        }
    }
}

pub struct StripeReader {
    http: reqwest::Client,
    base: Url,
    key: SecretKey,
    backoff: ExponentialBuilder,
}

impl StripeReader {
    pub fn new(settings: &StripeApiSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()?;
        Ok(Self {
            http,
            base: settings.api_base.clone(),
            key: settings.api_secret_key.clone(),
            backoff: ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(500))
                .with_max_delay(Duration::from_secs(20))
                .with_max_times(8)
                .with_jitter(),
        })
    }

    /// Shorter waits between retries (tests).
    pub fn with_backoff(mut self, min_delay: Duration) -> Self {
        self.backoff = self
            .backoff
            .with_min_delay(min_delay)
            .with_max_delay(min_delay * 4);
        self
    }

    /// The page of `path` (e.g. `/v1/events`) after the object `after`, filtered by `query`.
    pub async fn page(
        &self,
        path: &str,
        query: &[(String, String)],
        after: Option<&str>,
    ) -> Result<Page, ReadError> {
        let mut params: Vec<(String, String)> = query.to_vec();
        params.push(("limit".to_owned(), PAGE_SIZE.to_string()));
        if let Some(after) = after {
            params.push(("starting_after".to_owned(), after.to_owned()));
        }
        (|| self.get_page(path, &params))
            .retry(self.backoff)
            .when(ReadError::worth_retrying)
            .notify(|e, wait| tracing::warn!(error = %e, ?wait, "retrying a Stripe list"))
            .await
    }

    /// Every object of the list at `path` filtered by `query`, each page asked for once: for a
    /// caller holding a transaction, which fails and is retried as a whole instead.
    pub async fn list_once(
        &self,
        path: &str,
        query: &[(String, String)],
    ) -> Result<Vec<Value>, ReadError> {
        let mut params: Vec<(String, String)> = query.to_vec();
        params.push(("limit".to_owned(), PAGE_SIZE.to_string()));
        let mut objects = Vec::new();
        loop {
            let (page, _): (Page, _) = self.get(path, &params).await?;
            let next = page.next_cursor().map(str::to_owned);
            objects.extend(page.data);
            match next {
                Some(after) => {
                    params.retain(|(name, _)| name != "starting_after");
                    params.push(("starting_after".to_owned(), after));
                }
                None => return Ok(objects),
            }
        }
    }

    /// One object (e.g. `/v1/subscriptions/sub_...`), asked for once: its callers have a rule
    /// to fall back on, and must not hold a transaction through retries.
    pub async fn object(&self, path: &str) -> Result<Value, ReadError> {
        Ok(self.get(path, &[]).await?.0)
    }

    async fn get_page(&self, path: &str, params: &[(String, String)]) -> Result<Page, ReadError> {
        let asked = SystemTime::now();
        let started = Instant::now();
        let (mut page, date): (Page, _) = self.get(path, params).await?;
        page.read_at =
            read_at(date, started.elapsed(), asked).ok_or_else(|| ReadError::Unexpected {
                path: path.to_owned(),
                reason: "no Date header".to_owned(),
            })?;
        Ok(page)
    }

    /// A 200 answer, read as `T`, with its `Date` header.
    async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &[(String, String)],
    ) -> Result<(T, Option<SystemTime>), ReadError> {
        let url =
            self.base
                .join(path.trim_start_matches('/'))
                .map_err(|e| ReadError::Unreachable {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?;
        let response = self
            .http
            .get(url)
            .query(params)
            .bearer_auth(self.key.expose())
            .header("Stripe-Version", billing_stripe::API_VERSION)
            .send()
            .await
            .map_err(|e| ReadError::Unreachable {
                path: path.to_owned(),
                reason: chain(&e),
            })?;
        let status = response.status().as_u16();
        let date = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok());
        let body = response.bytes().await.map_err(|e| ReadError::Unreachable {
            path: path.to_owned(),
            reason: chain(&e),
        })?;
        match status {
            200 => serde_json::from_slice(&body)
                .map(|value| (value, date))
                .map_err(|e| ReadError::Unexpected {
                    path: path.to_owned(),
                    reason: e.to_string(),
                }),
            429 | 500.. => Err(ReadError::Unavailable {
                path: path.to_owned(),
                status,
            }),
            _ => {
                let message = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.pointer("/error/message")?.as_str().map(str::to_owned))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
                Err(ReadError::Refused {
                    path: path.to_owned(),
                    status,
                    message,
                })
            }
        }
    }
}

/// The second by which Stripe had read an answer dated `date` (whole seconds, set when it
/// answered) that took `elapsed` to arrive: the read happened at most `elapsed` before the
/// answer, so one second for the date's rounding and the whole seconds of `elapsed` are taken
/// off. Earlier is the safe side: an event of a later second still outranks the copy read. A
/// date further ahead of this machine's clock than [`MAX_CLOCK_LEAD_SECS`] is capped there.
fn read_at(date: Option<SystemTime>, elapsed: Duration, asked: SystemTime) -> Option<i64> {
    let secs = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    };
    let elapsed = i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX);
    let by_stripe = secs(date?).saturating_sub(1).saturating_sub(elapsed);
    Some(by_stripe.min(secs(asked).saturating_add(MAX_CLOCK_LEAD_SECS)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_read_before_its_date_and_a_date_far_ahead_is_capped() {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        let asked = at(1_000);
        assert_eq!(read_at(None, Duration::ZERO, asked), None);
        assert_eq!(
            read_at(Some(at(1_000)), Duration::from_millis(300), asked),
            Some(999)
        );
        assert_eq!(
            read_at(Some(at(1_003)), Duration::from_millis(2_500), asked),
            Some(1_000)
        );
        // A clock behind ours is believed; one far ahead is not.
        assert_eq!(read_at(Some(at(500)), Duration::ZERO, asked), Some(499));
        assert_eq!(
            read_at(Some(at(9_000_000)), Duration::ZERO, asked),
            Some(1_300)
        );
    }
}
