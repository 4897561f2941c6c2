//! Receiving a delivery: verify the signature on the raw bytes, read the envelope, store the
//! event; only then may the caller answer 2xx.
//!
//! The decision is [`accept_delivery`], a plain function; the HTTP route
//! (`routes::webhook`) only adapts HTTP to it. Its CPU part, [`verify_delivery`], is separate so
//! that it can be measured alone (`cargo bench`); the storing goes through the [`Batcher`],
//! which commits many deliveries at once.

use billing_stripe::signature::{self, SignatureError};
use secrecy::ExposeSecret;

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
            Self::Store(_) => "unavailable",
        }
    }
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
    let stored = batcher.store(envelope.clone(), payload).await?;
    Ok((envelope, stored))
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
