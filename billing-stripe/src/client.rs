//! The Stripe client both binaries use: async-stripe, plus what it leaves to its callers.
//!
//! async-stripe's client has no timeout unless given one, and its retrying strategies either
//! retry with a random idempotency key or do not retry at all. We want both: a deterministic
//! key chosen by the caller (so an interrupted run, re-run, reuses it and Stripe replays instead of
//! creating twice) *and* retries with backoff on 429, 5xx, timeouts and connection failures. So
//! each attempt is sent once through async-stripe with the caller's key, and the retry loop lives
//! here. Errors are sorted into what callers act on: Stripe refused (the caller's fault, 4xx) or
//! Stripe could not be reached in time (ours to report as 502).

use std::fmt;
use std::time::Duration;

use sha2::{Digest, Sha256};
use stripe::{IdempotencyKey, RequestStrategy, StripeRequest};
use stripe_client_core::StripeMethod;

/// A Stripe secret key. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

/// Whether a key acts on test data or real money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    Test,
    Live,
}

/// Why a string is not a usable Stripe secret key. The key itself is never echoed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretKeyError {
    #[error("the Stripe key is empty")]
    Empty,
    #[error(
        "the Stripe key does not look like a secret key (expected sk_test_..., sk_live_..., \
         rk_test_... or rk_live_...)"
    )]
    Format,
}

impl SecretKey {
    pub fn parse(key: &str) -> Result<Self, SecretKeyError> {
        let key = key.trim();
        if key.is_empty() {
            return Err(SecretKeyError::Empty);
        }
        let known = ["sk_test_", "sk_live_", "rk_test_", "rk_live_"];
        let well_formed = known
            .iter()
            .any(|p| key.len() > p.len() && key.starts_with(p))
            && key.bytes().all(|b| b.is_ascii_graphic());
        if !well_formed {
            return Err(SecretKeyError::Format);
        }
        Ok(Self(key.to_owned()))
    }

    pub fn mode(&self) -> KeyMode {
        if self.0[2..].starts_with("_live_") {
            KeyMode::Live
        } else {
            KeyMode::Test
        }
    }

    /// The key itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({:?}, [redacted])", self.mode())
    }
}

/// How to reach Stripe. [`StripeConfig::new`] gives production defaults.
#[derive(Debug, Clone)]
pub struct StripeConfig {
    pub secret_key: SecretKey,
    /// Where the API is: `https://api.stripe.com` or a test double. A trailing `/` or `/v1` is
    /// accepted.
    pub api_base: String,
    /// Per attempt, including reading the body.
    pub timeout: Duration,
    /// Total attempts for a retryable failure, the first included.
    pub max_attempts: u32,
    /// The first backoff; it doubles after each failed attempt, up to [`MAX_BACKOFF`].
    pub initial_backoff: Duration,
}

/// Where the backoff stops growing: beyond this a caller is better told Stripe is down.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

impl StripeConfig {
    pub fn new(secret_key: SecretKey) -> Self {
        Self {
            secret_key,
            api_base: DEFAULT_API_BASE.to_owned(),
            timeout: Duration::from_secs(10),
            max_attempts: 4,
            initial_backoff: Duration::from_millis(250),
        }
    }
}

/// What went wrong talking to Stripe, sorted by what the caller does about it.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Stripe refused the request (4xx other than 409/429): the request was wrong, retrying the
    /// same one will not help. `message` is Stripe's: written for the paying user when `kind` is
    /// `card_error`, otherwise about the request or the account (ids, parameters), for operators.
    #[error("Stripe refused the request ({status}): {message}")]
    Rejected {
        status: u16,
        /// Stripe's error type, e.g. `invalid_request_error`, `card_error`, `idempotency_error`.
        kind: String,
        message: String,
        code: Option<String>,
        param: Option<String>,
    },
    /// Stripe answered 429 or 5xx (or 409, a concurrent use of the same idempotency key) every
    /// time it was asked.
    #[error("Stripe is unavailable: status {status} after {attempts} attempts: {message}")]
    Unavailable {
        status: u16,
        attempts: u32,
        message: String,
    },
    #[error("Stripe did not answer within {timeout:?} ({attempts} attempts)")]
    Timeout { timeout: Duration, attempts: u32 },
    #[error("could not connect to Stripe ({attempts} attempts): {message}")]
    Connection { attempts: u32, message: String },
    /// Stripe answered 2xx with something our types cannot read: a version mismatch, or a bug.
    #[error("could not read Stripe's response: {0}")]
    InvalidResponse(String),
    #[error("invalid Stripe client configuration: {0}")]
    Config(String),
}

