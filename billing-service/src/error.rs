//! The one error type of the HTTP API.
//!
//! Every handler returns `Result<_, ApiError>`; the response is always
//! `{"error": {"code": ..., "message": ...}}` with the matching status. Internal causes are
//! logged with their whole chain and replaced by a generic message, so no SQL, secret or Stripe
//! internals reach the client.

use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong; the message says how and is safe to show.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    /// The user's plan does not include the feature asked about (or their subscription does not
    /// grant it now): an answer for the service that asked, not a fault.
    #[error("the feature {0} is not included in the user's current plan")]
    NotEntitled(String),
    /// No route has this path: distinct from a route's own 404 ("no such subscription").
    #[error("no such route")]
    NoRoute,
    #[error("this route does not take that method")]
    MethodNotAllowed,
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// The client took longer than `HTTP_BODY_READ_TIMEOUT_SECS` between two parts of its body,
    /// or the whole request longer than `HTTP_REQUEST_TIMEOUT_SECS`.
    #[error("the request took too long; send it again")]
    RequestTimeout,
    /// More requests in flight than the process takes: shed at once, before reading them.
    #[error("the service is busy; retry shortly")]
    Overloaded,
    /// Stripe failed or could not be reached; the message is ours, Stripe's details are logged.
    #[error("Stripe could not be reached; try again shortly")]
    Stripe(#[source] Arc<billing_stripe::StripeError>),
    /// The database is not answering; the client should retry (Stripe does, for webhooks).
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Lambda mode: the webhook's event is stored, but this attempt at processing it failed
    /// (logged by the worker, with the handler's error). 500, so that Stripe delivers it again.
    #[error("{}", processing_failed_message(*parked))]
    ProcessingFailed { parked: bool },
    /// A bug or a broken invariant on our side (a query the database refused, say): logged with
    /// its cause, answered with no detail.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::NotEntitled(_) => (StatusCode::FORBIDDEN, "not_entitled"),
            Self::NoRoute => (StatusCode::NOT_FOUND, "no_route"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            Self::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Self::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            Self::Stripe(_) => (StatusCode::BAD_GATEWAY, "stripe_unavailable"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Self::ProcessingFailed { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, "processing_failed")
            }
        }
    }
}

fn processing_failed_message(parked: bool) -> &'static str {
    match parked {
        false => "the event is stored, but processing it failed; it will be retried",
        true => {
            "the event is stored, but processing it failed for good: it is parked as failed \
             (billing-service events list --status failed)"
        }
    }
}

impl From<sqlx::Error> for ApiError {
    /// Only an unreachable or overloaded database is "unavailable" (503, retry later); any other
    /// database error is a bug of ours (500), so that a wrong query never looks like an outage.
    fn from(e: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&e) {
            Self::Unavailable(e.into())
        } else {
            Self::Internal(e.into())
        }
    }
}

impl From<billing_stripe::StripeError> for ApiError {
    fn from(e: billing_stripe::StripeError) -> Self {
        Self::from(Arc::new(e))
    }
}

impl From<Arc<billing_stripe::StripeError>> for ApiError {
    /// Stripe refusing a request is a 400; its message reaches the client only when Stripe wrote
    /// it for the user (a card error), and is logged otherwise. Stripe failing is a 502, its
    /// details logged with the response. Shared (`Arc`) because one Stripe read can answer
    /// several requests.
    fn from(e: Arc<billing_stripe::StripeError>) -> Self {
        match &*e {
            // Written by Stripe for the person paying ("Your card was declined.").
            billing_stripe::StripeError::Rejected { kind, message, .. } if kind == "card_error" => {
                Self::BadRequest {
                    code: "stripe_rejected",
                    message: message.clone(),
                }
            }
            // About our request or our account (ids, parameters, settings): for the operator's
            // log, not for the user.
            billing_stripe::StripeError::Rejected { .. } => {
                tracing::warn!(error = %e, "Stripe refused a request");
                Self::BadRequest {
                    code: "stripe_rejected",
                    message: "Stripe refused the request; the details are in the service's log"
                        .to_owned(),
                }
            }
            _ => Self::Stripe(e),
        }
    }
}

impl ApiError {
    /// What a layer's error means for the client: a timeout (408), load shed (503), or a bug.
    pub async fn from_layer(error: tower::BoxError) -> Self {
        if error.is::<tower::timeout::error::Elapsed>() {
            Self::RequestTimeout
        } else if error.is::<tower::load_shed::error::Overloaded>() {
            Self::Overloaded
        } else {
            Self::Internal(anyhow::anyhow!(error))
        }
    }

    /// A request body that could not be read: too large (413), too slow (408), or broken (400).
    pub fn from_body_error(error: &(dyn std::error::Error + 'static), limit: usize) -> Self {
        match body_failure(error) {
            BodyFailure::TooLarge => Self::PayloadTooLarge { limit },
            BodyFailure::TimedOut => Self::RequestTimeout,
            BodyFailure::Broken => Self::bad_request("invalid_body", "the body could not be read"),
        }
    }
}

/// Why reading a request body failed, found in the error's `source()` chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFailure {
    TooLarge,
    TimedOut,
    Broken,
}

pub fn body_failure(error: &(dyn std::error::Error + 'static)) -> BodyFailure {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.is::<http_body_util::LengthLimitError>() {
            return BodyFailure::TooLarge;
        }
        if e.is::<tower_http::timeout::TimeoutError>() {
            return BodyFailure::TimedOut;
        }
        cause = e.source();
    }
    BodyFailure::Broken
}

/// `text` cut to at most `max` bytes, at a character boundary.
pub fn truncated(mut text: String, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

/// Formats an error with its whole `source()` chain, for logs.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

impl IntoResponse for ApiError {
    /// The one place a failed request is logged: server errors with their whole cause.
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        match self {
            // Load, not a fault: counted by the request log, not reported as an error each time.
            Self::Overloaded => tracing::debug!(code, "request shed"),
            // The worker logged the attempt's failure with its cause.
            Self::ProcessingFailed { .. } => {}
            _ if status.is_server_error() => {
                tracing::error!(error = %chain(&self), code, "request failed");
            }
            _ => {}
        }
        let body = json!({ "error": { "code": code, "message": self.to_string() } });
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connection_errors_are_unavailable() {
        let outage = ApiError::from(sqlx::Error::PoolTimedOut);
        assert_eq!(outage.status_and_code().0, StatusCode::SERVICE_UNAVAILABLE);
        let bug = ApiError::from(sqlx::Error::ColumnNotFound("nope".into()));
        assert_eq!(
            bug.status_and_code(),
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        );
        assert_eq!(bug.to_string(), "internal error");
    }
}
