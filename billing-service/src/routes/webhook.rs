//! `POST /webhook/stripe`: HTTP around [`accept_delivery`]. Refuses what cannot be a delivery
//! before reading the body (no well-formed `Stripe-Signature`, a declared length over the limit,
//! no room in the [`BodyBudget`]), reads the raw body, answers 2xx only once the event is stored,
//! counts every result, and maps each refusal to its status and code. In Lambda mode it also
//! processes the stored event before answering.

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use billing_stripe::signature::{SignatureError, SignatureHeader};
use serde::Serialize;

use super::Routes;
use crate::clock::unix_now;
use crate::db;
use crate::error::{ApiError, BodyFailure, body_failure};
use crate::state::AppState;
use crate::tables::events::Stored;
use crate::webhook::batch::BatchError;
use crate::webhook::envelope::Envelope;
use crate::webhook::receive::{DeliveryError, MAX_BODY_BYTES, accept_delivery};
use crate::webhook::worker::{Attempt, Worker, WorkerError};

pub fn routes() -> Routes {
    Routes::default().route(Method::POST, "/webhook/stripe", receive)
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
            DeliveryError::TimedOut => return ApiError::RequestTimeout,
            DeliveryError::Busy => return ApiError::Overloaded,
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

/// The answer to a stored delivery (`WebhookReceived` in `openapi.json`), written without
/// building a JSON tree: it is sent for every event.
#[derive(Serialize)]
struct Receipt<'a> {
    received: bool,
    id: &'a str,
    duplicate: bool,
    /// Lambda mode only: what processing the event came to.
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'static str>,
}

/// Takes the whole request rather than a `HeaderMap`, which axum would clone for the handler.
async fn receive(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let result = read_and_accept(&state, &parts.headers, body).await;
    match result {
        Ok((envelope, stored)) => {
            let duplicate = stored == Stored::Duplicate;
            state
                .metrics
                .received(if duplicate { "duplicate" } else { "accepted" });
            if stored == Stored::New {
                state.wake_worker.notify_one();
            }
            note_api_version(&state, &envelope);
            tracing::info!(event_id = envelope.id.as_str(), event_type = %envelope.event_type, duplicate, "webhook accepted");
            let outcome = match &state.inline_worker {
                Some(worker) => Some(process_now(worker, envelope.id.as_str()).await?),
                None => None,
            };
            Ok(Json(Receipt {
                received: true,
                id: envelope.id.as_str(),
                duplicate,
                outcome,
            })
            .into_response())
        }
        Err(e) => {
            state.metrics.received(e.metric());
            let error = ApiError::from(e);
            // Server errors are logged with the response; a refusal is the sender's problem,
            // noted here without the body (it can hold personal data).
            // Shed deliveries are only counted: under a flood, a line each would be the flood.
            if !matches!(
                error,
                ApiError::Unavailable(_) | ApiError::Internal(_) | ApiError::Overloaded
            ) {
                tracing::warn!(reason = %error, "webhook refused");
            }
            Err(error)
        }
    }
}

/// Lambda mode: the stored event is processed before the answer, because nothing runs once the
/// response is sent. A failed attempt is answered 500, so that Stripe delivers it again (and the
/// scheduled run retries it too); the event is stored either way. A duplicate delivery of an
/// event still pending (a failed attempt's retry) is processed the same way.
async fn process_now(worker: &Worker, id: &str) -> Result<&'static str, ApiError> {
    match worker.execute_now(id).await {
        Ok(Some(Attempt::Processed)) => Ok("processed"),
        Ok(Some(Attempt::Ignored)) => Ok("ignored"),
        // Processed or parked before, or another invocation holds it now.
        Ok(None) => Ok("not_pending"),
        Ok(Some(Attempt::WillRetry)) => Err(ApiError::ProcessingFailed { parked: false }),
        Ok(Some(Attempt::Parked)) => Err(ApiError::ProcessingFailed { parked: true }),
        Err(WorkerError::Database(e)) => Err(e.into()),
        Err(e) => Err(ApiError::Internal(e.into())),
    }
}

async fn read_and_accept(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Envelope, Stored), DeliveryError> {
    let signature = headers
        .get("stripe-signature")
        .map(|v| v.to_str().unwrap_or(""));
    // Only the form: the signature itself needs the body, and "stale" is only ever said of a
    // signature that matched.
    SignatureHeader::parse(signature.ok_or(SignatureError::MissingHeader)?)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let _room = state.webhook_bodies.try_reserve(declared)?;
    let body =
        axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|e| match body_failure(&e) {
                BodyFailure::TooLarge => DeliveryError::TooLarge,
                BodyFailure::TimedOut => DeliveryError::TimedOut,
                BodyFailure::Broken => DeliveryError::Unreadable,
            })?;
    accept_delivery(
        &state.webhook_batcher,
        &state.settings.stripe,
        signature,
        &body,
        unix_now(),
    )
    .await
}

/// An event rendered in another API version than the one the service reads may carry fields
/// where the handlers do not look (Stripe renders it in the endpoint's version): counted by
/// version, logged the first time, so that an endpoint left on an old version is noticed.
fn note_api_version(state: &AppState, envelope: &Envelope) {
    let Some(version) = envelope.api_version.as_deref() else {
        return;
    };
    if version != billing_stripe::API_VERSION && state.metrics.other_api_version(version) {
        tracing::warn!(
            api_version = version,
            expected = billing_stripe::API_VERSION,
            "events arrive in another Stripe API version than the service reads; set the webhook \
             endpoint's version (`stripe-setup status` shows it)"
        );
    }
}