impl StripeError {
    /// True when the request itself was at fault (HTTP 400 territory), false when Stripe or the
    /// way to it failed (HTTP 502 territory).
    pub fn is_caller_fault(&self) -> bool {
        matches!(self, StripeError::Rejected { .. })
    }
}

/// A deterministic `Idempotency-Key` from the things that make a request what it is: the same
/// parts give the same key (a re-run is replayed by Stripe, not repeated), any change gives a new
/// one. Stripe keeps keys for 24 hours and allows at most 255 characters.
pub fn idempotency_key(prefix: &str, parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    let digest = hex::encode(hash.finalize());
    let prefix: String = prefix.chars().take(64).collect();
    format!("{prefix}-{}", &digest[..32])
}

/// The Stripe client. Cheap to clone.
#[derive(Clone)]
pub struct StripeClient {
    inner: stripe::Client,
    timeout: Duration,
    max_attempts: u32,
    initial_backoff: Duration,
}

impl fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeClient")
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

enum Failure {
    Retryable(StripeError),
    Final(StripeError),
}

impl StripeClient {
    pub fn new(config: &StripeConfig) -> Result<Self, StripeError> {
        let inner = stripe::ClientBuilder::new(config.secret_key.expose())
            .url(normalize_base(&config.api_base)?)
            .timeout(config.timeout)
            .request_strategy(RequestStrategy::Once)
            .app_info("billing", Some(env!("CARGO_PKG_VERSION").to_owned()), None)
            .build()
            .map_err(|e| StripeError::Config(e.to_string()))?;
        Ok(Self {
            inner,
            timeout: config.timeout,
            max_attempts: config.max_attempts.max(1),
            initial_backoff: config.initial_backoff,
        })
    }

    /// The underlying async-stripe client, for requests that need none of the above.
    pub fn inner(&self) -> &stripe::Client {
        &self.inner
    }

    /// Sends a request. Reads are retried; a write without a key is sent once, because Stripe
    /// could have acted on an attempt whose answer was lost.
    pub async fn send<R>(&self, request: &R) -> Result<R::Output, StripeError>
    where
        R: StripeRequest,
        R::Output: miniserde::Deserialize,
    {
        let retry = matches!(request.build().method, StripeMethod::Get);
        self.send_with(request, None, retry).await
    }

    /// Sends a write with an `Idempotency-Key`, retried with the same key, so that however many
    /// attempts reach Stripe it acts once.
    pub async fn send_idempotent<R>(&self, request: &R, key: &str) -> Result<R::Output, StripeError>
    where
        R: StripeRequest,
        R::Output: miniserde::Deserialize,
    {
        let key = IdempotencyKey::new(key).map_err(|e| StripeError::Config(e.to_string()))?;
        self.send_with(request, Some(key), true).await
    }

