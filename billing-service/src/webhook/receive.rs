//! `POST /webhook/stripe`: verify the signature on the raw bytes, read the envelope, store the
//! event, and only then answer 2xx.
//!
//! The decision is [`accept_delivery`], a plain function; the handler only adapts HTTP to it and
//! counts the result. Its CPU part, [`verify_delivery`], is separate so that it can be measured
//! alone (`cargo bench`); the storing goes through the [`Batcher`], which commits many
//! deliveries at once.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use billing_stripe::signature::{self, SignatureError};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::batch::Batcher;
use super::envelope::{Envelope, EnvelopeError};
use super::store::Stored;
use crate::configuration::StripeSettings;
use crate::error::ApiError;
use crate::startup::AppState;

/// Stripe's events are far smaller; anything larger is not from Stripe.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhook/stripe", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

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
    /// Shared: one failed batch fails every delivery in it.
    #[error("the event could not be stored")]
    Database(#[from] Arc<sqlx::Error>),
}

impl DeliveryError {
    /// The `result` label of `billing_webhook_events_received_total`.
    fn metric(&self) -> &'static str {
        match self {
            Self::Signature(SignatureError::Stale { .. }) => "stale",
            Self::Signature(_) => "bad_signature",
            Self::Envelope(_) | Self::Unreadable => "malformed",
            Self::TooLarge => "too_large",
            Self::Database(_) => "unavailable",
        }
    }
}

impl From<DeliveryError> for ApiError {
    fn from(e: DeliveryError) -> Self {
        let code = match &e {
            DeliveryError::Signature(SignatureError::MissingHeader) => "missing_signature",
            DeliveryError::Signature(SignatureError::Malformed(_)) => "malformed_signature",
            DeliveryError::Signature(SignatureError::NoV1Signature) => "no_v1_signature",
            DeliveryError::Signature(SignatureError::Mismatch) => "bad_signature",
            DeliveryError::Signature(SignatureError::Stale { .. }) => "stale_signature",
            DeliveryError::Envelope(_) | DeliveryError::Unreadable => "malformed_event",
            DeliveryError::TooLarge => {
                return ApiError::PayloadTooLarge {
                    limit: MAX_BODY_BYTES,
                };
            }
            DeliveryError::Database(_) => return ApiError::Unavailable(e.into()),
        };
        ApiError::bad_request(code, e.to_string())
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

async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let result = match body {
        Ok(body) => {
            let header = headers
                .get("stripe-signature")
                .map(|v| v.to_str().unwrap_or(""));
            accept_delivery(
                &state.webhook_batcher,
                &state.settings.stripe,
                header,
                &body,
                unix_now(),
            )
            .await
        }
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(DeliveryError::TooLarge)
        }
        Err(_) => Err(DeliveryError::Unreadable),
    };
    match result {
        Ok((envelope, stored)) => {
            let duplicate = stored == Stored::Duplicate;
            state
                .metrics
                .received(if duplicate { "duplicate" } else { "accepted" });
            if !duplicate {
                state.wake_worker.notify_one();
            }
            tracing::info!(event_id = envelope.id.as_str(), event_type = %envelope.event_type, duplicate, "webhook accepted");
            Ok(Json(json!({
                "received": true,
                "id": envelope.id.as_str(),
                "duplicate": duplicate,
            })))
        }
        Err(e) => {
            state.metrics.received(e.metric());
            // Never the body: it can hold personal data.
            tracing::warn!(reason = %e, "webhook refused");
            Err(e.into())
        }
    }
}

fn unix_now() -> i64 {
    super::store::now_ms() / 1000
}
