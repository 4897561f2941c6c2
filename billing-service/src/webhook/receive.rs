//! Receiving a delivery: verify the signature on the raw bytes, read the envelope, store the
//! event; only then may the caller answer 2xx.
//!
//! The decision is [`accept_delivery`], a plain function; the HTTP route
//! (`routes::webhook`) only adapts HTTP to it. Its CPU part, [`verify_delivery`], is separate so
//! that it can be measured alone (`cargo bench`); the storing goes through the [`Batcher`],
//! which commits many deliveries at once.

use std::sync::Arc;

use billing_stripe::signature::{self, SignatureError};
use secrecy::ExposeSecret;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::batch::{BatchError, Batcher};
use super::envelope::{Envelope, EnvelopeError};
use crate::configuration::StripeSettings;
use crate::tables::events::Stored;

/// Stripe's events are far smaller; anything larger is not from Stripe.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("the body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("the body could not be read")]
    Unreadable,
    #[error("the body was not sent in time")]
    TimedOut,
    /// Bodies already being read hold all the memory set aside for them.
    #[error("too many deliveries are being read; retry shortly")]
    Busy,
    /// The event was not stored (shared: one failed batch fails every delivery in it).
    #[error("the event could not be stored")]
    Store(#[from] BatchError),
}

impl DeliveryError {
    /// The `result` label of `billing_webhook_events_received_total`.
    pub fn metric(&self) -> &'static str {
        match self {
            Self::Signature(SignatureError::Stale { .. }) => "stale",
            Self::Signature(_) => "bad_signature",
            Self::Envelope(_) | Self::Unreadable => "malformed",
            Self::TooLarge => "too_large",
            Self::TimedOut => "timed_out",
            Self::Busy => "busy",
            Self::Store(_) => "unavailable",
        }
    }
}

/// The memory deliveries may hold while their bodies are read, before any signature can be
/// checked: with it, a few hundred slow or large unsigned bodies cannot take the process past
/// its memory limit. A body reserves its declared length (the maximum when undeclared) before a
/// byte is read, and a delivery that finds no room is refused at once (Stripe retries).
/// Large bodies may take only part of the budget, so that Stripe's usual few-KiB events still
/// find room while large ones fill theirs.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    all: Arc<Semaphore>,
    large: Arc<Semaphore>,
}

/// Room for one body, given back when dropped.
#[derive(Debug)]
pub struct BodyPermit {
    _all: OwnedSemaphorePermit,
    _large: Option<OwnedSemaphorePermit>,
}

/// Bodies above this count as large. Stripe's events are a few KiB; big invoices reach tens.
const LARGE_BODY_BYTES: u64 = 64 * 1024;

impl BodyBudget {
    /// `all` bytes for every body being read, of which at most `large` for large ones.
    pub fn new(all: usize, large: usize) -> Self {
        Self {
            all: Arc::new(Semaphore::new(kib(all as u64) as usize)),
            large: Arc::new(Semaphore::new(kib(large as u64) as usize)),
        }
    }

    /// Room for a body of `declared` bytes (`None`: not declared, so the largest allowed).
    pub fn try_reserve(&self, declared: Option<u64>) -> Result<BodyPermit, DeliveryError> {
        let bytes = declared.unwrap_or(MAX_BODY_BYTES as u64);
        if bytes > MAX_BODY_BYTES as u64 {
            return Err(DeliveryError::TooLarge);
        }
        let units = kib(bytes).max(1);
        let large = match bytes > LARGE_BODY_BYTES {
            true => Some(
                self.large
                    .clone()
                    .try_acquire_many_owned(units)
                    .map_err(|_| DeliveryError::Busy)?,
            ),
            false => None,
        };
        let all = self
            .all
            .clone()
            .try_acquire_many_owned(units)
            .map_err(|_| DeliveryError::Busy)?;
        Ok(BodyPermit {
            _all: all,
            _large: large,
        })
    }
}

impl Default for BodyBudget {
    /// 32 MiB in all, 24 of them for large bodies: a quarter of the pod's memory request.
    fn default() -> Self {
        Self::new(32 << 20, 24 << 20)
    }
}

/// Semaphore units: KiB, rounded up.
fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

/// Verifies, parses and stores one delivery; returns once it is committed.
pub async fn accept_delivery(
    batcher: &Batcher,
    stripe: &StripeSettings,
    signature_header: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(Envelope, Stored), DeliveryError> {
    let (envelope, payload) = verify_delivery(stripe, signature_header, body, now)?;
    Ok(batcher.store(envelope, payload).await?)
}

/// Checks the signature and reads the envelope; returns it with the body as the text to store.
pub fn verify_delivery(
    stripe: &StripeSettings,
    signature_header: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(Envelope, String), DeliveryError> {
    let secrets: Vec<&str> = stripe
        .webhook_secrets
        .iter()
        .map(|s| s.expose_secret())
        .collect();
    signature::verify(
        signature_header,
        body,
        &secrets,
        stripe.webhook_tolerance.as_secs(),
        now,
    )?;
    let text = Envelope::text(body)?;
    let envelope = Envelope::parse_str(text)?;
    Ok((envelope, text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_bodies_leave_room_for_small_ones_and_room_comes_back() {
        let budget = BodyBudget::new(4 << 20, 3 << 20);
        let mib = Some(1 << 20);
        let large: Vec<_> = (0..3).map(|_| budget.try_reserve(mib).unwrap()).collect();
        assert!(matches!(budget.try_reserve(mib), Err(DeliveryError::Busy)));
        // An undeclared length counts as the largest body.
        assert!(matches!(budget.try_reserve(None), Err(DeliveryError::Busy)));
        let small: Vec<_> = (0..256)
            .map(|_| budget.try_reserve(Some(4096)).unwrap())
            .collect();
        assert!(matches!(
            budget.try_reserve(Some(4096)),
            Err(DeliveryError::Busy)
        ));
        drop(large);
        drop(small);
        assert!(budget.try_reserve(mib).is_ok());
        assert!(matches!(
            budget.try_reserve(Some(MAX_BODY_BYTES as u64 + 1)),
            Err(DeliveryError::TooLarge)
        ));
    }
}
