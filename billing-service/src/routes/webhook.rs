//! `POST /webhook/stripe`: HTTP around [`accept_delivery`]. Reads the raw body (bounded),
//! answers 2xx only once the event is stored, counts every result, and maps each refusal to its
//! status and code.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, Method, StatusCode};
use billing_stripe::signature::SignatureError;
use serde_json::{Value, json};

use super::Routes;
use crate::clock::unix_now;
use crate::db;
use crate::error::ApiError;
use crate::state::AppState;
use crate::tables::events::Stored;
use crate::webhook::batch::BatchError;
use crate::webhook::receive::{DeliveryError, MAX_BODY_BYTES, accept_delivery};

pub fn routes() -> Routes {
    Routes::default().route(
        Method::POST,
        "/webhook/stripe",
        receive.layer(DefaultBodyLimit::max(MAX_BODY_BYTES)),
    )
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
            // Either way the event is not stored and Stripe retries; only the log differs.
            DeliveryError::Store(BatchError::Database(source)) if !db::is_unavailable(source) => {
                return ApiError::Internal(e.into());
            }
            DeliveryError::Store(BatchError::Crashed) => return ApiError::Internal(e.into()),
            DeliveryError::Store(_) => return ApiError::Unavailable(e.into()),
        };
        ApiError::bad_request(code, e.to_string())
    }
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
            let error = ApiError::from(e);
            // Server errors are logged with the response; a refusal is the sender's problem,
            // noted here without the body (it can hold personal data).
            if !matches!(error, ApiError::Unavailable(_) | ApiError::Internal(_)) {
                tracing::warn!(reason = %error, "webhook refused");
            }
            Err(error)
        }
    }
}
