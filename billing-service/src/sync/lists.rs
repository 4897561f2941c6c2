//! Stripe's list endpoints, one page at a time, as raw JSON.
//!
//! Raw rather than async-stripe's typed lists: what is read here goes where webhook payloads go
//! (the events table, the handlers, which read JSON), and a page must not fail to parse over a
//! field the service never reads. A page is asked for with the API version the service reads,
//! and retried with backoff when Stripe limits the rate (429), fails (5xx) or cannot be reached;
//! any other refusal ends the sync with Stripe's message.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use billing_stripe::SecretKey;
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::configuration::StripeApiSettings;
use crate::error::chain;

/// Stripe's largest page.
pub const PAGE_SIZE: u32 = 100;

#[derive(Debug, thiserror::Error)]
pub enum ListError {
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
    #[error("Stripe's answer to GET {path} is not a list ({reason})")]
    NotAList { path: String, reason: String },
}

impl ListError {
    fn worth_retrying(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Unreachable { .. })
    }
}

/// One page: the objects and whether more follow.
#[derive(Debug, Deserialize)]
pub struct Page {
    pub data: Vec<Value>,
    pub has_more: bool,
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

pub struct StripeLists {
    http: reqwest::Client,
    base: Url,
    key: SecretKey,
    backoff: ExponentialBuilder,
}

impl StripeLists {
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
    ) -> Result<Page, ListError> {
        let mut params: Vec<(String, String)> = query.to_vec();
        params.push(("limit".to_owned(), PAGE_SIZE.to_string()));
        if let Some(after) = after {
            params.push(("starting_after".to_owned(), after.to_owned()));
        }
        (|| self.get(path, &params))
            .retry(self.backoff)
            .when(ListError::worth_retrying)
            .notify(|e, wait| tracing::warn!(error = %e, ?wait, "retrying a Stripe list"))
            .await
    }

    async fn get(&self, path: &str, params: &[(String, String)]) -> Result<Page, ListError> {
        let url =
            self.base
                .join(path.trim_start_matches('/'))
                .map_err(|e| ListError::Unreachable {
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
            .map_err(|e| ListError::Unreachable {
                path: path.to_owned(),
                reason: chain(&e),
            })?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| ListError::Unreachable {
            path: path.to_owned(),
            reason: chain(&e),
        })?;
        match status {
            200 => serde_json::from_slice(&body).map_err(|e| ListError::NotAList {
                path: path.to_owned(),
                reason: e.to_string(),
            }),
            429 | 500.. => Err(ListError::Unavailable {
                path: path.to_owned(),
                status,
            }),
            _ => {
                let message = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.pointer("/error/message")?.as_str().map(str::to_owned))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
                Err(ListError::Refused {
                    path: path.to_owned(),
                    status,
                    message,
                })
            }
        }
    }
}