    async fn send_with<R>(
        &self,
        request: &R,
        key: Option<IdempotencyKey>,
        retry: bool,
    ) -> Result<R::Output, StripeError>
    where
        R: StripeRequest,
        R::Output: miniserde::Deserialize,
    {
        let attempts = if retry { self.max_attempts } else { 1 };
        let mut backoff = self.initial_backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let strategy = match &key {
                Some(key) => RequestStrategy::Idempotent(key.clone()),
                None => RequestStrategy::Once,
            };
            let result = request
                .customize()
                .request_strategy(strategy)
                .send(&self.inner)
                .await;
            let failure = match result {
                Ok(output) => return Ok(output),
                Err(e) => self.classify(e, attempt),
            };
            match failure {
                Failure::Final(e) => return Err(e),
                Failure::Retryable(e) if attempt >= attempts => return Err(e),
                Failure::Retryable(e) => {
                    tracing::warn!(attempt, error = %e, ?backoff, "Stripe request failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    fn classify(&self, error: stripe::StripeError, attempts: u32) -> Failure {
        match error {
            stripe::StripeError::Stripe(api, status) => {
                let message = api
                    .message
                    .clone()
                    .unwrap_or_else(|| "no message".to_owned());
                if matches!(status, 409 | 429) || status >= 500 {
                    Failure::Retryable(StripeError::Unavailable {
                        status,
                        attempts,
                        message,
                    })
                } else {
                    Failure::Final(StripeError::Rejected {
                        status,
                        kind: api.type_.as_str().to_owned(),
                        message,
                        code: api.code.as_ref().map(|c| c.as_str().to_owned()),
                        param: api.param.clone(),
                    })
                }
            }
            stripe::StripeError::Timeout => Failure::Retryable(StripeError::Timeout {
                timeout: self.timeout,
                attempts,
            }),
            stripe::StripeError::ClientError(message) => {
                Failure::Retryable(StripeError::Connection { attempts, message })
            }
            // async-stripe reports a non-2xx body it cannot read as Stripe's error this way too,
            // which is what an HTML error page from a proxy in front of Stripe looks like.
            stripe::StripeError::JSONDeserialize(message) => {
                Failure::Final(StripeError::InvalidResponse(message))
            }
            stripe::StripeError::ConfigError(message) => {
                Failure::Final(StripeError::Config(message))
            }
        }
    }

    /// Reads every page of a list, following `starting_after`. `page` builds the request for
    /// the page after the given object id (`None` for the first).
    pub async fn list_all<T, R>(
        &self,
        page: impl Fn(Option<&str>) -> R,
        id: impl Fn(&T) -> &str,
    ) -> Result<Vec<T>, StripeError>
    where
        R: StripeRequest<Output = stripe_types::List<T>>,
        stripe_types::List<T>: miniserde::Deserialize,
    {
        let mut all: Vec<T> = Vec::new();
        loop {
            let after = all.last().map(|last| id(last).to_owned());
            let list = self.send(&page(after.as_deref())).await?;
            let done = !list.has_more || list.data.is_empty();
            all.extend(list.data);
            if done {
                return Ok(all);
            }
        }
    }
}

/// async-stripe appends `v1/...` to the base, which must end in `/`.
fn normalize_base(base: &str) -> Result<String, StripeError> {
    let trimmed = base.trim().trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/v1").unwrap_or(trimmed);
    if !(trimmed.starts_with("https://") || trimmed.starts_with("http://")) {
        return Err(StripeError::Config(format!(
            "the Stripe API base '{base}' is not an http(s) URL"
        )));
    }
    Ok(format!("{trimmed}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_parsed_and_never_shown() {
        let key = SecretKey::parse(" sk_live_abc123 ").unwrap();
        assert_eq!(key.mode(), KeyMode::Live);
        assert_eq!(SecretKey::parse("rk_test_x").unwrap().mode(), KeyMode::Test);
        assert!(!format!("{key:?}").contains("abc123"));
        let config = StripeConfig::new(key);
        assert!(!format!("{config:?}").contains("abc123"));
        assert_eq!(SecretKey::parse(""), Err(SecretKeyError::Empty));
        assert_eq!(SecretKey::parse("pk_test_x"), Err(SecretKeyError::Format));
        assert_eq!(SecretKey::parse("sk_test_"), Err(SecretKeyError::Format));
        assert_eq!(SecretKey::parse("sk_test_a b"), Err(SecretKeyError::Format));
    }

    #[test]
    fn bases_are_normalised_for_async_stripe() {
        assert_eq!(
            normalize_base("https://api.stripe.com").unwrap(),
            "https://api.stripe.com/"
        );
        assert_eq!(
            normalize_base("http://127.0.0.1:9/v1/").unwrap(),
            "http://127.0.0.1:9/"
        );
        assert!(normalize_base("api.stripe.com").is_err());
    }

    #[test]
    fn idempotency_keys_follow_their_parts() {
        let a = idempotency_key("setup", &["stage", "price", "5499"]);
        assert_eq!(a, idempotency_key("setup", &["stage", "price", "5499"]));
        assert_ne!(a, idempotency_key("setup", &["stage", "price", "5500"]));
        assert_ne!(a, idempotency_key("setup", &["stage", "price5499"]));
        assert!(a.len() <= 255 && a.starts_with("setup-"));
    }
}
